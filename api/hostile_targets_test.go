package api

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/internal/testutil"
)

func init() {
	testutil.RegisterHostile("targets-calls", hostileTargetCalls)
}

// hostileTargetCalls calls the onsite tier's methods once each and prints
// each answer as "METHOD: ok" or "METHOD: ERROR-NAME: message".
// Arguments: bus address, plan, target, filesystem UUID.
func hostileTargetCalls(args []string) error {
	if len(args) != 4 {
		return errors.New("want: address plan target uuid")
	}
	conn, err := dbus.Connect(args[0])
	if err != nil {
		return err
	}
	defer conn.Close()
	obj := conn.Object(contract.BusName, contract.ManagerPath)
	for _, c := range []struct {
		method string
		args   []any
	}{
		{"TargetAppeared", []any{args[3]}},
		{"StartSend", []any{args[1], args[2]}},
		{"StartSend", []any{args[1], ""}},
		{"ListTargets", nil},
	} {
		call := obj.Call(contract.ManagerInterface+"."+c.method, 0, c.args...)
		var derr dbus.Error
		switch {
		case call.Err == nil:
			fmt.Printf("%s: ok\n", c.method)
		case errors.As(call.Err, &derr):
			fmt.Printf("%s: %s: %v\n", c.method, derr.Name, derr.Body)
		default:
			fmt.Printf("%s: %v\n", c.method, call.Err)
		}
	}
	return nil
}

// A user (uid 65534, a real process on the bus) may list the targets, and
// nothing more: TargetAppeared is refused saying only root may tell of a
// disk, StartSend is refused (no authorization), and no job is made.
func TestHostileTargetCalls(t *testing.T) {
	testutil.RequireNobody(t)
	e := newAPIEnv(t, nil) // root alone is authorized, as without polkit
	withTargets(t, e, filepath.Join(e.dir, "usb"))
	out, err := testutil.RunHostile(t, time.Minute, "targets-calls", e.bus.Address, "home", "usb", "0f6c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b")
	if err != nil {
		t.Fatalf("hostile process: %v\n%s", err, out)
	}
	t.Logf("as uid 65534:\n%s", out)
	for _, want := range []string{
		"TargetAppeared: " + contract.ErrorAccessDenied + ": [not authorized to call TargetAppeared: you are uid 65534; only root",
		"StartSend: " + contract.ErrorAccessDenied + ": ",
		"ListTargets: ok",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("as uid 65534, want %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "StartSend: ok") {
		t.Errorf("uid 65534 started a send:\n%s", out)
	}
	if jobs := e.d.Queue().Jobs(); len(jobs) != 0 {
		t.Errorf("refused calls made jobs: %+v", jobs)
	}
}

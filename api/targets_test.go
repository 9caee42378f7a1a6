package api

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/client"
	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/internal/testutil"
)

// withTargets rewrites the env's configuration with a path target and a
// UUID target, plan home sending to both, and reloads it through the bus.
func withTargets(t *testing.T, e *apiEnv, usb string) {
	t.Helper()
	e.writeConfig(t, "home")
	cfg := strings.Replace(readFile(t, e.config), "    schedule: \"0 3 * * *\"\n", "    schedule: \"0 3 * * *\"\n    send_to: [usb, disk]\n", 1)
	cfg += fmt.Sprintf("targets:\n  usb:\n    path: %s\n  disk:\n    uuid: 0F6C1A2B-3C4D-4E5F-8A9B-0C1D2E3F4A5B\n", usb)
	testutil.WriteFile(t, e.config, cfg)
	if call := e.obj.Call(contract.ManagerInterface+".Reload", 0); call.Err != nil {
		t.Fatalf("Reload with targets: %v", call.Err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// Malformed arguments of the onsite calls are refused before anything is
// asked or queued, each with one line that says what is expected.
func TestTargetCallsRefuseBadArguments(t *testing.T) {
	authz := &recordingAuthorizer{}
	e := newAPIEnv(t, authz)
	for _, c := range []struct {
		what, method string
		args         []any
		want         string
	}{
		{"plan with a slash", "StartSend", []any{"a/b", ""}, contract.ErrorInvalidArgument},
		{"unknown plan", "StartSend", []any{"nosuch", "usb"}, contract.ErrorNoSuchPlan},
		{"target with a slash", "StartSend", []any{"home", "../usb"}, contract.ErrorInvalidArgument},
		{"long target", "StartSend", []any{"home", strings.Repeat("u", 65)}, contract.ErrorInvalidArgument},
		{"one string for two", "StartSend", []any{"home"}, "org.freedesktop.DBus.Error.InvalidArgs"},
		{"integer target", "StartSend", []any{"home", int32(1)}, contract.ErrorInvalidArgument},
		{"not a UUID", "TargetAppeared", []any{"/dev/sdb1"}, contract.ErrorInvalidArgument},
		{"short UUID", "TargetAppeared", []any{"0f6c1a2b"}, contract.ErrorInvalidArgument},
		{"ListTargets with an argument", "ListTargets", []any{"usb"}, "org.freedesktop.DBus.Error.InvalidArgs"},
	} {
		t.Run(c.what, func(t *testing.T) {
			call := e.obj.Call(contract.ManagerInterface+"."+c.method, 0, c.args...)
			if call.Err == nil {
				t.Fatalf("%s(%.60v) succeeded", c.method, c.args)
			}
			if got := dbusErrorName(call.Err); got != c.want {
				t.Errorf("%s: error %s (%v), want %s", c.method, got, call.Err, c.want)
			}
			if msg := call.Err.Error(); len(msg) > 400 || strings.Contains(msg, "\n") {
				t.Errorf("message is not one short line: %q", msg)
			}
		})
	}
	if got := authz.questions(); len(got) != 0 {
		t.Errorf("malformed calls asked the authorizer: %v", got)
	}
	if jobs := e.d.Queue().Jobs(); len(jobs) != 0 {
		t.Errorf("malformed calls made jobs: %+v", jobs)
	}
}

// StartSend is authorized as StartCopy (action backup, on the plan);
// ListTargets asks nobody, as ListJobs; TargetAppeared is root's alone:
// a user is refused without polkit being asked, whatever it would say.
func TestTargetCallsAuthorization(t *testing.T) {
	authz := &recordingAuthorizer{deny: map[string]bool{contract.ActionBackup: true}, uid: 1000}
	e := newAPIEnv(t, authz)
	withTargets(t, e, filepath.Join(e.dir, "usb"))
	asked := len(authz.questions()) // the Reload's

	if err := callInteractive(t, e.client, "StartSend", "home", "usb"); dbusErrorName(err) != contract.ErrorAccessDenied {
		t.Errorf("StartSend denied by the authorizer: %v, want AccessDenied", err)
	}
	var targets []map[string]dbus.Variant
	if err := e.obj.Call(contract.ManagerInterface+".ListTargets", 0).Store(&targets); err != nil {
		t.Errorf("ListTargets as uid 1000: %v", err)
	}
	err := callInteractive(t, e.client, "TargetAppeared", "0f6c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b")
	if dbusErrorName(err) != contract.ErrorAccessDenied || !strings.Contains(err.Error(), "only root") || !strings.Contains(err.Error(), "uid 1000") {
		t.Errorf("TargetAppeared as uid 1000: %v, want AccessDenied saying only root", err)
	}
	if got, want := authz.questions()[asked:], []string{"org.subvault.backup home true"}; !slices.Equal(got, want) {
		t.Errorf("asked %q, want %q", got, want)
	}
	if jobs := e.d.Queue().Jobs(); len(jobs) != 0 {
		t.Errorf("refused calls made jobs: %+v", jobs)
	}
}

// ListTargets answers one a{sv} per configured target, sorted by name,
// with where it is configured; an absent target (its directory missing,
// no disk with its UUID) is not present. The plan object has the Targets
// property, of type a(sxb).
func TestListTargets(t *testing.T) {
	e := newAPIEnv(t, permissive{})
	usb := filepath.Join(e.dir, "usb-not-mounted")
	withTargets(t, e, usb)
	var list []map[string]dbus.Variant
	if err := e.obj.Call(contract.ManagerInterface+".ListTargets", 0).Store(&list); err != nil {
		t.Fatal(err)
	}
	var got []contract.Target
	for _, d := range list {
		got = append(got, contract.TargetOf(d))
	}
	if len(got) != 2 {
		t.Fatalf("ListTargets: %+v, want disk and usb", got)
	}
	disk, u := got[0], got[1]
	if disk.Name != "disk" || disk.UUID != "0f6c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b" || disk.Path != "" || disk.Present {
		t.Errorf("disk: %+v, want the lowercased UUID and absent", disk)
	}
	if u.Name != "usb" || u.Path != usb || u.UUID != "" || u.Present {
		t.Errorf("usb: %+v, want its path and absent", u)
	}
	v, err := e.client.Object(contract.BusName, contract.PlanPath("home")).GetProperty(contract.PlanInterface + ".Targets")
	if err != nil || v.Signature().String() != "a(sxb)" {
		t.Errorf("plan home's Targets: %v %v, want a(sxb)", v, err)
	}
	// The client reads the same, and says what it was doing when refused.
	c, err := client.Dial(context.Background(), e.bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if viaClient, err := c.Targets(context.Background()); err != nil || !reflect.DeepEqual(viaClient, got) {
		t.Errorf("client.Targets: %+v %v, want %+v", viaClient, err, got)
	}
	if _, err := c.StartSend(context.Background(), "home", "../usb"); err == nil || !strings.Contains(err.Error(), "start a send of home to ../usb") {
		t.Errorf("client.StartSend of a malformed target: %v", err)
	}
	// Root may tell of a disk, in any case of its UUID.
	if err := e.obj.Call(contract.ManagerInterface+".TargetAppeared", 0, "0F6C1A2B-3C4D-4E5F-8A9B-0C1D2E3F4A5B").Err; err != nil {
		t.Errorf("TargetAppeared as root: %v", err)
	}
}

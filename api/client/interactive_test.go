package client

import (
	"context"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/internal/testutil"
)

// flagService answers StartBackup and remembers whether the call allowed
// interactive authorization.
type flagService struct{ seen chan bool }

func (f flagService) StartBackup(msg dbus.Message, _ string) (uint32, dbus.ObjectPath, *dbus.Error) {
	f.seen <- msg.Flags&dbus.FlagAllowInteractiveAuthorization != 0
	return 7, contract.JobPath(7), nil
}

// A client at a terminal lets polkit ask for a password: its calls carry
// the allow-interactive-authorization flag (godbus's object calls drop
// it), and only then.
func TestInteractiveFlagSent(t *testing.T) {
	bus := testutil.NewBus(t)
	var server *dbus.Conn
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var err error
		if server, err = dbus.Connect(bus.Address); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	defer server.Close()
	svc := flagService{seen: make(chan bool, 1)}
	if err := server.Export(svc, contract.ManagerPath, contract.ManagerInterface); err != nil {
		t.Fatal(err)
	}
	if _, err := server.RequestName(contract.BusName, dbus.NameFlagDoNotQueue); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := Dial(ctx, bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, interactive := range []bool{true, false} {
		c.Interactive = interactive
		if id, err := c.StartBackup(ctx, "home"); err != nil || id != 7 {
			t.Fatalf("StartBackup: %d, %v", id, err)
		}
		if got := <-svc.seen; got != interactive {
			t.Errorf("Interactive %v: the call carried the flag: %v", interactive, got)
		}
	}
}

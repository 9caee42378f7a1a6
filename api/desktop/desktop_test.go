package desktop

import (
	"context"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/internal/testutil"
)

// fakeServer is org.freedesktop.Notifications as the specification has
// it, recording each Notify call.
type fakeServer struct {
	caps  []string
	calls chan []any
}

func (s *fakeServer) GetCapabilities() ([]string, *dbus.Error) { return s.caps, nil }

func (s *fakeServer) Notify(app string, replaces uint32, icon, summary, body string, actions []string, hints map[string]dbus.Variant, timeout int32) (uint32, *dbus.Error) {
	s.calls <- []any{app, replaces, icon, summary, body, actions, hints, timeout}
	if replaces != 0 {
		return replaces, nil
	}
	return 7, nil
}

func (s *fakeServer) CloseNotification(uint32) *dbus.Error { return nil }

func TestNotifyCapabilitiesAndSignals(t *testing.T) {
	bus := testutil.NewBus(t)
	srv, err := dbus.Connect(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fake := &fakeServer{caps: []string{"body", CapActions, CapBodyMarkup}, calls: make(chan []any, 4)}
	if err := srv.Export(fake, Path, Interface); err != nil {
		t.Fatal(err)
	}
	if reply, err := srv.RequestName(BusName, dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("RequestName: %v %v", reply, err)
	}

	c, err := Dial(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	caps, err := c.Capabilities(ctx)
	if err != nil || !Has(caps, CapActions) || Has(caps, "persistence") {
		t.Errorf("Capabilities: %v %v", caps, err)
	}
	events, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}

	id, err := c.Notify(ctx, Notification{Summary: "Backup of home failed", Body: EscapeMarkup("a <b> & c"), Icon: "dialog-error",
		Urgency: Critical, Actions: []Action{{DefaultAction, "Details"}}, ReplacesID: 3, Timeout: -1})
	if err != nil || id != 3 {
		t.Fatalf("Notify: %d %v", id, err)
	}
	call := <-fake.calls
	hints := call[6].(map[string]dbus.Variant)
	if call[0] != AppName || call[1] != uint32(3) || call[2] != "dialog-error" || call[3] != "Backup of home failed" ||
		call[4] != "a &lt;b&gt; &amp; c" || len(call[5].([]string)) != 2 || call[5].([]string)[0] != "default" || call[7] != int32(-1) {
		t.Errorf("Notify sent %#v", call)
	}
	if u, ok := hints["urgency"].Value().(byte); !ok || u != 2 {
		t.Errorf("urgency hint %#v, want the byte 2", hints["urgency"])
	}

	for _, s := range []struct {
		member string
		args   []any
		want   Event
	}{
		{"ActionInvoked", []any{uint32(3), "default"}, Event{Type: ActionInvoked, ID: 3, Action: "default"}},
		{"NotificationClosed", []any{uint32(3), uint32(2)}, Event{Type: NotificationClosed, ID: 3, Reason: 2}},
	} {
		if err := srv.Emit(Path, Interface+"."+s.member, s.args...); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-events:
			if e != s.want {
				t.Errorf("%s: %+v, want %+v", s.member, e, s.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no event for %s", s.member)
		}
	}
	// A signal of another interface with the same member is not ours: the
	// next event is the one after it.
	if err := srv.Emit(Path, "org.example.Other.ActionInvoked", uint32(3), "default"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Emit(Path, Interface+".ActionInvoked", uint32(4), "details"); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-events:
		if e != (Event{Type: ActionInvoked, ID: 4, Action: "details"}) {
			t.Errorf("after another interface's signal: %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event for the second ActionInvoked")
	}
	cancel()
	for e := range events {
		t.Errorf("event after the context ended: %+v", e)
	}
}

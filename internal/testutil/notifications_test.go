package testutil

import (
	"testing"

	"github.com/godbus/dbus/v5"
)

// The helper against itself: a notification sent on the private session
// bus is on dunst's screen, and in its history once closed.
func TestNotificationServer(t *testing.T) {
	s := NewNotificationServer(t)
	conn, err := dbus.Connect(s.Bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var id uint32
	err = conn.Object("org.freedesktop.Notifications", "/org/freedesktop/Notifications").Call("org.freedesktop.Notifications.Notify", 0,
		"testutil", uint32(0), "", "a summary", "a body & more", []string{"default", "Open"},
		map[string]dbus.Variant{"urgency": dbus.MakeVariant(byte(2))}, int32(-1)).Store(&id)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.Displayed(t); n != 1 {
		t.Errorf("%d displayed, want 1", n)
	}
	s.CloseAll(t)
	h := s.History(t)
	t.Logf("history: %+v", h)
	if len(h) != 1 || h[0].ID != id || h[0].Summary != "a summary" || h[0].AppName != "testutil" || h[0].Urgency != "CRITICAL" {
		t.Errorf("history: %+v (want the one notification %d)", h, id)
	}
}

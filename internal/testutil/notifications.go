package testutil

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// NotificationServer is a real desktop notification server for one test:
// dunst on an Xvfb display, serving org.freedesktop.Notifications on a
// private session bus.
type NotificationServer struct {
	Bus     *Bus
	Display string // ":N"
	env     []string
}

// Notification is one entry of dunst's history, as `dunstctl history`
// prints it (each field there is {"type": ..., "data": ...}).
type Notification struct {
	ID       uint32
	AppName  string
	Summary  string
	Body     string
	Urgency  string // "LOW", "NORMAL" or "CRITICAL" (see dunstrc)
	Category string
}

// dunstrc keeps the server predictable: notifications never wait for an
// idle user to come back, critical ones stay until closed (as by default),
// and history keeps every one. dunst's history does not record the
// urgency, so each urgency has its own timeout to tell them apart by.
const dunstrc = `[global]
    idle_threshold = 0
    history_length = 100
    sticky_history = yes
    show_indicators = no
    markup = full
    format = "%s\n%b"
[urgency_low]
    timeout = 301
[urgency_normal]
    timeout = 302
[urgency_critical]
    timeout = 0
`

// urgencyOfTimeout maps the timeouts of dunstrc (µs in the history) back
// to the urgency; a notification that set its own expire_timeout has "".
var urgencyOfTimeout = map[int64]string{301e6: "LOW", 302e6: "NORMAL", 0: "CRITICAL"}

// NewNotificationServer starts a session bus (NewBus), Xvfb on a display it
// picks itself (-displayfd), and dunst with its own minimal configuration,
// and waits until org.freedesktop.Notifications is owned. Every process
// is stopped by PID when the test ends.
func NewNotificationServer(t testing.TB) *NotificationServer {
	t.Helper()
	RequireCommand(t, "Xvfb", "xvfb")
	RequireCommand(t, "dunst", "dunst")
	RequireCommand(t, "dunstctl", "dunst")
	RequireCommand(t, "busctl", "systemd") // dunstctl history calls it
	bus := NewBus(t)

	// Xvfb writes the display number it took to the descriptor given.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	xvfb := exec.Command("Xvfb", "-displayfd", "3", "-nolisten", "tcp", "-screen", "0", "1024x768x24")
	xvfb.ExtraFiles = []*os.File{w}
	xout, xexited := StartProcess(t, "Xvfb", xvfb)
	w.Close() //nolint:errcheck,gosec // Xvfb holds its copy
	number := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(r).ReadString('\n')
		r.Close() //nolint:errcheck,gosec // read once
		number <- strings.TrimSpace(line)
	}()
	var display string
	select {
	case n := <-number:
		if _, err := strconv.Atoi(n); err != nil {
			t.Fatalf("Xvfb gave no display number (%q): %s", n, xout.String())
		}
		display = ":" + n
	case <-xexited:
		t.Fatalf("Xvfb exited at start: %s", xout.String())
	case <-time.After(15 * time.Second):
		t.Fatalf("Xvfb gave no display number within 15 s: %s", xout.String())
	}

	dir := t.TempDir()
	conf := filepath.Join(dir, "dunstrc")
	WriteFile(t, conf, dunstrc)
	s := &NotificationServer{Bus: bus, Display: display}
	s.env = append(os.Environ(), "DISPLAY="+display, "DBUS_SESSION_BUS_ADDRESS="+bus.Address,
		"XDG_CONFIG_HOME="+dir, "XDG_RUNTIME_DIR="+dir)
	dunst := exec.Command("dunst", "-config", conf)
	dunst.Env = s.env
	dout, dexited := StartProcess(t, "dunst", dunst)

	conn, err := dbus.Connect(bus.Address)
	if err != nil {
		t.Fatalf("cannot connect to the session bus: %v", err)
	}
	defer conn.Close() //nolint:errcheck // only asked the bus
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var owned bool
		if err := conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, "org.freedesktop.Notifications").Store(&owned); err == nil && owned {
			return s
		}
		select {
		case <-dexited:
			t.Fatalf("dunst exited at start: %s", dout.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dunst did not own org.freedesktop.Notifications within 15 s: %s", dout.String())
		}
	}
}

// dunstctl runs dunstctl against this server and returns its output.
func (s *NotificationServer) dunstctl(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command("dunstctl", args...)
	cmd.Env = s.env
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok { //nolint:errorlint // Output returns it unwrapped
			stderr = string(ee.Stderr)
		}
		t.Fatalf("dunstctl %s: %v: %s%s", strings.Join(args, " "), err, out, stderr)
	}
	return string(out)
}

// History is dunst's history (notifications closed or expired), newest
// first, from `dunstctl history`. A notification still on screen is not in
// it: CloseAll moves those there.
func (s *NotificationServer) History(t testing.TB) []Notification {
	t.Helper()
	out := s.dunstctl(t, "history")
	type field struct {
		Data json.RawMessage `json:"data"`
	}
	var reply struct {
		Data [][]map[string]field `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &reply); err != nil {
		t.Fatalf("dunstctl history: %v: %s", err, out)
	}
	if len(reply.Data) != 1 {
		t.Fatalf("dunstctl history: %d values: %s", len(reply.Data), out)
	}
	list := []Notification{}
	for _, raw := range reply.Data[0] {
		str := func(key string) string {
			var v string
			_ = json.Unmarshal(raw[key].Data, &v)
			return v
		}
		n := Notification{AppName: str("appname"), Summary: str("summary"), Body: str("body"),
			Urgency: str("urgency"), Category: str("category")}
		var id, timeout int64
		_ = json.Unmarshal(raw["id"].Data, &id)
		n.ID = uint32(id) //nolint:gosec // dunst's ids are uint32
		if err := json.Unmarshal(raw["timeout"].Data, &timeout); err == nil {
			n.Urgency = urgencyOfTimeout[timeout]
		}
		list = append(list, n)
	}
	return list
}

// Displayed is the number of notifications on screen.
func (s *NotificationServer) Displayed(t testing.TB) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(s.dunstctl(t, "count", "displayed")))
	if err != nil {
		t.Fatalf("dunstctl count displayed: %v", err)
	}
	return n
}

// Action invokes the default action of the notification on screen at
// position n (0 is the newest), as a click on it does.
func (s *NotificationServer) Action(t testing.TB, n int) {
	t.Helper()
	s.dunstctl(t, "action", fmt.Sprint(n))
}

// CloseAll closes every notification on screen, which moves them to the
// history.
func (s *NotificationServer) CloseAll(t testing.TB) {
	t.Helper()
	s.dunstctl(t, "close-all")
}

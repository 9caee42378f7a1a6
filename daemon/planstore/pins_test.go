package planstore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/internal/testutil"
)

// Pins are kept per target, replaced as a whole for one target, and read
// only from a file subvault could have written: not a link, not another
// user's or writable by others, nothing but a pin file.
func TestSendPinsFile(t *testing.T) {
	testutil.RequireRoot(t) // a file of another user's
	cfg := &config.Config{Settings: config.Settings{StateDir: t.TempDir()}}
	if pins, err := SendPins(cfg, "p"); err != nil || len(pins) != 0 {
		t.Fatalf("no pin file: %v, %v", pins, err)
	}
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a := SendPin{Subvolume: "/home", Snapshot: "s1", UUID: "u1", Since: since}
	b := SendPin{Subvolume: "/home", Snapshot: "s2", UUID: "u2", Since: since}
	if err := SetSendPins(cfg, "p", "usb", []SendPin{a}); err != nil {
		t.Fatal(err)
	}
	if err := SetSendPins(cfg, "p", "disk", []SendPin{b}); err != nil {
		t.Fatal(err)
	}
	if err := SetSendPins(cfg, "p", "usb", []SendPin{b}); err != nil {
		t.Fatal(err)
	}
	pins, err := SendPins(cfg, "p")
	if err != nil || len(pins) != 2 || pins[0].Target != "disk" || pins[1].Target != "usb" || pins[1].Snapshot != "s2" || !pins[1].Since.Equal(since) {
		t.Fatalf("pins: %+v, %v", pins, err)
	}
	path := filepath.Join(cfg.Settings.StateDir, SendPinsDir, "p.json")
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("pin file: %v, %v; want mode 0600", st, err)
	}
	data, _ := os.ReadFile(path)
	for _, tc := range []struct {
		name  string
		setup func()
		want  string
	}{
		{"writable by others", func() { os.WriteFile(path, data, 0o600); os.Chmod(path, 0o666) }, "mode 0666"},
		{"another user's", func() { os.WriteFile(path, data, 0o600); os.Chown(path, 65534, 65534) }, "owned by uid 65534"},
		{"a link", func() { os.Remove(path); os.Symlink("/etc/passwd", path) }, "symbolic link"},
		{"not a pin file", func() { os.Remove(path); os.WriteFile(path, []byte(`{"version":1,"pins":[],"x":1}`), 0o600) }, "not one subvault wrote"},
		{"another version", func() { os.WriteFile(path, []byte(`{"version":2,"pins":[]}`), 0o600) }, "not one subvault wrote"},
	} {
		tc.setup()
		if _, err := SendPins(cfg, "p"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	os.Remove(path)
	os.Chmod(filepath.Dir(path), 0o777)
	if _, err := SendPins(cfg, "p"); err == nil || !strings.Contains(err.Error(), "writable by no one else") {
		t.Errorf("a pins directory others may write: %v", err)
	}
}

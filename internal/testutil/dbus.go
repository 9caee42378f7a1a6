package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Bus is a private dbus-daemon started for one test.
type Bus struct {
	// Address is the bus's D-Bus address (unix:path=...).
	Address string
	Dir     string
}

// NewBus starts a private dbus-daemon whose policy lets anyone own any name
// and talk to anyone (the system bus's own policy comes with the D-Bus API
// tests). It is stopped, by PID, when the test ends. It skips under -short.
func NewBus(t testing.TB) *Bus {
	t.Helper()
	SkipShort(t, "a private dbus-daemon")
	RequireCommand(t, "dbus-daemon", "dbus")
	dir, err := os.MkdirTemp("", "subvault-bus-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "bus.sock")
	conf := filepath.Join(dir, "bus.conf")
	WriteFile(t, conf, fmt.Sprintf(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
`, sock))
	output, exited := StartProcess(t, "dbus-daemon", exec.Command("dbus-daemon", "--config-file="+conf, "--nofork", "--nopidfile"))
	waitListening(t, "dbus-daemon", sock, output, exited)
	return &Bus{Address: "unix:path=" + sock, Dir: dir}
}

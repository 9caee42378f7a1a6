package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Bus is a private dbus-daemon started for one test.
type Bus struct {
	// Address is the bus's D-Bus address (unix:path=...).
	Address string
	Dir     string
}

// NewBus starts a private dbus-daemon whose policy lets anyone own any name
// and talk to anyone (the system bus's own policy comes with the D-Bus API
// tests). It is stopped, by PID, when the test ends.
func NewBus(t testing.TB) *Bus {
	t.Helper()
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
	cmd := exec.Command("dbus-daemon", "--config-file="+conf, "--nofork", "--nopidfile")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("dbus-daemon: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		// The socket file appears before dbus-daemon listens on it.
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close() //nolint:errcheck,gosec // only probing
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("dbus-daemon did not create its socket within 10 s")
		}
	}
	return &Bus{Address: "unix:path=" + sock, Dir: dir}
}

package api

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/daemon"
)

// ConnectServer opens the bus the daemon serves on ("system", "session",
// or a D-Bus address such as unix:path=/run/test/bus) through a guard
// (busguard.go) that keeps what godbus cannot take safely, and every file
// descriptor but DiffTo's, from reaching it.
func ConnectServer(bus string) (*dbus.Conn, error) {
	conn, err := dialGuarded(bus)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to the %s bus: %w", busName(bus), err)
	}
	return conn, nil
}

func busName(bus string) string {
	if bus == "" {
		return "system"
	}
	return bus
}

// Inhibitor holds logind sleep inhibitors over conn (the system bus). Where
// logind is not on the bus (a container, a test bus) it holds nothing and
// says so once.
type Inhibitor struct {
	Conn *dbus.Conn
	Log  *slog.Logger
	once sync.Once
}

var _ daemon.Inhibitor = (*Inhibitor)(nil)

// Inhibit takes a "sleep" inhibitor in "block" mode: logind will not
// suspend on request while a job runs (closing a laptop's lid still does,
// with logind's default LidSwitchIgnoreInhibited=yes).
func (i *Inhibitor) Inhibit(why string) (func(), error) {
	var has bool
	if err := i.Conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, "org.freedesktop.login1").Store(&has); err != nil || !has {
		i.once.Do(func() { i.Log.Info("logind is not on the bus; jobs run without a sleep inhibitor") })
		return func() {}, nil
	}
	var fd dbus.UnixFD
	err := i.Conn.Object("org.freedesktop.login1", "/org/freedesktop/login1").
		Call("org.freedesktop.login1.Manager.Inhibit", 0, "sleep", "subvault", why, "block").Store(&fd)
	if err != nil {
		return nil, fmt.Errorf("logind refused a sleep inhibitor: %w", err)
	}
	if fd < 0 {
		return nil, errors.New("logind returned no inhibitor descriptor")
	}
	f := os.NewFile(uintptr(fd), "logind-inhibitor")
	return func() { f.Close() }, nil //nolint:errcheck,gosec // closing releases the inhibitor
}

package api

import (
	"errors"
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/daemon"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/queue"
)

// The contract's error names.
const (
	ErrorNoSuchPlan      = "org.subvault.Subvault1.Error.NoSuchPlan"
	ErrorNoSuchJob       = "org.subvault.Subvault1.Error.NoSuchJob"
	ErrorNoSuchSnapshot  = "org.subvault.Subvault1.Error.NoSuchSnapshot"
	ErrorNoSuchArchive   = "org.subvault.Subvault1.Error.NoSuchArchive"
	ErrorInvalidArgument = "org.subvault.Subvault1.Error.InvalidArgument"
	ErrorInvalidConfig   = "org.subvault.Subvault1.Error.InvalidConfig"
	ErrorFailed          = "org.subvault.Subvault1.Error.Failed"
	// ErrorAccessDenied is the bus's own name for a caller that is not
	// authorized (the Authorizer answers with it).
	ErrorAccessDenied = "org.freedesktop.DBus.Error.AccessDenied"
	// ErrorLimitsExceeded is the bus's own name for a call refused because
	// its caller, or all callers, have as many calls that run restic or
	// walk a tree running as they may (daemon.ErrBusy).
	ErrorLimitsExceeded = "org.freedesktop.DBus.Error.LimitsExceeded"

	// The D-Bus specification's names for a path without an object and
	// for what org.freedesktop.DBus.Properties refuses, as systemd's
	// sd-bus answers them.
	ErrorUnknownObject    = "org.freedesktop.DBus.Error.UnknownObject"
	ErrorUnknownInterface = "org.freedesktop.DBus.Error.UnknownInterface"
	ErrorUnknownProperty  = "org.freedesktop.DBus.Error.UnknownProperty"
	ErrorPropertyReadOnly = "org.freedesktop.DBus.Error.PropertyReadOnly"
)

// newError is a D-Bus error with a one-line message that is valid UTF-8
// whatever the names in it hold.
func newError(name, format string, args ...any) *dbus.Error {
	return dbus.NewError(name, []any{oneLine(escapeInvalidUTF8(fmt.Sprintf(format, args...)))})
}

func invalidArgument(format string, args ...any) *dbus.Error {
	return newError(ErrorInvalidArgument, format, args...)
}

// daemonError maps what package daemon returned to the contract's error
// names. The sentinel's own words ("no such plan: ") are dropped where the
// rest of the message says it better.
func daemonError(err error) *dbus.Error {
	if err == nil {
		return nil
	}
	var cfgErrs *config.Errors
	sentinels := []struct {
		err  error
		name string
		trim bool // drop the sentinel's words; "no such plan: "x"" reads well as it is
	}{
		{daemon.ErrNoSuchPlan, ErrorNoSuchPlan, false},
		{queue.ErrNoSuchJob, ErrorNoSuchJob, true},
		{daemon.ErrNoSuchSnapshot, ErrorNoSuchSnapshot, true},
		{daemon.ErrNoSuchArchive, ErrorNoSuchArchive, true},
		{daemon.ErrInvalidArgument, ErrorInvalidArgument, true},
		{daemon.ErrBusy, ErrorLimitsExceeded, false},
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			msg := err.Error()
			if s.trim {
				msg = strings.TrimPrefix(msg, s.err.Error()+": ")
			}
			return newError(s.name, "%s", msg)
		}
	}
	if errors.As(err, &cfgErrs) {
		return newError(ErrorInvalidConfig, "the configuration was not reloaded; the one in force stays: %s",
			strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return newError(ErrorFailed, "%s", err.Error())
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

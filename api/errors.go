package api

import (
	"errors"
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/queue"
)

// newError is a D-Bus error with a one-line message that is valid UTF-8
// whatever the names in it hold.
func newError(name, format string, args ...any) *dbus.Error {
	return dbus.NewError(name, []any{oneLine(contract.EscapeInvalidUTF8(fmt.Sprintf(format, args...)))})
}

func invalidArgument(format string, args ...any) *dbus.Error {
	return newError(contract.ErrorInvalidArgument, format, args...)
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
		{daemon.ErrNoSuchPlan, contract.ErrorNoSuchPlan, false},
		{queue.ErrNoSuchJob, contract.ErrorNoSuchJob, true},
		{daemon.ErrNoSuchSnapshot, contract.ErrorNoSuchSnapshot, true},
		{daemon.ErrNoSuchArchive, contract.ErrorNoSuchArchive, true},
		{daemon.ErrInvalidArgument, contract.ErrorInvalidArgument, true},
		{daemon.ErrBusy, contract.ErrorLimitsExceeded, false},
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
		return newError(contract.ErrorInvalidConfig, "the configuration was not reloaded; the one in force stays: %s",
			strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return newError(contract.ErrorFailed, "%s", err.Error())
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

package api

import (
	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/daemon/config"
)

// Authorizer decides whether the sender of a method call may do an action.
// The caller's identity comes from the bus, never from an argument.
type Authorizer interface {
	// Authorize returns nil when sender may perform action on plan (nil
	// for actions not about one plan); otherwise the error to answer with:
	// org.freedesktop.DBus.Error.AccessDenied, or
	// org.freedesktop.DBus.Error.InteractiveAuthorizationRequired when
	// polkit would ask for a password but the call did not allow
	// interactive authorization.
	Authorize(sender dbus.Sender, interactive bool, action string, plan *config.Plan) *dbus.Error
	// CallerUID is the sender's uid, from the bus.
	CallerUID(sender dbus.Sender) (uint32, *dbus.Error)
}

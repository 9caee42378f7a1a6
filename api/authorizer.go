package api

import (
	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/daemon/config"
)

// Actions, as the contract's "Who may call what" names them: the polkit
// action ids.
const (
	// ActionBackup: ListArchives, StartBackup, StartCheck, CancelJob of a
	// job the caller started. Root, the plan's allow_users/allow_groups, or
	// polkit.
	ActionBackup = "org.subvault.backup"
	// ActionManage: StartPrune, DeleteSnapshot, CancelJob of others' jobs,
	// Reload. Root or polkit.
	ActionManage = "org.subvault.manage"
	// ActionRestore: StartRestore, CloneSnapshot. Root or polkit.
	ActionRestore = "org.subvault.restore"
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

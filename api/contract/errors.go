package contract

// The error names the daemon answers with (docs/dbus-api.md, "Errors"):
// the contract's own, then the bus's and the D-Bus specification's, which
// the daemon uses where they say what happened.
const (
	ErrorNoSuchPlan      = "org.subvault.Subvault1.Error.NoSuchPlan"
	ErrorNoSuchJob       = "org.subvault.Subvault1.Error.NoSuchJob"
	ErrorNoSuchSnapshot  = "org.subvault.Subvault1.Error.NoSuchSnapshot"
	ErrorNoSuchArchive   = "org.subvault.Subvault1.Error.NoSuchArchive"
	ErrorInvalidArgument = "org.subvault.Subvault1.Error.InvalidArgument"
	ErrorInvalidConfig   = "org.subvault.Subvault1.Error.InvalidConfig"
	ErrorFailed          = "org.subvault.Subvault1.Error.Failed"

	// ErrorAccessDenied: the caller is not authorized.
	ErrorAccessDenied = "org.freedesktop.DBus.Error.AccessDenied"
	// ErrorInteractiveAuthorizationRequired: polkit would ask for a
	// password, but the call did not allow interactive authorization.
	ErrorInteractiveAuthorizationRequired = "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
	// ErrorLimitsExceeded: the caller, or all callers, have as many calls
	// that run restic or walk a tree running as they may.
	ErrorLimitsExceeded = "org.freedesktop.DBus.Error.LimitsExceeded"

	// A path without an object, a method or interface an object lacks, and
	// what org.freedesktop.DBus.Properties refuses, as systemd's sd-bus
	// answers them.
	ErrorUnknownObject    = "org.freedesktop.DBus.Error.UnknownObject"
	ErrorUnknownMethod    = "org.freedesktop.DBus.Error.UnknownMethod"
	ErrorUnknownInterface = "org.freedesktop.DBus.Error.UnknownInterface"
	ErrorUnknownProperty  = "org.freedesktop.DBus.Error.UnknownProperty"
	ErrorPropertyReadOnly = "org.freedesktop.DBus.Error.PropertyReadOnly"
)

package api

import (
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
)

// Rollback's arguments are checked before anybody is asked, and the
// daemon's own refusals come back under their names. (The rollback itself
// is tested as root in daemon and through the command line.)
func TestRollbackArguments(t *testing.T) {
	authz := &recordingAuthorizer{uid: 0}
	e := newAPIEnv(t, authz)
	snap := "subvault@home@20260101T000000Z@1@home"
	none := map[string]dbus.Variant{}
	cases := []struct {
		what string
		args []any
		want string
	}{
		{"unknown option", []any{"home", snap, "/home", map[string]dbus.Variant{"force": dbus.MakeVariant(true)}}, contract.ErrorInvalidArgument},
		{"option of another type", []any{"home", snap, "/home", map[string]dbus.Variant{"dry_run": dbus.MakeVariant("yes")}}, contract.ErrorInvalidArgument},
		{"relative subvolume", []any{"home", snap, "home", none}, contract.ErrorInvalidArgument},
		{"unclean subvolume", []any{"home", snap, "/home/", none}, contract.ErrorInvalidArgument},
		{"snapshot path", []any{"home", "/home/.subvault-snapshots/" + snap, "/home", none}, contract.ErrorInvalidArgument},
		{"no options argument", []any{"home", snap, "/home"}, "org.freedesktop.DBus.Error.InvalidArgs"},
		{"unknown plan", []any{"nosuch", snap, "/home", none}, contract.ErrorNoSuchPlan},
	}
	for _, c := range cases {
		err := callInteractive(t, e.client, "Rollback", c.args...)
		if got := dbusErrorName(err); got != c.want {
			t.Errorf("%s: %s (%v), want %s", c.what, got, err, c.want)
		}
	}
	if got := authz.questions(); len(got) != 0 {
		t.Errorf("malformed calls asked the authorizer: %v", got)
	}
	// Well formed: authorized as a restore, then the daemon looks ("/" is a
	// subvolume path like any other).
	for _, sv := range []string{"/home", "/"} {
		err := callInteractive(t, e.client, "Rollback", "home", snap, sv, map[string]dbus.Variant{"dry_run": dbus.MakeVariant(true)})
		if got := dbusErrorName(err); got != contract.ErrorNoSuchSnapshot {
			t.Errorf("a missing snapshot, %s: %s (%v)", sv, got, err)
		}
	}
	if got := authz.questions(); strings.Join(got, "|") != "org.subvault.restore home true|org.subvault.restore home true" {
		t.Errorf("asked %v, want the restore action twice", got)
	}

	denied := &recordingAuthorizer{deny: map[string]bool{contract.ActionRestore: true}, uid: 1000}
	e = newAPIEnv(t, denied)
	err := callInteractive(t, e.client, "Rollback", "home", snap, "/home", none)
	if got := dbusErrorName(err); got != contract.ErrorAccessDenied {
		t.Errorf("denied restore: %s (%v), want AccessDenied", got, err)
	}
}

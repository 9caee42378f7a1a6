package api

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon"
	"github.com/subvault/subvault/daemon/queue"
)

func TestParseRestoreOptions(t *testing.T) {
	b := dbus.MakeVariant(true)
	for _, c := range []struct {
		in   map[string]dbus.Variant
		want daemon.RestoreOptions
		err  string
	}{
		{map[string]dbus.Variant{}, daemon.RestoreOptions{}, ""},
		{map[string]dbus.Variant{"verify": b, "subvolume": b}, daemon.RestoreOptions{Verify: true, Subvolume: true}, ""},
		{map[string]dbus.Variant{"in_place": b, "verify": dbus.MakeVariant(false)}, daemon.RestoreOptions{InPlace: true}, ""},
		{map[string]dbus.Variant{"in_place": b, "subvolume": b}, daemon.RestoreOptions{}, "exclude each other"},
		{map[string]dbus.Variant{"inplace": b}, daemon.RestoreOptions{}, `unknown restore option "inplace"; the options are in_place, subvolume, verify`},
		{map[string]dbus.Variant{"verify": dbus.MakeVariant(int32(1))}, daemon.RestoreOptions{}, `restore option "verify" is of D-Bus type "i"; it takes a boolean (b)`},
		{map[string]dbus.Variant{"verify": dbus.MakeVariant("true")}, daemon.RestoreOptions{}, `of D-Bus type "s"`},
	} {
		got, derr := parseRestoreOptions(c.in)
		switch {
		case c.err == "" && derr != nil:
			t.Errorf("%v: %v", c.in, derr)
		case c.err != "" && (derr == nil || derr.Name != contract.ErrorInvalidArgument || !strings.Contains(derr.Error(), c.err)):
			t.Errorf("%v: %v, want InvalidArgument with %q", c.in, derr, c.err)
		case c.err == "" && got != c.want:
			t.Errorf("%v: %+v, want %+v", c.in, got, c.want)
		}
	}
}

// An in-place restore is refused to anyone but uid 0 even when polkit
// would allow it, and polkit is not asked; the other restores are polkit's
// restore action. Arguments are checked before either.
func TestStartRestoreWithInPlaceIsRootOnly(t *testing.T) {
	authz := &recordingAuthorizer{uid: 1000}
	e := newAPIEnv(t, authz)
	inPlace := map[string]dbus.Variant{"in_place": dbus.MakeVariant(true)}
	err := e.obj.Call(contract.ManagerInterface+".StartRestoreWith", dbus.FlagAllowInteractiveAuthorization, "home", "latest", "/", []string{}, inPlace).Err
	if dbusErrorName(err) != contract.ErrorAccessDenied || !strings.Contains(err.Error(), "only root") || !strings.Contains(err.Error(), "uid 1000") {
		t.Errorf("in place as uid 1000: %v", err)
	}
	for _, c := range []struct {
		target  string
		options map[string]dbus.Variant
	}{
		{"/tmp/x", inPlace},
		{"/", map[string]dbus.Variant{}},
		{"relative", map[string]dbus.Variant{"subvolume": dbus.MakeVariant(true)}},
		{filepath.Join(e.dir, "r"), map[string]dbus.Variant{"nosuch": dbus.MakeVariant(true)}},
	} {
		err := e.obj.Call(contract.ManagerInterface+".StartRestoreWith", 0, "home", "latest", c.target, []string{}, c.options).Err
		if dbusErrorName(err) != contract.ErrorInvalidArgument {
			t.Errorf("target %s, options %v: %v, want InvalidArgument", c.target, c.options, err)
		}
	}
	// A string for a{sv} cannot even be stored: the bus-level check.
	if err := e.obj.Call(contract.ManagerInterface+".StartRestoreWith", 0, "home", "latest", filepath.Join(e.dir, "r"), []string{}, "verify").Err; dbusErrorName(err) != "org.freedesktop.DBus.Error.InvalidArgs" {
		t.Errorf("options of type s: %v", err)
	}
	if got := authz.questions(); len(got) != 0 {
		t.Fatalf("refused requests asked the authorizer: %v", got)
	}

	id, path, err := startJob(t, e, "StartRestoreWith", "home", "latest", filepath.Join(e.dir, "r"), []string{},
		map[string]dbus.Variant{"verify": dbus.MakeVariant(true)})
	if err != nil {
		t.Fatal(err)
	}
	j, _ := e.d.Queue().Job(id)
	if j.Kind != queue.KindRestore || !j.Verify || j.RestoreMode != "directory" || j.Caller != 1000 || path != contract.JobPath(id) {
		t.Errorf("job %+v at %s", j, path)
	}
	if got := authz.questions(); strings.Join(got, "|") != "org.subvault.restore home false" {
		t.Errorf("asked %q, want the restore action once", got)
	}
}

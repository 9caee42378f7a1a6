package api

import (
	"maps"
	"slices"
	"strings"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon"
)

// parseRestoreOptions reads StartRestoreWith's a{sv}: in_place, subvolume
// and verify, all booleans.
func parseRestoreOptions(options map[string]dbus.Variant) (daemon.RestoreOptions, *dbus.Error) {
	var o daemon.RestoreOptions
	if derr := parseBoolOptions("restore", options, map[string]*bool{
		"in_place": &o.InPlace, "subvolume": &o.Subvolume, "verify": &o.Verify,
	}); derr != nil {
		return o, derr
	}
	if o.InPlace && o.Subvolume {
		return o, invalidArgument("restore options in_place and subvolume exclude each other: an in-place restore writes over the plan's subvolumes, a subvolume restore makes a new one")
	}
	return o, nil
}

// parseBoolOptions reads an a{sv} of boolean options into the variables
// set names: an unknown key or a value that is not a boolean is refused
// rather than ignored, in the order of the keys.
func parseBoolOptions(what string, options map[string]dbus.Variant, set map[string]*bool) *dbus.Error {
	known := slices.Sorted(maps.Keys(set))
	for _, k := range slices.Sorted(maps.Keys(options)) {
		v := options[k]
		b, isBool := v.Value().(bool)
		p, ok := set[k]
		switch {
		case !ok:
			return invalidArgument("unknown %s option %s; the options are %s", what, quoteArg(k), strings.Join(known, ", "))
		case !isBool:
			return invalidArgument("%s option %s is of D-Bus type %q; it takes a boolean (b)", what, quoteArg(k), v.Signature().String())
		}
		*p = b
	}
	return nil
}

// StartRestoreWith is StartRestore with options (a{sv}): in_place,
// subvolume, verify. An in-place restore writes over the plan's subvolumes
// as root: only uid 0 may ask for one, whatever polkit would allow, and it
// is refused before polkit is asked.
func (m manager) StartRestoreWith(msg dbus.Message, sender dbus.Sender, plan, archive, target string, include []string, options map[string]dbus.Variant) (uint32, dbus.ObjectPath, *dbus.Error) {
	if err := checkSignature(msg, "sssasa{sv}"); err != nil {
		return 0, "", err
	}
	p, derr := m.s.plan(msg, plan)
	if derr != nil {
		return 0, "", derr
	}
	opts, derr := parseRestoreOptions(options)
	if derr != nil {
		return 0, "", derr
	}
	targetErr := checkPath("restore target", target)
	if opts.InPlace {
		targetErr = nil
		if target != "/" {
			targetErr = invalidArgument("an in-place restore writes the archive's paths where they were: its target is \"/\", not %s", quoteArg(target))
		}
	}
	if derr := firstError(checkArchive(archive), targetErr, checkIncludes(include)); derr != nil {
		return 0, "", derr
	}
	if opts.InPlace {
		uid, derr := m.s.authz.CallerUID(sender)
		if derr != nil {
			return 0, "", derr
		}
		if uid != 0 {
			return 0, "", denyCaller("not authorized to restore plan %s in place: you are uid %d; an in-place restore writes over the plan's subvolumes, which only root may ask for (run it as root, or restore into a directory or a new subvolume)", plan, uid)
		}
	}
	uid, derr := m.s.authorize(msg, sender, contract.ActionRestore, p)
	if derr != nil {
		return 0, "", derr
	}
	j, err := m.s.d.StartRestore(daemon.RestoreRequest{Plan: plan, Archive: archive, Target: target, Include: include, Options: opts, Trigger: trigger(uid), Caller: int64(uid)})
	if err != nil {
		return 0, "", daemonError(err)
	}
	m.s.sync()
	return j.ID, contract.JobPath(j.ID), nil
}

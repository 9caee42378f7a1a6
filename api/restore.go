package api

import (
	"sort"
	"strings"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/daemon"
)

// restoreOptions are the keys StartRestoreWith takes, all booleans.
var restoreOptions = []string{"in_place", "subvolume", "verify"}

// parseRestoreOptions reads StartRestoreWith's a{sv}: each key one of
// restoreOptions with a boolean value; an unknown key or another type is
// refused rather than ignored.
func parseRestoreOptions(options map[string]dbus.Variant) (daemon.RestoreOptions, *dbus.Error) {
	var o daemon.RestoreOptions
	keys := make([]string, 0, len(options))
	for k := range options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := options[k]
		b, ok := v.Value().(bool)
		if !ok {
			return o, invalidArgument("restore option %s is of D-Bus type %q; it takes a boolean (b)", quoteArg(k), v.Signature().String())
		}
		switch k {
		case "in_place":
			o.InPlace = b
		case "subvolume":
			o.Subvolume = b
		case "verify":
			o.Verify = b
		default:
			return o, invalidArgument("unknown restore option %s; the options are %s", quoteArg(k), strings.Join(restoreOptions, ", "))
		}
	}
	if o.InPlace && o.Subvolume {
		return o, invalidArgument("restore options in_place and subvolume exclude each other: an in-place restore writes over the plan's subvolumes, a subvolume restore makes a new one")
	}
	return o, nil
}

// StartRestoreWith is StartRestore with options (a{sv}): in_place,
// subvolume, verify. An in-place restore writes over the plan's subvolumes
// as root: only uid 0 may ask for one, whatever polkit would allow, and it
// is refused before polkit is asked.
func (m manager) StartRestoreWith(msg dbus.Message, sender dbus.Sender, plan, archive, target string, include []string, options map[string]dbus.Variant) (uint32, dbus.ObjectPath, *dbus.Error) {
	if err := checkSignature(msg, "sssasa{sv}"); err != nil {
		return 0, "", err
	}
	p, derr := m.s.plan(plan)
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
	uid, derr := m.s.authorize(msg, sender, ActionRestore, p)
	if derr != nil {
		return 0, "", derr
	}
	j, err := m.s.d.StartRestoreWith(plan, archive, target, include, opts, trigger(uid), int64(uid))
	if err != nil {
		return 0, "", daemonError(err)
	}
	m.s.sync()
	return j.ID, JobPath(j.ID), nil
}

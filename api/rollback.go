package api

import (
	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/rollback"
)

// parseRollbackOptions reads Rollback's a{sv}: an unknown key or a value
// that is not a boolean is refused rather than ignored.
func parseRollbackOptions(options map[string]dbus.Variant) (rollback.Options, *dbus.Error) {
	var o rollback.Options
	derr := parseBoolOptions("rollback", options, map[string]*bool{"dry_run": &o.DryRun, "set_default": &o.SetDefault})
	return o, derr
}

// checkSubvolumePath checks the subvolume a rollback names: like a target,
// but "/" is one.
func checkSubvolumePath(p string) *dbus.Error {
	if p == "/" {
		return nil
	}
	return checkPath("subvolume", p)
}

// Rollback makes one of the plan's subvolumes hold a snapshot's content
// again (or, for a mounted one, prepares that for the next boot) and
// returns where the state before is kept and a message for a person. It
// writes as root: authorized as a restore.
func (m manager) Rollback(msg dbus.Message, sender dbus.Sender, plan, snapshot, subvolume string, options map[string]dbus.Variant) (string, string, *dbus.Error) {
	if err := checkSignature(msg, "sssa{sv}"); err != nil {
		return "", "", err
	}
	if m.s.d.IsReset(plan) {
		return m.rollbackReset(sender, snapshot, subvolume, options)
	}
	p, derr := m.s.plan(msg, plan)
	if derr != nil {
		return "", "", derr
	}
	opts, derr := parseRollbackOptions(options)
	if derr != nil {
		return "", "", derr
	}
	if derr := firstError(checkSnapshotName(snapshot), checkSubvolumePath(subvolume)); derr != nil {
		return "", "", derr
	}
	if _, derr := m.s.authorize(msg, sender, contract.ActionRestore, p); derr != nil {
		return "", "", derr
	}
	res, err := m.s.d.Rollback(daemon.RollbackRequest{Plan: plan, Snapshot: snapshot, Subvolume: subvolume, Options: opts})
	if err != nil {
		return "", "", daemonError(err)
	}
	return contract.EscapeInvalidUTF8(res.Kept), contract.EscapeInvalidUTF8(res.Message), nil
}

// rollbackReset is Rollback of plan "reset" (a configuration with a reset
// section): the next boot's reset makes the subvolume from snapshot. It
// decides what the whole next boot runs: uid 0 only, whatever polkit
// would allow.
func (m manager) rollbackReset(sender dbus.Sender, snapshot, subvolume string, options map[string]dbus.Variant) (string, string, *dbus.Error) {
	opts, derr := parseRollbackOptions(options)
	if derr != nil {
		return "", "", derr
	}
	if derr := firstError(checkSnapshotName(snapshot), checkSubvolumePath(subvolume)); derr != nil {
		return "", "", derr
	}
	uid, derr := m.s.authz.CallerUID(sender)
	if derr != nil {
		return "", "", derr
	}
	if uid != 0 {
		return "", "", denyCaller("not authorized to roll back %s to a reset snapshot: you are uid %d; it decides what the next boot runs, which only root may ask for (run it as root)", quoteArg(subvolume), uid)
	}
	res, err := m.s.d.Rollback(daemon.RollbackRequest{Plan: config.ResetPlan, Snapshot: snapshot, Subvolume: subvolume, Options: opts})
	if err != nil {
		return "", "", daemonError(err)
	}
	return contract.EscapeInvalidUTF8(res.Kept), contract.EscapeInvalidUTF8(res.Message), nil
}

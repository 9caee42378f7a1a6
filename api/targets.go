package api

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon"
	"github.com/subvault/subvault/daemon/queue"
)

// The onsite tier's calls (docs/dbus-api.md): StartSend, ListTargets,
// TargetAppeared.

// listTargetsTimeout bounds a ListTargets call: the daemon looks at each
// target (a disk it may have to mount in a private namespace to count its
// copies).
const listTargetsTimeout = time.Minute

var fsUUIDRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// StartSend queues a send of the plan's newest snapshots to target, one of
// its send_to; "" when the plan has only one. Authorized as StartCopy.
func (m manager) StartSend(msg dbus.Message, sender dbus.Sender, plan, target string) (uint32, dbus.ObjectPath, *dbus.Error) {
	if err := checkSignature(msg, "ss"); err != nil {
		return 0, "", err
	}
	p, derr := m.s.plan(msg, plan)
	if derr != nil {
		return 0, "", derr
	}
	if target != "" {
		if derr := checkName("target", target); derr != nil {
			return 0, "", derr
		}
	}
	uid, derr := m.s.authorize(msg, sender, contract.ActionBackup, p)
	if derr != nil {
		return 0, "", derr
	}
	j, err := m.s.d.Start(daemon.JobRequest{Kind: queue.KindSend, Plan: plan, SendTarget: target, Trigger: trigger(uid), Caller: int64(uid)})
	if err != nil {
		return 0, "", daemonError(err)
	}
	m.s.sync()
	return j.ID, contract.JobPath(j.ID), nil
}

// ListTargets answers every target of the configuration with its state:
// for anyone on the bus, as ListJobs (names of plans and targets, counts
// and times; never a file name inside a copy).
func (m manager) ListTargets(msg dbus.Message, sender dbus.Sender) ([]map[string]dbus.Variant, *dbus.Error) {
	if err := checkSignature(msg, ""); err != nil {
		return nil, err
	}
	uid, derr := m.s.authz.CallerUID(sender)
	if derr != nil {
		return nil, derr
	}
	ctx, done := m.s.readCall(context.Background(), sender, uid, listTargetsTimeout)
	defer done()
	out := []map[string]dbus.Variant{}
	for _, t := range m.s.d.Targets(ctx) {
		out = append(out, wireTarget(t).Dict())
	}
	if derr := checkReplySize(out, fmt.Sprintf("the configuration has %d targets", len(out)), "define fewer targets"); derr != nil {
		return nil, derr
	}
	return out, nil
}

// TargetAppeared tells the daemon that the btrfs filesystem uuid has
// appeared (the udev rule's or systemd device unit's call): due sends to
// the targets on it start. Root only: anyone else could make the daemon
// probe devices at will.
func (m manager) TargetAppeared(msg dbus.Message, sender dbus.Sender, uuid string) *dbus.Error {
	if err := checkSignature(msg, "s"); err != nil {
		return err
	}
	if !fsUUIDRE.MatchString(uuid) {
		return invalidArgument("%s is not a filesystem UUID: 8-4-4-4-12 hexadecimal digits, as blkid prints it", quoteArg(uuid))
	}
	uid, derr := m.s.authz.CallerUID(sender)
	if derr != nil {
		return derr
	}
	if uid != 0 {
		return denyCaller("not authorized to call TargetAppeared: you are uid %d; only root (the udev rule or systemd unit that sees the disk) may tell the daemon a disk appeared", uid)
	}
	m.s.d.TargetAppeared(strings.ToLower(uuid))
	return nil
}

// wireTarget is t as ListTargets shows it: one bounded line of error,
// names valid UTF-8.
func wireTarget(t daemon.TargetInfo) contract.Target {
	out := contract.Target{Name: t.Name, Path: contract.EscapeInvalidUTF8(t.Path), UUID: t.UUID, Present: t.Present,
		Where: contract.EscapeInvalidUTF8(t.Where), Error: boundedLine(t.Error), Plans: []contract.TargetPlan{}}
	for _, p := range t.Plans {
		out.Plans = append(out.Plans, contract.TargetPlan{Plan: p.Plan, Newest: p.Newest, Copies: clampUint32(p.Copies), Pinned: clampUint32(p.Pinned)})
	}
	return out
}

// wirePlanTargets is a plan's targets as its Targets property shows them.
func wirePlanTargets(targets []daemon.PlanTarget) []contract.PlanTarget {
	out := make([]contract.PlanTarget, 0, len(targets))
	for _, t := range targets {
		out = append(out, contract.PlanTarget{Name: t.Name, Newest: t.Newest, Present: t.Present})
	}
	return out
}

func clampUint32(n int) uint32 {
	switch {
	case n < 0:
		return 0
	case n > 1<<32-1:
		return 1<<32 - 1
	}
	return uint32(n)
}

package api

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/queue"
)

// listArchivesTimeout bounds a ListArchives call (restic reads the
// repository's index); bus clients give up after 25 s by default anyway.
const listArchivesTimeout = 2 * time.Minute

// listResetTimeout bounds a ListSnapshots of the reset: a walk of one directory at the top level.
const listResetTimeout = 30 * time.Second

// manager is org.subvault.Subvault1.Manager. Every method takes the raw
// message first, to check the types the caller sent and to read the
// allow-interactive-authorization flag; neither counts in its signature.
//
// Each method checks its arguments, then asks the Authorizer, then calls
// the daemon: a malformed request is refused before polkit could ask
// anybody for a password.
type manager struct{ s *Server }

func (m manager) ListPlans(msg dbus.Message) ([]contract.PlanEntry, *dbus.Error) {
	if err := checkSignature(msg, ""); err != nil {
		return nil, err
	}
	out := []contract.PlanEntry{}
	for _, name := range m.s.d.Config().PlanNames() {
		out = append(out, contract.PlanEntry{Name: name, Path: contract.PlanPath(name)})
	}
	return out, nil
}

func (m manager) ListJobs(msg dbus.Message) ([]contract.JobEntry, *dbus.Error) {
	if err := checkSignature(msg, ""); err != nil {
		return nil, err
	}
	out := []contract.JobEntry{}
	for _, j := range m.s.d.Queue().Jobs() {
		out = append(out, contract.JobEntry{ID: j.ID, Kind: j.Kind, Plan: j.Plan, State: j.State, Result: j.Result, Path: contract.JobPath(j.ID)})
	}
	if derr := checkReplySize(out, fmt.Sprintf("the daemon has %d jobs", len(out)), "lower settings.job_history"); derr != nil {
		return nil, derr
	}
	return out, nil
}

func (m manager) StartBackup(msg dbus.Message, sender dbus.Sender, plan string) (uint32, dbus.ObjectPath, *dbus.Error) {
	return m.s.start(msg, sender, queue.KindBackup, contract.ActionBackup, plan)
}

func (m manager) StartPrune(msg dbus.Message, sender dbus.Sender, plan string) (uint32, dbus.ObjectPath, *dbus.Error) {
	return m.s.start(msg, sender, queue.KindPrune, contract.ActionManage, plan)
}

func (m manager) StartCheck(msg dbus.Message, sender dbus.Sender, plan string) (uint32, dbus.ObjectPath, *dbus.Error) {
	return m.s.start(msg, sender, queue.KindCheck, contract.ActionBackup, plan)
}

// StartCopy copies the plan's latest archive of this host to the
// repositories its copy_to names; backups queue their own copies.
func (m manager) StartCopy(msg dbus.Message, sender dbus.Sender, plan string) (uint32, dbus.ObjectPath, *dbus.Error) {
	return m.s.start(msg, sender, queue.KindCopy, contract.ActionBackup, plan)
}

func (m manager) StartRestore(msg dbus.Message, sender dbus.Sender, plan, archive, target string, include []string) (uint32, dbus.ObjectPath, *dbus.Error) {
	if err := checkSignature(msg, "sssas"); err != nil {
		return 0, "", err
	}
	p, derr := m.s.plan(msg, plan)
	if derr != nil {
		return 0, "", derr
	}
	if derr := firstError(checkArchive(archive), checkPath("restore target", target), checkIncludes(include)); derr != nil {
		return 0, "", derr
	}
	uid, derr := m.s.authorize(msg, sender, contract.ActionRestore, p)
	if derr != nil {
		return 0, "", derr
	}
	j, err := m.s.d.StartRestore(daemon.RestoreRequest{Plan: plan, Archive: archive, Target: target, Include: include, Trigger: trigger(uid), Caller: int64(uid)})
	if err != nil {
		return 0, "", daemonError(err)
	}
	m.s.sync()
	return j.ID, contract.JobPath(j.ID), nil
}

func (m manager) CancelJob(msg dbus.Message, sender dbus.Sender, id uint32) *dbus.Error {
	if err := checkSignature(msg, "u"); err != nil {
		return err
	}
	return m.s.cancel(msg, sender, id)
}

func (m manager) ListSnapshots(msg dbus.Message, sender dbus.Sender, plan string) ([]contract.SnapshotEntry, *dbus.Error) {
	if err := checkSignature(msg, "s"); err != nil {
		return nil, err
	}
	var list []daemon.SnapshotInfo
	var err error
	if m.s.d.IsReset(plan) {
		// The reset's snapshots: listing them mounts the top level for a
		// moment, so it is a read call, bounded per caller.
		uid, derr := m.s.authz.CallerUID(sender)
		if derr != nil {
			return nil, derr
		}
		ctx, done := m.s.readCall(context.Background(), sender, uid, listResetTimeout)
		defer done()
		list, err = m.s.d.ResetSnapshots(ctx)
	} else {
		if _, derr := m.s.plan(msg, plan); derr != nil {
			return nil, derr
		}
		list, err = m.s.d.Snapshots(plan)
	}
	if err != nil {
		return nil, daemonError(err)
	}
	out := []contract.SnapshotEntry{}
	for _, sn := range list {
		out = append(out, contract.SnapshotEntry{Name: contract.EscapeInvalidUTF8(sn.Name), Path: contract.EscapeInvalidUTF8(sn.Path), Time: contract.Micros(sn.Time), Kept: sn.Kept})
	}
	if derr := checkReplySize(out, fmt.Sprintf("plan %s has %d local snapshots", plan, len(out)),
		"delete some (DeleteSnapshot) or keep fewer (keep_snapshots)"); derr != nil {
		return nil, derr
	}
	return out, nil
}

func (m manager) ListArchives(msg dbus.Message, sender dbus.Sender, plan string) ([]contract.ArchiveEntry, *dbus.Error) {
	if err := checkSignature(msg, "s"); err != nil {
		return nil, err
	}
	p, derr := m.s.plan(msg, plan)
	if derr != nil {
		return nil, derr
	}
	uid, derr := m.s.authorize(msg, sender, contract.ActionBackup, p)
	if derr != nil {
		return nil, derr
	}
	ctx, done := m.s.readCall(context.Background(), sender, uid, listArchivesTimeout)
	defer done()
	list, err := m.s.d.Archives(ctx, plan)
	if err != nil {
		return nil, daemonError(fmt.Errorf("cannot list the archives of plan %s: %w", plan, err))
	}
	out := []contract.ArchiveEntry{}
	for _, a := range list {
		out = append(out, contract.ArchiveEntry{ShortID: a.ShortID, Time: contract.Micros(a.Time), Hostname: contract.EscapeInvalidUTF8(a.Hostname),
			Paths: contract.EscapeAll(a.Paths), Tags: contract.EscapeAll(a.Tags)})
	}
	if derr := checkReplySize(out, fmt.Sprintf("plan %s has %d archives", plan, len(out)),
		"forget old ones (subvault prune, with the plan's retention)"); derr != nil {
		return nil, derr
	}
	return out, nil
}

func (m manager) DeleteSnapshot(msg dbus.Message, sender dbus.Sender, plan, name string) *dbus.Error {
	if err := checkSignature(msg, "ss"); err != nil {
		return err
	}
	p, derr := m.s.plan(msg, plan)
	if derr != nil {
		return derr
	}
	if derr := checkSnapshotName(name); derr != nil {
		return derr
	}
	if _, derr := m.s.authorize(msg, sender, contract.ActionManage, p); derr != nil {
		return derr
	}
	return daemonError(m.s.d.DeleteSnapshot(plan, name))
}

func (m manager) CloneSnapshot(msg dbus.Message, sender dbus.Sender, plan, name, target string) (string, *dbus.Error) {
	if err := checkSignature(msg, "sss"); err != nil {
		return "", err
	}
	p := m.s.d.ResetPlan()
	if p == nil || plan != p.Name {
		var derr *dbus.Error
		if p, derr = m.s.plan(msg, plan); derr != nil {
			return "", derr
		}
	}
	if derr := firstError(checkSnapshotName(name), checkPath("clone target", target)); derr != nil {
		return "", derr
	}
	if _, derr := m.s.authorize(msg, sender, contract.ActionRestore, p); derr != nil {
		return "", derr
	}
	path, err := m.s.d.CloneSnapshot(plan, name, target)
	if err != nil {
		return "", daemonError(err)
	}
	return contract.EscapeInvalidUTF8(path), nil
}

func (m manager) Reload(msg dbus.Message, sender dbus.Sender) *dbus.Error {
	if err := checkSignature(msg, ""); err != nil {
		return err
	}
	if _, derr := m.s.authorize(msg, sender, contract.ActionManage, nil); derr != nil {
		return derr
	}
	if err := m.s.d.Reload(); err != nil {
		return daemonError(err)
	}
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	if err := m.s.syncPlans(true); err != nil {
		return daemonError(err)
	}
	return nil
}

// start queues a backup, prune or check of plan.
func (s *Server) start(msg dbus.Message, sender dbus.Sender, kind queue.Kind, action, plan string) (uint32, dbus.ObjectPath, *dbus.Error) {
	if err := checkSignature(msg, "s"); err != nil {
		return 0, "", err
	}
	p, derr := s.plan(msg, plan)
	if derr != nil {
		return 0, "", derr
	}
	uid, derr := s.authorize(msg, sender, action, p)
	if derr != nil {
		return 0, "", derr
	}
	j, err := s.d.Start(daemon.JobRequest{Kind: kind, Plan: plan, Trigger: trigger(uid), Caller: int64(uid)})
	if err != nil {
		return 0, "", daemonError(err)
	}
	s.sync()
	return j.ID, contract.JobPath(j.ID), nil
}

// cancel cancels job id. A job the caller alone asked for needs
// contract.ActionBackup on its plan; a job anyone else asked for too (another
// caller, root, the schedule) needs contract.ActionManage, as anyone else's does.
func (s *Server) cancel(msg dbus.Message, sender dbus.Sender, id uint32) *dbus.Error {
	uid, derr := s.authz.CallerUID(sender)
	if derr != nil {
		return derr
	}
	// A second round only when someone asked for the job between the
	// first round's look and its cancel; it is then shared for good.
	for range 2 {
		j, ok := s.d.Queue().Job(id)
		if !ok {
			return newError(contract.ErrorNoSuchJob, "there is no job %d; ListJobs lists the jobs", id)
		}
		if !j.Active() {
			return newError(contract.ErrorNoSuchJob, "job %d has already finished (%s); there is nothing to cancel", id, j.Result)
		}
		own := j.AskedOnlyBy(uid)
		action := contract.ActionManage
		if own {
			action = contract.ActionBackup
		}
		if _, derr := s.authorize(msg, sender, action, s.planConfig(j.Plan)); derr != nil {
			return notYoursAlone(derr, j, uid)
		}
		var err error
		if own {
			err = s.d.Queue().CancelAskedOnlyBy(id, uid)
		} else {
			err = s.d.Queue().Cancel(id)
		}
		switch {
		case errors.Is(err, queue.ErrAskedByOthers):
			continue
		case errors.Is(err, queue.ErrNoSuchJob):
			return newError(contract.ErrorNoSuchJob, "job %d has already finished; there is nothing to cancel", id)
		case err != nil:
			return daemonError(err)
		}
		s.sync()
		return nil
	}
	return newError(contract.ErrorFailed, "job %d changed while it was being canceled; try again", id)
}

// notYoursAlone adds to a refusal to cancel a job the caller asked for
// why its own authorization is not enough: others asked for it too.
func notYoursAlone(refusal *dbus.Error, j queue.Job, uid uint32) *dbus.Error {
	if refusal.Name != contract.ErrorAccessDenied || !slices.Contains(j.Callers(), uid) {
		return refusal
	}
	var others []string
	for _, t := range j.Triggers() {
		if t != trigger(uid) {
			others = append(others, askerWords(t))
		}
	}
	var msg string
	if len(refusal.Body) > 0 {
		msg, _ = refusal.Body[0].(string)
	}
	return newError(contract.ErrorAccessDenied, "%s; job %d is not yours alone: %s asked for it too, so only an administrator may cancel it",
		msg, j.ID, strings.Join(others, " and "))
}

// askerWords names who asked for a job, by its trigger.
func askerWords(t queue.Trigger) string {
	switch {
	case t == queue.TriggerSchedule:
		return "the schedule"
	case t == queue.TriggerCatchUp:
		return "the catch-up of a missed scheduled run"
	case strings.HasPrefix(string(t), "dbus:"):
		return "uid " + strings.TrimPrefix(string(t), "dbus:")
	default:
		return string(t)
	}
}

// plan checks a plan argument of the call msg and returns the plan's
// configuration. An unknown plan's error lists the plans, and names the
// configuration file to root only: the file is root's, and its path is
// not for every caller to learn.
func (s *Server) plan(msg dbus.Message, name string) (*config.Plan, *dbus.Error) {
	if derr := checkName("plan", name); derr != nil {
		return nil, derr
	}
	cfg := s.d.Config()
	p, ok := cfg.Plans[name]
	if !ok {
		plans := strings.Join(cfg.PlanNames(), ", ")
		if plans == "" {
			plans = "none"
		}
		where := "in the configuration"
		if s.fromRoot(msg) {
			where = "in " + cfg.File
		}
		return nil, newError(contract.ErrorNoSuchPlan, "no plan %q %s (plans: %s)", name, where, plans)
	}
	return p, nil
}

// fromRoot reports whether the bus says uid 0 sent msg.
func (s *Server) fromRoot(msg dbus.Message) bool {
	sender, _ := msg.Headers[dbus.FieldSender].Value().(string)
	uid, derr := s.authz.CallerUID(dbus.Sender(sender))
	return derr == nil && uid == 0
}

// authorize asks the Authorizer whether the sender may do action on plan,
// with interactive authentication only when the call allows it, and
// returns the caller's uid.
func (s *Server) authorize(msg dbus.Message, sender dbus.Sender, action string, plan *config.Plan) (uint32, *dbus.Error) {
	interactive := msg.Flags&dbus.FlagAllowInteractiveAuthorization != 0
	if derr := s.authz.Authorize(sender, interactive, action, plan); derr != nil {
		return 0, derr
	}
	return s.authz.CallerUID(sender)
}

func trigger(uid uint32) queue.Trigger { return queue.Trigger(contract.CallerTrigger(uid)) }

func firstError(errs ...*dbus.Error) *dbus.Error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/state"
	"github.com/subvault/subvault/restic"
)

// RecoverPlan cleans up after a job of the plan that died: it deletes the
// leftover snapshots keep_snapshots does not keep and, when there were any (a
// sign that a job died mid-way) or an earlier backup left the check for
// later, removes the stale restic locks this host left in the plan's
// repository, within a bound. The caller holds the plan's lock.
func RecoverPlan(ctx context.Context, cfg *config.Config, plan *config.Plan, log *slog.Logger, now time.Time, loc *time.Location) error {
	before, err := planstore.Snapshots(plan)
	if err != nil {
		return err
	}
	kept, err := planstore.ApplyKeepSnapshots(cfg, plan, log, now, loc, nil)
	removed := len(before) - len(kept)
	if err != nil {
		return err
	}
	if removed > 0 {
		log.Warn("leftover snapshots removed", journal.Event(journal.EventLeftoverSnapshotsRemoved), "count", removed)
	} else if !state.LockCheckDue(cfg.Settings.StateDir, plan.Name) {
		return nil
	}
	runner, err := planstore.NewRunner(cfg, plan, log)
	if err != nil {
		return err
	}
	if err := removeStaleLocks(ctx, cfg, plan, runner, log, lockCheckBound, "left by a job that died"); err != nil {
		return fmt.Errorf("cannot remove stale restic locks: %w", err)
	}
	return nil
}

// How long a check for a lock restic left may take: after a failed backup,
// and when a backup starts; after a cancel, so that a cancel ends within
// seconds (restic's grace, 3 s, then this); and after a stall or a
// timeout, whose restic had to be killed: its server most likely does
// not answer, but when restic itself hung on a healthy server, the lock
// it left is removed at once, not at the next backup, in the time two
// restic processes take on a busy machine (about 2 s measured; restic
// derives its key each time). What does not finish in time is left to
// the next backup of the plan.
const (
	lockCheckBound       = 10 * time.Second
	lockCheckBoundCancel = time.Second
	lockCheckBoundStall  = 5 * time.Second
	// lockCheckGrace is the check's own restic's grace: killing `restic
	// list locks` or `restic unlock` loses nothing.
	lockCheckGrace = 500 * time.Millisecond
)

// removeStaleLocks removes the plan's repository's stale locks of this
// host (restic.RemoveStaleLocks) within bound, or until ctx ends. When it
// cannot (the repository does not answer), it leaves a note in the state
// directory, and the next backup of the plan checks again before it
// starts; when it did, it removes the note.
func removeStaleLocks(ctx context.Context, cfg *config.Config, plan *config.Plan, runner *restic.Runner, log *slog.Logger, bound time.Duration, why string) error {
	lockCtx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	start := time.Now()
	n, err := runner.WithGrace(lockCheckGrace).RemoveStaleLocks(lockCtx)
	if err != nil {
		deferLockCheck(cfg, plan, log, err.Error())
		return err
	}
	if cerr := state.ClearLockCheck(cfg.Settings.StateDir, plan.Name); cerr != nil {
		log.Warn("cannot remove the note of a lock check left for later", "err", cerr)
	}
	if n > 0 {
		log.Warn("stale restic locks of this host removed", journal.Event(journal.EventStaleLockRemoved), "count", n,
			"repository", plan.Repository, "why", why, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// deferLockCheck leaves the check for a stale lock to the next backup of
// the plan.
func deferLockCheck(cfg *config.Config, plan *config.Plan, log *slog.Logger, why string) {
	if err := state.MarkLockCheck(cfg.Settings.StateDir, plan.Name); err != nil {
		log.Warn("cannot note that the repository may hold a stale lock of this host; remove it with restic unlock if a manual restic check is refused", "err", err)
		return
	}
	log.Info("the check for a restic lock left behind is left to the next backup of the plan", "repository", plan.Repository, "why", why)
}

// RemoveLeftovers deletes, for every plan it can lock, the snapshots left by
// jobs that are not running (a crash, a power cut, a kill) and that
// keep_snapshots does not keep. lock takes a plan's lock without waiting and
// returns its release, or an error when a job of the plan runs elsewhere:
// then the plan is skipped. It logs each snapshot it removes.
func RemoveLeftovers(ctx context.Context, cfg *config.Config, log *slog.Logger, now time.Time, loc *time.Location, lock func(plan string) (func(), error)) error {
	var errs []error
	for _, name := range cfg.PlanNames() {
		unlock, err := lock(name)
		if err != nil {
			log.Info("leftover check skipped: a job of the plan is running", "plan", name, "err", err)
			continue
		}
		err = RecoverPlan(ctx, cfg, cfg.Plans[name], log.With("plan", name), now, loc)
		unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("plan %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

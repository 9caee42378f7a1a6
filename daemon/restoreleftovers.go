package daemon

import (
	"context"
	"log/slog"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/restore"
)

// recordRestore keeps what running restore job id has made in its record
// and writes the state file before it returns: the restore makes the thing
// only then (or has just made it), so a daemon killed at any point leaves a
// record of it.
func (q *Queue) recordRestore(id uint32, m restore.Made) {
	q.mu.Lock()
	defer q.mu.Unlock()
	j, ok := q.jobs[id]
	if !ok || j.State != StateRunning {
		return
	}
	j.RestoreMade = m.Clone()
	q.persistLocked()
}

// interruptedRestores are the restore jobs of the history that were running
// when an earlier daemon stopped or died and whose leftovers have not been
// looked at yet: their error is still exactly InterruptedError.
func (q *Queue) interruptedRestores() []Job {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []Job
	for _, j := range q.history {
		if j.Kind == KindRestore && j.Error == InterruptedError && !j.StartedAt.IsZero() {
			out = append(out, j.copy())
		}
	}
	return out
}

// amendError replaces the error of finished job id and writes the state
// file.
func (q *Queue) amendError(id uint32, msg string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, j := range q.history {
		if j.ID == id {
			j.Error = msg
			q.persistLocked()
			return
		}
	}
}

// cleanUpInterruptedRestores removes what restores that were running when an
// earlier daemon died left (restore.Interrupted: their staging directories,
// a half-restored subvolume the job created), removes the stale restic
// locks this host left in their plans' repositories, and writes into each
// job's error what state the restore left things in. A plan another
// process holds (a foreground backup) is skipped, its jobs kept for the
// next start.
func (d *Daemon) cleanUpInterruptedRestores(ctx context.Context, cfg *config.Config, lock func(plan string) (func(), error)) {
	unlocked := map[string]bool{}
	for _, j := range d.queue.interruptedRestores() {
		log := d.log.With("plan", j.Plan, "job", j.ID, "kind", j.Kind)
		plan := cfg.Plans[j.Plan]
		unlock := func() {}
		if plan != nil {
			var err error
			if unlock, err = lock(j.Plan); err != nil {
				log.Warn("the leftovers of the interrupted restore are looked at next time: a job of the plan is running", "err", err)
				continue
			}
		}
		mode := j.RestoreMode
		if mode == "" {
			mode = restore.IntoDirectory
		}
		in := restore.Interrupted{ID: j.ID, Plan: plan, Target: j.Target, Mode: mode, Made: j.RestoreMade, Logger: log}
		msg := oneLine(InterruptedError + "; " + in.CleanUp())
		log.Warn("restore interrupted: the daemon stopped while it ran", "err", msg)
		d.queue.amendError(j.ID, msg)
		if plan != nil && !unlocked[j.Plan] {
			unlocked[j.Plan] = true
			removeStaleLocks(ctx, cfg, plan, log)
		}
		unlock()
	}
}

// removeStaleLocks removes the restic locks this host left in the plan's
// repository whose process is gone (restic, told to stop by the dying
// daemon, may die before it removes its lock).
func removeStaleLocks(ctx context.Context, cfg *config.Config, plan *config.Plan, log *slog.Logger) {
	runner, err := planstore.NewRunner(cfg, plan, log)
	if err == nil {
		var n int
		n, err = runner.RemoveStaleLocks(ctx)
		if n > 0 {
			log.Warn("stale restic locks of this host removed", journal.Event(journal.EventStaleLockRemoved), "count", n, "repository", plan.Repository)
		}
	}
	if err != nil {
		log.Error("cannot remove the stale restic locks of the interrupted restore", "repository", plan.Repository, "err", err)
	}
}

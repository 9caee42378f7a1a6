package daemon

import (
	"context"
	"encoding/json"
	"log/slog"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/daemon/restore"
)

// cleanUpInterruptedRestores removes what restores that were running when an
// earlier daemon died left (restore.Interrupted: their staging directories,
// a half-restored subvolume the job created), removes the stale restic
// locks this host left in their plans' repositories, and writes into each
// job's error what state the restore left things in. A plan another
// process holds (a foreground backup) is skipped, its jobs kept for the
// next start.
func (d *Daemon) cleanUpInterruptedRestores(ctx context.Context, cfg *config.Config, lock func(plan string) (func(), error)) {
	unlocked := map[string]bool{}
	for _, j := range d.queue.InterruptedRestores() {
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
		in := restore.Interrupted{ID: j.ID, Plan: plan, Target: j.Target, Mode: mode, Logger: log}
		if len(j.RestoreMade) > 0 {
			if err := json.Unmarshal(j.RestoreMade, &in.Made); err != nil {
				log.Error("the record of what the restore made cannot be read; what it names is left where it is", "err", err)
			}
		}
		msg := oneLine(queue.InterruptedError + "; " + in.CleanUp())
		log.Warn("restore interrupted: the daemon stopped while it ran", "err", msg)
		d.queue.AmendError(j.ID, msg)
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

package backup

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/state"
	"github.com/subvault/subvault/restic"
)

// RunOnce runs one backup of the plan outside the daemon (for `subvault run
// backup`, scripts and timers): it takes the plan's lock (so it never runs
// beside the daemon's backup of the same plan), a job id from the state
// directory, removes the plan's leftover snapshots, then runs the job.
func RunOnce(ctx context.Context, cfg *config.Config, planName string, log *slog.Logger, onStatus func(restic.BackupStatus)) (Result, uint32, error) {
	plan, ok := cfg.Plans[planName]
	if !ok {
		return Result{Result: ResultFailed}, 0, fmt.Errorf("no plan %q in %s (plans: %v)", planName, cfg.File, cfg.PlanNames())
	}
	dir := cfg.Settings.StateDir
	if err := state.EnsureDir(dir); err != nil {
		return Result{Result: ResultFailed}, 0, err
	}
	lock, err := state.LockPlan(dir, planName)
	if err != nil {
		return Result{Result: ResultFailed}, 0, err
	}
	defer lock.Unlock()
	id, err := state.NextJobID(dir)
	if err != nil {
		return Result{Result: ResultFailed}, 0, err
	}
	planLog := log.With("plan", planName)
	if err := RecoverPlan(ctx, cfg, plan, planLog, time.Now(), time.Local); err != nil {
		planLog.Warn("cannot clean up after an earlier job; the backup goes on", "err", err)
	}
	// The plan's timeout bounds the backup (planstore.JobContext) as the
	// daemon's jobs are bounded.
	ctx, cancel := planstore.JobContext(ctx, plan)
	defer cancel()
	job := &Job{ID: id, Config: cfg, Plan: plan, Logger: log, OnStatus: onStatus}
	res, err := job.Run(ctx)
	return res, id, err
}

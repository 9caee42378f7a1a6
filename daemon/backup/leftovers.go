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
)

// RecoverPlan cleans up after a job of the plan that died: it deletes the
// leftover snapshots keep_snapshots does not keep and, when there were any (a
// sign that a job died mid-way), removes the stale restic locks this host
// left in the plan's repository. The caller holds the plan's lock.
func RecoverPlan(ctx context.Context, cfg *config.Config, plan *config.Plan, log *slog.Logger, now time.Time, loc *time.Location) error {
	before, err := planstore.Snapshots(plan)
	if err != nil {
		return err
	}
	kept, err := planstore.ApplyKeepSnapshots(plan, log, now, loc, nil)
	removed := len(before) - len(kept)
	if removed <= 0 || err != nil {
		return err
	}
	log.Warn("leftover snapshots removed", journal.Event(journal.EventLeftoverSnapshotsRemoved), "count", removed)
	runner, err := planstore.NewRunner(cfg, plan, log)
	if err != nil {
		return err
	}
	n, err := runner.RemoveStaleLocks(ctx)
	if err != nil {
		return fmt.Errorf("cannot remove stale restic locks: %w", err)
	}
	if n > 0 {
		log.Warn("stale restic locks of this host removed", journal.Event(journal.EventStaleLockRemoved), "count", n, "repository", plan.Repository)
	}
	return nil
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

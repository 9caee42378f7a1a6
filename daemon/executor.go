package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/subvault/subvault/daemon/backup"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/maintenance"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/daemon/restore"
	"github.com/subvault/subvault/daemon/state"
	"github.com/subvault/subvault/restic"
)

// executor runs the queue's jobs, each with the configuration in force
// when it starts, by handing it to its feature package.
type executor struct {
	config    func() *config.Config
	log       *slog.Logger
	inhibitor Inhibitor
	// recordRestore keeps what a running restore has made in its job's
	// record (queue.Queue.RecordRestore).
	recordRestore func(id uint32, made json.RawMessage)
}

func (e *executor) Execute(ctx context.Context, job queue.Job, progress func(queue.Progress)) (queue.Outcome, error) {
	cfg := e.config()
	plan, ok := cfg.Plans[job.Plan]
	if !ok {
		return queue.Outcome{}, fmt.Errorf("plan %s is no longer in the configuration", job.Plan)
	}
	log := e.log.With("plan", job.Plan, "job", job.ID, "kind", job.Kind)

	if job.Kind == queue.KindCopy {
		// A copy touches no snapshot, so it takes no plan lock: a backup
		// of the plan may run beside it (the queue runs one copy of a plan
		// at a time).
		res, err := maintenance.Copy(ctx, cfg, plan, job.CopyArchives, log)
		return queue.Outcome{Summary: res.Summary(plan)}, err
	}

	// The plan's lock keeps a foreground `subvault run backup` of the plan
	// from running beside this job.
	lock, err := state.LockPlan(cfg.Settings.StateDir, job.Plan)
	if err != nil {
		return queue.Outcome{}, err
	}
	defer lock.Unlock()

	if cfg.Settings.InhibitSleep && e.inhibitor != nil {
		release, err := e.inhibitor.Inhibit(fmt.Sprintf("subvault: %s of %s", job.Kind.Doing(), job.Plan))
		if err != nil {
			log.Warn("cannot hold a sleep inhibitor; the machine may suspend during the job", "err", err)
		} else {
			defer release()
		}
	}

	switch job.Kind {
	case queue.KindBackup:
		return e.backup(ctx, cfg, plan, job, log, progress)
	case queue.KindPrune:
		_, err := maintenance.Prune(ctx, cfg, plan, log, time.Now())
		return queue.Outcome{}, err
	case queue.KindCheck:
		return queue.Outcome{}, maintenance.Check(ctx, cfg, plan, log)
	case queue.KindRestore:
		mode := job.RestoreMode
		if mode == "" {
			mode = restore.IntoDirectory
		}
		r := &restore.Job{
			ID: job.ID, Config: cfg, Plan: plan, Logger: e.log,
			Archive: job.Archive, Target: job.Target, Include: job.Include, Mode: mode, Verify: job.Verify,
			OnStatus: func(s restic.RestoreStatus) {
				progress(queue.Progress{Fraction: s.PercentDone, BytesDone: s.BytesRestored, BytesTotal: s.TotalBytes,
					FilesDone: s.FilesRestored, FilesTotal: s.TotalFiles})
			},
		}
		if e.recordRestore != nil {
			r.OnMade = func(m restore.Made) {
				made, err := json.Marshal(m)
				if err != nil { // strings and slices of them: it cannot fail
					log.Error("cannot record what the restore made", "err", err)
					return
				}
				e.recordRestore(job.ID, made)
			}
		}
		res, err := r.Run(ctx)
		return queue.Outcome{Summary: res.Summary}, err
	}
	return queue.Outcome{}, fmt.Errorf("unknown job kind %q", job.Kind)
}

func (e *executor) backup(ctx context.Context, cfg *config.Config, plan *config.Plan, job queue.Job, log *slog.Logger, progress func(queue.Progress)) (queue.Outcome, error) {
	b := &backup.Job{
		ID: job.ID, Config: cfg, Plan: plan, Logger: e.log,
		OnStatus: func(s restic.BackupStatus) {
			progress(queue.Progress{
				Fraction: s.PercentDone, BytesDone: s.BytesDone, BytesTotal: s.TotalBytes,
				FilesDone: s.FilesDone, FilesTotal: s.TotalFiles, SecondsRemaining: s.SecondsRemaining,
				CurrentFiles: s.CurrentFiles,
			})
		},
	}
	res, err := b.Run(ctx)
	out := queue.Outcome{ArchiveID: res.ArchiveID}
	if res.ArchiveID != "" && len(plan.CopyTo) > 0 && ctx.Err() == nil {
		// Done or partial: the new archive goes to copy_to, as a job of
		// its own, whose failure is not the backup's.
		out.Then = []queue.Order{{Kind: queue.KindCopy, Plan: plan.Name, Copy: queue.CopyArgs{CopyArchives: []string{res.ArchiveID}}}}
	}
	if s := res.Backup.Summary; s != nil {
		out.Summary = s.Raw
	}
	if res.Result == backup.ResultPartial {
		// The job's Error goes to every user on the bus, and file names are
		// not for all of them: it counts the files, and the backup's own
		// log line ("backup partial", with the job's id) names them.
		var partial *restic.PartialError
		if errors.As(err, &partial) {
			return out, fmt.Errorf("partial backup, archive %s exists: restic could not read %d file(s); the daemon's log names them (subvault logs --job %d)",
				res.ArchiveID, len(partial.Files), job.ID)
		}
		return out, fmt.Errorf("partial backup, archive %s exists: %w", res.ArchiveID, err)
	}
	if err != nil && res.Result == backup.ResultCanceled {
		return out, errors.New("canceled")
	}
	return out, err
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

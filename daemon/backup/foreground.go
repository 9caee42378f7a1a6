package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/subvault/subvault/api/contract"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/state"
	"github.com/subvault/subvault/restic"
)

// RunOnce runs one backup of the plan outside the daemon (for `subvault run
// backup`, scripts and timers): it takes the plan's lock (so it never runs
// beside the daemon's backup of the same plan), a job id from the state
// directory, removes the plan's leftover snapshots, then runs the job.
// onStart, when not nil, is called with the job's id once it has one,
// before anything of the backup runs (the start of its pings).
func RunOnce(ctx context.Context, cfg *config.Config, planName string, log *slog.Logger, onStart func(id uint32), onStatus func(restic.BackupStatus)) (Result, uint32, error) {
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
	rec := recordStart(dir, id, planName, planLog)
	if onStart != nil {
		onStart(id)
	}
	if err := RecoverPlan(ctx, cfg, plan, planLog, time.Now(), time.Local); err != nil {
		planLog.Warn("cannot clean up after an earlier job; the backup goes on", "err", err)
	}
	// The plan's timeout bounds the backup (planstore.JobContext) as the
	// daemon's jobs are bounded.
	ctx, cancel := planstore.JobContext(ctx, plan)
	defer cancel()
	job := &Job{ID: id, Config: cfg, Plan: plan, Logger: log, OnStatus: onStatus}
	res, err := job.Run(ctx)
	// The lock goes before the finished record: a daemon that imports the
	// record starts its own queued job of the plan at once, and must not
	// find the plan still locked by this run (docs/daemon.md, foreground
	// runs).
	lock.Unlock()
	rec.finish(res, err)
	return res, id, err
}

// foregroundRecord is this run's record in the daemon's foreground spool
// (state.Spool), so that the daemon's history holds every backup however
// it was started: written when the job starts and when it ends. A record
// that cannot be written is logged and the backup goes on.
type foregroundRecord struct {
	dir string
	rec state.ForegroundRecord
	log *slog.Logger
	ok  bool
}

func recordStart(dir string, id uint32, plan string, log *slog.Logger) *foregroundRecord {
	f := &foregroundRecord{dir: dir, log: log}
	pid, start, boot, err := state.Self()
	if err == nil {
		f.rec = state.ForegroundRecord{ID: id, Kind: contract.KindBackup, Plan: plan, State: contract.StateRunning,
			PID: pid, PIDStart: start, BootID: boot, StartedAt: time.Now()}
		err = state.WriteForegroundRecord(dir, f.rec)
	}
	if err != nil {
		log.Warn("cannot record the job for the daemon's history; the backup goes on, unrecorded", "job", id, "err", err)
		return f
	}
	f.ok = true
	return f
}

// finish records how the job ended, in the words of the daemon's own jobs
// (daemon/executor.go): a partial backup is failed with its archive.
func (f *foregroundRecord) finish(res Result, err error) {
	if !f.ok {
		return
	}
	r := f.rec
	r.State, r.FinishedAt, r.ArchiveID = contract.StateFinished, time.Now(), res.ArchiveID
	if s := res.Backup.Summary; s != nil {
		r.Summary = s.Raw
	}
	switch res.Result {
	case ResultDone:
		r.Result = contract.ResultDone
	case ResultPartial:
		// Every user on the bus sees the error: the files are counted
		// here, and named in the run's own log.
		r.Result = contract.ResultFailed
		r.Error = fmt.Sprintf("partial backup, archive %s exists: %s", res.ArchiveID, errText(err))
		var partial *restic.PartialError
		if errors.As(err, &partial) {
			r.Error = fmt.Sprintf("partial backup, archive %s exists: restic could not read %d file(s); the output of subvault run backup names them",
				res.ArchiveID, len(partial.Files))
		}
	case ResultCanceled:
		r.Result, r.Error = contract.ResultCanceled, "canceled: subvault run was interrupted (SIGINT or SIGTERM)"
	case ResultStalled:
		r.Result, r.Error = contract.ResultStalled, errText(err)
	default:
		r.Result, r.Error = contract.ResultFailed, errText(err)
	}
	if len(r.Error) > state.MaxRecordText {
		r.Error = strings.ToValidUTF8(r.Error[:state.MaxRecordText-3], "") + "..."
	}
	if err := state.WriteForegroundRecord(f.dir, r); err != nil {
		f.log.Warn("cannot record the job's result for the daemon's history; it will show as interrupted", "job", r.ID, "err", err)
	}
}

func errText(err error) string {
	if err == nil {
		return "failed"
	}
	return strings.ToValidUTF8(strings.Join(strings.Fields(err.Error()), " "), "\uFFFD")
}

package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/subvault/subvault/daemon/backup"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/maintenance"
	"github.com/subvault/subvault/daemon/planstore"
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
	// conditions is the machine's power and network now; postponed
	// records why a scheduled job is postponed, before it ends (the
	// daemon's).
	conditions func() ConditionState
	postponed  func(job uint32, reason waitReason, text string)
	// job is the queue's job now (queue.Queue.Job): who asked for it may
	// have grown while it ran.
	job func(id uint32) (queue.Job, bool)
}

// Execute runs job. A job only the schedule asked for (job.ScheduledOnly:
// nobody is there to see it) is postponed instead: before it starts, when
// the machine is on battery or on a metered connection and the plan says
// skip; after it ran, when restic found the repository unreachable. A job
// a caller asked for runs whatever the conditions, and fails when the
// repository is unreachable: its caller is there to see why
// (docs/laptops.md).
func (e *executor) Execute(ctx context.Context, job queue.Job, progress func(queue.Progress)) (queue.Outcome, error) {
	cfg := e.config()
	plan, ok := cfg.Plans[job.Plan]
	if !ok {
		return queue.Outcome{}, fmt.Errorf("plan %s is no longer in the configuration", job.Plan)
	}
	// A send is never postponed: it needs no network, and one that did not
	// run is due and starts again with the next backup, its schedule or
	// its disk plugged in.
	postpone := job.ScheduledOnly() && job.Kind != queue.KindRestore && job.Kind != queue.KindSend && e.postponed != nil
	if postpone && e.conditions != nil {
		if reason, why := blockedBy(plan, job.Kind, e.conditions()); reason != 0 {
			e.postponed(job.ID, reason, why.Error())
			return queue.Outcome{}, queue.Postpone(why)
		}
	}
	w := &waitingProgress{progress: progress, stallTimeout: plan.StallTimeout}
	ctx = restic.WithIdleWatch(ctx, waitingAfter, w.idle)
	if plan.OnStall == config.OnStallReport && plan.StallTimeout > 0 {
		// No restic of the job is stopped for a stall: the job counts as
		// stalled while its restic makes no progress for stall_timeout,
		// and goes on (docs/configuration.md, on_stall).
		ctx = restic.WithIdleWatch(restic.WithoutStallStop(ctx), plan.StallTimeout, w.stalled)
	}
	out, err := e.execute(ctx, cfg, plan, job, w.report)
	if postpone && e.job != nil {
		// A caller who asked for the job while it ran is there to see it
		// fail.
		if now, ok := e.job(job.ID); ok {
			postpone = now.ScheduledOnly()
		}
	}
	if postpone && err != nil && ctx.Err() == nil && errors.Is(err, restic.ErrUnreachable) {
		err = fmt.Errorf("waiting for the network: %w", err)
		e.postponed(job.ID, waitNetwork, oneLine(err.Error()))
		return out, queue.Postpone(err)
	}
	return out, err
}

func (e *executor) execute(ctx context.Context, cfg *config.Config, plan *config.Plan, job queue.Job, progress func(queue.Progress)) (queue.Outcome, error) {
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

	// The plan's timeout bounds every job of the plan; its stall_timeout
	// is in each restic runner the job makes (planstore.NewRunner).
	ctx, cancel := planstore.JobContext(ctx, plan)
	defer cancel()
	out, err := e.run(ctx, cfg, plan, job, log, progress)
	switch {
	case err == nil:
	case planstore.TimedOut(ctx) != nil:
		if job.Kind != queue.KindBackup { // a backup says it itself
			// What the job left (a restore's target) is in err.
			err = fmt.Errorf("%s %w; then: %w", job.Kind, planstore.TimedOut(ctx), err)
		}
	case ctx.Err() == nil && errors.Is(err, restic.ErrStalled):
		err = queue.Stalled(err)
	}
	return out, err
}

func (e *executor) run(ctx context.Context, cfg *config.Config, plan *config.Plan, job queue.Job, log *slog.Logger, progress func(queue.Progress)) (queue.Outcome, error) {
	switch job.Kind {
	case queue.KindBackup:
		return e.backup(ctx, cfg, plan, job, log, progress)
	case queue.KindPrune:
		_, err := maintenance.Prune(ctx, cfg, plan, log, time.Now())
		return queue.Outcome{}, err
	case queue.KindCheck:
		return queue.Outcome{}, maintenance.Check(ctx, cfg, plan, log)
	case queue.KindSend:
		return e.send(ctx, cfg, plan, job, progress)
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
		ID: job.ID, Config: cfg, Plan: plan, Logger: e.log, Postponable: job.ScheduledOnly(),
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
	if res.ArchiveID != "" && len(res.Snapshots) > 0 && plan.SendSpec == nil && ctx.Err() == nil {
		// The snapshots it made stay (keep_snapshots keeps the newest of
		// a plan with send_to): each target gets them in a send job of its
		// own, whose failure or skip is not the backup's.
		out.Then = append(out.Then, sendOrders(plan, "", -1)...)
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
	if res.Result == backup.ResultStalled {
		return out, queue.Stalled(err)
	}
	return out, err
}

// waitingAfter is how long a job's restic may make no progress (by the
// measure of its stall_timeout: restic/progress.go) before the job counts
// as waiting on its repository and gives up its place among
// max_concurrent_jobs to jobs on other repositories (daemon/queue). A
// backup that merely thinks, scans or waits for a slow disk makes progress
// by that measure; restic retrying a server that hangs or went away makes
// none. Half a minute lets a healthy plan start long before any sensible
// stall_timeout (10 minutes by default) ends the stuck job, and rarely
// counts a job that only paused. A retry line alone does not make a job
// wait: restic retries a server's passing error and goes on a second
// later.
const waitingAfter = 30 * time.Second

// waitingProgress is a job's progress with whether it waits on its
// repository and whether it counts as stalled: restic's status lines and
// its idle watches each report a part, and the queue hears all in one
// Progress, in the order they happened.
type waitingProgress struct {
	mu           sync.Mutex // held while the queue is told, so reports keep their order
	last         queue.Progress
	progress     func(queue.Progress)
	stallTimeout time.Duration // the plan's
}

func (w *waitingProgress) report(p queue.Progress) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p.WaitingSince, p.Waiting = w.last.WaitingSince, w.last.Waiting
	p.StalledSince = w.last.StalledSince
	p.StallTimeout = w.stallTimeout
	w.last = p
	w.progress(p)
}

// stalled is the report of the idle watch of a plan whose stall only
// marks the job (on_stall: report).
func (w *waitingProgress) stalled(i restic.Idle) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.last
	p.StalledSince, p.StallTimeout = i.Since, w.stallTimeout
	w.last = p
	w.progress(p)
}

func (w *waitingProgress) idle(i restic.Idle) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.last
	p.WaitingSince, p.Waiting = i.Since, ""
	p.StallTimeout = w.stallTimeout
	switch {
	case i.Since.IsZero():
	case i.Retrying:
		p.Waiting = "restic retries the repository"
	default:
		p.Waiting = "restic reads and computes nothing"
	}
	w.last = p
	w.progress(p)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

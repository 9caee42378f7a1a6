// Package backup runs one backup of a plan: hooks, read-only snapshots of
// every subvolume, restic in a private mount namespace in which each snapshot
// is mounted over its subvolume's path, then the snapshots deleted or kept
// per the plan's keep_snapshots. It also removes the snapshots a crashed job
// left behind.
package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/mountns"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/state"
	"github.com/subvault/subvault/restic"
)

// Results a job ends with, as the D-Bus API and the hooks' SUBVAULT_RESULT
// name them. ResultPartial is a backup whose archive exists but lacks files
// restic could not read. ResultStalled is a backup whose restic made no
// progress for the plan's stall_timeout (one that ran past its timeout is
// failed).
const (
	ResultDone     = "done"
	ResultPartial  = "partial"
	ResultFailed   = "failed"
	ResultCanceled = "canceled"
	// ResultPostponed: a Postponable backup found the repository
	// unreachable (restic.ErrUnreachable). It runs no hook: it neither
	// failed nor succeeded, and a laptop offline for a day would run
	// on_failure at every retry.
	ResultPostponed = "postponed"
	ResultStalled   = "stalled"
)

// Job is one backup of one plan.
type Job struct {
	ID     uint32
	Config *config.Config
	Plan   *config.Plan
	Logger *slog.Logger
	// OnStatus gets restic's progress, about ten times a second.
	OnStatus func(restic.BackupStatus)
	// Now and Location are the clock and time zone; snapshot names are UTC,
	// retention buckets are in Location (restic's own --keep-* do the same).
	Now      func() time.Time
	Location *time.Location
	// Postponable is set for a backup only the schedule asked for: an
	// unreachable repository postpones it (ResultPostponed) instead of
	// failing it (docs/laptops.md).
	Postponable bool
}

// Result is what a backup made.
type Result struct {
	Result    string // ResultDone, ResultPartial, ResultFailed, ResultCanceled, ResultStalled
	ArchiveID string
	Backup    restic.BackupResult
	// Snapshots are the local snapshots this job made (all gone unless
	// keep_snapshots kept them).
	Snapshots []btrfs.Snapshot
	// Kept are the plan's local snapshots that keep_snapshots keeps now.
	Kept []btrfs.Snapshot
}

// Run runs the backup. It returns the result and, unless the result is
// ResultDone, an error that says in one line what went wrong and what to do.
// A partial backup returns its archive id and an error naming the files that
// could not be read. Whatever happens, the snapshots it made are deleted or
// kept per keep_snapshots before it returns, even when ctx is canceled.
func (j *Job) Run(ctx context.Context) (Result, error) {
	if j.Now == nil {
		j.Now = time.Now
	}
	if j.Location == nil {
		j.Location = time.Local
	}
	if j.Logger == nil {
		j.Logger = slog.Default()
	}
	log := j.Logger.With("plan", j.Plan.Name, "job", j.ID, "kind", "backup")
	res := Result{Result: ResultFailed}

	runner, err := planstore.NewRunner(j.Config, j.Plan, log)
	if err == nil {
		err = j.prepare(ctx, runner)
	}
	if err != nil {
		return j.finish(ctx, log, res, err)
	}
	if state.LockCheckDue(j.Config.Settings.StateDir, j.Plan.Name) {
		// An earlier backup could not make sure it left no lock. A cancel
		// of this job ends the check.
		_ = removeStaleLocks(ctx, j.Config, j.Plan, runner, log, lockCheckBound, "left by an earlier backup")
		if err := ctx.Err(); err != nil {
			return j.finish(ctx, log, res, err)
		}
	}

	hookEnv := j.hookEnv()
	if err := runHooks(ctx, log, "before_snapshot", j.Plan.Hooks.BeforeSnapshot, hookEnv); err != nil {
		return j.finish(ctx, log, res, fmt.Errorf("nothing was snapshotted: %w", err))
	}
	var opened []*os.File
	res.Snapshots, opened, err = j.snapshot(log)
	defer func() {
		for _, f := range opened {
			f.Close() //nolint:errcheck,gosec // a directory
		}
	}()
	// after_snapshot runs whenever before_snapshot did: whatever it
	// quiesced must be released, even if a snapshot failed.
	if hookErr := runHooks(context.WithoutCancel(ctx), log, "after_snapshot", j.Plan.Hooks.AfterSnapshot, append(hookEnv, snapshotsEnv(res.Snapshots))); hookErr != nil {
		// The snapshots are consistent already; the backup goes on, and
		// the failure is logged for the administrator.
		log.Warn("after_snapshot hook failed; the backup goes on from the snapshots already taken", "err", hookErr)
	}
	if err != nil {
		return j.finish(ctx, log, res, err)
	}

	res.Backup, err = j.backup(ctx, log, runner, res.Snapshots, opened)
	res.ArchiveID = res.Backup.SnapshotID
	if err != nil && res.ArchiveID == "" {
		j.releaseLock(ctx, log, runner, err)
	}
	return j.finish(ctx, log, res, err)
}

// releaseLock removes the lock restic may have left when the backup ended
// without an archive: restic that fails on its own or is interrupted while
// it takes its lock, or that was killed (it did not end on SIGINT: stopped,
// or waiting on its server), leaves it, and a manual "restic check" or
// "prune" is then refused until someone unlocks. Only this host's locks of
// processes that are gone are removed (restic.RemoveStaleLocks). The check
// is bounded, shortly after a cancel so that the job ends within seconds;
// what it cannot finish is left to the next backup of the plan.
func (j *Job) releaseLock(ctx context.Context, log *slog.Logger, runner *restic.Runner, err error) {
	var rerr *restic.Error
	switch {
	case !errors.As(err, &rerr):
		// restic did not run.
	case errors.Is(err, restic.ErrWrongPassword), errors.Is(err, restic.ErrNoRepository), errors.Is(err, restic.ErrLocked):
		// restic took no lock.
	case errors.Is(err, restic.ErrUnreachable):
		// It may have lost the repository mid-way; asking it now would
		// only wait on it again.
		deferLockCheck(j.Config, j.Plan, log, "the repository was unreachable")
	default:
		bound := lockCheckBound
		switch {
		case planstore.TimedOut(ctx) != nil, ctx.Err() == nil && errors.Is(err, restic.ErrStalled):
			bound = lockCheckBoundStall
		case ctx.Err() != nil || rerr.Killed:
			bound = lockCheckBoundCancel
		}
		// Even when the job was canceled: within the short bound.
		_ = removeStaleLocks(context.WithoutCancel(ctx), j.Config, j.Plan, runner, log, bound, "left by the "+j.Plan.Name+" backup that just ended")
	}
}

// finish classifies the outcome, deletes or keeps the snapshots and runs the
// on_success or on_failure hooks. It runs to the end even when ctx is done.
func (j *Job) finish(ctx context.Context, log *slog.Logger, res Result, err error) (Result, error) {
	canceled := ctx.Err() != nil
	cleanupCtx := context.WithoutCancel(ctx)
	var partial *restic.PartialError
	switch {
	case err == nil:
		res.Result = ResultDone
	case errors.As(err, &partial) && res.ArchiveID != "":
		res.Result = ResultPartial
	case planstore.TimedOut(ctx) != nil:
		res.Result = ResultFailed
		err = fmt.Errorf("backup %w", planstore.TimedOut(ctx))
	case !canceled && errors.Is(err, restic.ErrStalled):
		res.Result = ResultStalled
		err = fmt.Errorf("%w; the backup was stopped (stall_timeout %v of plan %s): see whether the repository's server answers, then back up again", err, j.Plan.StallTimeout, j.Plan.Name)
	case canceled:
		res.Result = ResultCanceled
		err = fmt.Errorf("canceled: %w", err)
	case j.Postponable && errors.Is(err, restic.ErrUnreachable):
		res.Result = ResultPostponed
	default:
		res.Result = ResultFailed
	}

	if res.ArchiveID != "" {
		// The archive exists: the local snapshots follow keep_snapshots.
		kept, cleanupErr := planstore.ApplyKeepSnapshots(j.Config, j.Plan, log, j.Now(), j.Location, nil)
		res.Kept = kept
		if cleanupErr != nil && err == nil {
			err = cleanupErr
			res.Result = ResultFailed
		}
	} else {
		for _, s := range res.Snapshots {
			if delErr := planstore.DeleteSnapshot(j.Plan, s); delErr != nil {
				log.Error("cannot delete the job's snapshot", "snapshot", s.Path, "err", delErr)
				continue
			}
			log.Info("snapshot deleted", journal.Event(journal.EventSnapshotDeleted), "snapshot", s.Path, "why", "the backup did not complete")
		}
	}

	env := j.hookEnv()
	env = append(env, "SUBVAULT_RESULT="+res.Result)
	if err != nil {
		env = append(env, "SUBVAULT_ERROR="+oneLine(err.Error()))
	}
	hooks, key := j.Plan.Hooks.OnSuccess, "on_success"
	if res.Result != ResultDone {
		hooks, key = j.Plan.Hooks.OnFailure, "on_failure"
	}
	if res.Result == ResultPostponed {
		hooks = nil
	}
	if hookErr := runHooks(cleanupCtx, log, key, hooks, env); hookErr != nil {
		log.Warn("hook failed", "hook", key, "err", hookErr)
	}

	switch res.Result {
	case ResultDone:
		attrs := []any{"archive", res.ArchiveID}
		if s := res.Backup.Summary; s != nil {
			attrs = append(attrs, "files_new", s.FilesNew, "files_changed", s.FilesChanged,
				"files_unmodified", s.FilesUnmodified, "data_added", s.DataAdded, "duration", s.TotalDuration)
		}
		log.Info("backup done", attrs...)
	case ResultPartial:
		log.Warn("backup partial", "archive", res.ArchiveID, "err", err)
	case ResultPostponed:
		log.Warn("backup postponed", "err", err)
	default:
		log.Error("backup "+res.Result, "err", err)
	}
	return res, err
}

// prepare checks what can be checked before anything is taken: every
// subvolume is one, the snapshot directories and restic's cache exist. It does
// not open the repository: that costs restic's key derivation (half a second)
// on every backup, and the backup itself says as clearly what is wrong.
func (j *Job) prepare(ctx context.Context, runner *restic.Runner) error {
	for _, sv := range j.Plan.Subvolumes {
		f, _, err := planstore.OpenSubvolume(j.Plan, sv)
		if err != nil {
			return fmt.Errorf("cannot back up %s: %w", sv, err)
		}
		f.Close() //nolint:errcheck,gosec // a directory
		dir, err := planstore.OpenSnapshotDir(j.Plan, sv, true)
		if err != nil {
			return fmt.Errorf("cannot back up %s: %w", sv, err)
		}
		dir.Close() //nolint:errcheck,gosec // a directory
	}
	repo := j.Config.Repositories[j.Plan.Repository]
	// The cache directory must exist before the snapshots are taken: it is
	// bound back into the namespace from the host and must have a place in
	// the snapshot that covers it.
	if err := os.MkdirAll(repo.CacheDir, 0o700); err != nil {
		return fmt.Errorf("cannot create restic's cache directory: %w", err)
	}
	// A local repository that init: true must create is created now, before
	// the snapshots, so that it has a place in them (it is bound back into
	// the namespace when a subvolume covers it). Any other missing
	// repository is created when the backup finds it missing.
	if p := planstore.LocalRepositoryPath(repo.URL); repo.Init && p != "" {
		if _, err := os.Stat(filepath.Join(p, "config")); errors.Is(err, os.ErrNotExist) {
			j.Logger.Info("creating repository", "plan", j.Plan.Name, "repository", j.Plan.Repository)
			return runner.Init(ctx)
		}
	}
	return nil
}

// snapshot takes a read-only snapshot of every subvolume, one right after
// the other, all named with the same second, and returns them with each
// opened (planstore.TakeSnapshot): the backup mounts them from these descriptors.
// On an error it deletes the ones it made.
func (j *Job) snapshot(log *slog.Logger) ([]btrfs.Snapshot, []*os.File, error) {
	at := j.Now().UTC().Truncate(time.Second)
	var made []btrfs.Snapshot
	var opened []*os.File
	for _, sv := range j.Plan.Subvolumes {
		s := btrfs.Snapshot{Plan: j.Plan.Name, Time: at, JobID: j.ID, Subvolume: sv}
		f, err := planstore.TakeSnapshot(j.Plan, sv, &s)
		if err != nil {
			for i, m := range made {
				opened[i].Close() //nolint:errcheck,gosec // a directory
				if delErr := planstore.DeleteSnapshot(j.Plan, m); delErr != nil {
					log.Error("cannot delete snapshot", "snapshot", m.Path, "err", delErr)
				}
			}
			if errors.Is(err, unix.EROFS) {
				return nil, nil, fmt.Errorf("%w; if the filesystem itself went read-only, btrfs hit an error: read \"dmesg\" and docs/recovery.md before writing to it again", err)
			}
			return nil, nil, err
		}
		log.Info("snapshot created", journal.Event(journal.EventSnapshotCreated), "snapshot", s.Path, "subvolume", sv)
		made = append(made, s)
		opened = append(opened, f)
	}
	return made, opened, nil
}

// backup runs restic in a private mount namespace in which every snapshot
// is mounted over its subvolume.
//
// Each snapshot is mounted from its descriptor (opened is parallel to
// snaps), not its path: the snapshot directory's parent may be a user's.
func (j *Job) backup(ctx context.Context, log *slog.Logger, runner *restic.Runner, snaps []btrfs.Snapshot, opened []*os.File) (restic.BackupResult, error) {
	repo := j.Config.Repositories[j.Plan.Repository]
	opts := mountns.Options{KeepHost: keepHostPaths(repo, j.Plan.Subvolumes), Logger: log}
	for i, s := range snaps {
		opts.Binds = append(opts.Binds, mountns.Bind{Source: s.Path, Dir: opened[i], Target: s.Subvolume})
	}
	backupOpts := j.backupOptions(snaps)

	run := func() (restic.BackupResult, error) {
		var result restic.BackupResult
		err := mountns.Run(ctx, opts, func() error {
			var err error
			result, err = runner.Backup(ctx, backupOpts, j.OnStatus)
			return err
		})
		return result, err
	}
	result, err := run()
	if restic.IsNoRepository(err) && repo.Init {
		log.Info("creating repository", "repository", j.Plan.Repository)
		if err := runner.Init(ctx); err != nil {
			return result, err
		}
		result, err = run()
	}
	return result, err
}

func (j *Job) backupOptions(snaps []btrfs.Snapshot) restic.BackupOptions {
	b := j.Plan.Backup
	opts := restic.BackupOptions{
		Paths:   j.Plan.Subvolumes,
		Exclude: append([]string(nil), b.Exclude...),
		// The plan's tag lets prune pick the plan's own archives (restic
		// forget --tag subvault:<plan> --host <this host>), so one plan's
		// retention never thins another's in a shared repository.
		Tags: append([]string{planstore.Tag(j.Plan.Name)}, b.Tags...),
	}
	if b.ExcludeFile != "" {
		opts.ExtraArgs = append(opts.ExtraArgs, "--exclude-file", b.ExcludeFile)
	}
	for _, name := range b.ExcludeIfPresent {
		opts.ExtraArgs = append(opts.ExtraArgs, "--exclude-if-present", name)
	}
	if b.OneFileSystem {
		opts.ExtraArgs = append(opts.ExtraArgs, "--one-file-system")
	}
	opts.ExtraArgs = append(opts.ExtraArgs, b.ExtraArgs...)
	if len(snaps) > 0 {
		// The archive carries the instant the snapshots were taken, not
		// the minutes later when restic read them.
		opts.Time = snaps[0].Time
	}
	opts.Exclude = append(opts.Exclude, planstore.AlwaysExcluded(j.Config, j.Plan)...)
	return opts
}

func (j *Job) hookEnv() []string {
	return []string{
		"SUBVAULT_PLAN=" + j.Plan.Name,
		"SUBVAULT_JOB=" + strconv.FormatUint(uint64(j.ID), 10),
		"SUBVAULT_KIND=backup",
	}
}

func snapshotsEnv(snaps []btrfs.Snapshot) string {
	paths := make([]string, len(snaps))
	for i, s := range snaps {
		paths[i] = s.Path
	}
	return "SUBVAULT_SNAPSHOTS=" + strings.Join(paths, "\n")
}

// keepHostPaths are the paths restic writes to, which must look as on the
// host inside the namespace when a snapshot covers them (a cache, with
// restic's TMPDIR in it, or a local repository under /var while / is backed
// up). Paths no subvolume covers need nothing. /tmp is not one: the archive
// gets the snapshot's /tmp.
func keepHostPaths(repo *config.Repository, subvolumes []string) []string {
	var paths []string
	for _, p := range []string{repo.CacheDir, planstore.LocalRepositoryPath(repo.URL)} {
		if p != "" && coveredBy(p, subvolumes) {
			paths = append(paths, p)
		}
	}
	return paths
}

// coveredBy reports whether path lies strictly below one of dirs.
func coveredBy(path string, dirs []string) bool {
	for _, d := range dirs {
		if d == "/" && path != "/" || strings.HasPrefix(path, d+"/") {
			return true
		}
	}
	return false
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

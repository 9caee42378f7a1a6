// Package maintenance runs the jobs that look after a plan's repository
// rather than add to it: prune (the plan's retention with restic forget
// --prune, then its keep_snapshots on the local snapshots) and check
// (restic check).
//
// Both build their restic runner with planstore.NewRunner, so credentials,
// environment files and the cache are handled as in a backup, and both stop
// restic with SIGINT when ctx ends (restic then removes its lock). The
// caller holds the plan's lock: neither must run beside a backup of the
// same plan.
package maintenance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/restic"
)

// Kinds of job, as the "kind" log attribute names them.
const (
	KindPrune = "prune"
	KindCheck = "check"
)

// Events of this package beyond the job-* events of package journal
// (EventKey "event"). They have no MESSAGE_ID yet: journal's list must
// gain them.
const (
	// EventArchiveForgotten is logged for each archive a prune removes.
	EventArchiveForgotten = journal.EventArchiveForgotten
	// EventRepositoryDamaged is logged when a check finds errors, before
	// the job-failed line.
	EventRepositoryDamaged = journal.EventRepositoryDamaged
)

// GroupBy is restic forget's --group-by for a prune. The archives are first
// restricted to the plan's tag and this host, so one group is one plan on
// this host, and the plan's retention counts all of its archives together:
// neither a change of the plan's own tags (backup.tags) nor of its
// subvolumes starts a new group that the old archives would be left in,
// each group keeping its own last N forever. The host filter keeps a prune
// off the archives of a same-named plan of another machine sharing the
// repository (and off this machine's archives from before a rename, which
// are then left for a person to forget).
const GroupBy = "host"

// ErrKeepsNothing is returned by Prune for a plan whose retention keeps no
// archive: restic would refuse, or forget every archive of the plan.
var ErrKeepsNothing = errors.New("retention keeps no archive")

// ErrAppendOnly is returned by Prune for a plan whose repository is
// append_only: this host never forgets or prunes there.
var ErrAppendOnly = errors.New("repository is append-only")

// AppendOnlyRefusal is why a prune of plan on an append-only repository is
// refused, and what to do instead; it wraps ErrAppendOnly.
func AppendOnlyRefusal(plan *config.Plan) error {
	return fmt.Errorf("plan %s: %w (append_only: true on repository %s): this host never forgets or prunes there; retention belongs to the server's owner, who prunes on the server (keep_snapshots still applies to the local snapshots after each backup)",
		plan.Name, ErrAppendOnly, plan.Repository)
}

// ErrRepositoryDamaged is returned (wrapped in a *DamagedError) by Check when
// restic check finds errors in the repository.
var ErrRepositoryDamaged = errors.New("repository has errors")

// troubleshooting is restic's guide to a damaged repository; restic 0.16+
// prints the same address after a failed check.
const troubleshooting = "https://restic.readthedocs.io/en/stable/077_troubleshooting.html"

// PruneResult is what a prune did.
type PruneResult struct {
	// KeptArchives and RemovedArchives are the ids of the plan's archives
	// restic forget kept and removed, as its --json output lists them.
	KeptArchives    []string
	RemovedArchives []string
	// PruneOutput is restic's prune report (text).
	PruneOutput string
	// KeptSnapshots and RemovedSnapshots are the plan's local snapshots
	// keep_snapshots kept and deleted.
	KeptSnapshots    []btrfs.Snapshot
	RemovedSnapshots []btrfs.Snapshot
}

// ForgetOptions is the `restic forget --prune` of a prune of plan on the
// host named host ("" for every host): the plan's retention, its archives
// only (those tagged planstore.Tag), grouped by GroupBy.
func ForgetOptions(plan *config.Plan, host string) restic.ForgetOptions {
	r := plan.Retention
	opts := restic.ForgetOptions{
		KeepLast:    r.Last,
		KeepHourly:  r.Hourly,
		KeepDaily:   r.Daily,
		KeepWeekly:  r.Weekly,
		KeepMonthly: r.Monthly,
		KeepYearly:  r.Yearly,
		KeepWithin:  r.Within,
		Filter:      restic.SnapshotFilter{Tags: []string{planstore.Tag(plan.Name)}},
		GroupBy:     GroupBy,
		Prune:       true,
	}
	if host != "" {
		opts.Filter.Hosts = []string{host}
	}
	return opts
}

// Prune applies the plan's retention to its archives with `restic forget
// --prune`, then the plan's keep_snapshots to its local snapshots (at now,
// in the local time zone, as a backup does).
//
// Only the archives tagged with the plan's tag and made by this host are
// considered: another plan's, another host's and untagged archives in the
// same repository are never touched. within is counted back from the
// plan's newest archive, not from now (restic's --keep-within).
//
// A retention that keeps nothing is refused with ErrKeepsNothing, and a
// plan whose repository is append_only with ErrAppendOnly, before anything
// is deleted, local snapshots included. Archives restic reports removed
// but that are still listed afterwards (a server that refused the
// deletes) fail the prune with restic.ErrDeleteRefused. keep_snapshots is applied
// even when restic failed (the local snapshots do not depend on the
// repository, and must not fill the disk while it is unreachable), but not
// once ctx is done: a canceled prune stops.
func Prune(ctx context.Context, cfg *config.Config, plan *config.Plan, log *slog.Logger, now time.Time) (PruneResult, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("plan", plan.Name, "kind", KindPrune)
	var res PruneResult
	if repo := cfg.Repositories[plan.Repository]; repo != nil && repo.AppendOnly {
		err := AppendOnlyRefusal(plan)
		log.Error("prune refused", journal.Event(journal.EventJobFailed), "err", err)
		return res, err
	}
	if plan.Retention.KeepsNothing() {
		err := fmt.Errorf("plan %s: %w, so a prune would delete every archive of the plan: refused, nothing was deleted (set a count or within in plans.%s.retention)",
			plan.Name, ErrKeepsNothing, plan.Name)
		log.Error("prune refused", journal.Event(journal.EventJobFailed), "err", err)
		return res, err
	}
	runner, err := planstore.NewRunner(cfg, plan, log)
	if err != nil {
		log.Error("prune failed", journal.Event(journal.EventJobFailed), "err", err)
		return res, err
	}
	opts := ForgetOptions(plan, runner.Hostname)
	log.Info("prune started", journal.Event(journal.EventJobStarted), "repository", plan.Repository,
		"retention", retentionString(plan.Retention), "group_by", opts.GroupBy, "host", runner.Hostname)

	forgotten, forgetErr := runner.Forget(ctx, opts)
	if forgetErr == nil {
		res.KeptArchives = forgotten.Kept()
		res.RemovedArchives = forgotten.Removed()
		res.PruneOutput = forgotten.PruneOutput
		for _, g := range forgotten.Groups {
			for _, a := range g.Remove {
				log.Info("archive forgotten", journal.Event(EventArchiveForgotten), "archive", a.ID,
					"time", a.Time, "host", a.Hostname, "paths", a.Paths, "tags", a.Tags)
			}
		}
	}

	var snapErr error
	if ctx.Err() == nil {
		res.KeptSnapshots, res.RemovedSnapshots, snapErr = keepSnapshots(cfg, plan, log, now)
	}

	err = errors.Join(forgetErr, snapErr)
	switch {
	case err == nil:
		log.Info("prune done", journal.Event(journal.EventJobDone), "archives_kept", len(res.KeptArchives),
			"archives_removed", len(res.RemovedArchives), "snapshots_kept", len(res.KeptSnapshots),
			"snapshots_removed", len(res.RemovedSnapshots))
	case planstore.TimedOut(ctx) != nil:
		// The executor words the error; the log says what happened.
		log.Error("prune timed out", journal.Event(journal.EventJobFailed), "err", planstore.TimedOut(ctx))
	case errors.Is(err, restic.ErrStalled):
		err = fmt.Errorf("prune of plan %s: %w", plan.Name, err)
		log.Error("prune stalled", journal.Event(journal.EventJobStalled), "err", err)
	case ctx.Err() != nil:
		err = fmt.Errorf("prune of plan %s canceled: %w", plan.Name, err)
		log.Warn("prune canceled", journal.Event(journal.EventJobCanceled), "err", err)
	default:
		err = fmt.Errorf("prune of plan %s: %w", plan.Name, err)
		log.Error("prune failed", journal.Event(journal.EventJobFailed), "err", err,
			"snapshots_removed", len(res.RemovedSnapshots))
	}
	return res, err
}

// keepSnapshots applies the plan's keep_snapshots and says which of its
// local snapshots are left and which are gone.
func keepSnapshots(cfg *config.Config, plan *config.Plan, log *slog.Logger, now time.Time) (kept, removed []btrfs.Snapshot, err error) {
	before, err := planstore.Snapshots(plan)
	if err != nil {
		return nil, nil, fmt.Errorf("keep_snapshots: %w", err)
	}
	kept, err = planstore.ApplyKeepSnapshots(cfg, plan, log, now, time.Local, nil)
	after, listErr := planstore.Snapshots(plan)
	if err == nil {
		err = listErr
	}
	removed = missing(before, after)
	if err != nil {
		err = fmt.Errorf("keep_snapshots: %w", err)
	}
	return kept, removed, err
}

// missing is the snapshots of before that are not in after.
func missing(before, after []btrfs.Snapshot) []btrfs.Snapshot {
	left := make(map[string]bool, len(after))
	for _, s := range after {
		left[s.Path] = true
	}
	var gone []btrfs.Snapshot
	for _, s := range before {
		if !left[s.Path] {
			gone = append(gone, s)
		}
	}
	return gone
}

func retentionString(r config.Retention) string {
	var parts []string
	for _, k := range []struct {
		name string
		n    int
	}{{"last", r.Last}, {"hourly", r.Hourly}, {"daily", r.Daily}, {"weekly", r.Weekly}, {"monthly", r.Monthly}, {"yearly", r.Yearly}} {
		if k.n != 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k.name, k.n))
		}
	}
	if r.Within != "" {
		parts = append(parts, "within "+r.Within)
	}
	return strings.Join(parts, ", ")
}

// DamagedError is a check that found errors in the repository. Its message
// says what restic found first and what to do; errors.Is(err,
// ErrRepositoryDamaged) holds.
type DamagedError struct {
	Plan       string
	Repository string // the repository's name in the configuration
	URL        string // its url, without credentials
	// Problem is the first problem restic reported ("pack 1a2b...: does not
	// exist"), or "".
	Problem string
	// Err is the restic error.
	Err error
}

func (e *DamagedError) Error() string {
	if e.Problem == "" {
		return fmt.Sprintf("repository %s (%s) of plan %s has errors: %v; repair it as restic's troubleshooting guide says (%s), then run the check again",
			e.Repository, e.URL, e.Plan, e.Err, troubleshooting)
	}
	return fmt.Sprintf("repository %s (%s) of plan %s has errors, the first: %s; run \"restic check\" on it to see them all, repair it as restic's troubleshooting guide says (%s), then run the check again",
		e.Repository, e.URL, e.Plan, e.Problem, troubleshooting)
}

func (e *DamagedError) Unwrap() []error { return []error{ErrRepositoryDamaged, e.Err} }

// Check runs `restic check` on the plan's repository, reading back the
// plan's check_read_data_subset of the pack data ("" for a metadata-only
// check). A repository with errors gives a *DamagedError; other failures
// (wrong password, unreachable, locked by another host) are the restic
// package's one-line errors.
func Check(ctx context.Context, cfg *config.Config, plan *config.Plan, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("plan", plan.Name, "kind", KindCheck)
	runner, err := planstore.NewRunner(cfg, plan, log)
	if err != nil {
		log.Error("check failed", journal.Event(journal.EventJobFailed), "err", err)
		return err
	}
	subset := plan.CheckReadDataSubset
	attrs := []any{journal.Event(journal.EventJobStarted), "repository", plan.Repository}
	if subset == "" {
		attrs = append(attrs, "read_data_subset", "none (metadata only)")
	} else {
		attrs = append(attrs, "read_data_subset", subset)
	}
	log.Info("check started", attrs...)

	err = runner.Check(ctx, subset)
	var rerr *restic.Error
	switch {
	case err == nil:
		log.Info("check done", journal.Event(journal.EventJobDone), "repository", plan.Repository)
		return nil
	case planstore.TimedOut(ctx) != nil:
		log.Error("check timed out", journal.Event(journal.EventJobFailed), "err", planstore.TimedOut(ctx))
		return err
	case errors.Is(err, restic.ErrStalled):
		err = fmt.Errorf("check of plan %s: %w", plan.Name, err)
		log.Error("check stalled", journal.Event(journal.EventJobStalled), "err", err)
		return err
	case ctx.Err() != nil:
		err = fmt.Errorf("check of plan %s canceled: %w", plan.Name, err)
		log.Warn("check canceled", journal.Event(journal.EventJobCanceled), "err", err)
		return err
	case errors.As(err, &rerr) && errors.Is(rerr.Kind, restic.ErrFailed) && rerr.ExitCode == 1:
		// restic check exits 1 with "Fatal: repository contains errors"
		// (0.14 and 0.18 alike); the restic package words it so.
		derr := &DamagedError{Plan: plan.Name, Repository: plan.Repository, URL: rerr.Repository, Problem: firstProblem(rerr.Stderr), Err: err}
		log.Error("repository has errors", journal.Event(EventRepositoryDamaged), "repository", plan.Repository,
			"problem", derr.Problem)
		log.Error("check failed", journal.Event(journal.EventJobFailed), "err", derr)
		return derr
	default:
		err = fmt.Errorf("check of plan %s: %w", plan.Name, err)
		log.Error("check failed", journal.Event(journal.EventJobFailed), "err", err)
		return err
	}
}

// firstProblem is the first line of restic check's stderr that names a
// problem: not the final "Fatal:" line, not 0.16+'s pointer to the guide,
// not JSON or progress.
func firstProblem(stderr string) string {
	for _, l := range strings.Split(stderr, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "", l == "[...]", strings.HasPrefix(l, "{"), strings.HasPrefix(l, "["),
			strings.Contains(l, "Fatal:"), strings.HasPrefix(l, "The repository is damaged"):
			continue
		}
		return l
	}
	return ""
}

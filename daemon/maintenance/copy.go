package maintenance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/restic"
)

// KindCopy is the "kind" log attribute of a copy.
const KindCopy = "copy"

// EventArchiveCopied is logged for each archive a copy put into (or found
// already in) a repository of the plan's copy_to.
const EventArchiveCopied = journal.EventArchiveCopied

// CopyResult is what a copy did.
type CopyResult struct {
	// Archives are the plan's archives copied (full ids, in its repository).
	Archives []string
	// Copied counts the archives restic copied, Skipped those a
	// destination had already, over all destinations.
	Copied, Skipped int
	// Failed names the destinations the copy failed for.
	Failed []string
}

// Summary is the job's summary: plain numbers and strings.
func (r CopyResult) Summary(plan *config.Plan) map[string]any {
	return map[string]any{
		"archives":     uint64(len(r.Archives)),
		"copied":       uint64(r.Copied),
		"skipped":      uint64(r.Skipped),
		"repositories": strings.Join(plan.CopyTo, ","),
	}
}

// Copy copies the plan's archives ids (none: its latest archive of this
// host) from its repository to each repository its copy_to names, with
// `restic copy` (the source's url and password reach restic through its
// environment, never argv). A destination that does not exist is made
// first when it has init: true, with the source's chunker parameters, so
// the copies deduplicate as in the source. A destination that fails does
// not stop the others; the error names each that failed.
func Copy(ctx context.Context, cfg *config.Config, plan *config.Plan, ids []string, log *slog.Logger) (CopyResult, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("plan", plan.Name, "kind", KindCopy)
	var res CopyResult
	fail := func(err error) (CopyResult, error) {
		if ctx.Err() != nil {
			err = fmt.Errorf("copy of plan %s canceled: %w", plan.Name, err)
			log.Warn("copy canceled", journal.Event(journal.EventJobCanceled), "err", err)
			return res, err
		}
		log.Error("copy failed", journal.Event(journal.EventJobFailed), "err", err)
		return res, err
	}
	if len(plan.CopyTo) == 0 {
		return fail(fmt.Errorf("plan %s has no copy_to: there is no repository to copy its archives to (add copy_to: [NAME] to plans.%s)", plan.Name, plan.Name))
	}
	source, err := planstore.NewRunner(cfg, plan, log)
	if err != nil {
		return fail(err)
	}
	if len(ids) == 0 {
		latest, err := latestArchive(ctx, source, plan)
		if err != nil {
			return fail(err)
		}
		ids = []string{latest}
	}
	res.Archives = ids
	log.Info("copy started", journal.Event(journal.EventJobStarted), "repository", plan.Repository,
		"to", plan.CopyTo, "archives", ids)

	var errs []error
	for _, name := range plan.CopyTo {
		if ctx.Err() != nil {
			break
		}
		copied, err := copyTo(ctx, cfg, source, name, ids, log)
		for _, c := range copied {
			if c.Skipped {
				res.Skipped++
			} else {
				res.Copied++
			}
			log.Info("archive copied", journal.Event(EventArchiveCopied), "archive", c.Source, "to", name,
				"copy", c.Copy, "already_there", c.Skipped)
		}
		if err != nil {
			res.Failed = append(res.Failed, name)
			errs = append(errs, fmt.Errorf("to repository %s: %w", name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fail(fmt.Errorf("copy of plan %s %w", plan.Name, err))
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	log.Info("copy done", journal.Event(journal.EventJobDone), "to", plan.CopyTo, "copied", res.Copied, "skipped", res.Skipped)
	return res, nil
}

// copyTo copies ids to the repository name, made first if missing and
// its init says so.
func copyTo(ctx context.Context, cfg *config.Config, source *restic.Runner, name string, ids []string, log *slog.Logger) ([]restic.CopiedArchive, error) {
	dest, err := planstore.NewRepositoryRunner(cfg, name, log)
	if err != nil {
		return nil, err
	}
	dest.StallTimeout = source.StallTimeout
	copied, err := dest.Copy(ctx, source.Repo, ids)
	if !restic.IsNoRepository(err) || !cfg.Repositories[name].Init {
		return copied, err
	}
	// "Does not exist" may be the source's; init then fails on an existing
	// destination, and the first error is the one that says why.
	log.Info("initializing the repository to copy to", "to", name, "url", dest.Repo.Redacted())
	if ierr := dest.InitCopyOf(ctx, source.Repo); ierr != nil {
		return copied, fmt.Errorf("%w (and restic init of it failed: %w)", err, ierr)
	}
	return dest.Copy(ctx, source.Repo, ids)
}

// latestArchive is the id of the plan's newest archive made on this host.
func latestArchive(ctx context.Context, runner *restic.Runner, plan *config.Plan) (string, error) {
	filter := restic.SnapshotFilter{Tags: []string{planstore.Tag(plan.Name)}}
	if runner.Hostname != "" {
		filter.Hosts = []string{runner.Hostname}
	}
	archives, err := runner.Snapshots(ctx, filter)
	if err != nil {
		return "", err
	}
	if len(archives) == 0 {
		return "", fmt.Errorf("plan %s has no archive of this host in repository %s yet: back it up first", plan.Name, plan.Repository)
	}
	latest := archives[0]
	for _, a := range archives[1:] {
		if !a.Time.Before(latest.Time) {
			latest = a
		}
	}
	return latest.ID, nil
}

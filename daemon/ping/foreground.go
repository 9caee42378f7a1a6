package ping

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/restic"
)

// Foreground tells a plan's notify entries of one backup that `subvault
// run backup` runs in its own process: the daemon does not (the job it
// may record afterwards has Trigger foreground).
type Foreground struct {
	sender  *Sender
	entries []config.Notify

	mu      sync.Mutex
	report  Report
	stalled time.Time // the StalledSince last sent
}

// NewForeground returns what tells plan's notify entries of a foreground
// backup of it; nothing is sent before Start.
func NewForeground(log *slog.Logger, version string, cfg *config.Config, plan, host string) *Foreground {
	return &Foreground{
		sender:  NewSender(log, version),
		entries: cfg.NotifyFor(plan),
		report: Report{Plan: plan, Kind: "backup", Trigger: "foreground", Host: host, RunID: NewRunID(),
			StartedAt: time.Now()},
	}
}

// Start sends the start of the backup, job its id (as the daemon's
// history will show it).
func (f *Foreground) Start(job uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.report.Job, f.report.StartedAt = job, time.Now()
	start := f.report
	start.Event = EventStart
	f.sender.Send(f.entries, start)
}

// Stalled sends that the backup counts as stalled since since and goes on
// (on_stall: report), as the daemon does for its jobs: once a stall (the
// same since again, restic retrying, is not sent).
func (f *Foreground) Stalled(since time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if since.Equal(f.stalled) {
		return
	}
	f.stalled = since
	stalled := f.report
	stalled.Event, stalled.StalledSince = EventStalled, since
	f.sender.Send(f.entries, stalled)
}

// Finish sends the end of the backup: job is its id, result a
// backup.Result's (done, partial, failed, canceled, stalled), err its
// error. A partial backup's error counts the files restic could not read
// and names none, as a daemon job's does.
func (f *Foreground) Finish(job uint32, result string, err error, archiveID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	end := f.report
	end.Job, end.Result, end.ArchiveID, end.FinishedAt = job, result, archiveID, time.Now()
	end.Event = EventFailure
	if result == "done" {
		end.Event = EventSuccess
	}
	var partial *restic.PartialError
	switch {
	case err == nil:
	case errors.As(err, &partial):
		end.Error = fmt.Sprintf("partial backup, archive %s exists: restic could not read %d file(s)", archiveID, len(partial.Files))
	default:
		end.Error = strings.Join(strings.Fields(err.Error()), " ")
	}
	f.sender.Send(f.entries, end)
}

// Wait waits for what is still being delivered, at most as long as the
// longest timeout of the plan's entries, and gives up the rest (logged).
func (f *Foreground) Wait() {
	var longest time.Duration
	for _, e := range f.entries {
		longest = max(longest, e.Timeout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), longest)
	defer cancel()
	f.sender.Wait(ctx)
	f.sender.Close()
}

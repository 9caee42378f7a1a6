package ping

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
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
	report  Report
}

// StartForeground sends the start of a foreground backup of plan, and
// returns what sends its end.
func StartForeground(log *slog.Logger, version string, cfg *config.Config, plan, host string) *Foreground {
	f := &Foreground{
		sender:  NewSender(log, version),
		entries: cfg.NotifyFor(plan),
		report: Report{Plan: plan, Kind: "backup", Trigger: "foreground", Host: host, RunID: NewRunID(),
			StartedAt: time.Now()},
	}
	start := f.report
	start.Event = EventStart
	f.sender.Send(f.entries, start)
	return f
}

// Finish sends the end of the backup: job is its id, result a
// backup.Result's (done, partial, failed, canceled, stalled), err its
// error. A partial backup's error counts the files restic could not read
// and names none, as a daemon job's does.
func (f *Foreground) Finish(job uint32, result string, err error, archiveID string) {
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

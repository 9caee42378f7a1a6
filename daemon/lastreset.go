package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/reset"
	"github.com/subvault/subvault/daemon/state"
)

// LastReset is the last boot's reset (docs/reset.md) as the daemon read
// its record at start: of several subvolumes, the worst result (failed,
// then skipped, then done). Time is zero when there is none: no reset
// section, or no record.
type LastReset struct {
	Time   time.Time
	Path   string
	Result string // done, skipped or failed
	Reason string
	State  string // the previous state's snapshot name
}

// resetLoggedFile is where the daemon remembers the time of the last
// reset record it logged, so that a restart does not log it again.
const resetLoggedFile = "reset-logged"

// LastReset is the last boot's reset, zero when none.
func (d *Daemon) LastReset() LastReset {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastReset
}

// readLastReset reads the reset's record at start (nothing without a reset
// section: a record left from before the reset was turned off is stale),
// logs each subvolume's result once per record, and keeps the worst for
// LastReset.
func (d *Daemon) readLastReset(cfg *config.Config) {
	if cfg.Reset == nil {
		return
	}
	rec, err := reset.ReadRecord(cfg)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return
	case err != nil:
		d.log.Warn("the last reset's result is unknown; subvault status will not show it", "err", err)
		return
	case rec.Time.IsZero() || len(rec.Results) == 0:
		d.log.Warn("the last reset's record holds no result; subvault status will not show it")
		return
	}
	d.mu.Lock()
	d.lastReset = worstReset(rec)
	d.mu.Unlock()
	stamp := rec.Time.UTC().Format(time.RFC3339Nano)
	marker := filepath.Join(cfg.Settings.StateDir, resetLoggedFile)
	if data, err := os.ReadFile(marker); err == nil && strings.TrimSpace(string(data)) == stamp {
		return
	}
	logResetRecord(d.log, rec)
	if err := state.EnsureDir(cfg.Settings.StateDir); err == nil {
		err = state.WriteFileAtomic(marker, []byte(stamp+"\n"), 0o600)
		if err != nil {
			d.log.Warn("cannot remember that the last reset was logged; the next start logs it again", "file", marker, "err", err)
		}
	}
}

// logResetRecord logs each subvolume's result of one reset.
func logResetRecord(log *slog.Logger, rec reset.Record) {
	for _, r := range rec.Results {
		attrs := []any{"plan", config.ResetPlan, "path", r.Path, "state", r.State, "reason", r.Reason, "at", rec.Time.Local().Format(time.RFC3339)}
		switch r.Result {
		case reset.ResultDone:
			attrs = append(attrs, journal.Event(journal.EventResetDone), "persisted", r.Persisted, "bytes", r.Bytes)
			log.Info(fmt.Sprintf("%s was reset at boot to its clean snapshot; the state it left is snapshot %s", r.Path, r.State), attrs...)
		case reset.ResultSkipped:
			log.Warn(fmt.Sprintf("%s was not reset at boot: %s", r.Path, r.Reason), append(attrs, journal.Event(journal.EventResetSkipped))...)
		default:
			log.Error(fmt.Sprintf("the reset of %s at boot failed; it booted as it was: %s", r.Path, r.Reason), append(attrs, journal.Event(journal.EventResetFailed))...)
		}
	}
}

// worstReset is the result of rec that says the most: the first failed,
// else the first skipped, else the first.
func worstReset(rec reset.Record) LastReset {
	rank := func(result string) int {
		switch result {
		case reset.ResultDone:
			return 0
		case reset.ResultSkipped:
			return 1
		}
		return 2 // failed, or a result this daemon does not know
	}
	worst := rec.Results[0]
	for _, r := range rec.Results[1:] {
		if rank(r.Result) > rank(worst.Result) {
			worst = r
		}
	}
	return LastReset{Time: rec.Time, Path: worst.Path, Result: worst.Result, Reason: worst.Reason, State: worst.State}
}

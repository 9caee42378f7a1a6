package daemon

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/journal/journaltest"
	"github.com/subvault/subvault/daemon/reset"
	"github.com/subvault/subvault/internal/testutil"
)

// writeResetRecord puts rec where the reset leaves it for the running
// system: <state_dir>/reset/last.json, root's and private.
func writeResetRecord(t *testing.T, stateDir string, rec reset.Record) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(stateDir, "reset"), 0o700); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stateDir, "reset", "last.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// At a start the daemon logs what the boot's reset did, one entry per
// subvolume with every field its catalog section names, and a restart
// does not log the same record again; a new record (the next boot's) is
// logged. LastReset is the worst result; without a reset section, or
// without a record, there is none.
func TestLastResetLoggedOncePerRecord(t *testing.T) {
	testutil.RequireRoot(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	cfg := &config.Config{Reset: &config.Reset{Subvolumes: []*config.ResetSubvolume{{Path: "/"}, {Path: "/home"}}}}
	cfg.Settings.StateDir = stateDir
	start := func() (*Daemon, *journaltest.Recorder) {
		rec := journaltest.NewRecorder()
		d := &Daemon{log: slog.New(rec)}
		d.readLastReset(cfg)
		return d, rec
	}

	d, log := start()
	if r := d.LastReset(); !r.Time.IsZero() || len(log.Entries()) != 0 {
		t.Fatalf("no record: LastReset %+v, log %+v; want none and nothing logged", r, log.Entries())
	}

	boot1 := time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)
	writeResetRecord(t, stateDir, reset.Record{Time: boot1, Results: []reset.PathResult{
		{Path: "/", Result: reset.ResultDone, State: "subvault@reset@20261203T070000Z@0@-", Persisted: 12, Bytes: 4096},
		{Path: "/home", Result: reset.ResultSkipped, Reason: "no clean snapshot of /home: run subvault reset init /home"},
	}})
	d, log = start()
	log.Only(t, journal.EventResetDone).Want(t, "reset-done", map[string]string{
		"SUBVAULT_PLAN": "reset", "SUBVAULT_PATH": "/", "SUBVAULT_STATE": "subvault@reset@20261203T070000Z@0@-",
		"SUBVAULT_PERSISTED": "12", "SUBVAULT_BYTES": "4096"})
	log.Only(t, journal.EventResetDone).HasCatalogFields(t, journal.EventResetDone)
	skipped := log.Only(t, journal.EventResetSkipped)
	skipped.Want(t, "reset-skipped", map[string]string{"SUBVAULT_PATH": "/home", "SUBVAULT_REASON": "no clean snapshot of /home: run subvault reset init /home"})
	skipped.HasCatalogFields(t, journal.EventResetSkipped)
	want := LastReset{Time: boot1, Path: "/home", Result: reset.ResultSkipped, Reason: "no clean snapshot of /home: run subvault reset init /home"}
	if got := d.LastReset(); !got.Time.Equal(want.Time) || got.Path != want.Path || got.Result != want.Result || got.Reason != want.Reason {
		t.Errorf("LastReset = %+v, want the worst, %+v", got, want)
	}

	d, log = start() // a restart: the same record
	if n := len(log.Entries()); n != 0 {
		t.Errorf("a restart logged the same reset again: %+v", log.Entries())
	}
	if d.LastReset().Result != reset.ResultSkipped {
		t.Errorf("after a restart LastReset = %+v, want the record's", d.LastReset())
	}

	boot2 := boot1.Add(24 * time.Hour)
	writeResetRecord(t, stateDir, reset.Record{Time: boot2, Results: []reset.PathResult{
		{Path: "/", Result: reset.ResultFailed, Reason: "persisted path /etc/typo does not exist in the previous state", State: "subvault@reset@20261204T070000Z@0@-"},
		{Path: "/home", Result: reset.ResultDone, State: "subvault@reset@20261204T070000Z@0@home"},
	}})
	d, log = start()
	failed := log.Only(t, journal.EventResetFailed)
	failed.Want(t, "reset-failed", map[string]string{"SUBVAULT_PATH": "/", "SUBVAULT_REASON": "persisted path /etc/typo does not exist in the previous state"})
	failed.HasCatalogFields(t, journal.EventResetFailed)
	if failed.Level != slog.LevelError {
		t.Errorf("reset-failed at level %v, want error", failed.Level)
	}
	if got := d.LastReset(); got.Result != reset.ResultFailed || got.Path != "/" || !got.Time.Equal(boot2) {
		t.Errorf("LastReset = %+v, want / failed at %v", got, boot2)
	}

	// The reset turned off: the record left behind is stale.
	off := *cfg
	off.Reset = nil
	rec := journaltest.NewRecorder()
	d = &Daemon{log: slog.New(rec)}
	d.readLastReset(&off)
	if r := d.LastReset(); !r.Time.IsZero() || len(rec.Entries()) != 0 {
		t.Errorf("without a reset section: LastReset %+v, log %+v; want none", r, rec.Entries())
	}
}

package daemon

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/restore"
	"github.com/subvault/subvault/internal/testutil"
)

// What a running restore records is in the state file at once; a restart
// hands back the restores that were running (not a queued one, not a
// backup) with their records, and one whose error was amended is not
// handed back again. A state file from before the record loads.
func TestRestoreRecordSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	q, exec, _ := newTestQueue(t, dir, 1, 10)
	running, _, err := q.Enqueue(KindRestore, "home", TriggerManual, 0, Job{Target: "/", RestoreMode: restore.InPlace})
	if err != nil {
		t.Fatal(err)
	}
	exec.waitStarted(t)
	if _, _, err := q.Enqueue(KindRestore, "home", TriggerManual, 0, Job{Target: "/x"}); err != nil {
		t.Fatal(err)
	}
	made := restore.Made{Staging: []string{"/home/.subvault-restore-1"}, Merging: []string{"/home"}}
	q.recordRestore(running.ID, made)
	made.Staging[0] = "changed by the caller afterwards"
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil || !strings.Contains(string(data), `"restore_made": {`) || !strings.Contains(string(data), `"/home/.subvault-restore-1"`) {
		t.Fatalf("the state file after the record: %v\n%s", err, data)
	}

	// A new queue on the same directory is a restart after a crash: the
	// first queue's jobs are still running or queued in the file.
	q2, _, _ := newTestQueue(t, dir, 1, 10)
	got := q2.interruptedRestores()
	if len(got) != 1 || got[0].ID != running.ID || got[0].RestoreMade.Staging[0] != "/home/.subvault-restore-1" || got[0].RestoreMade.Merging[0] != "/home" {
		t.Fatalf("interrupted restores after the restart: %+v", got)
	}
	q2.amendError(running.ID, InterruptedError+"; /home is part restored")
	q3, _, _ := newTestQueue(t, dir, 1, 10)
	if got := q3.interruptedRestores(); len(got) != 0 {
		t.Errorf("after the amendment: %+v", got)
	}
	if j, _ := q3.Job(running.ID); j.Error != InterruptedError+"; /home is part restored" {
		t.Errorf("the amended error after a restart: %q", j.Error)
	}

	old := `{"version": 1, "jobs": [
 {"id": 4, "kind": "restore", "plan": "home", "state": "running", "started_at": "2026-03-12T03:01:00Z", "target": "/", "restore_mode": "in-place"},
 {"id": 5, "kind": "backup", "plan": "home", "state": "running", "started_at": "2026-03-12T03:01:00Z"}
], "last_run": {}, "plans": {}}`
	dir2 := t.TempDir()
	testutil.WriteFile(t, filepath.Join(dir2, StateFile), old)
	q4, _, _ := newTestQueue(t, dir2, 1, 10)
	if got := q4.interruptedRestores(); len(got) != 1 || got[0].ID != 4 || len(got[0].RestoreMade.Staging) != 0 {
		t.Errorf("from a state file without records: %+v", got)
	}
}

// At a start, an in-place restore that died has its staging directory
// removed, logged as restore-leftover-removed with every field its catalog
// section names, and its error says what state it left; a plan another
// process holds is skipped, its job kept for the next start.
func TestInterruptedRestoresCleanedUpAtStart(t *testing.T) {
	testutil.RequireRoot(t)
	fs := testutil.NewBtrfs(t, 256, "home")
	home := fs.Path("home")
	stage := filepath.Join(home, ".subvault-restore-1")
	testutil.WriteFile(t, filepath.Join(stage, home[1:], "f"), "staged\n")
	dir := t.TempDir()
	testutil.WriteFile(t, filepath.Join(dir, StateFile), `{"version": 1, "jobs": [
 {"id": 1, "kind": "restore", "plan": "home", "state": "running", "started_at": "2026-03-12T03:01:00Z", "target": "/", "restore_mode": "in-place",
  "restore_made": {"staging": ["`+stage+`"]}}
], "last_run": {}, "plans": {}}`)
	cfg := &config.Config{Plans: map[string]*config.Plan{"home": {Name: "home", Subvolumes: []string{home}, Repository: "r"}}}

	rec := newLogRecorder()
	q, _, _ := newTestQueue(t, dir, 1, 10)
	d := &Daemon{log: slog.New(rec), queue: q}
	d.cleanUpInterruptedRestores(t.Context(), cfg, func(string) (func(), error) { return nil, errors.New("plan is busy") })
	if _, err := os.Lstat(stage); err != nil {
		t.Fatalf("a busy plan's staging directory: %v", err)
	}
	if j, _ := q.Job(1); j.Error != InterruptedError {
		t.Fatalf("a busy plan's job: %q", j.Error)
	}

	d.cleanUpInterruptedRestores(t.Context(), cfg, func(string) (func(), error) { return func() {}, nil })
	if _, err := os.Lstat(stage); !os.IsNotExist(err) {
		t.Errorf("the staging directory is left: %v", err)
	}
	e := rec.only(t, journal.EventRestoreLeftoverRemoved)
	e.want(t, "the removal", map[string]string{"SUBVAULT_PLAN": "home", "SUBVAULT_JOB": "1", "SUBVAULT_PATH": stage})
	j, _ := q.Job(1)
	for _, want := range []string{InterruptedError + "; ", home + " is unchanged", "staging directory " + stage + " was removed"} {
		if !strings.Contains(j.Error, want) {
			t.Errorf("the job's error lacks %q: %s", want, j.Error)
		}
	}
	var buf bytes.Buffer
	q2, err := NewQueue(QueueConfig{MaxConcurrent: 1, History: 10}, newFakeExecutor(), dir, slog.New(slog.NewTextHandler(&buf, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Drain()
	if j2, _ := q2.Job(1); j2.Error != j.Error {
		t.Errorf("the amended error after a restart: %q, want %q", j2.Error, j.Error)
	}
}

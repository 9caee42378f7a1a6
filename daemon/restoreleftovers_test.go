package daemon

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/journal/journaltest"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/internal/testutil"
)

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
	testutil.WriteFile(t, filepath.Join(dir, queue.StateFile), `{"version": 1, "jobs": [
 {"id": 1, "kind": "restore", "plan": "home", "state": "running", "started_at": "2026-03-12T03:01:00Z", "target": "/", "restore_mode": "in-place",
  "restore_made": {"staging": ["`+stage+`"]}}
], "last_run": {}, "plans": {}}`)
	cfg := &config.Config{Plans: map[string]*config.Plan{"home": {Name: "home", Subvolumes: []string{home}, Repository: "r"}}}

	rec := journaltest.NewRecorder()
	q := newTestQueue(t, dir)
	d := &Daemon{log: slog.New(rec), queue: q}
	d.cleanUpInterruptedRestores(t.Context(), cfg, func(string) (func(), error) { return nil, errors.New("plan is busy") })
	if _, err := os.Lstat(stage); err != nil {
		t.Fatalf("a busy plan's staging directory: %v", err)
	}
	if j, _ := q.Job(1); j.Error != queue.InterruptedError {
		t.Fatalf("a busy plan's job: %q", j.Error)
	}

	d.cleanUpInterruptedRestores(t.Context(), cfg, func(string) (func(), error) { return func() {}, nil })
	if _, err := os.Lstat(stage); !os.IsNotExist(err) {
		t.Errorf("the staging directory is left: %v", err)
	}
	e := rec.Only(t, journal.EventRestoreLeftoverRemoved)
	e.Want(t, "the removal", map[string]string{"SUBVAULT_PLAN": "home", "SUBVAULT_JOB": "1", "SUBVAULT_PATH": stage})
	j, _ := q.Job(1)
	for _, want := range []string{queue.InterruptedError + "; ", home + " is unchanged", "staging directory " + stage + " was removed"} {
		if !strings.Contains(j.Error, want) {
			t.Errorf("the job's error lacks %q: %s", want, j.Error)
		}
	}
	if j2, _ := newTestQueue(t, dir).Job(1); j2.Error != j.Error {
		t.Errorf("the amended error after a restart: %q, want %q", j2.Error, j.Error)
	}
}

// newTestQueue is a queue on the state directory dir whose jobs never run.
func newTestQueue(t *testing.T, dir string) *queue.Queue {
	t.Helper()
	q, err := queue.New(queue.Config{MaxConcurrent: 1, History: 10}, noExecutor{}, dir, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Drain)
	return q
}

type noExecutor struct{}

func (noExecutor) Execute(ctx context.Context, _ queue.Job, _ func(queue.Progress)) (queue.Outcome, error) {
	<-ctx.Done()
	return queue.Outcome{}, ctx.Err()
}

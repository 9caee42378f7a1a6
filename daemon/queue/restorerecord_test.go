package queue

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/subvault/subvault/internal/testutil"
)

// What a running restore records is in the state file at once; a restart
// hands back the restores that were running (not a queued one, not a
// backup) with their records, and one whose error was amended is not
// handed back again. A state file from before the record loads.
func TestRestoreRecordSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	q, exec, _ := newTestQueue(t, dir, 1, 10)
	running, _, err := q.Enqueue(Order{Kind: KindRestore, Plan: "home", Trigger: TriggerManual, Caller: 0, Restore: RestoreArgs{Target: "/", RestoreMode: "in-place"}})
	if err != nil {
		t.Fatal(err)
	}
	exec.waitStarted(t)
	if _, _, err := q.Enqueue(Order{Kind: KindRestore, Plan: "home", Trigger: TriggerManual, Caller: 0, Restore: RestoreArgs{Target: "/x"}}); err != nil {
		t.Fatal(err)
	}
	made := json.RawMessage(`{"staging": ["/home/.subvault-restore-1"], "merging": ["/home"]}`)
	q.RecordRestore(running.ID, made)
	copy(made, `{"staging": ["changed by the caller afterwards"]}`)
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil || !strings.Contains(string(data), `"restore_made": {`) || !strings.Contains(string(data), `"/home/.subvault-restore-1"`) {
		t.Fatalf("the state file after the record: %v\n%s", err, data)
	}

	// A new queue on the same directory is a restart after a crash: the
	// first queue's jobs are still running or queued in the file.
	q2, _, _ := newTestQueue(t, dir, 1, 10)
	got := q2.InterruptedRestores()
	if len(got) != 1 || got[0].ID != running.ID || recordOf(t, got[0]).Staging[0] != "/home/.subvault-restore-1" || recordOf(t, got[0]).Merging[0] != "/home" {
		t.Fatalf("interrupted restores after the restart: %+v", got)
	}
	q2.AmendError(running.ID, InterruptedError+"; /home is part restored")
	q3, _, _ := newTestQueue(t, dir, 1, 10)
	if got := q3.InterruptedRestores(); len(got) != 0 {
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
	if got := q4.InterruptedRestores(); len(got) != 1 || got[0].ID != 4 || len(recordOf(t, got[0]).Staging) != 0 {
		t.Errorf("from a state file without records: %+v", got)
	}
}

// recordOf reads the part of a restore's record (restore.Made) the test
// looks at.
func recordOf(t *testing.T, j Job) (m struct{ Staging, Merging []string }) {
	t.Helper()
	if len(j.RestoreMade) == 0 {
		return m
	}
	if err := json.Unmarshal(j.RestoreMade, &m); err != nil {
		t.Fatalf("job %d's record %s: %v", j.ID, j.RestoreMade, err)
	}
	return m
}

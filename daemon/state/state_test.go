package state

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestNextJobIDNeverRepeats(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	seen := make(map[uint32]bool)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				id, err := NextJobID(dir)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[id] || id == 0 {
					t.Errorf("job id %d handed out twice (or zero)", id)
				}
				seen[id] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 200 {
		t.Errorf("got %d distinct ids, want 200", len(seen))
	}
	if id, _ := NextJobID(dir); id != 201 {
		t.Errorf("next id after 200 is %d, want 201", id)
	}
}

func TestNextJobIDRefusesGarbage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, jobIDFile), []byte("banana\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NextJobID(dir); err == nil {
		t.Fatal("a corrupt id file was accepted")
	}
}

func TestLockPlanIsExclusivePerPlan(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	home, err := LockPlan(dir, "home")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockPlan(dir, "home"); !errors.Is(err, ErrPlanBusy) {
		t.Fatalf("second lock of the same plan: %v, want ErrPlanBusy", err)
	}
	other, err := LockPlan(dir, "system")
	if err != nil {
		t.Fatalf("another plan is not blocked: %v", err)
	}
	other.Unlock()
	home.Unlock()
	again, err := LockPlan(dir, "home")
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	again.Unlock()
}

func TestWriteFileAtomicReplaces(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "f")
	for _, content := range []string{"one", "two"} {
		if err := WriteFileAtomic(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		if string(got) != content {
			t.Errorf("content %q, want %q", got, content)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

// The note of a lock check left for later follows no link planted where it
// goes: writing it replaces the link, and clearing it removes the link, not
// what it points to; a planted note only asks for one more bounded check.
func TestLockCheckNoteFollowsNoLink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(target, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if LockCheckDue(dir, "home") {
		t.Fatal("a note before any was left")
	}
	if err := os.MkdirAll(filepath.Join(dir, locksDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, lockCheckPath(dir, "home")); err != nil {
		t.Fatal(err)
	}
	if !LockCheckDue(dir, "home") {
		t.Error("a planted note is not seen (it would only ask for one more check)")
	}
	if err := MarkLockCheck(dir, "home"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(lockCheckPath(dir, "home")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("the note is not a regular file of its own: %v %v", fi, err)
	}
	if err := os.Symlink(target, lockCheckPath(dir, "srv")); err != nil {
		t.Fatal(err)
	}
	for _, plan := range []string{"home", "srv"} {
		if err := ClearLockCheck(dir, plan); err != nil || LockCheckDue(dir, plan) {
			t.Errorf("plan %s: note not cleared: %v", plan, err)
		}
	}
	if data, err := os.ReadFile(target); err != nil || string(data) != "keep me" {
		t.Errorf("the link's target changed: %q, %v", data, err)
	}
	if err := ClearLockCheck(dir, "never-noted"); err != nil {
		t.Errorf("clearing a note that is not there: %v", err)
	}
}

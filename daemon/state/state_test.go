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

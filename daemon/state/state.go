// Package state holds what must survive the process across runs in the
// daemon's state directory: job ids that are never reused, and the per-plan
// locks that keep two backups of one plan (the daemon's and a foreground
// `subvault run backup`) from running at once.
package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	jobIDFile = "next-job-id"
	locksDir  = "locks"
)

// EnsureDir makes the state directory (0700) if it does not exist.
func EnsureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cannot create state directory %s: %w", dir, err)
	}
	return nil
}

// NextJobID returns a job id not handed out before from this state
// directory, under an exclusive lock so that concurrent processes never get
// the same id. Ids start at 1; 0 is never a job.
func NextJobID(dir string) (uint32, error) {
	var id uint32
	err := updateJobID(dir, func(next uint64) uint64 {
		id = uint32(next)
		return next + 1
	})
	return id, err
}

// ReserveJobIDs makes sure that no id up to last is handed out again, for a
// history that knows jobs the id file does not (it was lost or restored
// from an older backup).
func ReserveJobIDs(dir string, last uint32) error {
	return updateJobID(dir, func(next uint64) uint64 { return max(next, uint64(last)+1) })
}

func updateJobID(dir string, update func(next uint64) uint64) error {
	if err := EnsureDir(dir); err != nil {
		return err
	}
	lock, err := flock(filepath.Join(dir, jobIDFile+".lock"), true)
	if err != nil {
		return fmt.Errorf("cannot allocate a job id: %w", err)
	}
	defer lock.Close() //nolint:errcheck // closing releases the lock; nothing was written through it

	path := filepath.Join(dir, jobIDFile)
	next := uint64(1)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		next, err = strconv.ParseUint(strings.TrimSpace(string(data)), 10, 32)
		if err != nil || next == 0 {
			return fmt.Errorf("cannot allocate a job id: %s holds %q, expected a positive decimal number (remove the file to start again at 1)", path, strings.TrimSpace(string(data)))
		}
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("cannot allocate a job id: %w", err)
	}
	after := update(next)
	if after > 1<<32-1 {
		after = 1 // 4 billion jobs later; ids of long-gone jobs may come back
	}
	if err := WriteFileAtomic(path, []byte(strconv.FormatUint(after, 10)+"\n"), 0o600); err != nil {
		return fmt.Errorf("cannot allocate a job id: %w", err)
	}
	return nil
}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory, fsynced and renamed over path, then fsyncs the directory: after
// a crash, path holds either the old or the new content, never a mix.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // gone after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close() //nolint:errcheck,gosec // the write error is the one to report
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close() //nolint:errcheck,gosec
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close() //nolint:errcheck,gosec
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close() //nolint:errcheck // read-only
	return d.Sync()
}

// PlanLock is held while a job of a plan touches its snapshots.
type PlanLock struct{ f *os.File }

// ErrPlanBusy is returned by LockPlan when another job holds the plan.
var ErrPlanBusy = errors.New("plan is busy")

// LockPlan takes the plan's lock without waiting. The lock is released by
// Unlock, or by the kernel when the process dies, so a crash never leaves a
// plan locked.
func LockPlan(dir, plan string) (*PlanLock, error) {
	if err := os.MkdirAll(filepath.Join(dir, locksDir), 0o700); err != nil {
		return nil, fmt.Errorf("cannot create lock directory: %w", err)
	}
	path := filepath.Join(dir, locksDir, "plan-"+plan+".lock")
	f, err := flock(path, false)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return nil, fmt.Errorf("%w: another job of plan %s is running (it holds %s); wait for it, or cancel it", ErrPlanBusy, plan, path)
	}
	if err != nil {
		return nil, err
	}
	return &PlanLock{f: f}, nil
}

// Unlock releases the plan.
func (l *PlanLock) Unlock() {
	if l != nil && l.f != nil {
		l.f.Close() //nolint:errcheck,gosec // closing releases the flock; nothing was written
		l.f = nil
	}
}

func flock(path string, wait bool) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cannot open lock %s: %w", path, err)
	}
	how := unix.LOCK_EX
	if !wait {
		how |= unix.LOCK_NB
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close() //nolint:errcheck,gosec
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, err
		}
		return nil, fmt.Errorf("cannot lock %s: %w", path, err)
	}
	return f, nil
}

// A lock check left for later: a backup that ended without an archive may
// have left its restic lock in the repository, and could not make sure it
// did not in the time it had (the repository did not answer). The next
// backup of the plan checks before it starts (daemon/backup).
func lockCheckPath(dir, plan string) string {
	return filepath.Join(dir, locksDir, "plan-"+plan+".restic-lock-check")
}

// MarkLockCheck leaves the note that the plan's repository may hold a
// stale restic lock of this host.
func MarkLockCheck(dir, plan string) error {
	if err := os.MkdirAll(filepath.Join(dir, locksDir), 0o700); err != nil {
		return fmt.Errorf("cannot create lock directory: %w", err)
	}
	return WriteFileAtomic(lockCheckPath(dir, plan), nil, 0o600)
}

// LockCheckDue reports whether MarkLockCheck left a note for the plan.
func LockCheckDue(dir, plan string) bool {
	_, err := os.Lstat(lockCheckPath(dir, plan))
	return err == nil
}

// ClearLockCheck removes the plan's note, if any.
func ClearLockCheck(dir, plan string) error {
	if err := os.Remove(lockCheckPath(dir, plan)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

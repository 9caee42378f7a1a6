package restic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
)

// Lock is a restic lock file, as `restic cat lock ID` prints it.
type Lock struct {
	ID        string    `json:"-"`
	Time      time.Time `json:"time"`
	Exclusive bool      `json:"exclusive"`
	Hostname  string    `json:"hostname"`
	Username  string    `json:"username"`
	PID       int       `json:"pid"`
}

// Init creates the repository (`restic init`). The caller decides when: a
// Backup that fails with IsNoRepository(err) and a plan that says init: true.
func (r *Runner) Init(ctx context.Context) error {
	res, err := r.exec(ctx, invocation{op: "init", args: []string{"init"}})
	if err != nil {
		return err
	}
	return r.classify("init", res)
}

// Unlock runs `restic unlock`, which removes stale locks only: locks whose
// process is gone on this host, or that were not refreshed for 30 minutes.
func (r *Runner) Unlock(ctx context.Context) error {
	res, err := r.exec(ctx, invocation{op: "unlock", args: []string{"unlock"}})
	if err != nil {
		return err
	}
	return r.classify("unlock", res)
}

// Locks lists the repository's locks (`restic list locks` and `restic cat
// lock`, both with --no-lock so an exclusive lock does not stop them). A lock
// removed between the two calls is left out.
func (r *Runner) Locks(ctx context.Context) ([]Lock, error) {
	var ids []string
	res, err := r.exec(ctx, invocation{op: "list locks", args: []string{"list", "locks", "--no-lock"},
		stdout: func(line []byte) {
			if id := strings.TrimSpace(string(line)); isHexID(id) {
				ids = append(ids, id)
			}
		}})
	if err != nil {
		return nil, err
	}
	if err := r.classify("list locks", res); err != nil {
		return nil, err
	}
	var locks []Lock
	for _, id := range ids {
		var body strings.Builder
		res, err := r.exec(ctx, invocation{op: "cat lock", args: []string{"cat", "lock", id, "--no-lock"},
			stdout: func(line []byte) { body.Write(line); body.WriteByte('\n') }})
		if err != nil {
			return nil, err
		}
		if res.exitCode != 0 {
			if res.canceled {
				return nil, r.failure("cat lock", res)
			}
			continue // gone in between
		}
		var l Lock
		if err := json.Unmarshal([]byte(body.String()), &l); err != nil {
			return nil, fmt.Errorf("repository %s: cannot read lock %s: %w", r.Repo.Redacted(), id, err)
		}
		l.ID = id
		locks = append(locks, l)
	}
	return locks, nil
}

func isHexID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

// kernelHostname is what restic writes into the locks it makes.
var kernelHostname = os.Hostname

// processGone reports whether no process has this pid here.
func processGone(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return errors.Is(err, syscall.ESRCH)
}

// RemoveStaleLocks removes the repository's locks that this host made and
// whose process is gone (a daemon killed while restic ran: restic, told by
// SIGINT, may die on its closed output pipe before it removes its lock). It
// runs `restic unlock` only when there is such a lock, and returns how many
// there were. Locks of other hosts and of live processes are kept.
func (r *Runner) RemoveStaleLocks(ctx context.Context) (int, error) {
	locks, err := r.Locks(ctx)
	if err != nil {
		return 0, err
	}
	host, _ := kernelHostname()
	stale := 0
	for _, l := range locks {
		if l.Hostname == host && processGone(l.PID) {
			stale++
			r.logger().Info("removing a stale lock of this host", "repository", r.Repo.Redacted(),
				"lock", l.ID[:min(8, len(l.ID))], "pid", l.PID, "since", l.Time)
		}
	}
	if stale == 0 {
		return 0, nil
	}
	return stale, r.Unlock(ctx)
}

// retryUnlocked runs op; if the repository is locked by a stale lock this
// host made (its process is gone), it runs `restic unlock` and op once more.
// Locks of other hosts are never removed: their process may be alive, and
// only a person can tell; the error then names the holder.
func (r *Runner) retryUnlocked(ctx context.Context, op func() error) error {
	err := op()
	var rerr *Error
	if !errors.As(err, &rerr) || !errors.Is(rerr.Kind, ErrLocked) {
		return err
	}
	locks, lerr := r.Locks(ctx)
	if lerr != nil {
		r.logger().Warn("cannot list the locks of a locked repository", "repository", r.Repo.Redacted(), "error", lerr)
		return err
	}
	host, _ := kernelHostname()
	var stale, blocking *Lock
	for i := range locks {
		l := &locks[i]
		if l.Hostname == host && processGone(l.PID) {
			if stale == nil {
				stale = l
			}
			continue
		}
		if blocking == nil || l.Exclusive {
			blocking = l
		}
	}
	if stale == nil {
		if blocking != nil {
			rerr.Lock = blocking
			rerr.Message = lockedMessage(rerr.Repository, blocking)
			if blocking.Hostname == host {
				rerr.Message = fmt.Sprintf("repository %s is locked by a restic still running on this host (pid %d, since %s); wait for it to finish",
					rerr.Repository, blocking.PID, blocking.Time.Local().Format("2006-01-02 15:04:05"))
			}
		}
		return err
	}
	r.logger().Info("removing a stale lock of this host", "repository", r.Repo.Redacted(),
		"lock", stale.ID[:8], "pid", stale.PID, "since", stale.Time)
	if uerr := r.Unlock(ctx); uerr != nil {
		return fmt.Errorf("%w (and restic unlock failed: %w)", err, uerr)
	}
	return op()
}

// Check runs `restic check`, reading readDataSubset of the data ("10%",
// "1/5", "" for none). A locked repository is handled as in Backup.
func (r *Runner) Check(ctx context.Context, readDataSubset string) error {
	args := []string{"check"}
	if readDataSubset != "" {
		args = append(args, "--read-data-subset="+readDataSubset)
	}
	return r.retryUnlocked(ctx, func() error {
		var last string
		res, err := r.exec(ctx, invocation{op: "check", args: args, stdout: func(line []byte) {
			if l := strings.TrimSpace(string(cleanTerminal(line))); l != "" {
				last = l
			}
		}})
		if err != nil {
			return err
		}
		cerr := r.classify("check", res)
		var e *Error
		if errors.As(cerr, &e) && errors.Is(e.Kind, ErrFailed) && res.exitCode == 1 {
			// "Fatal: repository contains errors"; the details went to
			// stdout and stderr.
			e.Message = fmt.Sprintf("restic check found problems in repository %s: %s (run \"restic check\" to see them all)",
				e.Repository, firstNonEmpty(firstFatal(e.Stderr), last))
		}
		return cerr
	})
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

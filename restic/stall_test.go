package restic

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A backup whose restic stops making progress (restic itself stopped with
// SIGSTOP, as a restic waiting on a hung server is) ends ErrStalled within
// StallTimeout plus the grace, killed; the lock it left is of a process
// that is gone, and RemoveStaleLocks removes it. A backup that keeps
// moving under the same StallTimeout is not stopped.
func TestStallStopsABackupThatMakesNoProgress(t *testing.T) {
	forEachRestic(t, func(t *testing.T, f *fixture) {
		f.r.Grace = DefaultGrace
		f.r.StallTimeout = 3 * time.Second
		dir := smallTree(t, 2, 400) // sparse: minutes of reading zeros
		var pid int
		f.r.onStart = func(p int) { pid = p }
		t.Cleanup(func() {
			if pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		})
		var once sync.Once
		var stoppedAt time.Time
		_, err := f.r.Backup(context.Background(), BackupOptions{Paths: []string{dir}}, func(s BackupStatus) {
			if s.BytesDone > 0 {
				once.Do(func() {
					stoppedAt = time.Now()
					if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
						t.Error(err)
					}
				})
			}
		})
		took := time.Since(stoppedAt)
		t.Logf("restic %s: %v, %v after SIGSTOP", f.ver, err, took.Round(10*time.Millisecond))
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, ErrStalled) {
			t.Fatalf("err = %v, want ErrStalled", err)
		}
		if !e.Killed {
			t.Error("a stopped restic should have been killed after the grace")
		}
		if want := "made no progress for 3s"; !strings.Contains(e.Message, want) {
			t.Errorf("message %q lacks %q", e.Message, want)
		}
		if limit := f.r.StallTimeout + f.r.Grace + 3*time.Second; took > limit {
			t.Errorf("stalled backup ended %v after it stopped, want within %v", took, limit)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Errorf("restic %d still runs", pid)
		}
		n, err := f.r.RemoveStaleLocks(context.Background())
		if err != nil || n != 1 {
			t.Errorf("RemoveStaleLocks = %d, %v; want the killed backup's lock", n, err)
		}
		if locks, err := f.r.Locks(context.Background()); err != nil || len(locks) != 0 {
			t.Errorf("locks left: %+v, %v", locks, err)
		}

		// The same StallTimeout on a backup that keeps moving.
		f.r.onStart = nil
		pid = 0
		start := time.Now()
		res, err := f.r.Backup(context.Background(), BackupOptions{Paths: []string{smallTree(t, 50, 2)}}, nil)
		if err != nil || res.SnapshotID == "" {
			t.Fatalf("a moving backup: %v", err)
		}
		t.Logf("restic %s: a backup of %v under stall timeout %v: done", f.ver, time.Since(start).Round(10*time.Millisecond), f.r.StallTimeout)
	})
}

// An idle watch in the context is told when a backup's restic makes no
// progress for its bound (restic stopped with SIGSTOP, as a restic waiting
// on a hung server is), with when it last did, and told again when it
// moves; in a context WithoutStallStop nothing stops it meanwhile, though
// its runner's StallTimeout is shorter than the wait. A second watch with
// a longer bound (the daemon's stall report beside its waiting watch) is
// told on its own, later.
func TestIdleWatchTellsOfABackupThatWaits(t *testing.T) {
	forEachRestic(t, func(t *testing.T, f *fixture) {
		const after, later = 2 * time.Second, 5 * time.Second
		f.r.StallTimeout = 3 * time.Second
		dir := smallTree(t, 2, 400) // sparse: minutes of reading zeros
		var pid int
		f.r.onStart = func(p int) { pid = p }
		t.Cleanup(func() {
			if pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		})
		reports := make(chan Idle, 16)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ctx = WithIdleWatch(WithoutStallStop(ctx), after, func(i Idle) { reports <- i })
		laterReports := make(chan Idle, 16)
		ctx = WithIdleWatch(ctx, later, func(i Idle) { laterReports <- i })
		var once sync.Once
		stopped := make(chan time.Time, 1)
		ended := make(chan error, 1)
		go func() {
			_, err := f.r.Backup(ctx, BackupOptions{Paths: []string{dir}}, func(s BackupStatus) {
				if s.BytesDone > 0 {
					once.Do(func() {
						if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
							t.Error(err)
						}
						stopped <- time.Now()
					})
				}
			})
			ended <- err
		}()
		var at time.Time
		select {
		case at = <-stopped:
		case err := <-ended:
			t.Fatalf("the backup ended before it could be stopped: %v", err)
		case <-time.After(time.Minute):
			t.Fatal("the backup read nothing within a minute")
		}
		select {
		case i := <-reports:
			took := time.Since(at)
			t.Logf("restic %s: told it waits %v after SIGSTOP (its last progress %v from the stop)", f.ver, took.Round(10*time.Millisecond), i.Since.Sub(at).Round(10*time.Millisecond))
			if i.Since.IsZero() || i.Since.After(at.Add(time.Second)) {
				t.Errorf("report %+v: want the time of its last progress, about %v", i, at)
			}
			if took > after+3*time.Second {
				t.Errorf("told %v after the stop, want within about %v", took, after)
			}
		case err := <-ended:
			t.Fatalf("a stopped backup ended without a stall timeout: %v", err)
		case <-time.After(after + 10*time.Second):
			t.Fatal("not told that the stopped restic waits")
		}
		select {
		case i := <-laterReports:
			took := time.Since(at)
			t.Logf("restic %s: the %v watch told %v after SIGSTOP", f.ver, later, took.Round(10*time.Millisecond))
			if i.Since.IsZero() || took < later-time.Second || took > later+3*time.Second {
				t.Errorf("the %v watch: %+v %v after the stop, want about %v after it", later, i, took, later)
			}
		case err := <-ended:
			t.Fatalf("a stopped backup ended without a stall timeout: %v", err)
		case <-time.After(later + 10*time.Second):
			t.Fatalf("the %v watch was not told", later)
		}
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		for name, ch := range map[string]chan Idle{"first": reports, "second": laterReports} {
			select {
			case i := <-ch:
				if !i.Since.IsZero() {
					t.Errorf("after SIGCONT, the %s watch: %+v, want it moving", name, i)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("the %s watch was not told that restic moves again", name)
			}
		}
		cancel()
		<-ended
		select {
		case i := <-reports:
			t.Errorf("a report after the cancel: %+v", i)
		case i := <-laterReports:
			t.Errorf("a report of the second watch after the cancel: %+v", i)
		default:
		}
	})
}

// A command without progress counts (check, here) is not stalled while it
// reads; a stopped one is.
func TestStallStopsACheckThatMakesNoProgress(t *testing.T) {
	forEachRestic(t, func(t *testing.T, f *fixture) {
		if _, err := f.r.Backup(context.Background(), BackupOptions{Paths: []string{smallTree(t, 20, 0)}}, nil); err != nil {
			t.Fatal(err)
		}
		f.r.Grace = DefaultGrace
		f.r.StallTimeout = 4 * time.Second
		if err := f.r.Check(context.Background(), "100%"); err != nil {
			t.Fatalf("check under a stall timeout: %v", err)
		}
		var pid int
		f.r.onStart = func(p int) {
			pid = p
			_ = syscall.Kill(p, syscall.SIGSTOP)
		}
		t.Cleanup(func() {
			if pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		})
		start := time.Now()
		err := f.r.Check(context.Background(), "")
		took := time.Since(start)
		t.Logf("restic %s: stopped check: %v after %v", f.ver, err, took.Round(10*time.Millisecond))
		if !errors.Is(err, ErrStalled) {
			t.Fatalf("err = %v, want ErrStalled", err)
		}
		if limit := f.r.StallTimeout + f.r.Grace + 3*time.Second; took > limit {
			t.Errorf("took %v, want within %v", took, limit)
		}
	})
}

// A stalled run is ErrStalled whatever restic printed and however it
// ended, and its one line names the bound and, when restic said so, the
// backend's trouble: a server lost or unreachable, or the last retry's
// cause.
func TestClassifyStalled(t *testing.T) {
	repo := Repository{URL: "rest:https://user:pw@nas:8000/laptop", PasswordFile: "/etc/subvault/nas.pass"}
	for _, c := range []struct {
		name, stderr, want string
		exit               int
		killed             bool
	}{
		{"silent", "", "restic backup on repository rest:https://user:***@nas:8000/laptop made no progress for 10m0s", -1, true},
		// The repository was open (a lock read): the server went away.
		{"connection lost", "Load(<lock/1234>, 0, 0) returned error, retrying after 1.5s: Get \"https://nas:8000/laptop/locks/1234\": dial tcp 10.0.0.2:8000: connect: connection refused",
			"made no progress for 10m0s while it lost its connection to nas:8000: dial tcp 10.0.0.2:8000: connect: connection refused", 130, false},
		{"retried", "Save(<data/abcd>) returned error, retrying after 2.1s: server response unexpected: 500 Internal Server Error (500)",
			"made no progress for 10m0s while it retried the repository: server response unexpected: 500 Internal Server Error (500)", 1, false},
	} {
		out := &outcome{exitCode: c.exit, stderr: newStderrLog(), stalled: true, stallTimeout: 10 * time.Minute, killed: c.killed}
		if c.stderr != "" {
			out.stderrLine([]byte(c.stderr), nil)
		}
		e := classifyOutcome("backup", repo, out)
		if !errors.Is(e, ErrStalled) || e.Killed != c.killed {
			t.Errorf("%s: kind %v killed %v, want ErrStalled, killed %v", c.name, e.Kind, e.Killed, c.killed)
		}
		if !strings.Contains(e.Message, c.want) || strings.Contains(e.Message, "\n") {
			t.Errorf("%s: message %q lacks %q", c.name, e.Message, c.want)
		}
	}
}

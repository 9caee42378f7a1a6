package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/internal/testutil"
)

// fillRandom writes n files of 1 MiB of random data (which restic cannot
// deduplicate) below dir.
func fillRandom(t *testing.T, dir string, n int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for i := range n {
		if _, err := rand.Read(buf); err != nil {
			t.Fatal(err)
		}
		testutil.WriteFile(t, filepath.Join(dir, fmt.Sprintf("d%d", i%10), fmt.Sprintf("f%d", i)), string(buf))
	}
}

// stopProcess stops pid with SIGSTOP and makes sure it is killed at the
// end of the test, whatever happens.
func stopProcess(t *testing.T, pid int) {
	t.Helper()
	t.Cleanup(func() {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
}

// Ctrl-C of `subvault run backup` while restic does not answer (stopped
// here with SIGSTOP: a restic that waits on a dead server ignores SIGINT
// as long) ends restic and the command within 5 seconds, leaves no
// snapshot, and the next backup works on a repository that checks clean.
func TestRunBackupCtrlCWithAStuckRestic(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		e := newRunEnvWith(t, bin, 1024)
		fillRandom(t, e.fs.Path("home"), 200)
		snapDir := e.fs.Path("home", ".subvault-snapshots")

		cmd := subvaultCmd("run", "backup", "home", "--config", e.config, "--verbose")
		var log testutil.SyncBuffer
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		resticPID := waitFor(t, 60*time.Second, func() int { return testutil.ProcessBelow(cmd.Process.Pid, "restic", "backup") })
		time.Sleep(time.Second) // restic has its lock and reads
		stopProcess(t, resticPID)

		start := time.Now()
		resticEnded := make(chan time.Duration, 1)
		go func() {
			for !gone(resticPID) {
				time.Sleep(10 * time.Millisecond)
			}
			resticEnded <- time.Since(start)
		}()
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		took := time.Since(start)
		var resticTook time.Duration
		select {
		case resticTook = <-resticEnded:
		case <-time.After(time.Second):
			t.Errorf("restic %d still runs after subvault ended", resticPID)
		}
		t.Logf("restic %s: Ctrl-C with a stuck restic: restic ended after %v, subvault run backup after %v (%v)", testutil.ResticVersion(bin),
			resticTook.Round(10*time.Millisecond), took.Round(10*time.Millisecond), err)
		if code := cmd.ProcessState.ExitCode(); code != exitCanceled {
			t.Errorf("exit %d, want %d\n%s", code, exitCanceled, log.String())
		}
		if resticTook > 5*time.Second || took > 5*time.Second+time.Second {
			t.Errorf("Ctrl-C: restic ended after %v, subvault after %v; want within about 5 s\n%s", resticTook, took, log.String())
		}
		if left, _ := btrfs.ListSnapshots(snapDir); len(left) != 0 {
			t.Errorf("snapshots left after Ctrl-C: %v", left)
		}

		var out, errOut bytes.Buffer
		if code := run([]string{"run", "backup", "home", "--config", e.config, "--verbose"}, &out, &errOut); code != exitOK {
			t.Fatalf("backup after Ctrl-C: exit %d\n%s", code, errOut.String())
		}
		if locks := strings.TrimSpace(e.resticOut(t, "list", "locks", "--no-lock")); locks != "" {
			t.Errorf("restic locks left after the next backup: %s", locks)
		}
		e.resticOut(t, "check")
	})
}

// A plan's timeout ends `subvault run backup` that runs longer (restic
// stopped here, with stall_timeout off, so that only the timeout can end
// it): exit 1, the error names the timeout and what to do, no snapshot
// left, and the next backup is done.
func TestRunBackupTimeout(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		e := newRunEnvWith(t, bin, 1024)
		cfg, _ := os.ReadFile(e.config)
		testutil.WriteFile(t, e.config, strings.Replace(string(cfg), "    repository: r\n", "    repository: r\n    timeout: 6s\n    stall_timeout: \"0\"\n", 1))
		fillRandom(t, e.fs.Path("home"), 100)

		cmd := subvaultCmd("run", "backup", "home", "--config", e.config)
		var log testutil.SyncBuffer
		cmd.Stdout, cmd.Stderr = &log, &log
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		resticPID := waitFor(t, 60*time.Second, func() int { return testutil.ProcessBelow(cmd.Process.Pid, "restic", "backup") })
		stopProcess(t, resticPID)
		_ = cmd.Wait()
		took := time.Since(start)
		t.Logf("restic %s: timeout 6s: subvault run backup ended after %v: %s", testutil.ResticVersion(bin), took.Round(10*time.Millisecond), strings.TrimSpace(log.String()))
		if code := cmd.ProcessState.ExitCode(); code != exitFailure {
			t.Errorf("exit %d, want %d", code, exitFailure)
		}
		if want := "stopped after running longer than plan home's timeout of 6s; if the job is only slow, raise timeout in the plan"; !strings.Contains(log.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, log.String())
		}
		if took > 6*time.Second+3*time.Second+10*time.Second {
			t.Errorf("took %v with a timeout of 6 s", took)
		}
		if left, _ := btrfs.ListSnapshots(e.fs.Path("home", ".subvault-snapshots")); len(left) != 0 {
			t.Errorf("snapshots left: %v", left)
		}
		var out, errOut bytes.Buffer
		testutil.WriteFile(t, e.config, string(cfg))
		if code := run([]string{"run", "backup", "home", "--config", e.config}, &out, &errOut); code != exitOK {
			t.Fatalf("the next backup: exit %d\n%s", code, errOut.String())
		}
		if locks := strings.TrimSpace(e.resticOut(t, "list", "locks", "--no-lock")); locks != "" {
			t.Errorf("restic locks left: %s", locks)
		}
	})
}

// A backup whose restic fails on its own mid-way (killed here from outside
// subvault, so it cannot remove its lock) leaves no lock of this host
// behind: "restic list locks" is empty right after it, and a manual
// "restic check" is not refused.
func TestRunBackupFailedLeavesNoLock(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		e := newRunEnvWith(t, bin, 1024)
		fillRandom(t, e.fs.Path("home"), 150)
		cmd := subvaultCmd("run", "backup", "home", "--config", e.config, "--verbose")
		var log testutil.SyncBuffer
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		resticPID := waitFor(t, 60*time.Second, func() int { return testutil.ProcessBelow(cmd.Process.Pid, "restic", "backup") })
		time.Sleep(time.Second) // restic has its lock
		if err := syscall.Kill(resticPID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != exitFailure {
			t.Errorf("exit %d, want %d\n%s", code, exitFailure, log.String())
		}
		if !strings.Contains(log.String(), "stale restic locks of this host removed") {
			t.Errorf("the lock's removal is not logged:\n%s", log.String())
		}
		if locks := strings.TrimSpace(e.resticOut(t, "list", "locks", "--no-lock")); locks != "" {
			t.Errorf("the failed backup left a lock: %s\n%s", locks, log.String())
		}
		e.resticOut(t, "check")
	})
}

// `subvault run backup` of a plan with on_stall: report says when its
// restic (stopped here) made no progress for stall_timeout and goes on,
// as the daemon's jobs do; after SIGCONT it says so and ends done. The
// plan's webhook gets what a daemon job's would: start, stalled (once)
// and success, each with the job's id. (The watch is the daemon's, tested
// with both versions there: one is enough.)
func TestRunBackupStallReported(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.Restic(t)
	e := newRunEnvWith(t, bin, 1024)
	rec := newPingRecorder(t)
	cfg, _ := os.ReadFile(e.config)
	testutil.WriteFile(t, e.config, strings.Replace(string(cfg), "    repository: r\n",
		"    repository: r\n    stall_timeout: 3s\n    on_stall: report\n    notify:\n      - webhook: "+rec.URL+"/hook\n", 1))
	fillRandom(t, e.fs.Path("home"), 200)

	cmd, log := startRunBackup(t, e.config, "home")
	resticPID := waitFor(t, 60*time.Second, func() int { return testutil.ProcessBelow(cmd.Process.Pid, "restic", "backup") })
	time.Sleep(time.Second) // restic reads
	stopProcess(t, resticPID)
	stopped := time.Now()
	waitFor(t, 20*time.Second, func() int {
		if strings.Contains(log.String(), "backup stalled; it goes on (on_stall: report)") {
			return 1
		}
		return 0
	})
	t.Logf("restic %s: subvault run backup said it stalled %v after restic stopped", testutil.ResticVersion(bin), time.Since(stopped).Round(10*time.Millisecond))
	time.Sleep(9*time.Second - time.Since(stopped))
	if gone(resticPID) || cmd.ProcessState != nil {
		t.Fatalf("restic or subvault ended at three times stall_timeout:\n%s", log.String())
	}
	if err := syscall.Kill(resticPID, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != exitOK || !strings.Contains(log.String(), "the stalled backup moves again") {
		t.Errorf("exit %d (%v), want 0 and the stall's end said:\n%s", code, err, log.String())
	}
	if locks := strings.TrimSpace(e.resticOut(t, "list", "locks", "--no-lock")); locks != "" {
		t.Errorf("restic locks left: %s", locks)
	}
	var got []string
	for _, ev := range webhookEvents(t, rec.requests("/hook")) {
		got = append(got, fmt.Sprintf("%s %d %s %s", ev.Event, ev.Job, ev.Trigger, ev.Result))
	}
	if want := []string{"start 1 foreground ", "stalled 1 foreground ", "success 1 foreground done"}; !slices.Equal(got, want) {
		t.Errorf("the plan's webhook got %q, want %q", got, want)
	}
}

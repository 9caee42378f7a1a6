package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
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
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		took := time.Since(start)
		t.Logf("restic %s: Ctrl-C with a stuck restic: subvault run backup ended after %v (%v)", testutil.ResticVersion(bin), took.Round(10*time.Millisecond), err)
		if code := cmd.ProcessState.ExitCode(); code != exitCanceled {
			t.Errorf("exit %d, want %d\n%s", code, exitCanceled, log.String())
		}
		if took > 5*time.Second {
			t.Errorf("Ctrl-C took %v, want at most 5 s\n%s", took, log.String())
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", resticPID)); err == nil {
			t.Errorf("restic %d still runs after subvault ended", resticPID)
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

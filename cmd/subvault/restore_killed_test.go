package main

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/internal/testutil"
)

// killedRestoreEnv is the daemon on a private bus with the system bus's
// policy, as a process the test kills and starts again, restic bin, and a
// plan home of files MiB whose snapshots go to snapshots/ beside it.
type killedRestoreEnv struct {
	*apiEnv
	daemon *exec.Cmd
	log    *testutil.SyncBuffer
}

func newKilledRestoreEnv(t *testing.T, bin string, files int) *killedRestoreEnv {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireRestic(t, bin)
	bus := testutil.NewSystemBus(t, busPolicy)
	run := newRunEnvWith(t, bin, 2048)
	cfg, err := os.ReadFile(run.config)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, run.config, strings.Replace(string(cfg), "    repository: r\n",
		"    repository: r\n    snapshot_dir: "+run.fs.Path("snapshots")+"\n", 1))
	buf := make([]byte, 1<<20)
	for i := range files {
		if _, err := rand.Read(buf); err != nil {
			t.Fatal(err)
		}
		testutil.WriteFile(t, run.fs.Path("home", fmt.Sprintf("d%d", i%10), fmt.Sprintf("f%d", i)), string(buf))
	}
	e := &killedRestoreEnv{apiEnv: &apiEnv{daemonEnv: &daemonEnv{runEnv: run, bus: bus, notify: newNotifySocket(t), state: filepath.Dir(run.config)},
		called: map[string]bool{}}}
	e.startAgain(t)
	return e
}

// startAgain starts the daemon and waits for READY=1.
func (e *killedRestoreEnv) startAgain(t *testing.T) {
	t.Helper()
	from := len(e.notify.messages())
	e.daemon, e.log = e.start(t)
	e.notify.waitFor(t, from, 60*time.Second, "READY=1", func(m string) bool { return m == "READY=1" })
	log := e.log
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s", log.String())
		}
	})
}

// killMidRestore starts a restore (args after "restore home latest"), waits
// until restic has restored 64 MiB into the job's staging directory in
// stageIn, kills the daemon with SIGKILL, and waits for restic to
// be gone too. It returns the job's id and its staging directory.
func (e *killedRestoreEnv) killMidRestore(t *testing.T, stageIn func(id uint32) string, args ...string) (uint32, string) {
	t.Helper()
	out := e.mustCLI(t, append([]string{"restore", "home", "latest"}, args...)...)
	m := regexp.MustCompile(`^job (\d+) queued`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("subvault restore printed %q", out)
	}
	n, _ := strconv.ParseUint(m[1], 10, 32)
	id := uint32(n)
	stage := filepath.Join(stageIn(id), fmt.Sprintf(".subvault-restore-%d", id))
	var resticPID int
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resticPID = testutil.ProcessBelow(e.daemon.Process.Pid, "restic", "restore"); resticPID != 0 && stagedBytes(stage) >= 64<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no restic restore writing 64 MiB into %s within 60 s", stage)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := e.daemon.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = e.daemon.Wait()
	waitFor(t, 60*time.Second, func() int {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", resticPID)); os.IsNotExist(err) {
			return 1
		}
		return 0
	})
	if _, err := os.Lstat(stage); err != nil {
		t.Fatalf("after kill -9, the staging directory: %v", err)
	}
	t.Logf("killed with %d MiB in %s", stagedBytes(stage)>>20, stage)
	return id, stage
}

// stagedBytes is the size of the regular files under dir.
func stagedBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// job is job id as the state file has it.
func (e *killedRestoreEnv) job(t *testing.T, id uint32) queue.Job {
	t.Helper()
	for _, j := range e.jobs(t) {
		if j.ID == id {
			return j
		}
	}
	t.Fatalf("no job %d in the state file", id)
	return queue.Job{}
}

func (e *killedRestoreEnv) checkFailed(t *testing.T, j queue.Job, want ...string) {
	t.Helper()
	if j.Result != queue.ResultFailed || !strings.HasPrefix(j.Error, queue.InterruptedError+"; ") {
		t.Errorf("job %d after the restart: result %s, error %q", j.ID, j.Result, j.Error)
	}
	for _, w := range want {
		if !strings.Contains(j.Error, w) {
			t.Errorf("job %d's error lacks %q: %s", j.ID, w, j.Error)
		}
	}
	t.Logf("job %d: %s", j.ID, j.Error)
}

// A daemon killed (SIGKILL) while restic restores leaves the restore's
// staging directory and, for --subvolume, the half-restored subvolume; the
// next start removes both (the subvolume because its UUID is the one the
// job recorded), logs each removal as restore-leftover-removed, removes
// restic's stale lock, and fails the job with an error that says what it
// left. An in-place restore killed before the move into place leaves the
// subvolume as it was (the staged files never reach it; the top
// directory's times aside) and its pinned undo snapshot. Then a restore
// runs to its end.
func TestDaemonKilledMidRestoreCleansUpAtStart(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		e := newKilledRestoreEnv(t, bin, 400)
		home := e.fs.Path("home")
		e.mustCLI(t, "backup", "home", "--wait")
		archived := testutil.TreeState(t, home)
		delete(archived, ".")

		// Into a new subvolume.
		target := e.fs.Path("restored")
		id, _ := e.killMidRestore(t, func(uint32) string { return target }, target, "--subvolume")
		if ok, err := btrfs.IsSubvolume(target); !ok || err != nil {
			t.Fatalf("after kill -9, %s: subvolume %v, %v", target, ok, err)
		}
		e.startAgain(t)
		if _, err := os.Lstat(target); !os.IsNotExist(err) {
			t.Errorf("the half-restored subvolume is left: %v", err)
		}
		e.checkFailed(t, e.job(t, id), "the half-restored subvolume "+target+" was deleted")
		if n := strings.Count(e.log.String(), "event="+journal.EventRestoreLeftoverRemoved); n != 1 {
			t.Errorf("%d removals logged, want 1 (the subvolume):\n%s", n, e.log)
		}

		// In place, over a tree changed since the archive.
		for i := range 10 {
			testutil.WriteFile(t, filepath.Join(home, fmt.Sprintf("d%d", i), fmt.Sprintf("f%d", i)), "changed since the archive\n")
		}
		testutil.WriteFile(t, filepath.Join(home, "added"), "made after the archive\n")
		before := testutil.TreeState(t, home)
		id, stage := e.killMidRestore(t, func(uint32) string { return home }, "--in-place")
		e.startAgain(t)
		if _, err := os.Lstat(stage); !os.IsNotExist(err) {
			t.Errorf("the staging directory is left: %v", err)
		}
		after := testutil.TreeState(t, home)
		delete(before, ".")
		delete(after, ".")
		if d := testutil.DiffStates(before, after); len(d) > 0 {
			t.Errorf("the killed in-place restore changed home:\n%s", strings.Join(d, "\n"))
		}
		var undo []btrfs.Snapshot
		snaps, err := btrfs.ListSnapshots(e.fs.Path("snapshots"))
		for _, s := range snaps {
			if s.Pinned && s.JobID == id {
				undo = append(undo, s)
			}
		}
		if err != nil || len(undo) != 1 {
			t.Fatalf("the undo snapshot of job %d: %v %+v", id, err, snaps)
		}
		e.checkFailed(t, e.job(t, id), home+" is unchanged", "staging directory "+stage+" was removed",
			"kept in snapshot "+undo[0].Name()+" (subvault snapshots home); nothing was moved in, so nothing needs undoing")
		if n := strings.Count(e.log.String(), "event="+journal.EventRestoreLeftoverRemoved); n != 1 {
			t.Errorf("%d removals logged, want 1 (the staging directory):\n%s", n, e.log)
		}
		if out := e.mustCLI(t, "snapshots", "home"); !strings.Contains(out, undo[0].Name()) {
			t.Errorf("subvault snapshots home lacks the undo snapshot %s:\n%s", undo[0].Name(), out)
		}
		if locks := strings.TrimSpace(e.resticOut(t, "list", "locks", "--no-lock")); locks != "" {
			t.Errorf("restic locks left: %s", locks)
		}

		// The jobs' records do not come back at a third start.
		_ = e.daemon.Process.Signal(syscall.SIGTERM)
		_ = e.daemon.Wait()
		e.startAgain(t)
		if strings.Contains(e.log.String(), "restore interrupted") {
			t.Errorf("the third start looks at the restores again:\n%s", e.log)
		}
		e.mustCLI(t, "restore", "home", "latest", target, "--subvolume", "--wait")
		restored := testutil.TreeState(t, target)
		delete(restored, ".")
		if d := testutil.DiffStates(archived, restored); len(d) > 0 {
			t.Errorf("the restore after the restarts:\n%s", strings.Join(d, "\n"))
		}
	})
}

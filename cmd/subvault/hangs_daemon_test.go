package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/internal/testutil"
)

// newRestAPIEnv is newAPIEnv with restic bin and a repository on a REST
// server of its own, and planExtra added to the plan home.
func newRestAPIEnv(t *testing.T, bin string, files int, planExtra string) (*apiEnv, *testutil.RESTServer) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "busctl", "systemd")
	server := testutil.NewRESTServer(t, testutil.RESTOptions{})
	url := server.Repository("repo")
	fs := testutil.NewBtrfs(t, 1024, "home")
	state := t.TempDir()
	password := filepath.Join(state, "password")
	testutil.WriteSecret(t, password, testutil.ResticPassword+"\n")
	config := filepath.Join(state, "config.yaml")
	testutil.WriteFile(t, config, fmt.Sprintf(`repositories:
  r:
    url: %s
    password_file: %s
plans:
  home:
    subvolumes: [%s]
    repository: r
%ssettings:
  state_dir: %s
  cache_dir: %s
  restic: %s
`, url, password, fs.Path("home"), planExtra, state, filepath.Join(state, "cache"), bin))
	run := &runEnv{fs: fs, restic: bin, repo: url, password: password, config: config}
	run.resticOut(t, "init")
	e := &apiEnv{daemonEnv: &daemonEnv{runEnv: run, bus: testutil.NewSystemBus(t, busPolicy), notify: newNotifySocket(t), state: state}, called: map[string]bool{}}
	e.addFiles(t, "a", files)
	return e, server
}

// waitJob waits until job id has finished and returns it as the bus shows
// it, and how long after from.
func (e *apiEnv) waitJob(t *testing.T, id uint32, limit time.Duration, from time.Time) (contract.Job, time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		out, err := e.busctl("--json=short", "get-property", contract.BusName, string(contract.JobPath(id)), contract.JobInterface, "State")
		if err == nil && strings.Contains(out, `"finished"`) {
			took := time.Since(from)
			return e.jobOnBus(t, id), took
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d has not finished within %v (%s %v)", id, limit, out, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *apiEnv) jobOnBus(t *testing.T, id uint32) contract.Job {
	t.Helper()
	var j contract.Job
	for _, p := range []string{"Result", "Error"} {
		v := e.stringProperty(t, contract.JobPath(id), contract.JobInterface, p)
		if p == "Result" {
			j.Result = contract.Result(v)
		} else {
			j.Error = v
		}
	}
	j.ID = id
	return j
}

func (e *apiEnv) planProperty(t *testing.T, prop string) string {
	t.Helper()
	return e.stringProperty(t, contract.PlanPath("home"), contract.PlanInterface, prop)
}

func (e *apiEnv) stringProperty(t *testing.T, path dbus.ObjectPath, iface, prop string) string {
	t.Helper()
	out, err := e.busctl("--json=short", "get-property", contract.BusName, string(path), iface, prop)
	var v struct{ Data string }
	if err != nil || json.Unmarshal([]byte(out), &v) != nil {
		t.Fatalf("%s %s: %v %s", path, prop, err, out)
	}
	return v.Data
}

// waitUploading waits until job id has read some of its files.
func (e *apiEnv) waitUploading(t *testing.T, id uint32) {
	t.Helper()
	waitFor(t, time.Minute, func() int {
		out, err := e.busctl("--json=short", "get-property", contract.BusName, string(contract.JobPath(id)), contract.JobInterface, "BytesDone")
		var v struct{ Data uint64 }
		if err == nil && json.Unmarshal([]byte(out), &v) == nil && v.Data > 0 {
			return 1
		}
		return 0
	})
}

// resticBelow waits for the daemon's restic backup and returns its pid.
func resticBelow(t *testing.T, daemon *exec.Cmd) int {
	t.Helper()
	pid := waitFor(t, 60*time.Second, func() int { return testutil.ProcessBelow(daemon.Process.Pid, "restic", "backup") })
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	return pid
}

func gone(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return os.IsNotExist(err)
}

// Against a REST server that hangs (SIGSTOP) mid-backup, with both restic
// versions: the daemon's backup ends stalled within stall_timeout plus a
// few seconds, with no snapshot left and the plan failed with the reason;
// a cancel over D-Bus (subvault cancel) and a daemon stop while the server
// hangs each end within seconds; a restic that dies while the server hangs
// leaves its lock, which its failed job cannot remove within its bound, and
// the next backup once the server is back removes it and is done.
func TestDaemonJobOnAHungServer(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		const stall = 5 * time.Second
		// A lock check after a failure waits 10 s at most, less when
		// restic's stall_timeout ends it first.
		const lockWait = 10 * time.Second
		e, server := newRestAPIEnv(t, bin, 120, "    stall_timeout: 5s\n")
		cmd, log := e.startDaemonLogged(t)
		snapDir := e.fs.Path("home", ".subvault-snapshots")
		ver := testutil.ResticVersion(bin)

		// 1. The server hangs mid-backup: stalled.
		id := e.startJob(t, "StartBackup", "s", "home")
		pid := resticBelow(t, cmd)
		e.waitUploading(t, id) // restic has its lock
		server.Stop()
		hung := time.Now()
		j, took := e.waitJob(t, id, 2*time.Minute, hung)
		t.Logf("restic %s: server hung: job ended %s %v later: %s", ver, j.Result, took.Round(10*time.Millisecond), j.Error)
		if j.Result != contract.ResultStalled {
			t.Fatalf("result %q, want stalled; error %q", j.Result, j.Error)
		}
		// stall_timeout, restic's grace, the lock check after a stall (5 s
		// at most, in vain here) and a margin.
		if limit := stall + 3*time.Second + 5*time.Second + 10*time.Second; took > limit {
			t.Errorf("the stalled job ended %v after the server hung, want within %v", took, limit)
		}
		for _, want := range []string{"made no progress for 5s", "stall_timeout"} {
			if !strings.Contains(j.Error, want) {
				t.Errorf("error %q lacks %q", j.Error, want)
			}
		}
		if !gone(pid) {
			t.Errorf("restic %d still runs", pid)
		}
		if left, _ := btrfs.ListSnapshots(snapDir); len(left) != 0 {
			t.Errorf("snapshots left by the stalled job: %v", left)
		}
		if h, why := e.planProperty(t, "Health"), e.planProperty(t, "HealthReason"); h != string(contract.HealthFailed) || !strings.HasPrefix(why, "last backup stalled: ") {
			t.Errorf("plan health %q, %q; want failed, \"last backup stalled: ...\"", h, why)
		}
		if code, out, _ := e.cli(t, "status"); code != exitFailure || !strings.Contains(out, "stalled") {
			t.Errorf("subvault status: exit %d\n%s", code, out)
		}
		if !strings.Contains(log.String(), "event="+"job-stalled") {
			t.Errorf("no job-stalled event in the daemon's log")
		}

		// 2. subvault cancel while the server still hangs and restic does
		// not answer. The job first
		// tries to remove the lock the stalled one left (in vain: the
		// server hangs), then its restic backup waits on the server.
		id = e.startJob(t, "StartBackup", "s", "home")
		pid = resticBelow(t, cmd)
		time.Sleep(time.Second)
		// The worst case: a restic that does not even answer SIGINT
		// (stopped too), so that only SIGKILL after the grace ends it.
		stopProcess(t, pid)
		start := time.Now()
		if code, out, errOut := e.cli(t, "cancel", strconv.Itoa(int(id))); code != exitOK {
			t.Fatalf("subvault cancel: exit %d %s %s", code, out, errOut)
		}
		replied := time.Since(start)
		j, took = e.waitJob(t, id, time.Minute, start)
		t.Logf("restic %s: server hung: subvault cancel replied after %v, the job ended %s %v after the cancel", ver, replied.Round(10*time.Millisecond), j.Result, took.Round(10*time.Millisecond))
		if j.Result != contract.ResultCanceled {
			t.Errorf("result %q, want canceled (%s)", j.Result, j.Error)
		}
		if took > 5*time.Second+time.Second {
			t.Errorf("the canceled job ended %v after the cancel, want about 5 s at most", took)
		}
		if !gone(pid) {
			t.Errorf("restic %d still runs after the cancel", pid)
		}

		// 3. restic dies mid-backup (SIGKILL: it cannot remove its lock)
		// while the server hangs, so that the failed job cannot remove
		// the lock either: it leaves the check to the next backup.
		server.Cont()
		e.addFiles(t, "c", 60)
		id = e.startJob(t, "StartBackup", "s", "home")
		pid = resticBelow(t, cmd)
		e.waitUploading(t, id)
		server.Stop()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		j, took = e.waitJob(t, id, time.Minute, start)
		t.Logf("restic %s: restic killed while the server hangs: the job ended %s %v later: %s", ver, j.Result, took.Round(10*time.Millisecond), j.Error)
		if j.Result != contract.ResultFailed {
			t.Errorf("result %q, want failed", j.Result)
		}
		if took > lockWait+5*time.Second {
			t.Errorf("the failed job ended %v after restic died: its lock check is not bounded", took)
		}
		server.Cont()
		left := strings.Fields(e.resticOut(t, "list", "locks", "--no-lock"))
		t.Logf("restic %s: %d lock(s) left by the killed restic", ver, len(left))
		if len(left) == 0 {
			t.Error("the killed restic left no lock: the test proves nothing")
		}

		// 4. The server is back: the next backup removes that lock and is
		// done.
		id = e.startJob(t, "StartBackup", "s", "home")
		j, _ = e.waitJob(t, id, 3*time.Minute, time.Now())
		if j.Result != contract.ResultDone {
			t.Fatalf("the backup after the server came back: %s %s", j.Result, j.Error)
		}
		e.noSnapshotsNoLocks(t)
		e.resticOut(t, "check")
		if !strings.Contains(log.String(), `msg="stale restic locks of this host removed"`) {
			t.Error("the removal of the hung jobs' locks is not logged")
		}

		// 5. The daemon stops while the server hangs.
		e.addFiles(t, "b", 120)
		id = e.startJob(t, "StartBackup", "s", "home")
		pid = resticBelow(t, cmd)
		e.waitUploading(t, id)
		server.Stop()
		time.Sleep(time.Second)
		start = time.Now()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		took = time.Since(start)
		t.Logf("restic %s: server hung: the daemon stopped %v after SIGTERM", ver, took.Round(10*time.Millisecond))
		if took > 5*time.Second+time.Second {
			t.Errorf("the daemon took %v to stop, want about 5 s at most", took)
		}
		if !gone(pid) {
			t.Errorf("restic %d still runs after the daemon stopped", pid)
		}
		if left, _ := btrfs.ListSnapshots(snapDir); len(left) != 0 {
			t.Errorf("snapshots left: %v", left)
		}
		server.Cont()
		jobs := e.jobs(t)
		if last := jobs[len(jobs)-1]; last.ID != id || last.Result != queue.ResultFailed {
			t.Errorf("the job the stop interrupted: %+v", last)
		}
	})
}

// A plan's timeout bounds its other jobs too: a check on a hung server,
// with stall_timeout off so that only the timeout can end it, ends failed
// with the timeout's words, soon after the timeout. (The bound is a
// context, the same for every restic version: one version is enough.)
func TestDaemonCheckTimeout(t *testing.T) {
	bin := testutil.Restic(t)
	e, server := newRestAPIEnv(t, bin, 5, "    timeout: 4s\n    stall_timeout: \"0\"\n")
	e.startDaemon(t)
	id := e.startJob(t, "StartBackup", "s", "home")
	if j, _ := e.waitJob(t, id, 2*time.Minute, time.Now()); j.Result != contract.ResultDone {
		t.Fatalf("the first backup: %s %s", j.Result, j.Error)
	}
	server.Stop()
	start := time.Now()
	id = e.startJob(t, "StartCheck", "s", "home")
	j, took := e.waitJob(t, id, time.Minute, start)
	t.Logf("restic %s: check on a hung server with timeout 4s: %s after %v: %s", testutil.ResticVersion(bin), j.Result, took.Round(10*time.Millisecond), j.Error)
	if j.Result != contract.ResultFailed || !strings.HasPrefix(j.Error, "check stopped after running longer than plan home's timeout of 4s") {
		t.Errorf("result %s, error %q; want failed, naming the timeout", j.Result, j.Error)
	}
	if took > 4*time.Second+3*time.Second+5*time.Second {
		t.Errorf("the check ended %v after it started, with a timeout of 4 s", took)
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon"
	"github.com/subvault/subvault/daemon/state"
	"github.com/subvault/subvault/internal/testutil"
)

// withBadPlan adds a manual plan bad whose repository is not there: its
// backup fails.
func (e *apiEnv) withBadPlan(t *testing.T) {
	t.Helper()
	srv := e.fs.Path("srv")
	testutil.Run(t, "btrfs", "subvolume", "create", srv)
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, e.config, strings.Replace(string(cfg), "plans:\n",
		"  gone:\n    url: /nonexistent/subvault-test-repo\n    password_file: "+e.password+"\nplans:\n  bad:\n    subvolumes: ["+srv+"]\n    repository: gone\n", 1))
}

// startRunBackup starts `subvault run backup plan` with config as its own
// process, its stdout and stderr in out; it is killed at the end of the
// test if it still runs.
func startRunBackup(t *testing.T, config, plan string) (cmd *exec.Cmd, out *testutil.SyncBuffer) {
	t.Helper()
	cmd = subvaultCmd("run", "backup", plan, "--config", config)
	out = &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// A restic left behind (stopped by a test) must not hold Wait on the
	// output it inherited.
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, out
}

// runForeground runs `subvault run backup plan` as its own process, as a
// timer would, and returns its exit code and output.
func (e *apiEnv) runForeground(t *testing.T, plan string) (int, string) {
	t.Helper()
	code, out, errOut := runCmd(t, subvaultCmd("run", "backup", plan, "--config", e.config))
	return code, out + errOut
}

func (e *apiEnv) cliJobs(t *testing.T) []contract.Job {
	t.Helper()
	code, out, errOut := e.cli(t, "jobs", "--json")
	var jobs []contract.Job
	if err := json.Unmarshal([]byte(out), &jobs); code != exitOK || err != nil {
		t.Fatalf("jobs --json: exit %d, %v: %s%s", code, err, out, errOut)
	}
	return jobs
}

func (e *apiEnv) cliPlan(t *testing.T, name string) contract.Plan {
	t.Helper()
	code, out, errOut := e.cli(t, "plans", "--json")
	var plans []contract.Plan
	if err := json.Unmarshal([]byte(out), &plans); code != exitOK || err != nil {
		t.Fatalf("plans --json: exit %d, %v: %s%s", code, err, out, errOut)
	}
	for _, p := range plans {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no plan %s in %s", name, out)
	return contract.Plan{}
}

// waitFinished waits until `subvault jobs` shows job id finished, and returns it.
func (e *apiEnv) waitFinished(t *testing.T, id uint32, limit time.Duration) contract.Job {
	t.Helper()
	return e.waitCLIJob(t, id, contract.StateFinished, limit)
}

// waitRunning waits until `subvault jobs` shows job id running.
func (e *apiEnv) waitRunning(t *testing.T, id uint32, limit time.Duration) contract.Job {
	t.Helper()
	return e.waitCLIJob(t, id, contract.StateRunning, limit)
}

// waitCLIJob waits until `subvault jobs` shows job id in state, and
// returns it.
func (e *apiEnv) waitCLIJob(t *testing.T, id uint32, state contract.State, limit time.Duration) contract.Job {
	t.Helper()
	var found contract.Job
	waitFor(t, limit, func() int {
		for _, j := range e.cliJobs(t) {
			if j.ID == id && j.State == state {
				found = j
				return 1
			}
		}
		return 0
	})
	return found
}

func (e *apiEnv) spoolNames(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(e.state, state.ForegroundDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range entries {
		names = append(names, d.Name())
	}
	return names
}

// A `subvault run backup` from a timer, beside a running daemon: its
// failure shows in jobs, plans and status (trigger foreground) and on the
// bus (JobRemoved); a done one moves the plan's last success. Before, none
// of it was seen: the run was recorded nowhere. The parts of issue 15
// together: the daemon's metrics listener counts each imported job once
// (the failure in subvault_last_backup_success and subvault_jobs_total,
// the success's end in subvault_last_success_timestamp_seconds), waybar
// shows the failure, and settings.notify's webhook gets one start and
// one end per run, from the run: none from the daemon that imports it.
func TestForegroundRunSeenByRunningDaemon(t *testing.T) {
	e := newAPIEnv(t, 5)
	e.withBadPlan(t)
	rec := newPingRecorder(t)
	listen := withMetricsListen(t, e)
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, e.config, strings.Replace(string(cfg), "\nsettings:\n", "\nsettings:\n  notify:\n    - webhook: "+rec.URL+"/hook\n", 1))
	e.startDaemon(t)

	code, out := e.runForeground(t, "bad")
	if code != exitFailure {
		t.Fatalf("run backup bad: exit %d, want %d\n%s", code, exitFailure, out)
	}
	// Job 1: the first id of the state directory, shared with the daemon.
	if result := e.signals.waitRemoved(t, 1, 30*time.Second); result != string(contract.ResultFailed) {
		t.Errorf("JobRemoved of the foreground job: result %q, want failed", result)
	}
	j := e.waitFinished(t, 1, 10*time.Second)
	if j.Plan != "bad" || j.Result != contract.ResultFailed || j.Trigger != "foreground" || j.Error == "" || j.StartedAt.IsZero() {
		t.Errorf("the foreground job as jobs shows it: %+v", j)
	}
	code, table, _ := e.cli(t, "jobs")
	checkTable(t, table, []string{"ID", "KIND", "PLAN", "STARTED", "TOOK", "TRIGGER", "STATE"},
		[][]string{{"1", "backup", "bad", rfc3339, dur, "foreground", "failed"}})
	if code != exitOK {
		t.Errorf("jobs: exit %d", code)
	}
	if p := e.cliPlan(t, "bad"); p.LastResult != contract.ResultFailed || p.LastBackup.IsZero() || p.Health != contract.HealthFailed ||
		!strings.Contains(p.LastError, "subvault-test-repo") {
		t.Errorf("plan bad after its failed foreground backup: %+v", p)
	}
	_, status, _ := e.cli(t, "status")
	if !strings.Contains(status, "bad ") || !strings.Contains(status, "failed") {
		t.Errorf("status does not show the failed foreground backup:\n%s", status)
	}
	waitMetric(t, listen, 10*time.Second, 0, "subvault_last_backup_success", "plan", "bad")
	waitMetric(t, listen, 10*time.Second, 1, "subvault_jobs_total", "kind", "backup", "result", "failed")
	var line barLine
	if code, bar, _ := e.cli(t, "waybar"); code != exitOK || json.Unmarshal([]byte(bar), &line) != nil || line.Class != classFailed {
		t.Errorf("subvault waybar after the failed foreground backup (exit %d): %s; want class failed", code, bar)
	}

	before := time.Now()
	if code, out := e.runForeground(t, "home"); code != exitOK {
		t.Fatalf("run backup home: exit %d\n%s", code, out)
	}
	if result := e.signals.waitRemoved(t, 2, 30*time.Second); result != string(contract.ResultDone) {
		t.Errorf("JobRemoved of the done foreground job: %q", result)
	}
	j = e.waitFinished(t, 2, 10*time.Second)
	if j.Result != contract.ResultDone || j.ArchiveID == "" || j.Summary["files_new"] == nil {
		t.Errorf("done foreground job: %+v", j)
	}
	if p := e.cliPlan(t, "home"); p.LastResult != contract.ResultDone || p.LastSuccess.Before(before) || p.Health != contract.HealthOK {
		t.Errorf("plan home after its done foreground backup: %+v", p)
	}
	waitMetric(t, listen, 10*time.Second, float64(j.FinishedAt.UnixMilli())/1000, "subvault_last_success_timestamp_seconds", "plan", "home")
	waitMetric(t, listen, 10*time.Second, 1, "subvault_jobs_total", "kind", "backup", "result", "done")
	waitMetric(t, listen, 10*time.Second, 1, "subvault_jobs_total", "kind", "backup", "result", "failed")
	// The webhook: each run's start and end, sent by the run (trigger
	// foreground), and nothing from the daemon that imported the jobs
	// (its reports would come within the waits above).
	hook := webhookEvents(t, rec.requests("/hook"))
	var got []string
	for _, ev := range hook {
		got = append(got, fmt.Sprintf("%s %s %d %s", ev.Event, ev.Plan, ev.Job, ev.Trigger))
	}
	if want := []string{"start bad 1 foreground", "failure bad 1 foreground", "start home 2 foreground", "success home 2 foreground"}; !slices.Equal(got, want) {
		t.Errorf("the webhook got %q, want %q", got, want)
	}
	if left := e.spoolNames(t); len(left) != 0 {
		t.Errorf("records left in the spool after the import: %v", left)
	}
	// The history survives the daemon: jobs.json holds both.
	if jobs := e.jobs(t); len(jobs) != 2 || jobs[0].ID != 1 || jobs[1].ID != 2 {
		t.Errorf("jobs.json: %+v", jobs)
	}
}

// Without a daemon the records wait; the next daemon imports them, in id
// order, and a broken record beside them is moved aside and logged,
// never a reason not to start.
func TestForegroundRunsImportedAtDaemonStart(t *testing.T) {
	e := newAPIEnv(t, 5)
	e.withBadPlan(t)
	if code, out := e.runForeground(t, "home"); code != exitOK {
		t.Fatalf("run backup home: exit %d\n%s", code, out)
	}
	if code, out := e.runForeground(t, "bad"); code != exitFailure {
		t.Fatalf("run backup bad: exit %d\n%s", code, out)
	}
	if names := e.spoolNames(t); strings.Join(names, " ") != "1.json 2.json" {
		t.Fatalf("spool before the daemon starts: %v, want 1.json 2.json", names)
	}
	broken := filepath.Join(e.state, state.ForegroundDir, "7.json")
	testutil.WriteFile(t, broken, `{"version":1,"id":7,"kind":"backup","plan":"home","state":"finished","surprise":1}`)

	_, log := e.startDaemonLogged(t)
	jobs := e.cliJobs(t)
	if len(jobs) != 2 || jobs[0].ID != 2 || jobs[1].ID != 1 {
		t.Fatalf("jobs after the start: %+v, want 2 then 1 (newest first)", jobs)
	}
	if jobs[1].Result != contract.ResultDone || jobs[0].Result != contract.ResultFailed || jobs[0].Trigger != "foreground" || jobs[1].Trigger != "foreground" {
		t.Errorf("imported jobs: %+v", jobs)
	}
	if p := e.cliPlan(t, "home"); p.LastResult != contract.ResultDone || p.LastSuccess.IsZero() {
		t.Errorf("plan home: %+v", p)
	}
	if p := e.cliPlan(t, "bad"); p.LastResult != contract.ResultFailed {
		t.Errorf("plan bad: %+v", p)
	}
	if names := e.spoolNames(t); strings.Join(names, " ") != "broken" {
		t.Errorf("spool after the start: %v, want only broken/", names)
	}
	aside, _ := filepath.Glob(filepath.Join(e.state, state.ForegroundDir, "broken", "7.json.broken-*"))
	if len(aside) != 1 {
		t.Errorf("the broken record is not aside: %v", aside)
	}
	if !strings.Contains(log.String(), "record cannot be read") || !strings.Contains(log.String(), "surprise") {
		t.Errorf("the broken record is not logged with its cause:\n%s", log.String())
	}
}

// A `subvault run backup` killed with SIGKILL mid-backup records nothing
// at its end: while it ran the daemon showed it running (and refused to
// cancel it, naming the process), and once it is gone the daemon fails it
// as interrupted; nothing else changes.
func TestForegroundRunKilledIsInterrupted(t *testing.T) {
	e := newAPIEnv(t, 300)
	e.startDaemon(t)
	cmd, _ := startRunBackup(t, e.config, "home")
	waitFor(t, 60*time.Second, func() int { return testutil.ProcessBelow(cmd.Process.Pid, "restic", "backup") })
	running := e.waitRunning(t, 1, 15*time.Second)
	if running.Trigger != "foreground" {
		t.Errorf("running foreground job: %+v", running)
	}
	name, msg := e.send("CancelJob", "uint32:1")
	if name != contract.ErrorFailed || !strings.Contains(msg, fmt.Sprintf("process %d", cmd.Process.Pid)) || !strings.Contains(msg, "subvault run backup home") {
		t.Errorf("CancelJob of the foreground job: %s %s", name, msg)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed := time.Now()
	j := e.waitFinished(t, 1, 30*time.Second)
	t.Logf("the daemon failed the killed run %v after the kill", time.Since(killed).Round(time.Millisecond))
	if j.Result != contract.ResultFailed || j.Error != daemon.ForegroundInterrupted || j.Trigger != "foreground" {
		t.Errorf("killed foreground job: %+v", j)
	}
	if p := e.cliPlan(t, "home"); p.LastResult != contract.ResultFailed || !p.LastSuccess.IsZero() {
		t.Errorf("plan home after the killed run: %+v", p)
	}
	if jobs := e.cliJobs(t); len(jobs) != 1 {
		t.Errorf("jobs after the killed run: %+v, want only it", jobs)
	}
	if left := e.spoolNames(t); len(left) != 0 {
		t.Errorf("records left: %v", left)
	}
}

// recordJSON is a valid finished record of job id, as root's `subvault run
// backup` writes it.
func recordJSON(t *testing.T, id uint32, plan string, result contract.Result) string {
	t.Helper()
	now := time.Now().UTC()
	data, err := json.Marshal(map[string]any{"version": 1, "id": id, "kind": "backup", "plan": plan, "state": "finished",
		"pid": 1, "pid_start": 1, "boot_id": "00000000-0000-0000-0000-000000000000",
		"started_at": now.Add(-time.Minute), "finished_at": now, "result": result})
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// A user (uid 65534, a real process) cannot write into the spool (the
// state directory is root's, 0700) and so cannot make the daemon import a
// job; even with the spool left writable to all by mistake, the daemon
// reads nothing in it, and a record the user planted there is moved aside
// once the spool is root's again. (docs/security.md, the foreground spool.)
func TestHostileForegroundSpool(t *testing.T) {
	testutil.RequireNobody(t)
	e := newAPIEnv(t, 5)
	// The user can reach the state directory, as a mistake could allow;
	// the spool stays root's 0700.
	for _, d := range []string{filepath.Dir(e.state), e.state} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, log := e.startDaemonLogged(t)
	spool := filepath.Join(e.state, state.ForegroundDir)
	if fi, err := os.Stat(spool); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("the daemon's spool %s: %v %v, want 0700", spool, fi.Mode(), err)
	}
	planted := filepath.Join(spool, "5.json")
	record := recordJSON(t, 5, "home", contract.ResultDone)
	if out, err := testutil.RunHostile(t, time.Minute, "write-file", planted, "644", record); err == nil {
		t.Fatalf("the user wrote a record into root's 0700 spool: %s", out)
	}

	// A spool left writable to all: the user's record is not read.
	if err := os.Chmod(spool, 0o777); err != nil {
		t.Fatal(err)
	}
	if out, err := testutil.RunHostile(t, time.Minute, "write-file", planted, "644", record); err != nil {
		t.Fatalf("the user cannot write into a spool writable to all: %v %s", err, out)
	}
	waitFor(t, 15*time.Second, func() int {
		if strings.Contains(log.String(), "writable by no one else") {
			return 1
		}
		return 0
	})
	if jobs := e.cliJobs(t); len(jobs) != 0 {
		t.Errorf("the daemon imported a record from a spool writable to all: %+v", jobs)
	}

	// Root's again: the user's file is moved aside, not imported.
	if err := os.Chmod(spool, 0o700); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, filepath.Join(spool, ".poke"), "") // any write wakes the daemon
	waitFor(t, 15*time.Second, func() int {
		if aside, _ := filepath.Glob(filepath.Join(spool, "broken", "5.json.broken-*")); len(aside) == 1 {
			return 1
		}
		return 0
	})
	if !strings.Contains(log.String(), "owned by uid 65534") {
		t.Errorf("the user's record is not logged as the user's:\n%s", log.String())
	}
	if jobs := e.cliJobs(t); len(jobs) != 0 {
		t.Errorf("the daemon imported the user's record: %+v", jobs)
	}
	if p := e.cliPlan(t, "home"); !p.LastBackup.IsZero() {
		t.Errorf("the user's record moved plan home: %+v", p)
	}
}

// 10,000 records (written by root: a bound, not an attack) are imported in
// batches of state.ScanLimit with a log line, in bounded time and memory;
// the history keeps job_history of them, the newest.
func TestForegroundSpoolFlood(t *testing.T) {
	e := newAPIEnv(t, 1)
	const n = 10000
	spool, err := state.EnsureSpool(e.state)
	if err != nil {
		t.Fatal(err)
	}
	for id := uint32(1); id <= n; id++ {
		testutil.WriteFile(t, filepath.Join(spool, fmt.Sprintf("%d.json", id)), recordJSON(t, id, "home", contract.ResultDone))
	}
	if err := state.ReserveJobIDs(e.state, n); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd, log := e.startDaemonLogged(t)
	took := time.Since(start)
	var hwm string
	if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)); err == nil {
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "VmHWM:") {
				hwm = strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:"))
			}
		}
	}
	t.Logf("%d records imported before READY=1 in %v; the daemon's peak RSS %s", n, took.Round(time.Millisecond), hwm)
	if took > 2*time.Minute {
		t.Errorf("the import of %d records took %v", n, took)
	}
	var kib int
	if _, err := fmt.Sscanf(hwm, "%d kB", &kib); err == nil && kib > 512<<10 {
		t.Errorf("the daemon's peak RSS %s while importing %d records", hwm, n)
	}
	if !strings.Contains(log.String(), "more records than one import takes") {
		t.Errorf("no log line of the flood:\n%s", tail(log.String(), 2000))
	}
	if left := e.spoolNames(t); len(left) != 0 {
		t.Errorf("%d names left in the spool", len(left))
	}
	jobs := e.cliJobs(t)
	if len(jobs) != 200 || jobs[0].ID != n || jobs[199].ID != n-199 {
		t.Errorf("history after the flood: %d jobs, first %d", len(jobs), jobs[0].ID)
	}

	// A second flood while the daemon runs: the watch imports it as it is
	// written (each record fsynced twice: the writing takes the time).
	const more = 2000
	if err := state.ReserveJobIDs(e.state, n+more); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	for id := uint32(n + 1); id <= n+more; id++ {
		// Atomically, as subvault run writes: the daemon reads meanwhile.
		if err := state.WriteFileAtomic(filepath.Join(spool, fmt.Sprintf("%d.json", id)), []byte(recordJSON(t, id, "home", contract.ResultDone)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	written := time.Since(start)
	waitFor(t, 2*time.Minute, func() int {
		if jobs := e.cliJobs(t); len(jobs) > 0 && jobs[0].ID == n+more {
			return 1
		}
		return 0
	})
	t.Logf("%d more records written (atomically, fsynced: %v) and imported by the running daemon in %v", more,
		written.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if left := e.spoolNames(t); len(left) != 0 {
		t.Errorf("%d names left in the spool: %.200v", len(left), left)
	}
}

// A backup asked of the daemon while a `subvault run backup` of the plan
// runs waits, queued, for that run, then runs and ends done; without the
// wait it failed at once, "plan is busy" (the run holds the plan's lock).
func TestDaemonBackupWaitsForForegroundRun(t *testing.T) {
	e := newAPIEnv(t, 300)
	e.startDaemon(t)
	cmd, out := startRunBackup(t, e.config, "home")
	e.waitRunning(t, 1, 30*time.Second)
	id := e.startJob(t, "StartBackup", "s", "home")
	for _, j := range e.cliJobs(t) {
		if j.ID == id && j.State != contract.StateQueued {
			t.Errorf("the daemon's backup while the foreground run runs: %s %s %s", j.State, j.Result, j.Error)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("run backup home: %v\n%s", err, out.String())
	}
	if result := e.signals.waitRemoved(t, 1, 30*time.Second); result != string(contract.ResultDone) {
		t.Errorf("foreground run: %s", result)
	}
	if result := e.signals.waitRemoved(t, id, 2*time.Minute); result != string(contract.ResultDone) {
		j := e.waitFinished(t, id, time.Second)
		t.Errorf("the daemon's backup after the foreground run: %s: %s", result, j.Error)
	}
}

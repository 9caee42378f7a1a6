package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
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
	var found contract.Job
	waitFor(t, limit, func() int {
		for _, j := range e.cliJobs(t) {
			if j.ID == id && j.State == contract.StateFinished {
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
// of it was seen: the run was recorded nowhere.
func TestForegroundRunSeenByRunningDaemon(t *testing.T) {
	e := newAPIEnv(t, 5)
	e.withBadPlan(t)
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
	cmd := subvaultCmd("run", "backup", "home", "--config", e.config)
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
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

// waitRunning waits until `subvault jobs` shows job id running.
func (e *apiEnv) waitRunning(t *testing.T, id uint32, limit time.Duration) contract.Job {
	t.Helper()
	var found contract.Job
	waitFor(t, limit, func() int {
		for _, j := range e.cliJobs(t) {
			if j.ID == id && j.State == contract.StateRunning {
				found = j
				return 1
			}
		}
		return 0
	})
	return found
}

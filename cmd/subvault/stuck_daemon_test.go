package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/internal/testutil"
)

// A healthy plan's backup never waits behind a stuck one: two plans, each
// on a REST server of its own, max_concurrent_jobs 1 and the default
// stall_timeout of 10 minutes. home's server hangs (SIGSTOP) while its
// backup uploads; srv's backup, asked for meanwhile, is queued behind it,
// starts once home's job counts as waiting on its repository (no progress
// from restic for 30 s) and ends done while home's job still runs, shown
// stuck on the bus and by subvault jobs and status. When the server comes
// back, home's backup moves again and ends done too; each change is
// logged once. With both restic versions.
func TestHealthyPlanNotQueuedBehindAStuckOne(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		testutil.RequireRoot(t)
		testutil.RequireCommand(t, "busctl", "systemd")
		stuckServer := testutil.NewRESTServer(t, testutil.RESTOptions{})
		healthyServer := testutil.NewRESTServer(t, testutil.RESTOptions{})
		fs := testutil.NewBtrfs(t, 1024, "home", "srv")
		state := t.TempDir()
		password := filepath.Join(state, "password")
		testutil.WriteSecret(t, password, testutil.ResticPassword+"\n")
		config := filepath.Join(state, "config.yaml")
		testutil.WriteFile(t, config, fmt.Sprintf(`repositories:
  stuck:
    url: %s
    password_file: %s
  healthy:
    url: %s
    password_file: %s
plans:
  home:
    subvolumes: [%s]
    repository: stuck
    stall_timeout: 10m
  srv:
    subvolumes: [%s]
    repository: healthy
    stall_timeout: 10m
settings:
  max_concurrent_jobs: 1
  state_dir: %s
  cache_dir: %s
  restic: %s
`, stuckServer.Repository("repo"), password, healthyServer.Repository("repo"), password,
			fs.Path("home"), fs.Path("srv"), state, filepath.Join(state, "cache"), bin))
		run := &runEnv{fs: fs, restic: bin, repo: stuckServer.Repository("repo"), password: password, config: config}
		run.resticOut(t, "init")
		healthy := *run
		healthy.repo = healthyServer.Repository("repo")
		healthy.resticOut(t, "init")
		e := &apiEnv{daemonEnv: &daemonEnv{runEnv: run, bus: testutil.NewSystemBus(t, busPolicy), notify: newNotifySocket(t), state: state}, called: map[string]bool{}}
		e.addFiles(t, "a", 200) // 200 MiB for home
		for i := range 5 {
			testutil.WriteFile(t, fs.Path("srv", fmt.Sprintf("f%d", i)), strings.Repeat("srv ", 1<<16))
		}
		cmd, log := e.startDaemonLogged(t)
		ver := testutil.ResticVersion(bin)

		stuck := e.startJob(t, "StartBackup", "s", "home")
		resticBelow(t, cmd)
		e.waitUploading(t, stuck)
		stuckServer.Stop()
		hung := time.Now()
		t.Cleanup(stuckServer.Cont) // a failed test leaves no stopped server behind

		other := e.startJob(t, "StartBackup", "s", "srv")
		if s := e.stringProperty(t, contract.JobPath(other), contract.JobInterface, "State"); s != string(contract.StateQueued) {
			t.Fatalf("srv's backup is %s at once, want queued behind home's (max_concurrent_jobs 1): the test proves nothing", s)
		}
		j, _ := e.waitJob(t, other, 3*time.Minute, hung)
		queuedAt, startedAt := e.timeProperty(t, other, "QueuedAt"), e.timeProperty(t, other, "StartedAt")
		waited := startedAt.Sub(queuedAt)
		t.Logf("restic %s: srv's backup waited %v behind home's stuck one (server hung %v before it started), ended %s after %v",
			ver, waited.Round(10*time.Millisecond), startedAt.Sub(hung).Round(10*time.Millisecond), j.Result, time.Since(queuedAt).Round(10*time.Millisecond))
		if j.Result != contract.ResultDone {
			t.Fatalf("srv's backup: %s %s, want done", j.Result, j.Error)
		}
		if limit := 30*time.Second + 15*time.Second; startedAt.Sub(hung) > limit {
			t.Errorf("srv's backup started %v after home's server hung, want within about %v", startedAt.Sub(hung), limit)
		}
		if s := e.stringProperty(t, contract.JobPath(stuck), contract.JobInterface, "State"); s != string(contract.StateRunning) {
			t.Fatalf("home's backup is %s once srv's is done, want still running (the test proves nothing)", s)
		}
		why := e.stringProperty(t, contract.JobPath(stuck), contract.JobInterface, "Waiting")
		since := e.timeProperty(t, stuck, "WaitingSince")
		t.Logf("restic %s: home's job waits: %q, no progress since %v after the server hung", ver, why, since.Sub(hung).Round(10*time.Millisecond))
		if why == "" || since.IsZero() || since.Before(hung.Add(-5*time.Second)) || since.After(hung.Add(5*time.Second)) {
			t.Errorf("home's job: Waiting %q since %v; want a reason and about the moment its server hung (%v)", why, since, hung)
		}
		for _, c := range [][]string{{"jobs"}, {"status"}} {
			code, out, errOut := e.cli(t, c...)
			if !strings.Contains(out, "stuck: no progress for ") {
				t.Errorf("subvault %s (exit %d) does not show home's job stuck:\n%s%s", c[0], code, out, errOut)
			}
			for l := range strings.Lines(out) {
				if strings.Contains(l, "stuck") {
					t.Logf("restic %s: subvault %s: %s", ver, c[0], strings.TrimSpace(l))
				}
			}
		}

		stuckServer.Cont()
		j, took := e.waitJob(t, stuck, 5*time.Minute, time.Now())
		t.Logf("restic %s: home's backup ended %s %v after its server came back", ver, j.Result, took.Round(10*time.Millisecond))
		if j.Result != contract.ResultDone {
			t.Fatalf("home's backup after its server came back: %s %s, want done", j.Result, j.Error)
		}
		logged := log.String()
		for _, event := range []string{"job-waiting", "job-moving"} {
			if n := strings.Count(logged, "event="+event+" "); n != 1 {
				t.Errorf("%d %s entries in the daemon's log, want 1", n, event)
			}
		}
		e.resticOut(t, "check")
	})
}

// timeProperty is job id's time property prop.
func (e *apiEnv) timeProperty(t *testing.T, id uint32, prop string) time.Time {
	t.Helper()
	out, err := e.busctl("--json=short", "get-property", contract.BusName, string(contract.JobPath(id)), contract.JobInterface, prop)
	var v struct{ Data uint64 }
	if err != nil || json.Unmarshal([]byte(out), &v) != nil {
		t.Fatalf("job %d %s: %v %s", id, prop, err, out)
	}
	return contract.FromMicros(v.Data)
}

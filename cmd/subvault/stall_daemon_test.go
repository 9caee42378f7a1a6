package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/internal/testutil"
)

// The dead man's switch for stuck jobs (docs/configuration.md, Timeouts):
// a real daemon on a private bus backs up a btrfs subvolume to a REST
// server with both restic versions, and the daemon's restic is stopped
// with SIGSTOP mid-backup, as a restic stuck on a hung server is.

// boolProperty is job id's boolean property prop.
func (e *apiEnv) boolProperty(t *testing.T, id uint32, prop string) bool {
	t.Helper()
	out, err := e.busctl("--json=short", "get-property", contract.BusName, string(contract.JobPath(id)), contract.JobInterface, prop)
	var v struct{ Data bool }
	if err != nil || json.Unmarshal([]byte(out), &v) != nil {
		t.Fatalf("job %d %s: %v %s", id, prop, err, out)
	}
	return v.Data
}

// waitStalled waits until job id's Stalled property is want and returns
// how long after from.
func (e *apiEnv) waitStalled(t *testing.T, id uint32, want bool, limit time.Duration, from time.Time) time.Duration {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if e.boolProperty(t, id, "Stalled") == want {
			return time.Since(from)
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d: Stalled is not %v within %v", id, want, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stalledSignals are the PropertiesChanged of job id that set Stalled, in
// order.
func (e *apiEnv) stalledSignals(id uint32) []bool {
	var out []bool
	for _, s := range e.signals.all() {
		if s.Path != contract.JobPath(id) || s.Name != "org.freedesktop.DBus.Properties.PropertiesChanged" || len(s.Body) < 2 {
			continue
		}
		changed, _ := s.Body[1].(map[string]dbus.Variant)
		if v, ok := changed["Stalled"]; ok {
			b, _ := v.Value().(bool)
			out = append(out, b)
		}
	}
	return out
}

// on_stall: report. A backup whose restic is stopped counts as stalled
// within stall_timeout plus a few seconds and goes on: the job's Stalled
// and StalledSince on the bus (with PropertiesChanged), a job-stall-reported
// entry in the daemon's log, waybar's class stalled, "stalled: no progress
// for ..." in jobs, status and job; restic is not stopped, and the job
// still runs at three times stall_timeout. A user who is not allowed the
// plan (uid 65534) can neither cancel it nor set its mark. After SIGCONT
// the mark clears (job-stall-cleared) and the backup ends done, leaving
// no snapshot and no lock, in a repository that checks clean. The parts
// of issue 15 together: the plan's webhook gets start, stalled (this job)
// and success, and the metrics listener's subvault_stalled_jobs of the
// plan is 1 while the job counts as stalled and 0 once it ended.
func TestDaemonStallReported(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		const stall = 4 * time.Second
		rec := newPingRecorder(t)
		e, _ := newRestAPIEnv(t, bin, 200, "    stall_timeout: 4s\n    on_stall: report\n    notify:\n      - webhook: "+rec.URL+"/hook\n")
		listen := withMetricsListen(t, e)
		cmd, log := e.startDaemonLogged(t)
		ver := testutil.ResticVersion(bin)
		notifications := testutil.NewNotificationServer(t)
		notifyLog, _ := testutil.StartProcess(t, "subvault notify", subvaultCmd("notify", "--bus", e.bus.Address, "--session-bus", notifications.Bus.Address))
		waitFor(t, 15*time.Second, func() int { return strings.Count(notifyLog.String(), "following the daemon") })

		id := e.startJob(t, "StartBackup", "s", "home")
		pid := resticBelow(t, cmd)
		e.waitUploading(t, id)
		stopProcess(t, pid)
		stopped := time.Now()
		if e.boolProperty(t, id, "Stalled") {
			t.Fatal("the job is stalled the moment its restic stopped")
		}
		took := e.waitStalled(t, id, true, stall+15*time.Second, stopped)
		since := e.timeProperty(t, id, "StalledSince")
		t.Logf("restic %s: stopped restic: the job counts as stalled %v later, no progress since %v from the stop",
			ver, took.Round(10*time.Millisecond), since.Sub(stopped).Round(10*time.Millisecond))
		if took < stall-time.Second {
			t.Errorf("stalled %v after the stop, before its stall_timeout of %v", took, stall)
		}
		if since.IsZero() || since.Before(stopped.Add(-5*time.Second)) || since.After(stopped.Add(time.Second)) {
			t.Errorf("StalledSince %v, want about the moment restic stopped (%v)", since, stopped)
		}
		out, err := e.busctl("--json=short", "get-property", contract.BusName, string(contract.JobPath(id)), contract.JobInterface, "StallTimeout")
		if err != nil || !strings.Contains(out, `"data":4`) {
			t.Errorf("StallTimeout: %s %v, want 4 (seconds)", out, err)
		}
		waitFor(t, 5*time.Second, func() int { return len(e.stalledSignals(id)) })
		if got := e.stalledSignals(id); len(got) != 1 || !got[0] {
			t.Errorf("PropertiesChanged of Stalled: %v, want one, true", got)
		}
		if n := strings.Count(log.String(), "event=job-stall-reported "); n != 1 {
			t.Errorf("%d job-stall-reported entries in the daemon's log, want 1", n)
		}
		// Watched from outside: the metric and the webhook.
		waitMetric(t, listen, 10*time.Second, 1, "subvault_stalled_jobs", "plan", "home")
		if hook := webhookEvents(t, rec.wait(t, "/hook", 2, 10*time.Second)); len(hook) != 2 || hook[0].Event != "start" ||
			hook[1].Event != "stalled" || hook[1].Plan != "home" || hook[1].Job != id || hook[1].Result != "" {
			t.Errorf("the plan's webhook got %+v; want start, then stalled of job %d of home", hook, id)
		}

		// Shown wherever a user looks: the desktop notifier first.
		waitFor(t, 5*time.Second, func() int { return notifications.Displayed(t) })
		code, bar, _ := e.cli(t, "waybar")
		var line barLine
		if code != exitOK || json.Unmarshal([]byte(bar), &line) != nil || line.Class != classStalled || !strings.Contains(line.Text, "stalled") {
			t.Errorf("subvault waybar (exit %d): %s; want class stalled", code, bar)
		}
		t.Logf("restic %s: waybar: %s", ver, strings.TrimSpace(bar))
		if code, out, _ := e.cli(t, "status"); code != exitFailure || !strings.Contains(out, "needs attention:") {
			t.Errorf("subvault status with a stalled job: exit %d, want %d and \"needs attention\":\n%s", code, exitFailure, out)
		}
		for _, c := range [][]string{{"jobs"}, {"status"}, {"job", strconv.Itoa(int(id))}} {
			code, out, errOut := e.cli(t, c...)
			if !strings.Contains(out, "stalled: no progress for ") || !strings.Contains(out, "(stall_timeout 4s)") {
				t.Errorf("subvault %s (exit %d) does not show the job stalled:\n%s%s", strings.Join(c, " "), code, out, errOut)
			}
			for l := range strings.Lines(out) {
				if strings.Contains(l, "stalled") {
					t.Logf("restic %s: subvault %s: %s", ver, c[0], strings.TrimSpace(l))
				}
			}
		}
		_, out, _ = e.cli(t, "job", strconv.Itoa(int(id)), "--json")
		var asJSON contract.Job
		if err := json.Unmarshal([]byte(out), &asJSON); err != nil || !asJSON.Stalled || !asJSON.StalledSince.Equal(since) || asJSON.StallTimeout != 4 {
			t.Errorf("subvault job --json (%v): stalled %v since %v (stall_timeout %d s); want true since %v (4 s)\n%s", err, asJSON.Stalled, asJSON.StalledSince, asJSON.StallTimeout, since, out)
		}

		// A hostile user (uid 65534, not in allow_users) can neither end
		// the stalled job nor clear or set its mark.
		if got, out := e.sendAsNobody("CancelJob", fmt.Sprintf("uint32:%d", id)); got != contract.ErrorAccessDenied {
			t.Errorf("as nobody, CancelJob of the stalled job: %q %s; want AccessDenied", got, out)
		}
		set := testutil.AsNobody("dbus-send", "--bus="+e.bus.Address, "--print-reply", "--dest="+contract.BusName,
			string(contract.JobPath(id)), "org.freedesktop.DBus.Properties.Set", "string:"+contract.JobInterface, "string:Stalled", "variant:boolean:false")
		if got, out := dbusSend(set); got == "" {
			t.Errorf("as nobody, Set Stalled false: accepted: %s", out)
		} else {
			t.Logf("as nobody, Set Stalled false: %s", got)
		}

		// It goes on: neither restic nor the job is stopped.
		time.Sleep(3*stall - time.Since(stopped))
		if s := e.stringProperty(t, contract.JobPath(id), contract.JobInterface, "State"); s != string(contract.StateRunning) || !e.boolProperty(t, id, "Stalled") {
			t.Fatalf("at three times stall_timeout the job is %s (stalled %v), want running and stalled", s, e.boolProperty(t, id, "Stalled"))
		}
		if gone(pid) {
			t.Fatalf("restic %d was stopped", pid)
		}

		// restic moves again: the mark clears, the backup ends done.
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		cont := time.Now()
		took = e.waitStalled(t, id, false, 15*time.Second, cont)
		t.Logf("restic %s: SIGCONT: the mark cleared %v later", ver, took.Round(10*time.Millisecond))
		if n := strings.Count(log.String(), "event=job-stall-cleared "); n != 1 {
			t.Errorf("%d job-stall-cleared entries in the daemon's log, want 1", n)
		}
		j, took := e.waitJob(t, id, 5*time.Minute, cont)
		t.Logf("restic %s: the backup ended %s %v after SIGCONT", ver, j.Result, took.Round(10*time.Millisecond))
		if j.Result != contract.ResultDone {
			t.Fatalf("the backup after SIGCONT: %s %s, want done", j.Result, j.Error)
		}
		if e.boolProperty(t, id, "Stalled") || !e.timeProperty(t, id, "StalledSince").IsZero() {
			t.Error("the finished job is still stalled")
		}
		if got := e.stalledSignals(id); len(got) != 2 || got[1] {
			t.Errorf("PropertiesChanged of Stalled: %v, want true then false", got)
		}
		if _, bar, _ := e.cli(t, "waybar"); strings.Contains(bar, classStalled) {
			t.Errorf("waybar after the job ended: %s", bar)
		}
		waitMetric(t, listen, 10*time.Second, 0, "subvault_stalled_jobs", "plan", "home")
		if hook := webhookEvents(t, rec.wait(t, "/hook", 3, 10*time.Second)); len(hook) != 3 || hook[2].Event != "success" ||
			hook[2].Job != id || hook[2].Result != "done" {
			t.Errorf("the plan's webhook got %+v; want start, stalled, success (one stall, one end)", hook)
		}
		e.noSnapshotsNoLocks(t)
		e.resticOut(t, "check")
		// One notification, for the stall; none for the done backup.
		notifications.CloseAll(t)
		history := notifications.History(t)
		if len(history) != 1 || history[0].Summary != "Backup of home stalled" || !strings.Contains(history[0].Body, "stalled: no progress for ") {
			t.Errorf("notifications: %+v; want one, \"Backup of home stalled\"", history)
		} else {
			t.Logf("restic %s: notified: %s: %s", ver, history[0].Summary, history[0].Body)
		}
	})
}

// on_stall: cancel (the default, written out here). A backup whose
// restic is stopped ends stalled within stall_timeout plus the grace and a
// few seconds, and leaves nothing behind: no restic process (by its pid),
// no restic lock in the repository, no snapshot; it never counted as
// stalled-and-going-on (Stalled stays false); jobs, plans and status show
// the result stalled, and the log has job-stalled. Watched from outside:
// the plan's webhook gets start and a failure whose result is stalled (no
// stalled event), and subvault_jobs_total{kind="backup",result="stalled"}
// is 1.
func TestDaemonStallCanceled(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		const stall = 4 * time.Second
		rec := newPingRecorder(t)
		e, _ := newRestAPIEnv(t, bin, 200, "    stall_timeout: 4s\n    on_stall: cancel\n    notify:\n      - webhook: "+rec.URL+"/hook\n")
		listen := withMetricsListen(t, e)
		cmd, log := e.startDaemonLogged(t)
		ver := testutil.ResticVersion(bin)

		id := e.startJob(t, "StartBackup", "s", "home")
		pid := resticBelow(t, cmd)
		e.waitUploading(t, id)
		stopProcess(t, pid)
		stopped := time.Now()
		j, took := e.waitJob(t, id, 2*time.Minute, stopped)
		t.Logf("restic %s: stopped restic: the job ended %s %v later: %s", ver, j.Result, took.Round(10*time.Millisecond), j.Error)
		if j.Result != contract.ResultStalled {
			t.Fatalf("result %q, want stalled; error %q", j.Result, j.Error)
		}
		if limit := stall + 3*time.Second + 10*time.Second; took > limit {
			t.Errorf("the stalled job ended %v after restic stopped, want within %v", took, limit)
		}
		if !gone(pid) {
			t.Errorf("restic %d still runs", pid)
		}
		if got := e.stalledSignals(id); len(got) != 0 || e.boolProperty(t, id, "Stalled") {
			t.Errorf("a job ended for its stall was marked stalled and going on: %v", got)
		}
		waitMetric(t, listen, 10*time.Second, 1, "subvault_jobs_total", "kind", "backup", "result", "stalled")
		if hook := webhookEvents(t, rec.wait(t, "/hook", 2, 10*time.Second)); len(hook) != 2 || hook[0].Event != "start" ||
			hook[1].Event != "failure" || hook[1].Result != "stalled" || hook[1].Job != id || hook[1].Error == "" {
			t.Errorf("the plan's webhook got %+v; want start, then failure with result stalled of job %d", hook, id)
		}
		e.noSnapshotsNoLocks(t)
		for _, c := range []string{"jobs", "plans", "status"} {
			code, out, errOut := e.cli(t, c)
			if !strings.Contains(out, "stalled") {
				t.Errorf("subvault %s (exit %d) does not show the stalled result:\n%s%s", c, code, out, errOut)
			}
			for l := range strings.Lines(out) {
				if strings.Contains(l, "stalled") {
					t.Logf("restic %s: subvault %s: %s", ver, c, strings.TrimSpace(l))
				}
			}
		}
		logged := log.String()
		if !strings.Contains(logged, "event=job-stalled ") || strings.Contains(logged, "event=job-stall-reported") {
			t.Error("the daemon's log lacks job-stalled, or has job-stall-reported")
		}
		// The killed restic's lock was there, and the job removed it
		// itself, not the next backup.
		removed := false
		for l := range strings.Lines(logged) {
			if strings.Contains(l, "event=stale-lock-removed") {
				removed = true
				_, msg, _ := strings.Cut(l, "msg=")
				t.Logf("restic %s: %s", ver, strings.TrimSpace(msg))
			}
		}
		if !removed {
			t.Error("the daemon did not log the removal of the stopped restic's lock")
		}
		e.resticOut(t, "check")
	})
}

// on_stall: report does not keep a job beyond the plan's timeout: a
// backup whose restic is stopped counts as stalled, then the timeout ends
// it failed, with the timeout's words, and leaves no restic, snapshot or
// lock. (The bound is a context, the same for every restic version: one
// version is enough.)
func TestDaemonStalledJobTimeout(t *testing.T) {
	bin := testutil.Restic(t)
	const timeout = 25 * time.Second
	e, _ := newRestAPIEnv(t, bin, 200, "    stall_timeout: 3s\n    on_stall: report\n    timeout: 25s\n")
	cmd, _ := e.startDaemonLogged(t)
	start := time.Now()
	id := e.startJob(t, "StartBackup", "s", "home")
	pid := resticBelow(t, cmd)
	e.waitUploading(t, id)
	stopProcess(t, pid)
	e.waitStalled(t, id, true, 20*time.Second, time.Now())
	j, took := e.waitJob(t, id, 2*time.Minute, start)
	t.Logf("restic %s: stalled backup with timeout %v: %s %v after it started: %s", testutil.ResticVersion(bin), timeout, j.Result, took.Round(10*time.Millisecond), j.Error)
	if j.Result != contract.ResultFailed || !strings.Contains(j.Error, "timeout of 25s") {
		t.Errorf("result %s, error %q; want failed, naming the timeout", j.Result, j.Error)
	}
	if took < timeout || took > timeout+3*time.Second+10*time.Second {
		t.Errorf("the job ended %v after it started, with a timeout of %v", took, timeout)
	}
	if !gone(pid) {
		t.Errorf("restic %d still runs", pid)
	}
	e.noSnapshotsNoLocks(t)
}

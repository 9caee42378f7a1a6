package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/internal/testutil"
)

// The metrics watched from outside, end to end (issue 15; docs/monitoring.md):
// the real daemon on a private bus backs up a loop-device btrfs with
// restic, Debian's Prometheus scrapes its metrics with the shipped alert
// rules loaded, and after a done backup and then a failed one (the
// repository's password file made wrong) each rule's PromQL returns what
// it should, asked through Prometheus' HTTP API; a done backup again ends
// the alert. Once through
// node_exporter's textfile collector reading settings.metrics.textfile,
// once from the daemon's own settings.metrics.listen.

// withMetricsSettings adds a settings.metrics block of lines to e's
// configuration.
func withMetricsSettings(t *testing.T, e *apiEnv, lines string) {
	t.Helper()
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "\nsettings:\n") {
		t.Fatalf("no settings block in %s:\n%s", e.config, cfg)
	}
	testutil.WriteFile(t, e.config, strings.Replace(string(cfg), "\nsettings:\n", "\nsettings:\n  metrics:\n"+lines, 1))
}

// alertExprs are the alert rules' expressions by alert name.
func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	exprs := map[string]string{}
	for _, r := range alertRules(t) {
		exprs[strings.TrimPrefix(r.Where, "alert ")] = r.Expr
	}
	return exprs
}

// samplesText is samples one a line, for messages.
func samplesText(samples []testutil.Sample) string {
	if len(samples) == 0 {
		return "(nothing)"
	}
	lines := make([]string, len(samples))
	for i, s := range samples {
		lines[i] = s.String()
	}
	return strings.Join(lines, "; ")
}

// oneValue is the value of the one sample promql returns now, failing the
// test when it returns none or more.
func oneValue(t *testing.T, prom *testutil.Prometheus, promql string) float64 {
	t.Helper()
	s := prom.Query(t, promql)
	if len(s) != 1 {
		t.Fatalf("%s returned %s, want one sample", promql, samplesText(s))
	}
	return s[0].Value
}

// checkAlertsAfterDoneAndFailed runs a done backup of plan home and then a
// failed one and checks, after each, what Prometheus (scraping the
// daemon's metrics at instance) says: the alert rules' expressions, the
// timestamps against the jobs' own, the job counters, the pending alert;
// and that every query of the dashboard is valid PromQL.
func checkAlertsAfterDoneAndFailed(t *testing.T, e *apiEnv, prom *testutil.Prometheus, instance string) {
	exprs := alertExprs(t)
	home := fmt.Sprintf(`{plan="home",instance=%q}`, instance)

	// The daemon is up and its metrics arrive; plan home never backed up:
	// no rule has anything to say about it.
	prom.WaitQuery(t, `subvault_build_info`, "the daemon's metrics scraped", func(s []testutil.Sample) bool { return len(s) == 1 })
	for name, expr := range exprs {
		if s := prom.Query(t, expr); len(s) != 0 {
			t.Errorf("before any backup, %s's expression returns %s, want nothing", name, samplesText(s))
		}
	}

	// A done backup.
	done := e.startJob(t, "StartBackup", "s", "home")
	if j, took := e.waitJob(t, done, 3*time.Minute, time.Now()); j.Result != contract.ResultDone {
		t.Fatalf("the first backup: %s %s, want done", j.Result, j.Error)
	} else {
		t.Logf("the done backup took %v", took.Round(time.Millisecond))
	}
	doneAt := e.timeProperty(t, done, "FinishedAt")
	prom.WaitQuery(t, `subvault_last_backup_success`+home, "the done backup scraped",
		func(s []testutil.Sample) bool { return len(s) == 1 && s[0].Value == 1 })
	lastSuccess := oneValue(t, prom, `subvault_last_success_timestamp_seconds`+home)
	if d := math.Abs(lastSuccess - float64(doneAt.UnixMilli())/1000); d > 0.002 {
		t.Errorf("subvault_last_success_timestamp_seconds is %.3f, the done job finished at %.3f (%s): want the same", lastSuccess, float64(doneAt.UnixMilli())/1000, doneAt)
	}
	if v := oneValue(t, prom, `subvault_last_backup_result{plan="home",result="done"}`); v != 1 {
		t.Errorf(`subvault_last_backup_result{result="done"} = %v after a done backup, want 1`, v)
	}
	for name, expr := range exprs {
		if s := prom.Query(t, expr); len(s) != 0 {
			t.Errorf("after a done backup, %s's expression returns %s, want nothing", name, samplesText(s))
		}
	}
	if v := oneValue(t, prom, `subvault_jobs_total{kind="backup",result="done"}`); v != 1 {
		t.Errorf(`subvault_jobs_total{kind="backup",result="done"} = %v, want 1`, v)
	}
	// Every query of the dashboard is valid PromQL and has something to
	// show after a done backup.
	checkDashboardQueries(t, prom, "after the done backup", true)

	// A failed backup: the repository's password is no longer the right one.
	testutil.WriteSecret(t, e.password, "not the password\n")
	failed := e.startJob(t, "StartBackup", "s", "home")
	j, _ := e.waitJob(t, failed, 3*time.Minute, time.Now())
	if j.Result != contract.ResultFailed {
		t.Fatalf("the backup with a wrong password: %s %s, want failed", j.Result, j.Error)
	}
	t.Logf("the failed backup: %s", j.Error)
	failedAt := e.timeProperty(t, failed, "FinishedAt")
	prom.WaitQuery(t, `subvault_last_backup_success`+home, "the failed backup scraped",
		func(s []testutil.Sample) bool { return len(s) == 1 && s[0].Value == 0 })

	s := prom.Query(t, exprs["SubvaultBackupFailed"])
	if len(s) != 1 || s[0].Metric["plan"] != "home" || s[0].Metric["instance"] != instance {
		t.Errorf("after a failed backup, SubvaultBackupFailed's expression returns %s, want plan home on %s", samplesText(s), instance)
	}
	for name, expr := range exprs {
		if name == "SubvaultBackupFailed" {
			continue
		}
		if s := prom.Query(t, expr); len(s) != 0 {
			t.Errorf("after a failed backup, %s's expression returns %s, want nothing", name, samplesText(s))
		}
	}
	if v := oneValue(t, prom, `subvault_last_success_timestamp_seconds`+home); v != lastSuccess {
		t.Errorf("subvault_last_success_timestamp_seconds moved from %.3f to %.3f with a failed backup, want the done one's still", lastSuccess, v)
	}
	if v := oneValue(t, prom, `subvault_last_backup_timestamp_seconds`+home); math.Abs(v-float64(failedAt.UnixMilli())/1000) > 0.002 {
		t.Errorf("subvault_last_backup_timestamp_seconds is %.3f, the failed job finished at %s: want the same", v, failedAt)
	}
	if v := oneValue(t, prom, `subvault_last_backup_result{plan="home",result="failed"}`); v != 1 {
		t.Errorf(`subvault_last_backup_result{result="failed"} = %v after a failed backup, want 1`, v)
	}
	for result, want := range map[string]float64{"done": 1, "failed": 1, "stalled": 0, "canceled": 0} {
		if v := oneValue(t, prom, fmt.Sprintf(`subvault_jobs_total{kind="backup",result=%q}`, result)); v != want {
			t.Errorf(`subvault_jobs_total{kind="backup",result=%q} = %v, want %v`, result, v, want)
		}
	}
	alert := prom.WaitAlert(t, "SubvaultBackupFailed", map[string]string{"plan": "home", "instance": instance})
	if alert.State != "pending" || alert.Labels["severity"] != "warning" || !strings.Contains(alert.Annotations["summary"], "plan home on "+instance) {
		t.Errorf("alert %+v, want pending (for: 5m), severity warning, a summary naming plan home on %s", alert, instance)
	}
	for _, a := range prom.Alerts(t) {
		if a.Labels["alertname"] != "SubvaultBackupFailed" {
			t.Errorf("alert %s %v is %s, want only SubvaultBackupFailed", a.Labels["alertname"], a.Labels, a.State)
		}
	}
	for _, r := range prom.Rules(t) {
		if r.Health != "ok" || r.LastError != "" {
			t.Errorf("rule %s: health %s, %s", r.Name, r.Health, r.LastError)
		}
	}

	// Every query of the dashboard is still valid PromQL; a failed
	// backup has no files or bytes of its own to show.
	checkDashboardQueries(t, prom, "after the failed backup", false)

	// The password put right, a done backup ends the alert.
	testutil.WriteSecret(t, e.password, testutil.ResticPassword+"\n")
	again := e.startJob(t, "StartBackup", "s", "home")
	if j, _ := e.waitJob(t, again, 3*time.Minute, time.Now()); j.Result != contract.ResultDone {
		t.Fatalf("the backup with the password put right: %s %s, want done", j.Result, j.Error)
	}
	prom.WaitQuery(t, exprs["SubvaultBackupFailed"], "SubvaultBackupFailed's expression empty after a done backup again",
		func(s []testutil.Sample) bool { return len(s) == 0 })
	prom.WaitQuery(t, `ALERTS{alertname="SubvaultBackupFailed"}`, "the alert gone",
		func(s []testutil.Sample) bool { return len(s) == 0 })
	if v := oneValue(t, prom, `subvault_last_success_timestamp_seconds`+home); v <= lastSuccess {
		t.Errorf("subvault_last_success_timestamp_seconds stayed %.3f after a done backup, want later than %.3f", v, lastSuccess)
	}
}

// checkDashboardQueries runs every query of the dashboard: each must be
// valid PromQL (Prometheus parses it), and with wantData each must return
// something, but for rates (a counter needs two samples in the window) and
// subvault_archives (present only once the daemon knows the repository's
// archives).
func checkDashboardQueries(t *testing.T, prom *testutil.Prometheus, when string, wantData bool) {
	t.Helper()
	for _, q := range dashboardQueries(t) {
		s, err := prom.QueryErr(q.Expr)
		switch {
		case err != nil:
			t.Errorf("dashboard %s: %v", q.Where, err)
		case len(s) == 0 && wantData && !strings.Contains(q.Expr, "rate(") && !strings.HasPrefix(q.Expr, "subvault_archives{"):
			t.Errorf("dashboard %s: %s returns nothing %s", q.Where, q.Expr, when)
		default:
			t.Logf("dashboard %s %s: %d series", q.Where, when, len(s))
		}
	}
}

// Through node_exporter's textfile collector, as most machines ship
// metrics: the daemon writes subvault.prom into settings.metrics.textfile,
// node_exporter serves it, and SubvaultMetricsStale's selector finds it.
func TestAlertsEndToEndTextfile(t *testing.T) {
	testutil.RequireRoot(t)
	e := newAPIEnv(t, 4)
	textfiles := t.TempDir()
	withMetricsSettings(t, e, "    textfile: "+textfiles+"\n")
	node := testutil.NewNodeExporter(t, textfiles)
	prom := testutil.NewPrometheus(t, testutil.PrometheusOptions{Targets: []string{node.Target()}, RuleFiles: []string{alertRulesFile}})
	e.startDaemon(t)
	prom.WaitTargetsUp(t)

	checkAlertsAfterDoneAndFailed(t, e, prom, node.Target())

	if _, err := os.Stat(filepath.Join(textfiles, "subvault.prom")); err != nil {
		t.Errorf("no subvault.prom in settings.metrics.textfile: %v", err)
	}
	age := prom.Query(t, `time() - node_textfile_mtime_seconds{file=~"(.*/)?subvault\\.prom"}`)
	if len(age) != 1 || age[0].Value > 120 {
		t.Errorf("the age of subvault.prom as SubvaultMetricsStale reads it: %s, want one file written within 2 minutes", samplesText(age))
	}
	if v := oneValue(t, prom, `node_textfile_scrape_error`); v != 0 {
		t.Errorf("node_textfile_scrape_error = %v: node_exporter refused a textfile", v)
	}
	data, err := os.ReadFile(filepath.Join(textfiles, "subvault.prom"))
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(data)) {
		if strings.HasPrefix(l, "go_") || strings.HasPrefix(l, "process_") {
			t.Errorf("subvault.prom has %q: node_exporter serves its own go_* and process_*", strings.TrimSpace(l))
			break
		}
	}
}

// From the daemon's own listener (settings.metrics.listen), for those who
// scrape directly; it serves the Go runtime's metrics too.
func TestAlertsEndToEndListener(t *testing.T) {
	testutil.RequireRoot(t)
	e := newAPIEnv(t, 4)
	listen := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	withMetricsSettings(t, e, "    listen: "+listen+"\n")
	prom := testutil.NewPrometheus(t, testutil.PrometheusOptions{Targets: []string{listen}, RuleFiles: []string{alertRulesFile}})
	e.startDaemon(t)
	prom.WaitTargetsUp(t)

	checkAlertsAfterDoneAndFailed(t, e, prom, listen)

	if s := prom.Query(t, `go_goroutines{job="subvault"}`); len(s) != 1 {
		t.Errorf("go_goroutines from the listener: %s, want one", samplesText(s))
	}
}

package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPrometheusScrapesNodeExporter proves the monitoring helpers with a
// hand-written textfile: node_exporter serves it, Prometheus scrapes it,
// a query sees its value and a change of it, an alert rule on it is
// pending, a PromQL syntax error is an error, and both servers are gone
// after the test.
func TestPrometheusScrapesNodeExporter(t *testing.T) {
	var pids []int
	t.Run("servers", func(t *testing.T) {
		textfiles := t.TempDir()
		writeProm := func(value string) {
			t.Helper()
			tmp := filepath.Join(textfiles, ".example.prom.tmp")
			body := "# HELP example_backup_success Whether the example's last backup worked.\n" +
				"# TYPE example_backup_success gauge\n" +
				"example_backup_success{plan=\"home\"} " + value + "\n"
			if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(textfiles, "example.prom")); err != nil {
				t.Fatal(err)
			}
		}
		writeProm("1")
		rules := filepath.Join(t.TempDir(), "rules.yml")
		if err := os.WriteFile(rules, []byte(`groups:
  - name: example
    rules:
      - alert: ExampleBackupFailed
        expr: example_backup_success == 0
        for: 1h
        labels: {severity: warning}
`), 0o644); err != nil {
			t.Fatal(err)
		}

		node := NewNodeExporter(t, textfiles)
		if m := node.Metrics(t); !strings.Contains(m, `example_backup_success{plan="home"} 1`) {
			t.Fatalf("node_exporter does not serve the textfile:\n%s", m)
		}
		prom := NewPrometheus(t, PrometheusOptions{Targets: []string{node.Target()}, RuleFiles: []string{rules}})
		pids = []int{node.Pid(), prom.Pid()}
		prom.WaitTargetsUp(t)

		got := prom.WaitQuery(t, `example_backup_success`, "the textfile's value scraped", func(s []Sample) bool { return len(s) == 1 })
		if got[0].Value != 1 || got[0].Metric["plan"] != "home" || got[0].Metric["job"] != "subvault" || got[0].Metric["instance"] != node.Target() {
			t.Fatalf("example_backup_success = %v, want plan=home, job=subvault, instance=%s, value 1", got, node.Target())
		}
		if s := prom.Query(t, `example_backup_success == 0`); len(s) != 0 {
			t.Fatalf("the alert's expression holds on a working backup: %v", s)
		}
		if a := prom.Alerts(t); len(a) != 0 {
			t.Fatalf("alerts before the failure: %+v", a)
		}
		// The textfile collector's own metric of the file, which
		// SubvaultMetricsStale reads.
		mtime := prom.WaitQuery(t, `node_textfile_mtime_seconds`, "the textfile's mtime scraped", func(s []Sample) bool { return len(s) == 1 })
		if age := time.Since(time.Unix(int64(mtime[0].Value), 0)); age < -time.Minute || age > 10*time.Minute {
			t.Errorf("node_textfile_mtime_seconds is %s old, want about now: %v", age, mtime)
		}
		t.Logf("node_textfile_mtime_seconds labels (node_exporter's version decides the file label): %v", mtime[0].Metric)

		writeProm("0")
		prom.WaitQuery(t, `example_backup_success == 0`, "the failure seen", func(s []Sample) bool { return len(s) == 1 })
		a := prom.WaitAlert(t, "ExampleBackupFailed", map[string]string{"plan": "home"})
		if a.State != "pending" || a.Labels["severity"] != "warning" {
			t.Errorf("alert %+v, want pending (for: 1h) with severity warning", a)
		}
		if r := prom.Rules(t); len(r) != 1 || r[0].Name != "ExampleBackupFailed" || r[0].Health != "ok" || r[0].Duration != 3600 {
			t.Errorf("rules loaded: %+v, want ExampleBackupFailed, health ok, for 3600 s", r)
		}

		if _, err := prom.QueryErr(`example_backup_success ==`); err == nil || !strings.Contains(err.Error(), "bad_data") {
			t.Errorf("a PromQL syntax error gave %v, want a bad_data error", err)
		}
		if s := prom.Query(t, `time()`); len(s) != 1 || time.Since(time.Unix(int64(s[0].Value), 0)).Abs() > time.Minute {
			t.Errorf("time() = %v, want one scalar about now", s)
		}
	})
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("process %d still runs after its test ended", pid)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon/metrics"
	"github.com/subvault/subvault/internal/testutil"
)

// metricsEnv is apiEnv with a second plan, broken, whose before_snapshot
// hook fails, and settings.metrics: a textfile directory and a listener.
type metricsEnv struct {
	*apiEnv
	textfile string
	listen   string
}

func newMetricsEnv(t *testing.T, listen func(dir string) string) *metricsEnv {
	t.Helper()
	testutil.RequireCommand(t, "promtool", "prometheus")
	e := &metricsEnv{apiEnv: newAPIEnv(t, 3)}
	dir := filepath.Dir(e.config)
	e.textfile = filepath.Join(dir, "node-exporter")
	if err := os.Mkdir(e.textfile, 0o755); err != nil {
		t.Fatal(err)
	}
	e.listen = listen(dir)
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(cfg), "settings:\n", fmt.Sprintf(`  broken:
    subvolumes: [%s]
    repository: r
    hooks:
      before_snapshot: ["/bin/false"]
settings:
`, e.fs.Path("home")), 1)
	text += fmt.Sprintf("  metrics:\n    textfile: %s\n    listen: %s\n", e.textfile, e.listen)
	testutil.WriteFile(t, e.config, text)
	return e
}

// families parses an exposition.
func families(t *testing.T, text []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, text)
	}
	return mfs
}

// value is the value of the metric name with labels (name=value pairs),
// and whether there is one.
func value(mfs map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		}
	}
	return 0, false
}

func (e *metricsEnv) readTextfile(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(e.textfile, metrics.TextfileName))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// metricsClient is an HTTP client for settings.metrics.listen, and the
// metrics' URL on it.
func metricsClient(listen string) (*http.Client, string) {
	if path, ok := strings.CutPrefix(listen, "unix:"); ok {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
		}}, "http://subvault/metrics"
	}
	return &http.Client{Timeout: 10 * time.Second}, "http://" + listen + "/metrics"
}

// scrapeListen is what the daemon's listener at listen serves.
func scrapeListen(t *testing.T, listen string) []byte {
	t.Helper()
	c, url := metricsClient(listen)
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", listen, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape %s: %d %v", listen, resp.StatusCode, err)
	}
	return body
}

func (e *metricsEnv) scrape(t *testing.T) []byte { t.Helper(); return scrapeListen(t, e.listen) }

// waitMetric waits until the listener at listen serves the metric name
// with labels (name=value pairs) at want, and fails the test with what it
// served last when it does not within limit.
func waitMetric(t *testing.T, listen string, limit time.Duration, want float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		text := scrapeListen(t, listen)
		got, ok := value(families(t, text), name, labels...)
		if ok && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%q on the listener: %v (present %v) within %v, want %v", name, labels, got, ok, limit, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// withMetricsListen adds settings.metrics.listen on a free loopback port
// to e's configuration and returns the address.
func withMetricsListen(t *testing.T, e *apiEnv) string {
	t.Helper()
	listen := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	withMetricsSettings(t, e, "    listen: "+listen+"\n")
	return listen
}

func promtoolCheckMetrics(t *testing.T, what string, text []byte) {
	t.Helper()
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = bytes.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics of %s: %v\n%s", what, err, out)
	}
}

// TestDaemonMetrics: the real daemon, with settings.metrics.textfile and a
// listener on loopback (and, in the second case, on a unix socket): before
// any backup the textfile holds the plans' schedule and no last backup;
// after a done backup of home and a failed one of broken, the textfile
// (within seconds) and the listener say what each did, what the alert
// rules look at; promtool check metrics is clean on both; the listener
// shows the archives once they were listed and a refused reload; the
// textfile never holds go_* or process_* metrics; after SIGTERM the
// listener is gone and the textfile stays.
func TestDaemonMetrics(t *testing.T) {
	for _, c := range []struct {
		name   string
		listen func(dir string) string
	}{
		{"loopback", func(string) string { return fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)) }},
		{"unix socket", func(dir string) string { return "unix:" + filepath.Join(dir, "metrics.sock") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newMetricsEnv(t, c.listen)
			cmd, _ := e.startDaemonLogged(t)
			started := time.Now()

			var before []byte
			waitFor(t, 10*time.Second, func() int {
				data, err := os.ReadFile(filepath.Join(e.textfile, metrics.TextfileName))
				if err != nil {
					return 0
				}
				before = data
				return 1
			})
			t.Logf("the textfile exists %v after READY", time.Since(started).Round(time.Millisecond))
			mfs := families(t, before)
			if _, ok := value(mfs, "subvault_last_backup_timestamp_seconds", "plan", "home"); ok {
				t.Error("a last backup before any backup")
			}
			if v, ok := value(mfs, "subvault_next_run_timestamp_seconds", "plan", "home"); !ok || v < float64(time.Now().Unix()) {
				t.Errorf("home's next run: %v %v, want the next 03:00", v, ok)
			}
			if _, ok := value(mfs, "subvault_next_run_timestamp_seconds", "plan", "broken"); ok {
				t.Error("broken, a manual plan, has a next run")
			}
			if v, ok := value(mfs, "subvault_config_last_reload_success"); !ok || v != 1 {
				t.Errorf("config_last_reload_success: %v %v", v, ok)
			}

			home := e.startJob(t, "StartBackup", "s", "home")
			if j, _ := e.waitJob(t, home, 3*time.Minute, time.Now()); j.Result != contract.ResultDone {
				t.Fatalf("home's backup: %s %s", j.Result, j.Error)
			}
			homeEnd := e.timeProperty(t, home, "FinishedAt")
			homeStart := e.timeProperty(t, home, "StartedAt")
			broken := e.startJob(t, "StartBackup", "s", "broken")
			brokenAsked := time.Now()
			if j, _ := e.waitJob(t, broken, 3*time.Minute, time.Now()); j.Result != contract.ResultFailed {
				t.Fatalf("broken's backup: %s %s", j.Result, j.Error)
			}
			brokenEnd := e.timeProperty(t, broken, "FinishedAt")

			// The textfile follows within the debounce (a second), give
			// or take a busy machine.
			var after []byte
			waitFor(t, 10*time.Second, func() int {
				after = e.readTextfile(t)
				if v, ok := value(families(t, after), "subvault_jobs_total", "kind", "backup", "result", "failed"); ok && v == 1 {
					return 1
				}
				return 0
			})
			t.Logf("the textfile shows the failed backup %v after it was asked for", time.Since(brokenAsked).Round(time.Millisecond))
			scraped := e.scrape(t)
			for _, x := range []struct {
				what string
				text []byte
			}{{"the textfile", after}, {"the listener's reply", scraped}} {
				mfs := families(t, x.text)
				want := func(name string, want float64, labels ...string) {
					t.Helper()
					if v, ok := value(mfs, name, labels...); !ok || v != want {
						t.Errorf("%s: %s%v = %v (present %v), want %v", x.what, name, labels, v, ok, want)
					}
				}
				absent := func(name string, labels ...string) {
					t.Helper()
					if v, ok := value(mfs, name, labels...); ok {
						t.Errorf("%s: %s%v = %v, want none", x.what, name, labels, v)
					}
				}
				near := func(name string, at time.Time, labels ...string) {
					t.Helper()
					v, ok := value(mfs, name, labels...)
					if got := time.UnixMilli(int64(v * 1000)); !ok || got.Sub(at).Abs() > 2*time.Millisecond {
						t.Errorf("%s: %s%v = %v (present %v), want %v", x.what, name, labels, got, ok, at)
					}
				}
				want("subvault_last_backup_success", 1, "plan", "home")
				want("subvault_last_backup_success", 0, "plan", "broken")
				want("subvault_last_backup_result", 1, "plan", "home", "result", "done")
				want("subvault_last_backup_result", 0, "plan", "home", "result", "failed")
				want("subvault_last_backup_result", 1, "plan", "broken", "result", "failed")
				want("subvault_last_backup_result", 0, "plan", "broken", "result", "done")
				near("subvault_last_backup_timestamp_seconds", homeEnd, "plan", "home")
				near("subvault_last_success_timestamp_seconds", homeEnd, "plan", "home")
				near("subvault_last_backup_timestamp_seconds", brokenEnd, "plan", "broken")
				absent("subvault_last_success_timestamp_seconds", "plan", "broken")
				if v, ok := value(mfs, "subvault_last_backup_duration_seconds", "plan", "home"); !ok || time.Duration(v*float64(time.Second))-homeEnd.Sub(homeStart) > 2*time.Millisecond ||
					homeEnd.Sub(homeStart)-time.Duration(v*float64(time.Second)) > 2*time.Millisecond {
					t.Errorf("%s: home's duration %v (present %v), want %v", x.what, v, ok, homeEnd.Sub(homeStart))
				}
				if v, _ := value(mfs, "subvault_last_backup_files", "plan", "home", "change", "new"); v < 3 {
					t.Errorf("%s: home's new files: %v, want the 3 files and more", x.what, v)
				}
				if v, _ := value(mfs, "subvault_last_backup_added_bytes", "plan", "home"); v < 3<<20 {
					t.Errorf("%s: home's added bytes: %v, want 3 MiB and more", x.what, v)
				}
				absent("subvault_last_backup_files", "plan", "broken", "change", "new")
				want("subvault_snapshots", 1, "plan", "home") // keep_snapshots: last 5
				want("subvault_snapshots", 0, "plan", "broken")
				want("subvault_overdue", 0, "plan", "home")
				want("subvault_stalled_jobs", 0, "plan", "home")
				want("subvault_jobs_total", 1, "kind", "backup", "result", "done")
				want("subvault_jobs_total", 1, "kind", "backup", "result", "failed")
				want("subvault_jobs_total", 0, "kind", "prune", "result", "done")
				want("subvault_jobs", 0, "state", "running")
				want("subvault_build_info", 1, "version", version)
				promtoolCheckMetrics(t, x.what, x.text)
			}
			for _, prefix := range []string{"go_", "process_"} {
				if bytes.Contains(after, []byte("\n"+prefix)) {
					t.Errorf("the textfile holds %s metrics (node_exporter refuses them)", prefix)
				}
				if !bytes.Contains(scraped, []byte("\n"+prefix)) {
					t.Errorf("the listener serves no %s metrics", prefix)
				}
			}
			if _, ok := value(families(t, scraped), "subvault_archives", "plan", "home"); ok {
				t.Error("archives known before anyone listed them")
			}
			var archives []any
			e.call(t, &archives, "ListArchives", "s", "home")
			if v, ok := value(families(t, e.scrape(t)), "subvault_archives", "plan", "home"); !ok || v != 1 {
				t.Errorf("archives once listed: %v %v, want 1", v, ok)
			}

			// A refused reload shows; the configuration in force stays, and
			// so do the listener and the textfile.
			good, _ := os.ReadFile(e.config)
			testutil.WriteFile(t, e.config, string(good)+"  nonsense: 1\n")
			if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, func() int {
				if v, ok := value(families(t, e.scrape(t)), "subvault_config_last_reload_success"); ok && v == 0 {
					return 1
				}
				return 0
			})
			testutil.WriteFile(t, e.config, string(good))

			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				t.Errorf("the daemon: %v", err)
			}
			c, url := metricsClient(e.listen)
			if resp, err := c.Get(url); err == nil {
				resp.Body.Close()
				t.Errorf("the listener answers after the daemon stopped")
			}
			if path, ok := strings.CutPrefix(e.listen, "unix:"); ok {
				if _, err := os.Lstat(path); !os.IsNotExist(err) {
					t.Errorf("the socket is left: %v", err)
				}
			}
			if v, ok := value(families(t, e.readTextfile(t)), "subvault_jobs_total", "kind", "backup", "result", "done"); !ok || v != 1 {
				t.Errorf("the textfile after the stop: %v %v", v, ok)
			}
			entries, _ := os.ReadDir(e.textfile)
			if len(entries) != 1 {
				t.Errorf("the textfile directory holds %d entries, want subvault.prom alone", len(entries))
			}
		})
	}
}

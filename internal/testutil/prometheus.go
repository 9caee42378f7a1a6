package testutil

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The monitoring side of the tests (issue 15): Debian's node_exporter with
// only its textfile collector, and Debian's Prometheus scraping it (or
// subvault's own listener) with alert rules loaded, each on a loopback port
// and in a temporary directory, started and stopped by the test like the
// repository servers (servers.go). docs/testing.md lists them.

// PrometheusWaitTimeout bounds the waits for what Prometheus sees
// (WaitQuery, WaitAlert, WaitTargetsUp): a scrape and a rule evaluation
// every second in the tests, so this leaves room for a loaded machine.
const PrometheusWaitTimeout = 60 * time.Second

// NodeExporter is Debian's prometheus-node-exporter on a loopback port with
// every collector off but the textfile collector, which reads the *.prom
// files of one directory.
type NodeExporter struct {
	*Server
	// Host and Port are where it listens (Host is 127.0.0.1).
	Host string
	Port int
	// TextfileDir is the directory its textfile collector reads.
	TextfileDir string
}

// NewNodeExporter starts prometheus-node-exporter reading textfileDir and
// stops it when the test ends. It skips under -short.
func NewNodeExporter(t testing.TB, textfileDir string) *NodeExporter {
	t.Helper()
	SkipShort(t, "prometheus-node-exporter")
	bin := RequireCommand(t, "prometheus-node-exporter", "prometheus-node-exporter")
	n := &NodeExporter{Host: "127.0.0.1", Port: FreePort(t), TextfileDir: textfileDir}
	args := []string{
		"--web.listen-address=" + n.Target(),
		"--collector.disable-defaults",
		"--collector.textfile",
		"--collector.textfile.directory=" + textfileDir,
	}
	newCmd := func() *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		return cmd
	}
	ready := func() error {
		_, err := httpGet("http://" + n.Target() + "/metrics")
		return err
	}
	n.Server = startServer(t, "prometheus-node-exporter", newCmd, ready)
	return n
}

// Target is the host:port Prometheus scrapes it at.
func (n *NodeExporter) Target() string { return hostPort(n.Host, n.Port) }

// Metrics is what it serves at /metrics now, in Prometheus' text format.
func (n *NodeExporter) Metrics(t testing.TB) string {
	t.Helper()
	body, err := httpGet("http://" + n.Target() + "/metrics")
	if err != nil {
		t.Fatalf("node_exporter /metrics: %v", err)
	}
	return body
}

// PrometheusOptions is what a test's Prometheus scrapes and evaluates.
type PrometheusOptions struct {
	// Targets are host:port addresses scraped at /metrics, all under the
	// scrape job "subvault" (the label job="subvault", and instance the
	// address).
	Targets []string
	// RuleFiles are rule files (alerting or recording rules) loaded at
	// start.
	RuleFiles []string
	// ScrapeInterval and EvaluationInterval default to 1 s: a test sees a
	// change within a few seconds.
	ScrapeInterval, EvaluationInterval time.Duration
}

// Prometheus is Debian's prometheus on a loopback port with its own
// storage in a temporary directory.
type Prometheus struct {
	*Server
	// Host and Port are where its web UI and HTTP API listen.
	Host string
	Port int
	// Dir holds its configuration (prometheus.yml) and storage (data/).
	Dir string
}

// NewPrometheus starts prometheus with opts and stops it when the test
// ends. It skips under -short.
func NewPrometheus(t testing.TB, opts PrometheusOptions) *Prometheus {
	t.Helper()
	SkipShort(t, "prometheus")
	bin := RequireCommand(t, "prometheus", "prometheus")
	if opts.ScrapeInterval == 0 {
		opts.ScrapeInterval = time.Second
	}
	if opts.EvaluationInterval == 0 {
		opts.EvaluationInterval = time.Second
	}
	dir := serverDir(t, "prometheus")
	p := &Prometheus{Host: "127.0.0.1", Port: FreePort(t), Dir: dir}
	rules := make([]string, 0, len(opts.RuleFiles))
	for _, f := range opts.RuleFiles {
		abs, err := filepath.Abs(f)
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, abs)
	}
	targets := append([]string{}, opts.Targets...)
	// JSON is YAML: the configuration is written with encoding/json.
	config := map[string]any{
		"global": map[string]any{
			"scrape_interval":     opts.ScrapeInterval.String(),
			"scrape_timeout":      opts.ScrapeInterval.String(),
			"evaluation_interval": opts.EvaluationInterval.String(),
		},
		"rule_files": rules,
		"scrape_configs": []any{map[string]any{
			"job_name":       "subvault",
			"static_configs": []any{map[string]any{"targets": targets}},
		}},
	}
	data, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--config.file=" + configFile,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + hostPort(p.Host, p.Port),
	}
	newCmd := func() *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
		cmd.Dir = dir
		return cmd
	}
	ready := func() error {
		_, err := httpGet(p.URL() + "/-/ready")
		return err
	}
	p.Server = startServer(t, "prometheus", newCmd, ready)
	return p
}

// URL is the base of its web UI and HTTP API, "http://127.0.0.1:PORT".
func (p *Prometheus) URL() string { return "http://" + hostPort(p.Host, p.Port) }

// Sample is one series of a query's answer: its labels (with __name__
// when the expression keeps it) and its value at the query's time.
type Sample struct {
	Metric map[string]string
	Value  float64
}

// String is the sample as PromQL prints it: name{label="value",...} value.
func (s Sample) String() string {
	keys := make([]string, 0, len(s.Metric))
	for k := range s.Metric {
		if k != "__name__" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	labels := make([]string, len(keys))
	for i, k := range keys {
		labels[i] = k + "=" + strconv.Quote(s.Metric[k])
	}
	return s.Metric["__name__"] + "{" + strings.Join(labels, ",") + "} " + strconv.FormatFloat(s.Value, 'g', -1, 64)
}

// apiResponse is the envelope of every answer of Prometheus' HTTP API.
type apiResponse struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Data      json.RawMessage `json:"data"`
}

// api calls GET /api/v1/path with params and returns its data, or the
// error Prometheus gave (a PromQL syntax error, for one).
func (p *Prometheus) api(path string, params url.Values) (json.RawMessage, error) {
	u := p.URL() + "/api/v1/" + path
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close() //nolint:errcheck // read-only
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%s: HTTP %d, not the API's JSON: %.200q", path, resp.StatusCode, body)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s: %s", path, r.ErrorType, r.Error)
	}
	return r.Data, nil
}

// QueryErr runs an instant query (/api/v1/query) now and returns its
// samples: a vector's series, or a scalar as one sample without labels. A
// matrix (a range selector alone) is refused. The error is Prometheus'
// (bad_data for a syntax error) or the connection's.
func (p *Prometheus) QueryErr(promql string) ([]Sample, error) {
	data, err := p.api("query", url.Values{"query": {promql}})
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", promql, err)
	}
	var r struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	switch r.ResultType {
	case "vector":
		var vec []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(r.Result, &vec); err != nil {
			return nil, err
		}
		out := make([]Sample, 0, len(vec))
		for _, v := range vec {
			f, err := sampleValue(v.Value)
			if err != nil {
				return nil, fmt.Errorf("query %q: %w", promql, err)
			}
			out = append(out, Sample{Metric: v.Metric, Value: f})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
		return out, nil
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(r.Result, &v); err != nil {
			return nil, err
		}
		f, err := sampleValue(v)
		if err != nil {
			return nil, fmt.Errorf("query %q: %w", promql, err)
		}
		return []Sample{{Metric: map[string]string{}, Value: f}}, nil
	default:
		return nil, fmt.Errorf("query %q: a %s, not a vector or scalar", promql, r.ResultType)
	}
}

// sampleValue is the value of the API's [time, "value"] pair.
func sampleValue(v [2]any) (float64, error) {
	s, ok := v[1].(string)
	if !ok {
		return 0, fmt.Errorf("value %v is not a string", v[1])
	}
	return strconv.ParseFloat(s, 64)
}

// Query is QueryErr that fails the test on an error.
func (p *Prometheus) Query(t testing.TB, promql string) []Sample {
	t.Helper()
	samples, err := p.QueryErr(promql)
	if err != nil {
		t.Fatal(err)
	}
	return samples
}

// WaitQuery runs the query until done accepts its samples and returns
// them, or fails the test after PrometheusWaitTimeout with what the query
// returned last; what says what the test waits for.
func (p *Prometheus) WaitQuery(t testing.TB, promql, what string, done func([]Sample) bool) []Sample {
	t.Helper()
	start := time.Now()
	var last []Sample
	var lastErr error
	for {
		last, lastErr = p.QueryErr(promql)
		if lastErr == nil && done(last) {
			t.Logf("prometheus: %s after %s: %s", what, time.Since(start).Round(time.Millisecond), last)
			return last
		}
		if time.Since(start) > PrometheusWaitTimeout {
			t.Fatalf("prometheus: not %s within %s: %s returned %v (error %v)", what, PrometheusWaitTimeout, promql, last, lastErr)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Alert is one alert of /api/v1/alerts: a rule's alert for one series.
type Alert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	// State is "pending" (the expression holds, its for: has not passed)
	// or "firing".
	State    string    `json:"state"`
	ActiveAt time.Time `json:"activeAt"`
	Value    string    `json:"value"`
}

// AlertsErr lists the alerts now pending or firing.
func (p *Prometheus) AlertsErr() ([]Alert, error) {
	data, err := p.api("alerts", nil)
	if err != nil {
		return nil, err
	}
	var r struct {
		Alerts []Alert `json:"alerts"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	return r.Alerts, nil
}

// Alerts is AlertsErr that fails the test on an error.
func (p *Prometheus) Alerts(t testing.TB) []Alert {
	t.Helper()
	alerts, err := p.AlertsErr()
	if err != nil {
		t.Fatal(err)
	}
	return alerts
}

// WaitAlert waits until an alert named name whose labels include labels is
// pending or firing and returns it, or fails the test after
// PrometheusWaitTimeout with the alerts there were.
func (p *Prometheus) WaitAlert(t testing.TB, name string, labels map[string]string) Alert {
	t.Helper()
	start := time.Now()
	for {
		alerts, err := p.AlertsErr()
		for _, a := range alerts {
			if a.Labels["alertname"] == name && hasLabels(a.Labels, labels) {
				t.Logf("prometheus: alert %s %s after %s: %v", name, a.State, time.Since(start).Round(time.Millisecond), a.Labels)
				return a
			}
		}
		if time.Since(start) > PrometheusWaitTimeout {
			t.Fatalf("prometheus: no alert %s %v within %s; alerts: %+v (error %v)", name, labels, PrometheusWaitTimeout, alerts, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// Rule is one rule of /api/v1/rules as Prometheus loaded it.
type Rule struct {
	Name   string `json:"name"`
	Query  string `json:"query"`
	Type   string `json:"type"` // "alerting" or "recording"
	Health string `json:"health"`
	// LastError is the error of its last evaluation, "" when it worked.
	LastError string `json:"lastError"`
	// Duration is the rule's for:, in seconds.
	Duration float64 `json:"duration"`
	// State of an alerting rule: inactive, pending or firing.
	State string `json:"state"`
}

// Rules lists the rules Prometheus loaded, from every group.
func (p *Prometheus) Rules(t testing.TB) []Rule {
	t.Helper()
	data, err := p.api("rules", nil)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Groups []struct {
			Rules []Rule `json:"rules"`
		} `json:"groups"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	var rules []Rule
	for _, g := range r.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

// WaitTargetsUp waits until every target is scraped with success (health
// "up") and fails the test after PrometheusWaitTimeout with the targets'
// last errors.
func (p *Prometheus) WaitTargetsUp(t testing.TB) {
	t.Helper()
	start := time.Now()
	for {
		data, err := p.api("targets", nil)
		var r struct {
			ActiveTargets []struct {
				ScrapeURL string `json:"scrapeUrl"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"activeTargets"`
		}
		var down []string
		if err == nil {
			err = json.Unmarshal(data, &r)
		}
		if err == nil {
			for _, target := range r.ActiveTargets {
				if target.Health != "up" {
					down = append(down, fmt.Sprintf("%s: %s %s", target.ScrapeURL, target.Health, target.LastError))
				}
			}
			if len(down) == 0 && len(r.ActiveTargets) > 0 {
				t.Logf("prometheus: %d target(s) up after %s", len(r.ActiveTargets), time.Since(start).Round(time.Millisecond))
				return
			}
		}
		if time.Since(start) > PrometheusWaitTimeout {
			t.Fatalf("prometheus: targets not up within %s: %v (error %v)", PrometheusWaitTimeout, down, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// httpGet returns the body of a GET that answered 200.
func httpGet(u string) (string, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close() //nolint:errcheck // read-only
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: HTTP %d: %.200s", u, resp.StatusCode, body)
	}
	return string(body), nil
}

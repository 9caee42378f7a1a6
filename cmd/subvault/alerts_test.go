package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/subvault/subvault/internal/testutil"
)

// The alert rules and the Grafana dashboard the package ships
// (packaging/prometheus, packaging/grafana; docs/monitoring.md): promtool
// checks and unit-tests the rules, and every PromQL expression in them
// names only metrics subvault writes (or node_exporter's for the textfile).
// alerts_e2e_test.go runs them against a real Prometheus.

const (
	alertRulesFile     = "../../packaging/prometheus/subvault-alerts.yml"
	alertRulesTestFile = "../../packaging/prometheus/subvault-alerts_test.yml"
	dashboardFile      = "../../packaging/grafana/subvault-dashboard.json"
)

// subvaultMetrics are the metrics subvault writes (docs/monitoring.md).
var subvaultMetrics = []string{
	"subvault_last_backup_timestamp_seconds",
	"subvault_last_backup_success",
	"subvault_last_backup_result",
	"subvault_last_success_timestamp_seconds",
	"subvault_last_backup_duration_seconds",
	"subvault_last_backup_files",
	"subvault_last_backup_added_bytes",
	"subvault_last_backup_processed_bytes",
	"subvault_archives",
	"subvault_snapshots",
	"subvault_next_run_timestamp_seconds",
	"subvault_overdue",
	"subvault_stalled_jobs",
	"subvault_jobs_total",
	"subvault_jobs",
	"subvault_build_info",
	"subvault_start_time_seconds",
	"subvault_config_last_reload_success",
	"subvault_config_last_reload_timestamp_seconds",
}

// nodeExporterMetrics are node_exporter's metrics the rules may read: the
// textfile collector's own.
var nodeExporterMetrics = []string{"node_textfile_mtime_seconds"}

// promqlExpr is one PromQL expression of the rules or the dashboard, with
// where it comes from.
type promqlExpr struct {
	Where string
	Expr  string
}

// alertRules are the rules of subvault-alerts.yml.
func alertRules(t *testing.T) []promqlExpr {
	t.Helper()
	data, err := os.ReadFile(alertRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		t.Fatalf("%s: %v", alertRulesFile, err)
	}
	var rules []promqlExpr
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.For == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: alert %s lacks for:, a severity label, a summary or a description", alertRulesFile, r.Alert)
			}
			// Each alert's runbook is a section of docs/monitoring.md
			// named after it.
			if want := "docs/monitoring.md#" + strings.ToLower(r.Alert); !strings.HasSuffix(r.Annotations["runbook_url"], want) ||
				!strings.Contains(r.Annotations["description"], "section "+r.Alert) {
				t.Errorf("%s: alert %s: runbook_url %q does not end in %s, or its description does not name its runbook section", alertRulesFile, r.Alert, r.Annotations["runbook_url"], want)
			}
			rules = append(rules, promqlExpr{Where: "alert " + r.Alert, Expr: r.Expr})
		}
	}
	return rules
}

// dashboard is the dashboard's JSON.
func dashboard(t *testing.T) map[string]any {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s is not JSON: %v", dashboardFile, err)
	}
	return d
}

// grafanaVariables are the dashboard's variables as a query of all of
// them sends them: every machine and plan, and a rate interval.
var grafanaVariables = strings.NewReplacer(
	"$__rate_interval", "1m",
	"${instance}", ".*", "$instance", ".*",
	"${plan}", ".*", "$plan", ".*",
)

// labelValues matches Grafana's label_values(METRIC_SELECTOR, LABEL) of a
// query variable.
var labelValues = regexp.MustCompile(`^label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// dashboardQueries are the PromQL expressions of the dashboard's panels and
// its variables' selectors, with the variables replaced as Grafana does
// for "All".
func dashboardQueries(t *testing.T) []promqlExpr {
	t.Helper()
	d := dashboard(t)
	var out []promqlExpr
	panels, _ := d["panels"].([]any)
	for _, p := range panels {
		panel, _ := p.(map[string]any)
		targets, _ := panel["targets"].([]any)
		for _, tg := range targets {
			target, _ := tg.(map[string]any)
			expr, _ := target["expr"].(string)
			out = append(out, promqlExpr{Where: "panel " + panel["title"].(string), Expr: grafanaVariables.Replace(expr)})
		}
	}
	templating, _ := d["templating"].(map[string]any)
	list, _ := templating["list"].([]any)
	for _, v := range list {
		variable, _ := v.(map[string]any)
		if variable["type"] != "query" {
			continue
		}
		def, _ := variable["definition"].(string)
		m := labelValues.FindStringSubmatch(def)
		if m == nil {
			t.Errorf("%s: variable %v: %q is not label_values(SELECTOR, LABEL)", dashboardFile, variable["name"], def)
			continue
		}
		out = append(out, promqlExpr{Where: "variable " + variable["name"].(string), Expr: grafanaVariables.Replace(m[1])})
	}
	return out
}

var (
	promqlStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promqlMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	promqlRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	// by (a, b), without(...), on(...), ignoring(...), group_left(...),
	// group_right(...): label names, not metrics.
	promqlLabelLists = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promqlIdent      = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promqlKeywords   = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan", "e"}
)

// promqlMetrics returns the metric names expr selects: the identifiers
// that are no function (followed by "("), keyword, label name or number.
// A rough reader, not a parser; alerts_e2e_test.go has Prometheus parse
// every expression.
func promqlMetrics(expr string) []string {
	e := promqlStrings.ReplaceAllString(expr, `""`)
	e = promqlLabelLists.ReplaceAllString(e, " ")
	for {
		next := promqlMatchers.ReplaceAllString(e, " ")
		if next == e {
			break
		}
		e = next
	}
	e = promqlRanges.ReplaceAllString(e, " ")
	var names []string
	for _, loc := range promqlIdent.FindAllStringIndex(e, -1) {
		name := e[loc[0]:loc[1]]
		if loc[0] > 0 && (e[loc[0]-1] >= '0' && e[loc[0]-1] <= '9' || e[loc[0]-1] == '.') {
			continue // 3e5, 1.5e3
		}
		if rest := strings.TrimLeft(e[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function or an aggregation
		}
		if slices.Contains(promqlKeywords, strings.ToLower(name)) {
			continue
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

func TestPromQLMetricsReader(t *testing.T) {
	for expr, want := range map[string][]string{
		`subvault_last_backup_success == 0`:                                                             {"subvault_last_backup_success"},
		`time() - node_textfile_mtime_seconds{file=~"(.*/)?subvault\\.prom"} > 3600`:                    {"node_textfile_mtime_seconds"},
		`sum by (kind, result) (rate(subvault_jobs_total{instance=~".*"}[1m])) * 3600`:                  {"subvault_jobs_total"},
		`a == 0 unless ignoring(result) b{result=~"x|y"} == 1`:                                          {"a", "b"},
		`max without(result) (m{result="stalled"} == 1) or n > 3 * 86400 and on (plan) group_left o`:    {"m", "n", "o"},
		`subvault_typo_seconds{plan="and or subvault_last_backup_success"} > 1e3 and bool 2.5e-3 < inf`: {"subvault_typo_seconds"},
	} {
		if got := promqlMetrics(expr); !slices.Equal(got, want) {
			t.Errorf("promqlMetrics(%s) = %v, want %v", expr, got, want)
		}
	}
}

// Every PromQL expression of the rules and of the dashboard names metrics
// subvault writes, and the rules node_exporter's textfile mtime besides; a
// typo in a metric name would make an alert that never fires or an empty
// panel, and no tool would say so.
func TestAlertRulesAndDashboardNameKnownMetrics(t *testing.T) {
	rules := alertRules(t)
	queries := dashboardQueries(t)
	if len(rules) != 5 || len(queries) < 10 {
		t.Fatalf("%d rules and %d dashboard queries, want the 5 alerts and a query per panel", len(rules), len(queries))
	}
	used := map[string]bool{}
	check := func(e promqlExpr, known []string) {
		names := promqlMetrics(e.Expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric found in %q", e.Where, e.Expr)
		}
		for _, n := range names {
			used[n] = true
			if !slices.Contains(known, n) {
				t.Errorf("%s: %q names %s, which is no metric of docs/monitoring.md", e.Where, e.Expr, n)
			}
		}
	}
	for _, r := range rules {
		check(r, append(slices.Clone(subvaultMetrics), nodeExporterMetrics...))
	}
	for _, q := range queries {
		check(q, subvaultMetrics)
	}
	t.Logf("the rules and the dashboard read %d metrics", len(used))
	for _, want := range []string{
		"subvault_last_backup_result", "subvault_last_success_timestamp_seconds", "subvault_last_backup_duration_seconds",
		"subvault_last_backup_added_bytes", "subvault_last_backup_files", "subvault_archives", "subvault_snapshots",
		"subvault_jobs_total", "subvault_stalled_jobs", "subvault_overdue",
	} {
		if !used[want] {
			t.Errorf("the dashboard shows no %s", want)
		}
	}
}

// The alert rules are valid (promtool check rules) and their unit tests
// pass (promtool test rules): each alert fires when it should, after its
// for:, with its labels and annotations, and stays quiet when it should.
func TestAlertRulesPromtool(t *testing.T) {
	testutil.SkipShort(t, "promtool")
	promtool := testutil.RequireCommand(t, "promtool", "prometheus")
	for _, args := range [][]string{
		{"check", "rules", filepath.Base(alertRulesFile)},
		{"test", "rules", filepath.Base(alertRulesTestFile)},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Dir(alertRulesFile)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), strings.TrimSpace(string(out)))
	}
}

// The dashboard is one page a Grafana imports as it is: the Prometheus data
// source is a variable (DS_PROMETHEUS) every panel and variable uses, a
// machine and a plan variable, panels with queries, ids once each, on the
// 24-column grid.
func TestDashboardShape(t *testing.T) {
	d := dashboard(t)
	if d["uid"] == "" || d["title"] == "" {
		t.Errorf("no uid or title")
	}
	vars := map[string]map[string]any{}
	templating, _ := d["templating"].(map[string]any)
	list, _ := templating["list"].([]any)
	for _, v := range list {
		variable, _ := v.(map[string]any)
		vars[variable["name"].(string)] = variable
	}
	if ds := vars["DS_PROMETHEUS"]; ds == nil || ds["type"] != "datasource" || ds["query"] != "prometheus" {
		t.Errorf("no data source variable DS_PROMETHEUS of type prometheus: %v", ds)
	}
	for _, name := range []string{"instance", "plan"} {
		v := vars[name]
		if v == nil || !strings.HasPrefix(v["definition"].(string), "label_values(subvault_last_backup_timestamp_seconds") ||
			!strings.HasSuffix(v["definition"].(string), ", "+name+")") || v["includeAll"] != true {
			t.Errorf("variable %s: %v, want label_values(subvault_last_backup_timestamp_seconds..., %s) with All", name, v, name)
		}
	}
	usesDS := func(where string, ds any) {
		m, _ := ds.(map[string]any)
		if m["uid"] != "${DS_PROMETHEUS}" {
			t.Errorf("%s: data source %v, want uid ${DS_PROMETHEUS}", where, ds)
		}
	}
	usesDS("variable instance", vars["instance"]["datasource"])
	usesDS("variable plan", vars["plan"]["datasource"])
	panels, _ := d["panels"].([]any)
	ids := map[float64]bool{}
	bottom := 0.0
	for _, p := range panels {
		panel, _ := p.(map[string]any)
		title, _ := panel["title"].(string)
		id, _ := panel["id"].(float64)
		if title == "" || id == 0 || ids[id] {
			t.Errorf("panel %q: no title, or id %v missing or used twice", title, id)
		}
		ids[id] = true
		usesDS("panel "+title, panel["datasource"])
		targets, _ := panel["targets"].([]any)
		if len(targets) == 0 {
			t.Errorf("panel %q has no query", title)
		}
		for _, tg := range targets {
			usesDS("panel "+title+" query", tg.(map[string]any)["datasource"])
		}
		grid, _ := panel["gridPos"].(map[string]any)
		x, w, y, h := grid["x"].(float64), grid["w"].(float64), grid["y"].(float64), grid["h"].(float64)
		if x < 0 || w <= 0 || x+w > 24 || h <= 0 {
			t.Errorf("panel %q: gridPos %v is off the 24-column grid", title, grid)
		}
		bottom = max(bottom, y+h)
	}
	if len(panels) < 9 || bottom > 30 {
		t.Errorf("%d panels down to row %v: want the nine panels on one page (about 30 rows)", len(panels), bottom)
	}
}

// The NixOS module hands the same files out as its read-only options
// prometheusRules and grafanaDashboard.
func TestNixOSModuleShipsMonitoringFiles(t *testing.T) {
	module, err := filepath.Abs(nixosModule)
	if err != nil {
		t.Fatal(err)
	}
	expr := strings.Replace(`
let
  lib = {
    mkEnableOption = _: { };
    mkOption = o: o;
    literalExpression = s: s;
    types = { package = "package"; path = "path"; };
    mkIf = _: _: { };
    mkMerge = _: { };
  };
  pkgs = {
    formats.yaml = _: { type = "yaml"; generate = name: _: "/store/${name}"; };
    writeText = name: _: "/store/${name}";
    runCommand = name: _: _: "/store/${name}";
  };
  options = ((import MODULE) { inherit lib pkgs; config.services.subvault.enable = false; }).options.services.subvault;
in {
  rules = toString options.prometheusRules.default;
  dashboard = toString options.grafanaDashboard.default;
  readOnly = options.prometheusRules.readOnly && options.grafanaDashboard.readOnly;
}`, "MODULE", module, 1)
	var got struct {
		Rules, Dashboard string
		ReadOnly         bool
	}
	if out := nixInstantiate(t, "--eval", "--strict", "--json", "--expr", expr); json.Unmarshal(out, &got) != nil {
		t.Fatalf("module's options: %s", out)
	}
	for _, c := range []struct{ got, want string }{{got.Rules, alertRulesFile}, {got.Dashboard, dashboardFile}} {
		want, _ := filepath.Abs(c.want)
		if c.got != want {
			t.Errorf("the module's option names %s, want %s", c.got, want)
		}
	}
	if !got.ReadOnly {
		t.Errorf("prometheusRules and grafanaDashboard are not read-only")
	}
}

// Each alert's runbook_url points at a section of docs/monitoring.md named
// after it.
func TestAlertRunbooksInMonitoringDoc(t *testing.T) {
	doc, err := os.ReadFile("../../docs/monitoring.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range alertRules(t) {
		name := strings.TrimPrefix(r.Where, "alert ")
		if !strings.Contains(string(doc), "\n#### "+name+"\n") {
			t.Errorf("docs/monitoring.md has no section #### %s, the alert's runbook", name)
		}
	}
}

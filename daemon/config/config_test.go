package config

import (
	"bufio"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestGood loads every file in testdata/good: each must be accepted.
func TestGood(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/good/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no files in testdata/good")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			cfg, err := parseFile(t, file)
			if err != nil {
				t.Fatalf("Load(%s) failed:\n%v", file, err)
			}
			if cfg.File != file {
				t.Errorf("File = %q, want %q", cfg.File, file)
			}
		})
	}
}

var wantLine = regexp.MustCompile(`^:([0-9]+):`)

// TestBad loads every file in testdata/bad: each must be refused. The file
// starts with one or more "# want: SUBSTRING" lines; every substring must
// be in the error, and the error must start with "FILE:LINE:", LINE taken
// from the first want.
func TestBad(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 30 {
		t.Fatalf("only %d files in testdata/bad, want at least 30", len(files))
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			wants := readWants(t, file)
			m := wantLine.FindStringSubmatch(wants[0])
			if m == nil {
				t.Fatalf("the first want of %s must start with :LINE:, got %q", file, wants[0])
			}
			_, err := parseFile(t, file)
			if err == nil {
				t.Fatalf("Load(%s) accepted the file", file)
			}
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want *Errors: %v", err, err)
			}
			msg := err.Error()
			if prefix := file + ":" + m[1] + ":"; !strings.HasPrefix(msg, prefix) {
				t.Errorf("error does not start with %q:\n%s", prefix, msg)
			}
			for _, want := range wants {
				if !strings.Contains(msg, want) {
					t.Errorf("error lacks %q:\n%s", want, msg)
				}
			}
			for _, e := range errs.List {
				if e.File != file || e.Line < 1 || e.Msg == "" {
					t.Errorf("incomplete error %#v", e)
				}
				if !strings.Contains(e.Msg, "; expected ") {
					t.Errorf("error does not say what is expected: %v", e)
				}
			}
		})
	}
}

// parseFile is Load without the checks of the files' owners and modes
// (strict_test.go has those): the samples are checked for what they say,
// wherever the repository is checked out (sudo make test in a user's
// clone has directories that root does not own).
func parseFile(t *testing.T, file string) (*Config, error) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return Parse(file, data)
}

func readWants(t *testing.T, file string) []string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var wants []string
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		want, ok := strings.CutPrefix(scanner.Text(), "# want: ")
		if !ok {
			break
		}
		wants = append(wants, want)
	}
	if len(wants) == 0 {
		t.Fatalf("%s does not start with a \"# want: \" line", file)
	}
	return wants
}

func TestPackagingExample(t *testing.T) {
	t.Parallel()
	const file = "../../packaging/config.example.yaml"
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(file, data)
	if err != nil {
		t.Fatalf("the shipped example is refused:\n%v", err)
	}
	if got, want := cfg.PlanNames(), []string{"postgres", "system"}; !reflect.DeepEqual(got, want) {
		t.Errorf("PlanNames() = %q, want %q", got, want)
	}
	system := cfg.Plans["system"]
	if want := []string{"/", "/home"}; !reflect.DeepEqual(system.Subvolumes, want) {
		t.Errorf("system subvolumes = %q, want %q", system.Subvolumes, want)
	}
	pg := cfg.Plans["postgres"]
	if len(pg.Hooks.BeforeSnapshot) != 1 || len(pg.Hooks.AfterSnapshot) != 1 {
		t.Errorf("postgres hooks = %+v, want one before_snapshot and one after_snapshot command", pg.Hooks)
	}
}

const minimal = `
repositories:
  nas:
    url: /srv/restic
    password_file: /etc/subvault/nas.pass
plans:
  home:
    subvolumes: [/home]
    repository: nas
`

func TestDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("minimal.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if want := DefaultSettings(); !reflect.DeepEqual(cfg.Settings, want) {
		t.Errorf("Settings = %+v, want %+v", cfg.Settings, want)
	}
	want := Settings{MaxConcurrentJobs: 1, JobHistory: 200, InhibitSleep: true,
		StateDir: "/var/lib/subvault", CacheDir: "/var/cache/subvault", Restic: "restic"}
	if !reflect.DeepEqual(cfg.Settings, want) {
		t.Errorf("Settings = %+v, want %+v", cfg.Settings, want)
	}

	repo := cfg.Repositories["nas"]
	wantRepo := Repository{Name: "nas", URL: "/srv/restic", PasswordFile: "/etc/subvault/nas.pass",
		CacheDir: "/var/cache/subvault/nas"}
	if !reflect.DeepEqual(*repo, wantRepo) {
		t.Errorf("repository = %+v, want %+v", *repo, wantRepo)
	}

	plan := cfg.Plans["home"]
	checks := []struct {
		name      string
		got, want any
	}{
		{"Name", plan.Name, "home"},
		{"Schedule", plan.Schedule, ""},
		{"ScheduleSpec is nil", plan.ScheduleSpec == nil, true},
		{"CatchUp", plan.CatchUp, true},
		{"SnapshotDir", plan.SnapshotDir, ""},
		{"KeepSnapshots", plan.KeepSnapshots, KeepSnapshots{}},
		{"Backup.OneFileSystem", plan.Backup.OneFileSystem, true},
		{"Backup.Exclude", len(plan.Backup.Exclude), 0},
		{"Retention", plan.Retention, Retention{Daily: 7, Weekly: 4, Monthly: 12, Yearly: 1}},
		{"PruneSchedule", plan.PruneSchedule, "@weekly"},
		{"PruneSpec is set", plan.PruneSpec != nil, true},
		{"CheckSchedule", plan.CheckSchedule, "@monthly"},
		{"CheckSpec is set", plan.CheckSpec != nil, true},
		{"CheckReadDataSubset", plan.CheckReadDataSubset, "5%"},
		{"Hooks", plan.Hooks, Hooks{}},
		{"AllowUsers", len(plan.AllowUsers), 0},
		{"AllowGroups", len(plan.AllowGroups), 0},
		{"Timeout", plan.Timeout, time.Duration(0)},
		{"StallTimeout", plan.StallTimeout, 10 * time.Minute},
		{"OnStall", plan.OnStall, OnStallCancel},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}

	// The default schedules are really weekly and monthly.
	from := time.Date(2026, 11, 18, 12, 0, 0, 0, time.Local) // a Wednesday
	if got, want := plan.PruneSpec.Next(from), time.Date(2026, 11, 22, 0, 0, 0, 0, time.Local); !got.Equal(want) {
		t.Errorf("PruneSpec.Next = %v, want %v", got, want)
	}
	if got, want := plan.CheckSpec.Next(from), time.Date(2026, 12, 1, 0, 0, 0, 0, time.Local); !got.Equal(want) {
		t.Errorf("CheckSpec.Next = %v, want %v", got, want)
	}
}

func TestExplicitValues(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("explicit.yaml", []byte(`
settings:
  cache_dir: /srv/cache
repositories:
  nas:
    url: /srv/restic
    credential: restic-nas
plans:
  home:
    subvolumes: [/home]
    repository: nas
    schedule: "30 2 * * *"
    prune_schedule: ""
    check_schedule: ""
    check_read_data_subset: ""
    catch_up: false
    retention: {monthly: 3}
    backup: {one_file_system: false}
    timeout: 7h30m
    stall_timeout: "0"
    on_stall: report
`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Repositories["nas"].CacheDir, "/srv/cache/nas"; got != want {
		t.Errorf("repository cache_dir = %q, want %q (below settings.cache_dir)", got, want)
	}
	plan := cfg.Plans["home"]
	if plan.PruneSpec != nil || plan.CheckSpec != nil || plan.PruneSchedule != "" || plan.CheckSchedule != "" {
		t.Errorf("explicit empty schedules are not manual: %q %q", plan.PruneSchedule, plan.CheckSchedule)
	}
	if plan.CheckReadDataSubset != "" || plan.CatchUp || plan.Backup.OneFileSystem {
		t.Errorf("explicit values not kept: %+v", plan)
	}
	if plan.OnStall != OnStallReport {
		t.Errorf("on_stall %q, want report", plan.OnStall)
	}
	if plan.Timeout != 7*time.Hour+30*time.Minute || plan.StallTimeout != 0 {
		t.Errorf("timeout %v, stall_timeout %v; want 7h30m and 0 (never)", plan.Timeout, plan.StallTimeout)
	}
	// A retention block replaces the default as a whole: absent counts are 0.
	if want := (Retention{Monthly: 3}); plan.Retention != want {
		t.Errorf("Retention = %+v, want %+v", plan.Retention, want)
	}
	from := time.Date(2026, 11, 18, 12, 0, 0, 0, time.Local)
	if got, want := plan.ScheduleSpec.Next(from), time.Date(2026, 11, 19, 2, 30, 0, 0, time.Local); !got.Equal(want) {
		t.Errorf("ScheduleSpec.Next = %v, want %v", got, want)
	}
}

func TestHooksNormalised(t *testing.T) {
	t.Parallel()
	cfg, err := parseFile(t, "testdata/good/hooks_single.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.Plans["db"].Hooks
	want := Hooks{
		BeforeSnapshot: [][]string{{"/usr/bin/psql", "-c", "CHECKPOINT"}},
		AfterSnapshot:  [][]string{{"/usr/bin/true"}},
		OnSuccess:      [][]string{{"/usr/bin/logger", "ok"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("one-argv hooks = %#v, want %#v", got, want)
	}

	cfg, err = parseFile(t, "testdata/good/hooks_list.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got = cfg.Plans["db"].Hooks
	want = Hooks{
		BeforeSnapshot: [][]string{{"/usr/bin/psql", "-c", "CHECKPOINT"}, {"/usr/bin/sync"}},
		AfterSnapshot:  [][]string{{"/usr/bin/logger", "snapshot taken"}},
		OnSuccess:      [][]string{{"/usr/bin/true"}},
		OnFailure:      [][]string{{"/usr/bin/notify", "failed"}, {"/usr/bin/logger", "failed"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("argv-list hooks = %#v, want %#v", got, want)
	}
}

func TestAnchorsAndMerge(t *testing.T) {
	t.Parallel()
	cfg, err := parseFile(t, "testdata/good/anchors.yaml")
	if err != nil {
		t.Fatal(err)
	}
	srv := cfg.Plans["srv"]
	if srv.Schedule != "@daily" || srv.Repository != "nas" {
		t.Errorf("merged keys missing: %+v", srv)
	}
	if want := []string{"/srv"}; !reflect.DeepEqual(srv.Subvolumes, want) {
		t.Errorf("subvolumes = %q, want %q (the plan's own key wins over the merged one)", srv.Subvolumes, want)
	}
	if want := (Retention{Daily: 7, Weekly: 4}); srv.Retention != want {
		t.Errorf("aliased retention = %+v, want %+v", srv.Retention, want)
	}
}

func TestAllErrorsInLineOrder(t *testing.T) {
	t.Parallel()
	_, err := Parse("three.yaml", []byte(`plans:
  home:
    subvolumes: [home]
    repository: nas
    schedule: "0 3 * *"
repositories:
  nas:
    url: /srv/restic
`))
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error is %T, want *Errors: %v", err, err)
	}
	want := []struct {
		line int
		key  string
	}{
		{3, "plans.home.subvolumes[0]"},
		{5, "plans.home.schedule"},
		{7, "repositories.nas"}, // no password source
	}
	if len(errs.List) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(errs.List), len(want), err)
	}
	for i, w := range want {
		if e := errs.List[i]; e.Line != w.line || e.Key != w.key || e.File != "three.yaml" {
			t.Errorf("error %d = %s:%d: %s, want three.yaml:%d: %s", i, e.File, e.Line, e.Key, w.line, w.key)
		}
	}
	if lines := strings.Split(err.Error(), "\n"); len(lines) != 3 {
		t.Errorf("Error() has %d lines, want 3:\n%v", len(lines), err)
	}
	var one *Error
	if !errors.As(err, &one) || one.Line != 3 {
		t.Errorf("errors.As(*Error) = %v, want the first error", one)
	}

	// The testdata file with three errors reports exactly those three.
	_, err = parseFile(t, "testdata/bad/multiple_errors.yaml")
	if !errors.As(err, &errs) {
		t.Fatalf("error is %T, want *Errors: %v", err, err)
	}
	var lines []int
	for _, e := range errs.List {
		lines = append(lines, e.Line)
	}
	if want := []int{4, 8, 13}; !reflect.DeepEqual(lines, want) {
		t.Errorf("multiple_errors.yaml: errors on lines %v, want %v:\n%v", lines, want, err)
	}
}

func TestErrorFormat(t *testing.T) {
	t.Parallel()
	e := &Error{File: "/etc/subvault/config.yaml", Line: 14, Key: "plans.home.schedule", Msg: "bad; expected good"}
	if got, want := e.Error(), "/etc/subvault/config.yaml:14: plans.home.schedule: bad; expected good"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	e.Key = ""
	if got, want := e.Error(), "/etc/subvault/config.yaml:14: bad; expected good"; got != want {
		t.Errorf("Error() without key = %q, want %q", got, want)
	}
	// On no line: the file's own mode, or a default value.
	e.Line = 0
	if got, want := e.Error(), "/etc/subvault/config.yaml: bad; expected good"; got != want {
		t.Errorf("Error() on no line = %q, want %q", got, want)
	}
	e.Key = "settings.restic"
	if got, want := e.Error(), "/etc/subvault/config.yaml: settings.restic: bad; expected good"; got != want {
		t.Errorf("Error() of a default = %q, want %q", got, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := Load(path)
	if err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error does not wrap fs.ErrNotExist: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"cannot read configuration file", path, "no such file or directory"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
}

func TestControlledFlag(t *testing.T) {
	t.Parallel()
	for arg, want := range map[string]string{
		"--repo":                 "--repo",
		"--repo=/x":              "--repo",
		"-r":                     "-r",
		"-r/srv/x":               "-r",
		"-vr":                    "-r",
		"-xp":                    "-p",
		"--repository-file":      "--repository-file",
		"--password-command=cat": "--password-command",
		"--cache-dir=/tmp":       "--cache-dir",
		"--no-cache":             "--no-cache",
		"--json":                 "--json",
		"-e":                     "",
		"-eprivate":              "",
		"-xv":                    "",
		"--exclude=--repo":       "",
		"--repos":                "",
		"/srv/-r":                "",
		"-":                      "",
		"--":                     "",
	} {
		if got := controlledFlag(arg); got != want {
			t.Errorf("controlledFlag(%q) = %q, want %q", arg, got, want)
		}
	}
}

func TestPlanNamesSorted(t *testing.T) {
	t.Parallel()
	cfg := &Config{Plans: map[string]*Plan{"b": {}, "a": {}, "C": {}}}
	if got, want := cfg.PlanNames(), []string{"C", "a", "b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("PlanNames() = %q, want %q", got, want)
	}
}

// TestReference checks docs/configuration.md: its complete example loads,
// and every key the parser knows is documented.
func TestReference(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	_, example, ok := strings.Cut(doc, "## Complete example")
	if !ok {
		t.Fatal("docs/configuration.md has no \"## Complete example\" section")
	}
	_, example, _ = strings.Cut(example, "```yaml\n")
	example, _, _ = strings.Cut(example, "```")
	cfg, err := Parse("docs/configuration.md (complete example)", []byte(example))
	if err != nil {
		t.Fatalf("the complete example is refused:\n%v", err)
	}
	if len(cfg.Plans) == 0 || len(cfg.Repositories) == 0 {
		t.Errorf("the complete example has no plan or no repository")
	}
	for _, keys := range [][]string{topKeys, repositoryKeys, planKeys, keepSnapshotsKeys, retentionKeys, backupKeys, hookKeys, settingsKeys, metricsKeys, targetKeys, resetKeys, resetSubvolumeKeys} {
		for _, key := range keys {
			if !strings.Contains(doc, "`"+key+"`") {
				t.Errorf("docs/configuration.md does not document `%s`", key)
			}
		}
	}
}

// FuzzParse checks that no input makes Parse panic, and that a refusal
// always carries positioned errors.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.yaml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err == nil {
			if cfg == nil {
				t.Fatal("nil config without an error")
			}
			return
		}
		var errs *Errors
		if !errors.As(err, &errs) || len(errs.List) == 0 {
			t.Fatalf("error is not a non-empty *Errors: %v", err)
		}
		for _, e := range errs.List {
			if e.Line < 1 {
				t.Fatalf("error without a line: %v", e)
			}
		}
	})
}

// on_battery and metered default to run; skip and run are read as written.
func TestConditions(t *testing.T) {
	cfg, err := parseFile(t, "testdata/good/laptop.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.Plans["home"]; p.OnBattery != ConditionSkip || p.Metered != ConditionSkip {
		t.Errorf("home: on_battery %q, metered %q; want skip, skip", p.OnBattery, p.Metered)
	}
	if p := cfg.Plans["root"]; p.OnBattery != ConditionRun || p.Metered != ConditionRun {
		t.Errorf("root: on_battery %q, metered %q; want run, run", p.OnBattery, p.Metered)
	}
	cfg, err = parseFile(t, "testdata/good/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range cfg.Plans {
		if p.OnBattery != ConditionRun || p.Metered != ConditionRun {
			t.Errorf("%s without the keys: on_battery %q, metered %q; want run, run", name, p.OnBattery, p.Metered)
		}
	}
}

// append_only and copy_to as testdata/good/three_two_one.yaml writes them:
// no prune schedule on an append-only repository (not even the default),
// and copy_to as written.
func TestAppendOnlyAndCopyTo(t *testing.T) {
	t.Parallel()
	cfg, err := parseFile(t, "testdata/good/three_two_one.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Repositories["nas"].AppendOnly || cfg.Repositories["offsite"].AppendOnly {
		t.Errorf("append_only: nas %v, offsite %v", cfg.Repositories["nas"].AppendOnly, cfg.Repositories["offsite"].AppendOnly)
	}
	for _, name := range []string{"home", "root"} {
		if p := cfg.Plans[name]; p.PruneSchedule != "" || p.PruneSpec != nil {
			t.Errorf("plan %s on an append-only repository has prune schedule %q", name, p.PruneSchedule)
		}
	}
	if got := cfg.Plans["home"].CopyTo; !reflect.DeepEqual(got, []string{"offsite"}) {
		t.Errorf("copy_to = %q", got)
	}
	if got := cfg.Plans["root"].CopyTo; got != nil {
		t.Errorf("copy_to of a plan without it = %q", got)
	}
	// The default still applies elsewhere.
	minimal, err := parseFile(t, "testdata/good/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range minimal.Plans {
		if p.PruneSchedule != DefaultPruneSchedule {
			t.Errorf("plan %s: prune schedule %q, want the default", p.Name, p.PruneSchedule)
		}
	}
}

package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/internal/testutil"
)

// cli runs the subvault command line against the test daemon, piped (not a
// terminal), and returns its exit code and output.
func (e *apiEnv) cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := subvaultCmd(append(args, "--bus", e.bus.Address)...)
	return runCmd(t, cmd)
}

func runCmd(t *testing.T, cmd *exec.Cmd) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	return code, out.String(), errOut.String()
}

// checkTable checks that out is a table whose header is header and whose
// rows match rows cell by cell (each cell a regular expression), with every
// column starting at the same place on every line.
func checkTable(t *testing.T, out string, header []string, rows [][]string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(rows)+1 {
		t.Fatalf("%d lines, want a header and %d rows:\n%s", len(lines), len(rows), out)
	}
	if got := regexp.MustCompile(`  +`).Split(strings.TrimSpace(lines[0]), -1); strings.Join(got, "|") != strings.Join(header, "|") {
		t.Errorf("header %q, want %q", got, header)
	}
	var starts []int
	for _, h := range header {
		starts = append(starts, strings.Index(lines[0], h))
	}
	for i, want := range rows {
		line := lines[i+1]
		for c, re := range want {
			end := len(line)
			if c+1 < len(starts) {
				end = min(starts[c+1], len(line))
			}
			if starts[c] > len(line) {
				t.Errorf("row %d is too short for column %s: %q", i, header[c], line)
				break
			}
			cell := strings.TrimRight(line[starts[c]:end], " ")
			if c+1 < len(starts) && end < len(line) && line[end-1] != ' ' {
				t.Errorf("row %d: column %s runs into the next one (not aligned): %q", i, header[c], line)
			}
			if !regexp.MustCompile(`^(` + re + `)$`).MatchString(cell) {
				t.Errorf("row %d, column %s: %q does not match %q\nline: %q", i, header[c], cell, re, line)
			}
		}
	}
}

const (
	rfc3339 = `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)`
	dur     = `\d+s|\d+m\d\ds|\d+h\d\dm`
)

var controlChars = regexp.MustCompile("[\x00-\x08\x0b-\x1f\x7f]")

// TestCLIAgainstTheDaemon drives the real daemon on a private bus with the
// command line, as a script would (piped): each listing prints what a
// person expects, --json parses with the documented fields, and errors are
// one line with the documented exit code.
func TestCLIAgainstTheDaemon(t *testing.T) {
	e := newAPIEnv(t, 20)
	// A second plan, manual, whose repository is not there: its backup
	// fails.
	srv := e.fs.Path("srv")
	testutil.Run(t, "btrfs", "subvolume", "create", srv)
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, e.config, strings.Replace(string(cfg), "plans:\n",
		"  gone:\n    url: /nonexistent/subvault-test-repo\n    password_file: "+e.password+"\nplans:\n  bad:\n    subvolumes: ["+srv+"]\n    repository: gone\n", 1))
	e.startDaemon(t)
	home := e.fs.Path("home")

	// Before any backup.
	code, out, errOut := e.cli(t, "plans")
	if code != exitOK {
		t.Fatalf("plans: exit %d: %s", code, errOut)
	}
	checkTable(t, out, []string{"PLAN", "SUBVOLUMES", "REPOSITORY", "SCHEDULE", "LAST BACKUP", "RESULT", "NEXT RUN"}, [][]string{
		{"bad", regexp.QuoteMeta(srv), "gone", "-", "-", "-", "-"},
		{"home", regexp.QuoteMeta(home), "r", regexp.QuoteMeta("0 3 * * *"), "-", "-", rfc3339},
	})
	code, out, _ = e.cli(t, "status")
	if code != exitOK || !regexp.MustCompile(`^subvault daemon 0\.0\.0-dev: idle, 2 plans

PLAN +LAST BACKUP +RESULT +NEXT RUN +HEALTH
bad +- +- +- +never
home +- +- +`+rfc3339+` +never
$`).MatchString(out) {
		t.Errorf("status before any backup: exit %d\n%s", code, out)
	}
	if code, out, _ = e.cli(t, "jobs"); code != exitOK || out != "ID  KIND  PLAN  STARTED  TOOK  TRIGGER  STATE\n" {
		t.Errorf("jobs with no jobs: exit %d, %q", code, out)
	}
	if code, out, _ = e.cli(t, "jobs", "--json"); code != exitOK || out != "[]\n" {
		t.Errorf("jobs --json with no jobs: exit %d, %q; want []", code, out)
	}

	// A backup, followed: piped, one line per phase and no control
	// characters; the summary on stdout; exit 0.
	code, out, errOut = e.cli(t, "backup", "home", "--wait")
	if code != exitOK {
		t.Fatalf("backup --wait: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if controlChars.MatchString(out + errOut) {
		t.Errorf("piped output holds control characters:\n%q\n%q", out, errOut)
	}
	phases := regexp.MustCompile(`^(job 1: backup of home queued\n)?job 1: backup of home running\n$`)
	if !phases.MatchString(errOut) {
		t.Errorf("phases on stderr:\n%s\nwant one line per phase", errOut)
	}
	summary := regexp.MustCompile(`^job 1: backup of home done in (` + dur + `)
  archive: [0-9a-f]{8,64}
  files: 21 new, 0 changed, 0 unmodified
  dirs:  \d+ new, 0 changed, 0 unmodified
  added to the repository: \d+; processed 21 files, \d+
$`)
	if !summary.MatchString(out) {
		t.Errorf("summary:\n%s", out)
	}

	code, out, _ = e.cli(t, "jobs")
	checkTable(t, out, []string{"ID", "KIND", "PLAN", "STARTED", "TOOK", "TRIGGER", "STATE"},
		[][]string{{"1", "backup", "home", rfc3339, dur, "dbus:0", "done"}})
	if code != exitOK {
		t.Errorf("jobs: exit %d", code)
	}

	var jobs []map[string]any
	_, out, _ = e.cli(t, "jobs", "--json")
	if err := json.Unmarshal([]byte(out), &jobs); err != nil || len(jobs) != 1 {
		t.Fatalf("jobs --json: %v: %s", err, out)
	}
	for _, k := range []string{"id", "kind", "plan", "state", "result", "trigger", "progress", "bytes_done", "bytes_total",
		"files_done", "files_total", "seconds_remaining", "queued_at", "started_at", "finished_at", "error", "archive_id", "summary"} {
		if _, ok := jobs[0][k]; !ok {
			t.Errorf("jobs --json: no %q in %v", k, jobs[0])
		}
	}
	if s, _ := jobs[0]["summary"].(map[string]any); s["files_new"] != float64(21) {
		t.Errorf("jobs --json: summary.files_new = %v, want 21", s["files_new"])
	}
	archiveID, _ := jobs[0]["archive_id"].(string)

	code, out, _ = e.cli(t, "job", "1")
	for _, want := range []string{"job: +1, backup of home\n", "state: +done\n", "trigger: +dbus:0\n", "archive: +" + archiveID + "\n", "files_new: +21\n"} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("job 1 does not show %q:\n%s", want, out)
		}
	}
	if code != exitOK {
		t.Errorf("job 1 (done): exit %d", code)
	}

	host, _ := os.Hostname()
	code, out, _ = e.cli(t, "archives", "home")
	checkTable(t, out, []string{"ID", "TIME", "HOST", "PATHS", "TAGS"},
		[][]string{{"[0-9a-f]{8}", rfc3339, regexp.QuoteMeta(host), regexp.QuoteMeta(home), "subvault:home"}})
	if code != exitOK {
		t.Errorf("archives: exit %d", code)
	}
	var archives []struct {
		ID    string   `json:"id"`
		Time  string   `json:"time"`
		Host  string   `json:"hostname"`
		Paths []string `json:"paths"`
		Tags  []string `json:"tags"`
	}
	_, out, _ = e.cli(t, "archives", "home", "--json")
	if err := json.Unmarshal([]byte(out), &archives); err != nil || len(archives) != 1 || !strings.HasPrefix(archiveID, archives[0].ID) ||
		archives[0].Paths[0] != home || archives[0].Host != host {
		t.Errorf("archives --json: %v: %s", err, out)
	}

	code, out, _ = e.cli(t, "snapshots", "home")
	checkTable(t, out, []string{"NAME", "TAKEN", "KEPT", "PATH"},
		[][]string{{`subvault@home@\d{8}T\d{6}Z@1@.+`, rfc3339, "yes", regexp.QuoteMeta(home) + `/\.subvault-snapshots/.+`}})
	if code != exitOK {
		t.Errorf("snapshots: exit %d", code)
	}

	var plans []map[string]any
	_, out, _ = e.cli(t, "plans", "--json")
	if err := json.Unmarshal([]byte(out), &plans); err != nil || len(plans) != 2 || plans[1]["name"] != "home" || plans[1]["last_result"] != "done" || plans[1]["last_backup"] == nil ||
		plans[1]["last_success"] != plans[1]["last_backup"] {
		t.Errorf("plans --json after a backup: %v: %s", err, out)
	}

	// status: all well, then a failed backup makes it say so and exit 1.
	code, out, _ = e.cli(t, "status")
	if code != exitOK || !regexp.MustCompile(`\nhome +`+rfc3339+` +done +`+rfc3339+` +ok\n$`).MatchString(out) {
		t.Errorf("status after a backup: exit %d\n%s", code, out)
	}
	code, out, errOut = e.cli(t, "backup", "bad", "--wait")
	if code != exitFailure || !regexp.MustCompile(`^(job 2: backup of bad queued\n)?job 2: backup of bad running\njob 2: backup of bad failed: .*/nonexistent/subvault-test-repo.*\n$`).MatchString(errOut) {
		t.Errorf("a failing backup --wait: exit %d, stdout %q\nstderr:\n%s", code, out, errOut)
	}
	code, out, _ = e.cli(t, "status")
	if code != exitFailure || !regexp.MustCompile(`\nbad +`+rfc3339+` +failed +- +failed\n`).MatchString(out) ||
		!regexp.MustCompile(`\nneeds attention:\n  bad: last backup failed: .*/nonexistent/subvault-test-repo`).MatchString(out) {
		t.Errorf("status after a failed backup: exit %d, want 1\n%s", code, out)
	}
	var st struct {
		Healthy bool `json:"healthy"`
		Plans   []struct {
			Name   string `json:"name"`
			Health string `json:"health"`
			Why    string `json:"why"`
		} `json:"plans"`
		Daemon struct {
			Version string `json:"version"`
			State   string `json:"state"`
		} `json:"daemon"`
	}
	code, out, _ = e.cli(t, "status", "--json")
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != exitFailure || st.Healthy || len(st.Plans) != 2 ||
		st.Plans[0].Health != "failed" || st.Plans[1].Health != "ok" || st.Daemon.State != "idle" {
		t.Errorf("status --json: exit %d, %v: %s", code, err, out)
	}

	// Without --wait, the job's id, at once.
	code, out, _ = e.cli(t, "check", "home", "--wait=false")
	if code != exitOK || !regexp.MustCompile(`^job 3 queued; follow it with: subvault job 3\n$`).MatchString(out) {
		t.Errorf("check --wait=false: exit %d, %q", code, out)
	}
	e.signals.waitRemoved(t, 3, time.Minute)

	// Errors: one line, the documented exit code, nothing done.
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"backup", "nope"}, exitUsage, `no plan "nope"`},
		{[]string{"job", "999"}, exitUsage, `no job 999`},
		{[]string{"job", "x"}, exitUsage, `"x" is not a job id`},
		{[]string{"cancel", "1"}, exitUsage, `job 1`},
		{[]string{"snapshots"}, exitUsage, `expects a PLAN`},
		{[]string{"restore", "home", "latest", home}, exitUsage, home},
	} {
		code, out, errOut := e.cli(t, c.args...)
		if code != c.code || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, c.msg) {
			t.Errorf("subvault %v: exit %d, stdout %q, stderr %q; want exit %d and one line with %q", c.args, code, out, errOut, c.code, c.msg)
		}
	}
	if n := e.jobCount(t); n != 3 {
		t.Errorf("%d jobs after the refused commands, want 3", n)
	}
}

// TestCLIDaemonUnreachableOrRefusing: no daemon on the bus is one line that
// says how to start it (exit 5); an unprivileged user's backup is refused
// with what to do (exit 4).
func TestCLIDaemonUnreachableOrRefusing(t *testing.T) {
	testutil.RequireRoot(t)
	bus := testutil.NewBus(t)
	code, out, errOut := runCmd(t, subvaultCmd("status", "--bus", bus.Address))
	if code != exitUnreachable || out != "" || strings.Count(errOut, "\n") != 1 ||
		!strings.Contains(errOut, "not running") || !strings.Contains(errOut, "subvault daemon --bus "+bus.Address) {
		t.Errorf("no daemon: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	testutil.RequireNobody(t)
	e := newAPIEnv(t, 1)
	e.startDaemon(t)
	// The test binary stands for subvault; nobody must be able to run it.
	bin := nobodyBinary(t)
	asNobody := func(args ...string) *exec.Cmd {
		cmd := testutil.AsNobody(bin, append(args, "--bus", e.bus.Address)...)
		cmd.Env = append(cmd.Env, "SUBVAULT_TEST_AS_MAIN=1")
		return cmd
	}
	code, out, errOut = runCmd(t, asNobody("backup", "home", "--wait=false"))
	if code != exitDenied || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "not authorized") ||
		!strings.Contains(errOut, "allow_users") {
		t.Errorf("nobody's backup: exit %d, stdout %q, stderr %q; want %d and one line saying what to do", code, out, errOut, exitDenied)
	}
	// Reading is for anyone.
	if code, out, errOut = runCmd(t, asNobody("plans")); code != exitOK || !strings.Contains(out, "home") {
		t.Errorf("nobody's plans: exit %d, %q, %q", code, out, errOut)
	}
	if n := e.jobCount(t); n != 0 {
		t.Errorf("a refused backup made %d jobs", n)
	}
}

// TestCLIHelpForEveryCommand: each command has --help on stdout with its
// usage and options.
func TestCLIHelpForEveryCommand(t *testing.T) {
	for _, c := range commands() {
		args := []string{c.Name(), "--help"}
		if c.Name() == "run" {
			args = []string{"run", "backup", "--help"}
		}
		code, out, errOut := runCLI(t, args...)
		if code != exitOK || !strings.HasPrefix(out, "Usage: subvault "+args[0]) || errOut != "" {
			t.Errorf("subvault %s --help: exit %d, stdout %q, stderr %q", c.Name(), code, out, errOut)
		}
		if strings.Contains(out, "-bus") != clientCommand(c.Name()) {
			t.Errorf("subvault %s --help: --bus listed: %v, want %v", c.Name(), !clientCommand(c.Name()), clientCommand(c.Name()))
		}
	}
}

func clientCommand(name string) bool {
	switch name {
	case "check-config", "run", "reset", "version", "logs", "man", "emergency-kit", "completion":
		return false
	}
	return true
}

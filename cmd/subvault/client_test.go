package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
	dir, err := os.MkdirTemp("", "subvault-cli-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "subvault")
	testutil.Run(t, "cp", os.Args[0], bin)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
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

// TestBackupWaitOnATerminal runs `subvault backup home` on a pseudo-terminal:
// --wait is the default there, the bar moves (several percentages drawn in
// place), and the summary follows.
func TestBackupWaitOnATerminal(t *testing.T) {
	e := newAPIEnv(t, 300)
	e.startDaemon(t)
	pty := testutil.NewPTY(t, 120, 40)
	cmd := subvaultCmd("backup", "home", "--bus", e.bus.Address)
	cmd.Env = append(cmd.Env, "TERM=xterm", "NO_COLOR=")
	pty.Attach(cmd)
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("backup on a terminal: %v\n%s", err, pty.Drain())
	}
	out := pty.Drain()
	t.Logf("backup of 300 MiB took %s", time.Since(start).Round(time.Millisecond))
	bars := regexp.MustCompile(`\r\x1b\[K\[[#.]{20}\] +(\d+)%  [0-9.]+ [KMG]?i?B/[0-9.]+ [KMG]?i?B  \d+/\d+ files`).FindAllStringSubmatch(out, -1)
	seen := map[string]bool{}
	for _, m := range bars {
		seen[m[1]] = true
	}
	if len(seen) < 3 {
		t.Errorf("the bar was drawn with %d different percentages (%v), want it to move:\n%q", len(seen), seen, out)
	}
	if !regexp.MustCompile(`job 1: backup of home \x1b\[32mdone\x1b\[0m in (` + dur + `)\r\n  archive: [0-9a-f]{8,64}\r\n  files: 301 new`).MatchString(out) {
		t.Errorf("no summary (with done in green) after the bar:\n%q", out)
	}
	if !regexp.MustCompile(`added to the repository: [0-9.]+ [KMG]iB; processed 301 files, 300\.\d MiB`).MatchString(out) {
		t.Errorf("the summary's sizes are not human on a terminal:\n%q", out)
	}
	if strings.Contains(out, "\x1b[K\x1b") || strings.HasSuffix(strings.TrimRight(out, "\r\n"), "%") {
		t.Errorf("the bar was left on the screen:\n%q", out)
	}
}

// TestCLIHelpForEveryCommand: each command has --help on stdout with its
// usage and options.
func TestCLIHelpForEveryCommand(t *testing.T) {
	for _, c := range commands() {
		args := []string{c.name, "--help"}
		if c.name == "run" {
			args = []string{"run", "backup", "--help"}
		}
		code, out, errOut := runCLI(t, args...)
		if code != exitOK || !strings.HasPrefix(out, "Usage: subvault "+args[0]) || errOut != "" {
			t.Errorf("subvault %s --help: exit %d, stdout %q, stderr %q", c.name, code, out, errOut)
		}
		if strings.Contains(out, "-bus") != clientCommand(c.name) {
			t.Errorf("subvault %s --help: --bus listed: %v, want %v", c.name, !clientCommand(c.name), clientCommand(c.name))
		}
	}
}

func clientCommand(name string) bool {
	switch name {
	case "check-config", "run", "version", "logs", "man", "emergency-kit":
		return false
	}
	return true
}

// TestBackupWaitCtrlCAsksAndCancels: Ctrl-C on the terminal during
// `subvault backup` asks whether to cancel the job; "y" cancels it, the
// command says so and exits 130, and the job's snapshot is gone.
func TestBackupWaitCtrlCAsksAndCancels(t *testing.T) {
	e := newAPIEnv(t, 600)
	e.startDaemon(t)
	pty := testutil.NewPTY(t, 120, 40)
	cmd := subvaultCmd("backup", "home", "--bus", e.bus.Address)
	cmd.Env = append(cmd.Env, "TERM=xterm", "NO_COLOR=1")
	pty.Attach(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	waitOutput := func(what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(pty.Output.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q on the terminal:\n%q", what, pty.Output.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitOutput("] ") // the bar is drawn: the backup runs
	if err := pty.Type("\x03"); err != nil {
		t.Fatal(err)
	}
	waitOutput("Cancel job 1 too? [y/N] ")
	if err := pty.Type("y\r"); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatalf("still running a minute after the cancel:\n%q", pty.Output.String())
	}
	out := pty.Drain()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitCanceled {
		t.Errorf("exit %v, want %d", err, exitCanceled)
	}
	if !strings.Contains(out, "canceling job 1...") || !strings.Contains(out, "job 1: backup of home canceled\r\n") {
		t.Errorf("the terminal does not say the job was canceled:\n%q", out)
	}
	if got := e.signals.waitRemoved(t, 1, 5*time.Second); got != "canceled" {
		t.Errorf("job 1 ended %q, want canceled", got)
	}
	e.noSnapshotsNoLocks(t)
}

// TestLogsAsksJournalctlForThePlansEntries checks the journalctl command
// line `subvault logs` makes (journalctl itself is exercised by the
// end-to-end test under systemd): the daemon's identifier, the plan's and
// the job's fields, and the options after -- passed on.
func TestLogsAsksJournalctlForThePlansEntries(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteFile(t, filepath.Join(dir, "journalctl"), "#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
	if err := os.Chmod(filepath.Join(dir, "journalctl"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	code, out, errOut := runCLI(t, "logs", "home", "--job", "7", "-n", "20", "--", "--since", "today")
	want := "--no-pager\n-o\nshort-iso\nSYSLOG_IDENTIFIER=subvault\nSUBVAULT_PLAN=home\nSUBVAULT_JOB=7\n--lines\n20\n--since\ntoday\n"
	if code != exitOK || out != want {
		t.Errorf("logs: exit %d, stderr %q, journalctl got:\n%s\nwant:\n%s", code, errOut, out, want)
	}
	if code, _, errOut = runCLI(t, "logs", "--job", "x"); code != exitUsage || !strings.Contains(errOut, "not a job id") {
		t.Errorf("logs --job x: exit %d, %q", code, errOut)
	}
}

// TestWatchFollowsJobs: `subvault watch` prints a line when a job is queued,
// starts, passes each quarter, and ends; with --json, one object per event
// that parses.
func TestWatchFollowsJobs(t *testing.T) {
	e := newAPIEnv(t, 200)
	e.startDaemon(t)
	text, _ := testutil.StartProcess(t, "subvault watch", subvaultCmd("watch", "--bus", e.bus.Address))
	jsonOut, _ := testutil.StartProcess(t, "subvault watch --json", subvaultCmd("watch", "--json", "--bus", e.bus.Address))
	time.Sleep(500 * time.Millisecond) // both subscribed
	id := e.startJob(t, "StartBackup", "s", "home")
	if got := e.signals.waitRemoved(t, id, time.Minute); got != "done" {
		t.Fatalf("job ended %s", got)
	}
	wantLine := func(what string) {
		t.Helper()
		re := regexp.MustCompile(`(?m)^` + rfc3339 + fmt.Sprintf(` job %d backup home: `, id) + what + `$`)
		waitFor(t, 2*time.Second, func() int {
			if re.MatchString(text.String()) {
				return 1
			}
			return 0
		})
	}
	wantLine(`queued \(dbus:0\)`)
	wantLine(`started`)
	wantLine(`done`)
	if n := len(regexp.MustCompile(`: (25|50|75)%  `).FindAllString(text.String(), -1)); n == 0 || n > 3 {
		t.Errorf("%d quarter lines, want 1 to 3:\n%s", n, text.String())
	}
	if controlChars.MatchString(text.String()) {
		t.Errorf("piped watch output holds control characters:\n%q", text.String())
	}
	var events []string
	waitFor(t, 2*time.Second, func() int {
		events = nil
		for _, line := range strings.Split(strings.TrimSpace(jsonOut.String()), "\n") {
			var ev struct {
				Event string `json:"event"`
				Time  string `json:"time"`
				Job   *struct {
					ID    uint32 `json:"id"`
					State string `json:"state"`
				} `json:"job"`
			}
			if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Time == "" {
				t.Fatalf("watch --json line %q: %v", line, err)
			}
			if ev.Job != nil && ev.Job.ID == id {
				events = append(events, ev.Event)
			}
		}
		if len(events) > 0 && events[len(events)-1] == "job-finished" {
			return 1
		}
		return 0
	})
	if events[0] != "job-new" || len(events) > 8 {
		t.Errorf("watch --json events of job %d: %v; want job-new first, a few job-changed, job-finished last", id, events)
	}
}

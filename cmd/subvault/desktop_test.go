package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"html"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/internal/testutil"
)

// The bar line for each state, and the escaping waybar needs. The plans
// carry their Health and HealthReason as the daemon publishes them
// (daemon/health decides them; its tests have the rules).
func TestWaybarRender(t *testing.T) {
	now := time.Date(2026, 3, 16, 12, 0, 0, 0, time.UTC)
	home := contract.Plan{Name: "home", Schedule: "0 3 * * *", LastBackup: now.Add(-3 * time.Hour), LastSuccess: now.Add(-3 * time.Hour), LastResult: "done", NextRun: now.Add(15 * time.Hour),
		Health: contract.HealthOK, HealthReason: "last backup succeeded"}
	srv := contract.Plan{Name: "srv", LastBackup: now.Add(-5 * time.Hour), LastSuccess: now.Add(-5 * time.Hour), LastResult: "done",
		Health: contract.HealthOK, HealthReason: "last backup succeeded"}
	failed := home
	failed.LastResult, failed.LastError = "failed", "restic: <wrong> password & more"
	failed.Health, failed.HealthReason = contract.HealthFailed, "last backup failed: restic: <wrong> password & more"
	overdue := home
	overdue.LastBackup, overdue.LastSuccess = now.Add(-72*time.Hour), now.Add(-72*time.Hour)
	overdue.Health, overdue.HealthReason = contract.HealthOverdue, "overdue: no successful backup for over 2d (scheduled every 24h)"
	canceled := home // the success 3h ago stays the newest
	canceled.LastBackup, canceled.LastResult = now.Add(-10*time.Minute), "canceled"
	canceled.HealthReason = "last backup canceled; the one before succeeded"
	running := contract.Job{ID: 7, Kind: "backup", Plan: "home", State: contract.StateRunning, Progress: 0.426}
	queued := contract.Job{ID: 8, Kind: "check", Plan: "srv", State: contract.StateQueued}
	stuck := running
	stuck.WaitingSince, stuck.Waiting = now.Add(-time.Minute), "no progress for 1m0s: restic retries the repository"
	stalled := running
	stalled.WaitingSince, stalled.Waiting = now.Add(-time.Minute), "restic reads and computes nothing"
	stalled.Stalled, stalled.StalledSince, stalled.StallTimeout = true, now.Add(-time.Minute), 30
	waiting := home
	waiting.HealthReason += "; waiting for the network"
	waiting.Waiting = "waiting for the network: repository sftp://nas//srv is unreachable: no route to host"
	waitingOverdue := overdue
	waitingOverdue.HealthReason += "; waiting: on battery"
	waitingOverdue.Waiting = "on battery (on_battery: skip): the scheduled backup runs when the machine is on AC power"
	for _, c := range []struct {
		name    string
		plans   []contract.Plan
		jobs    []contract.Job
		want    barLine
		tooltip []string
	}{
		{"ok", []contract.Plan{home, srv}, nil, barLine{Text: "✓ 3h", Class: classOK},
			[]string{"home: last backup succeeded · 3h00m ago · next in 15h00m", "srv: last backup succeeded · 5h00m ago · manual"}},
		{"canceled since", []contract.Plan{canceled, srv}, nil, barLine{Text: "✓ 3h", Class: classOK},
			[]string{"home: last backup canceled; the one before succeeded · 10m ago · next in 15h00m"}},
		{"running", []contract.Plan{home, srv}, []contract.Job{running, queued}, barLine{Text: "⟳ home 42%", Class: classRunning, Percentage: 42},
			[]string{"home: backing up 42% (job 7) · last backup succeeded · 3h00m ago", "srv: check queued (job 8) · last backup"}},
		{"stuck", []contract.Plan{home, srv}, []contract.Job{stuck}, barLine{Text: "⟳ home 42%", Class: classRunning, Percentage: 42},
			[]string{"home: backing up 42%, stuck (job 7) · last backup succeeded"}},
		{"stalled", []contract.Plan{home, srv}, []contract.Job{queued, stalled}, barLine{Text: "⚠ home stalled", Class: classStalled, Percentage: 42},
			[]string{"home: backing up 42%, stalled (no progress for over 30s) (job 7) · last backup succeeded", "srv: check queued (job 8)"}},
		{"stalled before failed", []contract.Plan{failed, srv}, []contract.Job{stalled}, barLine{Text: "⚠ home stalled", Class: classStalled, Percentage: 42}, nil},
		{"queued only", []contract.Plan{home, srv}, []contract.Job{queued}, barLine{Text: "⟳ srv check queued", Class: classRunning}, nil},
		{"failed", []contract.Plan{failed, srv}, nil, barLine{Text: "✗ home", Class: classFailed}, []string{"home: last backup failed: restic: <wrong> password & more · 3h00m ago"}},
		{"overdue", []contract.Plan{overdue, srv}, nil, barLine{Text: "! home", Class: classOverdue}, []string{"home: overdue: no successful backup for over 2d (scheduled every 24h) · 3d0h ago"}},
		{"failed before overdue", []contract.Plan{overdue, {Name: "x", LastBackup: now, LastResult: "failed", Health: contract.HealthFailed}, {Name: "y", LastResult: "failed", Health: contract.HealthFailed}}, nil,
			barLine{Text: "✗ x +1", Class: classFailed}, nil},
		{"waiting", []contract.Plan{waiting, srv}, nil, barLine{Text: "⏸ home", Class: classWaiting},
			[]string{"home: last backup succeeded; waiting for the network · 3h00m ago"}},
		{"overdue before waiting", []contract.Plan{waitingOverdue, srv}, nil, barLine{Text: "! home", Class: classOverdue},
			[]string{"home: overdue: no successful backup for over 2d (scheduled every 24h); waiting: on battery"}},
		{"never", []contract.Plan{{Name: "home", Schedule: "0 3 * * *", Health: contract.HealthNever, HealthReason: "no backup yet"}}, nil, barLine{Text: "✓ –", Class: classOK}, []string{"home: no backup yet"}},
		{"no plans", nil, nil, barLine{Text: "✓ –", Class: classOK}, []string{"no plans are configured"}},
	} {
		got := renderBar(c.plans, c.jobs, now)
		if got.Text != c.want.Text || got.Class != c.want.Class || got.Percentage != c.want.Percentage {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
		for _, want := range c.tooltip {
			if !strings.Contains(got.Tooltip, want) {
				t.Errorf("%s: tooltip lacks %q:\n%s", c.name, want, got.Tooltip)
			}
		}
	}
	// A status line for each waiting plan: why, and when it is retried.
	var status strings.Builder
	retry := waiting
	retry.RetryAt = now.Add(4 * time.Minute)
	printStatus(&status, output{now: func() time.Time { return now }, tty: true}, statusJSON{Plans: []planStatus{
		{Plan: retry}, {Plan: waitingOverdue, Why: waitingOverdue.HealthReason}, {Plan: srv}}})
	for _, want := range []string{
		"waiting: home: waiting for the network: repository sftp://nas//srv is unreachable: no route to host; retried at the latest in 4m, or when the network comes back\n",
		"waiting: home: on battery (on_battery: skip): the scheduled backup runs when the machine is on AC power; retried when that clears\n",
		"needs attention:\n  home: overdue: no successful backup for over 2d (scheduled every 24h); waiting: on battery\n",
	} {
		if !strings.Contains(status.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, status.String())
		}
	}
	if strings.Contains(status.String(), "waiting: srv") {
		t.Errorf("status says srv waits:\n%s", status.String())
	}

	b, err := waybarJSON(renderBar([]contract.Plan{failed}, nil, now))
	if err != nil || !strings.Contains(string(b), "&lt;wrong&gt; password &amp; more") || strings.Count(string(b), "\n") != 1 {
		t.Errorf("waybar line %s (%v): the tooltip is Pango markup, and the line one line", b, err)
	}
	b, err = i3blocksJSON(renderBar([]contract.Plan{failed}, nil, now))
	if err != nil || string(b) != `{"full_text":"✗ home","short_text":"✗ home","color":"#FF5555","urgent":true}`+"\n" {
		t.Errorf("i3blocks line %s (%v)", b, err)
	}
}

// barSeen is one line `subvault waybar --follow` printed, and when it
// arrived.
type barSeen struct {
	at   time.Time
	raw  string
	line barLine
}

type barLog struct {
	mu    sync.Mutex
	lines []barSeen
}

func (l *barLog) all() []barSeen {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]barSeen(nil), l.lines...)
}

// waitLine waits for a line from index from on that matches pred, and
// returns its index.
func (l *barLog) waitLine(t *testing.T, from int, limit time.Duration, what string, pred func(barLine) bool) int {
	t.Helper()
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		lines := l.all()
		for i := from; i < len(lines); i++ {
			if pred(lines[i].line) {
				return i
			}
		}
	}
	t.Fatalf("no bar line %s within %v; lines:\n%s", what, limit, l.dump())
	return 0
}

func (l *barLog) dump() string {
	var b strings.Builder
	for _, s := range l.all() {
		fmt.Fprintf(&b, "  %s %s", s.at.Format("15:04:05.000"), s.raw)
	}
	return b.String()
}

// startBar runs `subvault waybar --follow` as its own process and logs
// its lines; it is killed, by PID, when the test ends.
func startBar(t *testing.T, args ...string) *barLog {
	t.Helper()
	cmd := subvaultCmd(append([]string{"waybar", "--follow"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := &barLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := bufio.NewReader(stdout)
		for {
			raw, err := r.ReadString('\n')
			if err != nil {
				return
			}
			s := barSeen{at: time.Now(), raw: raw}
			if err := json.Unmarshal([]byte(raw), &s.line); err != nil {
				s.line.Class = "unparsable: " + err.Error()
			}
			l.mu.Lock()
			l.lines = append(l.lines, s)
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		<-done
		err := cmd.Wait()
		if t.Failed() || err != nil {
			t.Logf("subvault waybar --follow: exit %v; stderr:\n%s\nlines:\n%s", err, stderr, l.dump())
		}
		if err != nil {
			t.Errorf("subvault waybar --follow did not exit 0 on SIGTERM: %v", err)
		}
	})
	return l
}

// signalAt waits for the daemon's signal member about job id and returns
// when the test's own connection received it.
func signalAt(t *testing.T, e *apiEnv, member string, id uint32, limit time.Duration) time.Time {
	t.Helper()
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, s := range e.signals.all() {
			if s.Name == contract.ManagerInterface+"."+member && len(s.Body) > 0 && s.Body[0] == id {
				return s.at
			}
		}
	}
	t.Fatalf("no %s of job %d within %v", member, id, limit)
	return time.Time{}
}

// restartDaemon stops the daemon startDaemon started (SIGTERM, and waits
// until it has left the bus), calls between, and starts it again.
func restartDaemon(t *testing.T, e *apiEnv, between func()) {
	t.Helper()
	pid := testutil.ProcessBelow(os.Getpid(), filepath.Base(os.Args[0]), "daemon")
	if pid == 0 {
		t.Fatal("cannot find the daemon's process")
	}
	conn, err := dbus.Connect(e.bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() int {
		var owned bool
		if err := conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, contract.BusName).Store(&owned); err == nil && !owned {
			return 1
		}
		return 0
	})
	between()
	from := len(e.notify.messages())
	e.start(t)
	e.notify.waitFor(t, from, 30*time.Second, "READY=1 after the restart", func(m string) bool { return m == "READY=1" })
}

// `subvault waybar --follow` against the real daemon: a line within a
// second of a job's start and of its end, running then ok, progress that
// only rises; one-shot JSON with the four fields; the unreachable line
// while the daemon is stopped, and the bar back when it returns.
func TestWaybarFollowsTheDaemon(t *testing.T) {
	e := newAPIEnv(t, 200)
	e.startDaemon(t)
	bar := startBar(t, "--bus", e.bus.Address)
	first := bar.waitLine(t, 0, 10*time.Second, "ok at the start", func(l barLine) bool { return l.Class == classOK })
	if l := bar.all()[first].line; l.Text != "✓ –" || !strings.Contains(l.Tooltip, "home: no backup yet") {
		t.Errorf("before any backup: %+v", l)
	}

	id := e.startJob(t, "StartBackup", "s", "home")
	newAt := signalAt(t, e, "JobNew", id, 10*time.Second)
	run := bar.waitLine(t, first+1, 5*time.Second, "running", func(l barLine) bool { return l.Class == classRunning })
	startLatency := bar.all()[run].at.Sub(newAt)
	if result := e.signals.waitRemoved(t, id, 3*time.Minute); result != "done" {
		t.Fatalf("backup job %d: %s", id, result)
	}
	removedAt := signalAt(t, e, "JobRemoved", id, time.Second)
	ok := bar.waitLine(t, run+1, 5*time.Second, "ok after the backup", func(l barLine) bool { return l.Class == classOK })
	lines := bar.all()
	endLatency := lines[ok].at.Sub(removedAt)
	var percentages []int
	for _, s := range lines[run:ok] {
		if s.line.Class != classRunning || !strings.HasPrefix(s.line.Text, "⟳ home") {
			t.Errorf("between the start and the end of the backup: %s", s.raw)
		}
		percentages = append(percentages, s.line.Percentage)
	}
	t.Logf("bar: first running line %v after JobNew, ok line %v after JobRemoved; %d running lines over %v, percentages %v",
		startLatency.Round(time.Millisecond), endLatency.Round(time.Millisecond), ok-run, lines[ok].at.Sub(lines[run].at).Round(time.Millisecond), percentages)
	if startLatency > time.Second || endLatency > time.Second {
		t.Errorf("the bar lagged: %v after JobNew, %v after JobRemoved (at most 1 s)", startLatency, endLatency)
	}
	if !slices.IsSorted(percentages) || len(percentages) < 2 {
		t.Errorf("percentages while running: %v (want several, rising)", percentages)
	}
	if l := lines[ok].line; l.Text != "✓ now" || l.Percentage != 0 || !strings.Contains(l.Tooltip, "home: last backup ") || !strings.Contains(l.Tooltip, "next in ") {
		t.Errorf("after the backup: %+v", l)
	}
	for i := 1; i < len(lines); i++ {
		if lines[i].raw == lines[i-1].raw {
			t.Errorf("line %d repeats the one before: %s", i, lines[i].raw)
		}
	}
	if most := testutil.MaxInOneSecond(func() []time.Time {
		var ts []time.Time
		for _, s := range lines {
			ts = append(ts, s.at)
		}
		return ts
	}()); most > 6 {
		t.Errorf("%d lines within one second; progress comes at most 4 times a second", most)
	}

	// One shot: one JSON line with exactly the four fields.
	code, stdout, stderr := runCmd(t, subvaultCmd("waybar", "--bus", e.bus.Address))
	var fields map[string]any
	if code != exitOK || json.Unmarshal([]byte(stdout), &fields) != nil || strings.Count(stdout, "\n") != 1 {
		t.Fatalf("subvault waybar: exit %d, %q %s", code, stdout, stderr)
	}
	text, _ := fields["text"].(string)
	tooltip, _ := fields["tooltip"].(string)
	class, _ := fields["class"].(string)
	percentage, isNumber := fields["percentage"].(float64)
	if len(fields) != 4 || text != "✓ now" || !strings.HasPrefix(tooltip, "home: last backup ") || class != classOK || !isNumber || percentage != 0 {
		t.Errorf("subvault waybar: %s", stdout)
	}

	// The daemon stops: the unreachable line, and the one-shot says the
	// same; it comes back: so does the bar.
	before := len(bar.all())
	var goneAt time.Time
	restartDaemon(t, e, func() {
		goneAt = time.Now()
		gone := bar.waitLine(t, before, 5*time.Second, "unreachable", func(l barLine) bool { return l.Class == classUnreachable })
		t.Logf("unreachable line %v after the daemon left the bus: %s", bar.all()[gone].at.Sub(goneAt).Round(time.Millisecond), bar.all()[gone].raw)
		code, stdout, _ := runCmd(t, subvaultCmd("waybar", "--bus", e.bus.Address))
		if code != exitOK || !strings.Contains(stdout, `"class":"unreachable"`) || !strings.Contains(stdout, "not running") {
			t.Errorf("one-shot with the daemon stopped: exit %d %s", code, stdout)
		}
		before = len(bar.all())
	})
	back := bar.waitLine(t, before, 10*time.Second, "ok after the restart", func(l barLine) bool { return l.Class == classOK })
	t.Logf("the bar came back %v after the daemon was stopped: %s", bar.all()[back].at.Sub(goneAt).Round(time.Millisecond), bar.all()[back].raw)
}

// `subvault notify` against dunst on a private session bus: a backup that
// fails (the repository's password is wrong) makes exactly one critical
// notification with the plan and the cause; its action opens a terminal
// with "subvault job ID"; after the daemon restarts, the next failure is
// notified too.
func TestNotifyFailedBackup(t *testing.T) {
	server := testutil.NewNotificationServer(t)
	e := newAPIEnv(t, 1)
	e.startDaemon(t)

	dir := t.TempDir()
	terminalArgs := filepath.Join(dir, "terminal.args")
	terminal := filepath.Join(dir, "terminal")
	testutil.WriteFile(t, terminal, "#!/bin/sh\nprintf '%s\\n' \"$@\" >"+terminalArgs+".tmp && mv "+terminalArgs+".tmp "+terminalArgs+"\n")
	if err := os.Chmod(terminal, 0o755); err != nil {
		t.Fatal(err)
	}
	log, exited := testutil.StartProcess(t, "subvault notify", subvaultCmd("notify", "--bus", e.bus.Address,
		"--session-bus", server.Bus.Address, "--terminal", terminal+" -e"))
	following := func(n int) {
		t.Helper()
		waitFor(t, 15*time.Second, func() int {
			select {
			case <-exited:
				t.Fatalf("subvault notify exited: %s", log)
			default:
			}
			return max(0, strings.Count(log.String(), "following the daemon")-n+1)
		})
	}
	following(1)

	// A wrong password: restic refuses the repository.
	testutil.WriteSecret(t, e.password, "not the password\n")
	failBackup := func() (uint32, string, time.Duration) {
		t.Helper()
		id := e.startJob(t, "StartBackup", "s", "home")
		if result := e.signals.waitRemoved(t, id, 3*time.Minute); result != "failed" {
			t.Fatalf("backup with a wrong password: %s", result)
		}
		removedAt := signalAt(t, e, "JobRemoved", id, time.Second)
		out, err := e.busctl("--json=short", "get-property", contract.BusName, string(contract.JobPath(id)), contract.JobInterface, "Error")
		var prop struct{ Data string }
		if err != nil || json.Unmarshal([]byte(out), &prop) != nil || prop.Data == "" {
			t.Fatalf("the failed job's Error: %v %s", err, out)
		}
		waitFor(t, 5*time.Second, func() int { return server.Displayed(t) })
		return id, prop.Data, time.Since(removedAt)
	}
	id, cause, latency := failBackup()
	t.Logf("job %d failed (%s); the notification was on screen %v after JobRemoved", id, cause, latency.Round(time.Millisecond))
	if latency > 3*time.Second {
		t.Errorf("the notification came %v after the job failed", latency)
	}

	// Its action: the terminal, with subvault job ID on the test's bus.
	server.Action(t, 0)
	waitFor(t, 5*time.Second, func() int {
		if _, err := os.Stat(terminalArgs); err == nil {
			return 1
		}
		return 0
	})
	raw, _ := os.ReadFile(terminalArgs)
	argv := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	want := []string{"-e", "sh", "-c", closeScript, "subvault", os.Args[0], "job", fmt.Sprint(id), "--bus", e.bus.Address}
	if exe, err := os.Executable(); err == nil {
		want[5] = exe
	}
	if !slices.Equal(argv, want) {
		t.Errorf("the terminal ran with %q, want %q", argv, want)
	}

	// No second notification comes for it.
	time.Sleep(time.Second)
	if n := server.Displayed(t); n != 1 {
		t.Errorf("%d notifications on screen, want 1", n)
	}
	server.CloseAll(t)
	history := server.History(t)
	if len(history) != 1 {
		t.Fatalf("%d notifications, want 1: %+v", len(history), history)
	}
	n := history[0]
	if n.AppName != "subvault" || n.Summary != "Backup of home failed" || html.UnescapeString(n.Body) != cause || n.Urgency != "CRITICAL" {
		t.Errorf("the notification: %+v; want subvault's critical \"Backup of home failed\" with %q", n, cause)
	}

	// The daemon restarts; notify follows it and notifies the next failure.
	restartDaemon(t, e, func() {})
	following(2)
	id2, _, latency := failBackup()
	t.Logf("after the daemon's restart, job %d failed; notified %v after JobRemoved", id2, latency.Round(time.Millisecond))
	server.CloseAll(t)
	if history := server.History(t); len(history) != 2 || history[0].Summary != "Backup of home failed" {
		t.Errorf("after the restart: %+v", history)
	}
	if strings.Contains(log.String(), "cannot") {
		t.Errorf("subvault notify complained:\n%s", log)
	}
}

package main

import (
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/internal/testutil"
)

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

package main

import (
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/api/contract"
)

// A running job that waits on its repository says so, with how long it has
// made no progress and why, where its progress is shown (status, watch,
// jobs); one that moves, or has ended, does not.
func TestStuckJobShown(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	o := output{now: func() time.Time { return now }, width: 200}
	j := contract.Job{ID: 7, Kind: contract.KindBackup, Plan: "home", State: contract.StateRunning, Progress: 0.43,
		BytesDone: 430 << 20, BytesTotal: 1000 << 20, FilesDone: 3, FilesTotal: 9,
		WaitingSince: now.Add(-70 * time.Second), Waiting: "restic retries the repository"}
	const want = "stuck: no progress for 1m10s, restic retries the repository"
	if got := progressText(o, j, 0); !strings.Contains(got, " 43%  "+want+"  ") {
		t.Errorf("progress line %q lacks %q after the percentage", got, want)
	}
	moving := j
	moving.WaitingSince, moving.Waiting = time.Time{}, ""
	if got := progressText(o, moving, 0); strings.Contains(got, "stuck") {
		t.Errorf("a moving job's progress line says %q", got)
	}
	code := "running 43% (" + want + ")"
	if got := jobState(o, j); got != code {
		t.Errorf("subvault jobs: state %q, want %q", got, code)
	}
	ended := j
	ended.State = contract.StateFinished
	if got := stuck(o, ended); got != "" {
		t.Errorf("a finished job is %q", got)
	}
}

// A running job that counts as stalled (on_stall: report) reads "stalled:
// no progress for X (stall_timeout Y)" in jobs, status, job and watch, in
// place of "stuck", and the desktop notification says so and how to stop
// it; it is no longer once it moves or ends.
func TestStalledJobShown(t *testing.T) {
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	o := output{now: func() time.Time { return now }, width: 200}
	j := contract.Job{ID: 7, Kind: contract.KindBackup, Plan: "home", State: contract.StateRunning, Progress: 0.43,
		BytesDone: 430 << 20, BytesTotal: 1000 << 20, FilesDone: 3, FilesTotal: 9,
		WaitingSince: now.Add(-12 * time.Minute), Waiting: "restic retries the repository",
		Stalled: true, StalledSince: now.Add(-12 * time.Minute), StallTimeout: 600}
	const want = "stalled: no progress for 12m00s (stall_timeout 10m)"
	if got := jobState(o, j); got != "running 43% ("+want+")" {
		t.Errorf("subvault jobs: state %q, want it to say %q", got, want)
	}
	if got := progressText(o, j, 0); !strings.Contains(got, " 43%  "+want+"  ") || strings.Contains(got, "stuck") {
		t.Errorf("progress line (status, job) %q: want %q after the percentage, not stuck", got, want)
	}
	if got := stuckState(j); got != "stalled" {
		t.Errorf("watch: %q, want stalled", got)
	}
	var status strings.Builder
	printStatus(&status, o, statusJSON{Plans: []planStatus{}, Running: []contract.Job{j}})
	if want := "needs attention:\n  home: job 7 " + want + "; it goes on (on_stall: report)\n"; !strings.Contains(status.String(), want) {
		t.Errorf("status lacks %q:\n%s", want, status.String())
	}
	note := stallNotification(j, now)
	if note.Summary != "Backup of home stalled" || !strings.Contains(note.Body, want) || !strings.Contains(note.Body, "subvault cancel 7") {
		t.Errorf("notification %+v", note)
	}
	moving := j
	moving.Stalled, moving.StalledSince, moving.WaitingSince = false, time.Time{}, time.Time{}
	if got := jobState(o, moving); got != "running 43%" {
		t.Errorf("a job that moves again: %q", got)
	}
	ended := j
	ended.State, ended.Result = contract.StateFinished, contract.ResultDone
	if got := stuck(o, ended); got != "" {
		t.Errorf("a finished job is %q", got)
	}
	for d, want := range map[time.Duration]string{10 * time.Minute: "10m", 90 * time.Second: "1m30s", 5 * time.Second: "5s", 2 * time.Hour: "2h", 90 * time.Minute: "1h30m"} {
		if got := configDuration(d); got != want {
			t.Errorf("configDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

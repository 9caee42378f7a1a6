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

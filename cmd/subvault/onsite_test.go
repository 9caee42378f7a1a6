package main

import (
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
)

// The onsite tier in the listings: a skipped send is neither a failure
// nor a success wherever results show (send --wait, job, jobs, watch,
// status, the bar, the notifier), and each plan's targets show the age of
// its newest copy (plans, status, the bar's tooltip).
func TestSkippedSendShown(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	o := output{now: func() time.Time { return now }, tty: true, color: true, width: 200}
	skipped := contract.Job{ID: 9, Kind: contract.KindSend, Plan: "home", SendTarget: "usb", State: contract.StateFinished,
		Result: contract.ResultSkipped, Error: "target usb is absent: no block device has filesystem UUID 0f6c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
		QueuedAt: now.Add(-time.Minute), StartedAt: now.Add(-time.Minute), FinishedAt: now.Add(-50 * time.Second)}

	// send --wait: one line on stdout saying skipped and why, exit 0.
	var out, errOut strings.Builder
	plain := o
	plain.color = false
	sc := &startCmd{clientCmd: &clientCmd{name: "send", stdout: &out, stderr: &errOut, out: plain}}
	if code := sc.finished(skipped); code != exitOK {
		t.Errorf("send --wait of a skipped send: exit %d, want 0", code)
	}
	if want := "job 9: send of home to usb skipped: target usb is absent: no block device has filesystem UUID"; !strings.HasPrefix(out.String(), want) || errOut.String() != "" {
		t.Errorf("send --wait printed %q on stdout and %q on stderr; want %q... on stdout", out.String(), errOut.String(), want)
	}
	failed := skipped
	failed.Result, failed.Error = contract.ResultFailed, "btrfs receive: No space left on device"
	out.Reset()
	errOut.Reset()
	if code := sc.finished(failed); code != exitFailure || !strings.Contains(errOut.String(), "job 9: send of home to usb failed: btrfs receive: No space left on device") {
		t.Errorf("a failed send: exit %d, stderr %q", code, errOut.String())
	}

	// job: the why, not in red as an error.
	var job strings.Builder
	printJob(&job, o, skipped)
	for _, want := range []string{"job:                     9, send of home to usb\n", "state:                   \033[2mskipped\033[0m\n", "why skipped:             target usb is absent"} {
		if !strings.Contains(job.String(), want) {
			t.Errorf("subvault job lacks %q:\n%s", want, job.String())
		}
	}
	if strings.Contains(job.String(), "error:") {
		t.Errorf("subvault job shows a skipped send as an error:\n%s", job.String())
	}
	// jobs: the target beside the kind, the result as it is.
	if got := kindCell(skipped); got != "send usb" {
		t.Errorf("jobs KIND %q, want \"send usb\"", got)
	}
	if got := jobState(output{}, skipped); got != "skipped" {
		t.Errorf("jobs STATE %q", got)
	}
	// The notifier shows nothing for it, with --on-success too.
	for _, onSuccess := range []bool{false, true} {
		if note, ok := jobNotification(skipped, onSuccess); ok {
			t.Errorf("notify (on success %v) shows a skipped send: %+v", onSuccess, note)
		}
	}
	if note, ok := jobNotification(failed, false); !ok || note.Summary != "Send of home to usb failed" {
		t.Errorf("a failed send's notification: %+v %v", note, ok)
	}

	// The bar: a plan whose send was skipped is ok, and its tooltip has
	// the onsite copies' ages; a running send says to where.
	home := contract.Plan{Name: "home", LastBackup: now.Add(-time.Hour), LastSuccess: now.Add(-time.Hour), LastResult: "done",
		Health: contract.HealthOK, HealthReason: "last backup succeeded",
		Targets: []contract.PlanTarget{{Name: "usb", Newest: now.Add(-3 * 24 * time.Hour)}, {Name: "nas", Newest: now.Add(-time.Hour), Present: true}}}
	bar := renderBar([]contract.Plan{home}, []contract.Job{skipped}, now)
	if bar.Class != classOK || !strings.Contains(bar.Tooltip, "onsite usb 3d0h ago (absent), nas 1h00m ago") {
		t.Errorf("bar with a skipped send: %+v; want ok, and the tooltip with the onsite ages", bar)
	}
	running := skipped
	running.State, running.Result, running.Progress = contract.StateRunning, "", 0.5
	if bar := renderBar([]contract.Plan{home}, []contract.Job{running}, now); bar.Text != "⟳ home send 50%" || !strings.Contains(bar.Tooltip, "sending to usb 50% (job 9)") {
		t.Errorf("bar with a running send: %+v", bar)
	}

	// plans: the ONSITE column, only when a plan sends somewhere.
	other := contract.Plan{Name: "srv", Subvolumes: []string{"/srv"}, Repository: "r"}
	home.Subvolumes, home.Repository = []string{"/home"}, "r"
	var plans strings.Builder
	printPlans(&plans, o, []contract.Plan{home, other})
	lines := strings.Split(plans.String(), "\n")
	if !strings.HasSuffix(strings.TrimSpace(lines[0]), "ONSITE") || !strings.HasSuffix(lines[1], "usb 3d0h ago (absent), nas 1h00m ago") ||
		!strings.HasSuffix(lines[2], " -") {
		t.Errorf("plans:\n%s", plans.String())
	}
	plans.Reset()
	printPlans(&plans, o, []contract.Plan{other})
	if strings.Contains(plans.String(), "ONSITE") {
		t.Errorf("plans without targets has an ONSITE column:\n%s", plans.String())
	}
	// A pipe gets exact times.
	if got := onsiteAges(output{now: o.now}, []contract.PlanTarget{{Name: "usb", Newest: now, Present: true}, {Name: "disk"}}); got != "usb 2026-12-03T12:00:00Z, disk never (absent)" {
		t.Errorf("onsite ages for a pipe: %q", got)
	}

	// status: an onsite line per plan that sends; an absent target needs
	// no attention.
	var status strings.Builder
	printStatus(&status, o, statusJSON{Plans: []planStatus{{Plan: home}, {Plan: other}}, Running: []contract.Job{running}})
	for _, want := range []string{"onsite:  home: usb 3d0h ago (absent), nas 1h00m ago\n", "running: job 9, send of home to usb, started"} {
		if !strings.Contains(status.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, status.String())
		}
	}
	if strings.Contains(status.String(), "onsite:  srv") || strings.Contains(status.String(), "needs attention") {
		t.Errorf("status:\n%s", status.String())
	}
}

// subvault targets: a row per target and plan with the newest copy's time
// and age, exact values for a pipe, and why a target is absent below.
func TestTargetsListing(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	newest := now.Add(-26 * time.Hour)
	targets := []contract.Target{
		{Name: "disk", UUID: "0f6c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b", Error: "no block device has filesystem UUID 0f6c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b (is the disk plugged in?)",
			Plans: []contract.TargetPlan{{Plan: "home", Newest: newest, Copies: 4, Pinned: 1}, {Plan: "root"}}},
		{Name: "usb", Path: "/mnt/usb/subvault", Present: true, Where: "/mnt/usb/subvault"},
	}
	var pipe strings.Builder
	printTargets(&pipe, output{now: func() time.Time { return now }}, targets)
	want := "NAME  WHERE                                      PRESENT  PLAN  NEWEST COPY           AGE    COPIES  PINNED\n" +
		"disk  uuid 0f6c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b  no       home  2026-12-02T10:00:00Z  93600  4       1\n" +
		"                                                          root  -                     -      0       0\n" +
		"usb   /mnt/usb/subvault                          yes      -     -                     -      -       -\n" +
		"disk: no block device has filesystem UUID 0f6c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b (is the disk plugged in?)\n"
	if pipe.String() != want {
		t.Errorf("targets for a pipe:\n%s\nwant\n%s", pipe.String(), want)
	}
	var tty strings.Builder
	printTargets(&tty, output{now: func() time.Time { return now }, tty: true}, targets)
	if !strings.Contains(tty.String(), " 1d2h ") {
		t.Errorf("targets on a terminal, no age 1d2h:\n%s", tty.String())
	}
	var none strings.Builder
	printTargets(&none, output{}, nil)
	if !strings.Contains(none.String(), "no targets are configured") {
		t.Errorf("no targets: %q", none.String())
	}
}

// Wrong command lines of send and targets are refused before the daemon
// is asked (exit 2).
func TestSendAndTargetsUsage(t *testing.T) {
	for _, args := range [][]string{{"send"}, {"send", "home", "usb", "disk"}, {"targets", "usb"}, {"send", "home", "--nope"}} {
		if code, _, errOut := runCLI(t, args...); code != exitUsage || errOut == "" {
			t.Errorf("subvault %q: exit %d, stderr %q; want %d and a message", args, code, errOut, exitUsage)
		}
	}
}

// A send's summary reads as what was sent, from which parent or why in
// full, as the daemon makes it and as it comes over the bus.
func TestSendSummaryShown(t *testing.T) {
	o := output{}
	local := map[string]any{"target": "usb", "bytes_sent": uint64(4096), "full": true, "up_to_date": false, "where": "/mnt/usb/subvault",
		"sent": []map[string]any{
			{"subvolume": "/", "snapshot": "subvault@system@20261203T023000Z@41@-", "bytes": uint64(1024), "parent": "subvault@system@20261202T023000Z@40@-"},
			{"subvolume": "/home", "snapshot": "subvault@system@20261203T023000Z@41@home", "bytes": uint64(3072), "full_reason": "no copy on the target yet"},
		}}
	bus := map[string]any{}
	for k, v := range local {
		bus[k] = v
	}
	var sent []map[string]dbus.Variant
	for _, one := range local["sent"].([]map[string]any) {
		m := map[string]dbus.Variant{}
		for k, v := range one {
			m[k] = dbus.MakeVariant(v)
		}
		sent = append(sent, m)
	}
	bus["sent"] = sent
	want := "  copies in: /mnt/usb/subvault\n" +
		"  /: subvault@system@20261203T023000Z@41@-, incremental from subvault@system@20261202T023000Z@40@-, 1024\n" +
		"  /home: subvault@system@20261203T023000Z@41@home, full (no copy on the target yet), 3072\n" +
		"  sent: 4096\n"
	for what, s := range map[string]map[string]any{"from the daemon": local, "over the bus": bus} {
		var b strings.Builder
		printJobSummary(&b, o, contract.Job{Kind: contract.KindSend, Summary: s})
		if b.String() != want {
			t.Errorf("%s:\n%s\nwant\n%s", what, b.String(), want)
		}
	}
}

package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/api/contract"
)

const statusAbout = `Shows the daemon and every plan at a glance: the daemon's version and
state, each plan's last backup (its age and result), its next run and its
health, the running job with its progress (and "stuck: no progress for
1m10s" when it waits on its repository: see max_concurrent_jobs in
subvault.yaml(5); "stalled: no progress for 12m00s (stall_timeout 10m)"
when it counts as stalled and goes on: see on_stall), and what is wrong,
if anything.

A plan is unhealthy when its last backup failed, or when its last
successful backup is older than twice its schedule's interval (overdue; a
canceled backup does not restart that clock). A plan with no successful
backup yet is not counted as unhealthy unless its last backup failed; a
manual plan is never overdue.

A plan whose scheduled jobs wait is listed under "waiting", with why (the
network, the battery, a metered connection: see subvault.yaml(5),
on_battery and metered) and when the daemon tries again; waiting is not
unhealthy by itself, but the plan becomes overdue if it lasts.

A plan that sends its snapshots to targets (send_to) has an "onsite" line:
each target with the age of the plan's newest copy there, and "(absent)"
when the target is not there now. An absent target is not unhealthy: its
sends end skipped until the disk is back.

A running job that counts as stalled (no progress for its plan's
stall_timeout, on_stall: report) needs attention too, while it lasts.

With a reset section (subvault.yaml(5), reset), a "reset" line says what
the reset did at this boot: when, done, skipped or failed, and why; of
several subvolumes, the worst. A failed reset needs attention: the machine
booted as it was, with what the last boot wrote.

Exit status: 0 all plans healthy, 1 a plan's last backup failed or is
overdue, a running job counts as stalled, or the last reset failed, 4 not
authorized, 5 the daemon is not running.`

// statusJSON is what status --json prints.
type statusJSON struct {
	Daemon  contract.Manager `json:"daemon"`
	Plans   []planStatus     `json:"plans"`
	Running []contract.Job   `json:"running"`
	Queued  []contract.Job   `json:"queued"`
	Healthy bool             `json:"healthy"`
}

// planStatus is a plan with its Health and HealthReason as the daemon
// decides them; why repeats the reason under the name it had before the
// daemon decided.
type planStatus struct {
	contract.Plan
	Why string `json:"why"`
}

func newStatusCommand() *cobra.Command {
	return newClientCommand(&cobra.Command{
		Use:     "status [--json] [--bus BUS]",
		Short:   "show the daemon and every plan at a glance; exit 1 when a plan needs attention",
		Long:    statusAbout,
		GroupID: groupStatus,
		Args:    expects(0, 0, "no arguments"),
	}, withJSON, runStatus)
}

func runStatus(cc *clientCmd, _ []string) int {
	ctx := context.Background()
	if code, ok := cc.dial(ctx); !ok {
		return code
	}
	defer cc.close()
	d, err := cc.c.Daemon(ctx)
	if err != nil {
		return cc.fail(err)
	}
	plans, jobs, err := cc.c.Objects(ctx)
	if err != nil {
		return cc.fail(err)
	}
	st := statusJSON{Daemon: d, Plans: []planStatus{}, Running: []contract.Job{}, Queued: []contract.Job{}, Healthy: true}
	for _, p := range plans {
		st.Plans = append(st.Plans, planStatus{Plan: p, Why: p.HealthReason})
		if p.Health.NeedsAttention() {
			st.Healthy = false
		}
	}
	for _, j := range jobs {
		switch j.State {
		case contract.StateRunning:
			st.Running = append(st.Running, j)
			if j.Stalled {
				st.Healthy = false
			}
		case contract.StateQueued:
			st.Queued = append(st.Queued, j)
		}
	}
	if r := d.LastReset; r != nil && r.Result == contract.ResetFailed {
		st.Healthy = false
	}
	code := exitOK
	if !st.Healthy {
		code = exitFailure
	}
	if *cc.json {
		if c := cc.printJSON(st); c != exitOK {
			return c
		}
		return code
	}
	printStatus(cc.stdout, cc.out, st)
	return code
}

func printStatus(w io.Writer, o output, st statusJSON) {
	fmt.Fprintf(w, "subvault daemon %s: %s, %s\n", printable(st.Daemon.Version), printable(st.Daemon.State), plural(len(st.Plans), "plan", "plans"))
	if len(st.Plans) > 0 {
		fmt.Fprintln(w)
		rows := make([][]string, 0, len(st.Plans))
		for _, p := range st.Plans {
			rows = append(rows, []string{printable(p.Name), o.when(p.LastBackup), dash(printable(p.LastResult)), o.when(p.NextRun), o.health(p.Health)})
		}
		table(w, []string{"PLAN", "LAST BACKUP", "RESULT", "NEXT RUN", "HEALTH"}, rows)
	}
	for _, p := range st.Plans {
		if len(p.Targets) > 0 {
			fmt.Fprintf(w, "onsite:  %s: %s\n", printable(p.Name), onsiteAges(o, p.Targets))
		}
	}
	if r := st.Daemon.LastReset; r != nil {
		fmt.Fprintf(w, "reset:   %s\n", resetLine(o, r))
	}
	for _, j := range st.Running {
		fmt.Fprintf(w, "\nrunning: job %d, %s, started %s\n  %s\n", j.ID, jobWhat(j), o.when(j.StartedAt), progressText(o, j, 0))
	}
	for _, j := range st.Queued {
		fmt.Fprintf(w, "queued:  job %d, %s\n", j.ID, jobWhat(j))
	}
	for _, p := range st.Plans {
		if p.Waiting == "" {
			continue
		}
		retry := "when that clears"
		if !p.RetryAt.IsZero() {
			retry = "at the latest " + o.when(p.RetryAt)
			if strings.HasPrefix(p.Waiting, "waiting for the network") {
				retry += ", or when the network comes back"
			}
		}
		fmt.Fprintf(w, "waiting: %s: %s; retried %s\n", printable(p.Name), printable(p.Waiting), retry)
	}
	var problems []string
	for _, p := range st.Plans {
		if p.Health.NeedsAttention() {
			problems = append(problems, fmt.Sprintf("  %s: %s", printable(p.Name), printable(p.Why)))
		}
	}
	for _, j := range st.Running {
		if j.Stalled {
			problems = append(problems, fmt.Sprintf("  %s: job %d %s; it goes on (on_stall: report)", printable(j.Plan), j.ID, stuck(o, j)))
		}
	}
	if r := st.Daemon.LastReset; r != nil && r.Result == contract.ResetFailed {
		problems = append(problems, fmt.Sprintf("  reset: %s was not reset at this boot: %s (docs/reset.md: see what the last boot did)", printable(r.Path), printable(r.Reason)))
	}
	if len(problems) > 0 {
		fmt.Fprintf(w, "\n%s\n", o.paint(colorRed, "needs attention:"))
		for _, p := range problems {
			fmt.Fprintln(w, p)
		}
	}
}

// health paints a plan's health (the last column of the table, so the
// colour codes do not upset its alignment).
func (o output) health(h contract.Health) string {
	switch h {
	case contract.HealthOK:
		return o.paint(colorGreen, string(h))
	case contract.HealthFailed:
		return o.paint(colorRed, string(h))
	case contract.HealthOverdue:
		return o.paint(colorYellow, string(h))
	}
	return dash(printable(h))
}

// resetLine says what the last boot's reset did: "/ done 3m ago (previous
// state subvault@reset@...)", or skipped/failed with why.
func resetLine(o output, r *contract.LastReset) string {
	result := printable(r.Result)
	switch r.Result {
	case contract.ResetDone:
		result = o.paint(colorGreen, result)
	case contract.ResetSkipped:
		result = o.paint(colorYellow, result)
	case contract.ResetFailed:
		result = o.paint(colorRed, result)
	}
	line := fmt.Sprintf("%s %s %s", printable(r.Path), result, o.when(r.Time))
	if r.Reason != "" {
		line += ": " + printable(r.Reason)
	}
	if r.State != "" {
		line += " (previous state " + printable(r.State) + ")"
	}
	return line
}

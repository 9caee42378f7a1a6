package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/subvault/subvault/api/contract"
)

const jobsAbout = `Lists the daemon's jobs: the queued and running ones first, then the
history, newest first. The history's length is the daemon's job_history
setting.`

func runJobs(args []string, stdout, stderr io.Writer) int {
	cc := newClientCmd("jobs", "[--plan PLAN] [--limit N] [--json] [--bus BUS]", jobsAbout, true, stdout, stderr)
	plan := cc.fs.String("plan", "", "only the jobs of this `plan`")
	limit := cc.fs.Int("limit", 0, "print at most `N` jobs (0: all)")
	if _, code, ok := cc.connect(args, 0, 0, "no arguments"); !ok {
		return code
	}
	ctx := context.Background()
	defer cc.close()
	all, err := cc.c.Jobs(ctx)
	if err != nil {
		return cc.fail(err)
	}
	var jobs []contract.Job
	for _, j := range all {
		if *plan == "" || j.Plan == *plan {
			jobs = append(jobs, j)
		}
	}
	if *limit > 0 && len(jobs) > *limit {
		jobs = jobs[:*limit]
	}
	if *cc.json {
		return cc.printJSON(nonNil(jobs))
	}
	rows := make([][]string, 0, len(jobs))
	for _, j := range jobs {
		state := printable(j.State)
		switch j.State {
		case contract.StateFinished:
			state = cc.out.result(j.Result)
		case contract.StateRunning:
			state = fmt.Sprintf("running %d%%", int(j.Progress*100))
		}
		started := j.StartedAt
		if started.IsZero() {
			started = j.QueuedAt
		}
		rows = append(rows, []string{strconv.FormatUint(uint64(j.ID), 10), printable(j.Kind), printable(j.Plan), cc.out.when(started),
			took(j, cc.out.now()), printable(j.Trigger), state})
	}
	table(stdout, []string{"ID", "KIND", "PLAN", "STARTED", "TOOK", "TRIGGER", "STATE"}, rows)
	return exitOK
}

// took is how long a job ran (so far), "-" before it started.
func took(j contract.Job, now time.Time) string {
	if j.StartedAt.IsZero() {
		return "-"
	}
	end := j.FinishedAt
	if end.IsZero() {
		end = now
	}
	return humanDuration(end.Sub(j.StartedAt))
}

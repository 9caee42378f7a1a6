package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/api/contract"
)

const jobsAbout = `Lists the daemon's jobs: the queued and running ones first, then the
history, newest first. The history's length is the daemon's job_history
setting.`

type jobsOptions struct {
	plan  string
	limit int
}

func newJobsCommand() *cobra.Command {
	var opts jobsOptions
	cmd := newClientCommand(&cobra.Command{
		Use:     "jobs [--plan PLAN] [--limit N] [--json] [--bus BUS]",
		Short:   "list the queued, running and past jobs",
		Long:    jobsAbout,
		GroupID: groupStatus,
		Args:    expects(0, 0, "no arguments"),
	}, withJSON, func(cc *clientCmd, _ []string) int { return runJobs(cc, opts) })
	cmd.Flags().StringVar(&opts.plan, "plan", "", "only the jobs of this `plan`")
	cmd.Flags().IntVar(&opts.limit, "limit", 0, "print at most `N` jobs (0: all)")
	completeFlag(cmd, "plan", daemonList(planNames))
	return cmd
}

func runJobs(cc *clientCmd, opts jobsOptions) int {
	ctx := context.Background()
	if code, ok := cc.dial(ctx); !ok {
		return code
	}
	defer cc.close()
	all, err := cc.c.Jobs(ctx)
	if err != nil {
		return cc.fail(err)
	}
	var jobs []contract.Job
	for _, j := range all {
		if opts.plan == "" || j.Plan == opts.plan {
			jobs = append(jobs, j)
		}
	}
	if opts.limit > 0 && len(jobs) > opts.limit {
		jobs = jobs[:opts.limit]
	}
	if *cc.json {
		return cc.printJSON(nonNil(jobs))
	}
	rows := make([][]string, 0, len(jobs))
	for _, j := range jobs {
		state := jobState(cc.out, j)
		started := j.StartedAt
		if started.IsZero() {
			started = j.QueuedAt
		}
		rows = append(rows, []string{strconv.FormatUint(uint64(j.ID), 10), kindCell(j), printable(j.Plan), cc.out.when(started),
			took(j, cc.out.now()), printable(j.Trigger), state})
	}
	table(cc.stdout, []string{"ID", "KIND", "PLAN", "STARTED", "TOOK", "TRIGGER", "STATE"}, rows)
	return exitOK
}

// jobState is a job's STATE column: "queued", "running 43%" (and why it is
// stuck, when it waits on its repository), or its result.
func jobState(o output, j contract.Job) string {
	switch j.State {
	case contract.StateFinished:
		return o.result(j.Result)
	case contract.StateRunning:
		state := fmt.Sprintf("running %d%%", int(j.Progress*100))
		if w := stuck(o, j); w != "" {
			state += " (" + w + ")"
		}
		return state
	}
	return printable(j.State)
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

package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/subvault/subvault/api/contract"
)

const plansAbout = `Lists the plans of the running daemon: subvolumes, repository, schedule,
when the last backup finished and how, and the next scheduled run.`

func runPlans(args []string, stdout, stderr io.Writer) int {
	cc := newClientCmd("plans", "[--json] [--bus BUS]", plansAbout, true, stdout, stderr)
	if _, code, ok := cc.connect(args, 0, 0, "no arguments"); !ok {
		return code
	}
	ctx := context.Background()
	defer cc.close()
	plans, err := cc.c.Plans(ctx)
	if err != nil {
		return cc.fail(err)
	}
	if *cc.json {
		return cc.printJSON(nonNil(plans))
	}
	rows := make([][]string, 0, len(plans))
	for _, p := range plans {
		rows = append(rows, []string{printable(p.Name), strings.Join(printableAll(p.Subvolumes), ","), printable(p.Repository),
			dash(printable(p.Schedule)), cc.out.when(p.LastBackup), dash(printable(p.LastResult)), cc.out.when(p.NextRun)})
	}
	table(stdout, []string{"PLAN", "SUBVOLUMES", "REPOSITORY", "SCHEDULE", "LAST BACKUP", "RESULT", "NEXT RUN"}, rows)
	return exitOK
}

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

const jobAbout = `Shows one job: what it is, who started it, when it ran, how it ended (with
the cause when it failed), the archive it made and restic's summary; a
running job's progress, and the files it works on when the daemon names
files to you (root, or polkit's restore authorization without a password).`

func runJob(args []string, stdout, stderr io.Writer) int {
	cc := newClientCmd("job", "ID [--json] [--bus BUS]", jobAbout, true, stdout, stderr)
	pos, code, ok := cc.parse(args, 1, 1, "a job ID")
	if !ok {
		return code
	}
	id, err := parseJobID(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "subvault job: %v\n", err)
		return exitUsage
	}
	ctx := context.Background()
	if code, ok := cc.dial(ctx); !ok {
		return code
	}
	defer cc.close()
	j, err := cc.c.Job(ctx, id)
	if err != nil {
		return cc.fail(err)
	}
	newJobFiles(cc.c).fill(ctx, &j)
	if *cc.json {
		return cc.printJSON(j)
	}
	printJob(stdout, cc.out, j)
	if j.State == contract.StateFinished && j.Result != contract.ResultDone {
		return exitFailure
	}
	return exitOK
}

func parseJobID(s string) (uint32, error) {
	id, err := strconv.ParseUint(s, 10, 32)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("%q is not a job id (a number that subvault jobs lists)", s)
	}
	return uint32(id), nil
}

// printJob prints a job as "key: value" lines.
func printJob(w io.Writer, o output, j contract.Job) {
	var rows [][2]string
	add := func(k, v string) {
		if v != "" {
			rows = append(rows, [2]string{k, v})
		}
	}
	state := printable(j.State)
	if j.State == contract.StateFinished {
		state = o.result(j.Result)
	}
	add("job", fmt.Sprintf("%d, %s of %s", j.ID, printable(j.Kind), printable(j.Plan)))
	add("state", state)
	add("trigger", printable(j.Trigger))
	if len(j.Triggers) > 1 {
		add("asked for by", strings.Join(printableAll(j.Triggers), ", "))
	}
	add("queued", o.when(j.QueuedAt))
	if !j.StartedAt.IsZero() {
		add("started", o.when(j.StartedAt))
	}
	if !j.FinishedAt.IsZero() {
		add("finished", o.when(j.FinishedAt))
		add("took", took(j, o.now()))
	}
	if j.State == contract.StateRunning {
		add("progress", progressText(o, j, 0))
		if len(j.CurrentFiles) > 0 {
			add("working on", strings.Join(printableAll(j.CurrentFiles), ", "))
		}
	}
	add("archive", printable(j.ArchiveID))
	add("error", o.paint(colorRed, j.Error))
	for _, k := range slices.Sorted(maps.Keys(j.Summary)) {
		add(printable(k), summaryValue(o, k, j.Summary[k]))
	}
	for _, r := range rows {
		fmt.Fprintf(w, "%-24s %s\n", r[0]+":", r[1])
	}
}

// summaryValue prints one of restic's summary fields, escaped; sizes and
// durations read as such on a terminal.
func summaryValue(o output, k string, v any) string {
	switch v := v.(type) {
	case uint64:
		if o.tty && (strings.HasPrefix(k, "data_") || strings.HasSuffix(k, "_bytes_processed") || strings.HasSuffix(k, "_size")) {
			return humanBytes(v)
		}
		return strconv.FormatUint(v, 10)
	case float64:
		if k == "total_duration" && o.tty {
			return humanDuration(time.Duration(v * float64(time.Second)))
		}
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return printable(fmt.Sprint(v))
}

const snapshotsAbout = `Lists a plan's local read-only snapshots, oldest first: name, when it was
taken, whether keep_snapshots keeps it (or a running job uses it), and its
path. "subvault clone" makes a writable copy of one.`

func runSnapshots(args []string, stdout, stderr io.Writer) int {
	cc := newClientCmd("snapshots", "PLAN [--json] [--bus BUS]", snapshotsAbout, true, stdout, stderr)
	pos, code, ok := cc.connect(args, 1, 1, "a PLAN")
	if !ok {
		return code
	}
	ctx := context.Background()
	defer cc.close()
	snaps, err := cc.c.Snapshots(ctx, pos[0])
	if err != nil {
		return cc.fail(err)
	}
	if *cc.json {
		return cc.printJSON(nonNil(snaps))
	}
	rows := make([][]string, 0, len(snaps))
	for _, s := range snaps {
		kept := "no"
		if s.Kept {
			kept = "yes"
		}
		rows = append(rows, []string{printable(s.Name), cc.out.when(s.Created), kept, printable(s.Path)})
	}
	table(stdout, []string{"NAME", "TAKEN", "KEPT", "PATH"}, rows)
	return exitOK
}

const archivesAbout = `Lists a plan's archives (restic snapshots) in its repository, newest first:
short id, time, host, the paths as backed up (the subvolumes' own paths),
and tags. It reads the repository, so it needs the same authorization as a
backup.`

func runArchives(args []string, stdout, stderr io.Writer) int {
	cc := newClientCmd("archives", "PLAN [--json] [--bus BUS]", archivesAbout, true, stdout, stderr)
	pos, code, ok := cc.connect(args, 1, 1, "a PLAN")
	if !ok {
		return code
	}
	ctx := context.Background()
	defer cc.close()
	archives, err := cc.c.Archives(ctx, pos[0])
	if err != nil {
		return cc.fail(err)
	}
	if *cc.json {
		return cc.printJSON(nonNil(archives))
	}
	rows := make([][]string, 0, len(archives))
	for _, a := range archives {
		rows = append(rows, []string{printable(a.ID), cc.out.when(a.Time), printable(a.Host), strings.Join(printableAll(a.Paths), ","),
			dash(strings.Join(printableAll(a.Tags), ","))})
	}
	table(stdout, []string{"ID", "TIME", "HOST", "PATHS", "TAGS"}, rows)
	return exitOK
}

// nonNil makes an empty listing print as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

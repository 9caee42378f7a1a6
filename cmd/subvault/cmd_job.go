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

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/api/contract"
)

const jobAbout = `Shows one job: what it is, who started it, when it ran, how it ended (with
the cause when it failed), the archive it made and restic's summary; a
running job's progress, and the files it works on when the daemon names
files to you (root, or polkit's restore authorization without a password).`

func newJobCommand() *cobra.Command {
	return newClientCommand(&cobra.Command{
		Use:               "job ID [--json] [--bus BUS]",
		Short:             "show one job: progress, result, cause, summary",
		Long:              jobAbout,
		GroupID:           groupStatus,
		Args:              expects(1, 1, "a job ID"),
		ValidArgsFunction: completeArgs(jobIDs(false)),
	}, withJSON, runJob)
}

func runJob(cc *clientCmd, args []string) int {
	id, err := parseJobID(args[0])
	if err != nil {
		fmt.Fprintf(cc.stderr, "subvault job: %v\n", err)
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
	printJob(cc.stdout, cc.out, j)
	// A skipped job (a send to an absent target) is no failure.
	if j.State == contract.StateFinished && j.Result != contract.ResultDone && j.Result != contract.ResultSkipped {
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
	add("job", fmt.Sprintf("%d, %s", j.ID, jobWhat(j)))
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
	if j.Result == contract.ResultSkipped {
		add("why skipped", printable(j.Error))
	} else {
		add("error", o.paint(colorRed, j.Error))
	}
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

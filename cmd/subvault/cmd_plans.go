package main

import (
	"context"
	"io"
	"strings"
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

package main

import (
	"context"
	"strings"

	"github.com/spf13/cobra"
)

const plansAbout = `Lists the plans of the running daemon: subvolumes, repository, schedule,
when the last backup finished and how, and the next scheduled run.`

func newPlansCommand() *cobra.Command {
	return newClientCommand(&cobra.Command{
		Use:     "plans [--json] [--bus BUS]",
		Short:   "list the plans, their last backup and next run",
		Long:    plansAbout,
		GroupID: groupStatus,
		Args:    expects(0, 0, "no arguments"),
	}, withJSON, runPlans)
}

func runPlans(cc *clientCmd, _ []string) int {
	ctx := context.Background()
	if code, ok := cc.dial(ctx); !ok {
		return code
	}
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
	table(cc.stdout, []string{"PLAN", "SUBVOLUMES", "REPOSITORY", "SCHEDULE", "LAST BACKUP", "RESULT", "NEXT RUN"}, rows)
	return exitOK
}

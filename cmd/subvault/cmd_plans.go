package main

import (
	"context"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/api/contract"
)

const plansAbout = `Lists the plans of the running daemon: subvolumes, repository, schedule,
when the last backup finished and how, and the next scheduled run; when a
plan sends its snapshots to targets (send_to), the ONSITE column has each
target with the age of the plan's newest copy there ("never" for none yet,
"(absent)" when the target is not there now).`

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
	printPlans(cc.stdout, cc.out, plans)
	return exitOK
}

// printPlans prints the plans' table; with an ONSITE column, each
// target's newest copy of the plan and its age, when a plan sends to one.
func printPlans(w io.Writer, o output, plans []contract.Plan) {
	onsite := anyTargets(plans)
	rows := make([][]string, 0, len(plans))
	for _, p := range plans {
		row := []string{printable(p.Name), strings.Join(printableAll(p.Subvolumes), ","), printable(p.Repository),
			dash(printable(p.Schedule)), o.when(p.LastBackup), dash(printable(p.LastResult)), o.when(p.NextRun)}
		if onsite {
			row = append(row, onsiteAges(o, p.Targets))
		}
		rows = append(rows, row)
	}
	header := []string{"PLAN", "SUBVOLUMES", "REPOSITORY", "SCHEDULE", "LAST BACKUP", "RESULT", "NEXT RUN"}
	if onsite {
		header = append(header, "ONSITE")
	}
	table(w, header, rows)
}

package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/api/contract"
)

const targetsAbout = `Lists the targets of the onsite tier (targets in subvault.yaml(5)): where
each is (its copies' directory, or its filesystem UUID), whether it is
present now, and for each plan that sends to it the time and age of the
plan's newest copy there, how many copies it holds, and how many of the
plan's snapshots are pinned as that target's parent (kept by keep_snapshots
while the disk is away, so that the next send is incremental). Why a target
is absent or unusable follows the table.

The daemon looks at each target for this: a disk that is not mounted in
the host is mounted only in a private mount namespace, and only for the
look.`

func newTargetsCommand() *cobra.Command {
	return newClientCommand(&cobra.Command{
		Use:     "targets [--json] [--bus BUS]",
		Short:   "list the onsite targets, whether each is present, and each plan's newest copy",
		Long:    targetsAbout,
		GroupID: groupStatus,
		Args:    expects(0, 0, "no arguments"),
	}, withJSON, runTargets)
}

func runTargets(cc *clientCmd, _ []string) int {
	ctx := context.Background()
	if code, ok := cc.dial(ctx); !ok {
		return code
	}
	defer cc.close()
	targets, err := cc.c.Targets(ctx)
	if err != nil {
		return cc.fail(err)
	}
	if *cc.json {
		return cc.printJSON(nonNil(targets))
	}
	printTargets(cc.stdout, cc.out, targets)
	return exitOK
}

// printTargets prints one row per target and plan, then why each absent
// target is.
func printTargets(w io.Writer, o output, targets []contract.Target) {
	if len(targets) == 0 {
		fmt.Fprintln(w, "no targets are configured (targets in subvault.yaml(5))")
		return
	}
	var rows [][]string
	for _, t := range targets {
		where := t.Where
		switch {
		case where != "":
		case t.Path != "":
			where = t.Path
		case t.UUID != "":
			where = "uuid " + t.UUID
		}
		present := "no"
		if t.Present {
			present = "yes"
		}
		head := []string{printable(t.Name), dash(printable(where)), present}
		if len(t.Plans) == 0 {
			rows = append(rows, append(head, "-", "-", "-", "-", "-"))
			continue
		}
		for i, p := range t.Plans {
			if i > 0 {
				head = []string{"", "", ""}
			}
			rows = append(rows, append(head, printable(p.Plan), o.copyTime(p.Newest), o.age(p.Newest),
				strconv.FormatUint(uint64(p.Copies), 10), strconv.FormatUint(uint64(p.Pinned), 10)))
		}
	}
	table(w, []string{"NAME", "WHERE", "PRESENT", "PLAN", "NEWEST COPY", "AGE", "COPIES", "PINNED"}, rows)
	for _, t := range targets {
		if t.Error != "" {
			fmt.Fprintf(w, "%s: %s\n", printable(t.Name), printable(t.Error))
		}
	}
}

package main

import (
	"context"

	"github.com/spf13/cobra"
)

const snapshotsAbout = `Lists a plan's local read-only snapshots, oldest first: name, when it was
taken, whether keep_snapshots keeps it (or a running job uses it), and its
path. "subvault clone" makes a writable copy of one.

With a reset section (subvault.yaml(5), reset), "subvault snapshots reset"
lists the reset's snapshots: the clean ones (subvault-pinned@reset@...,
made by subvault reset init, always kept) and the previous states
(subvault@reset@..., one per boot, kept by the subvolume's keep). They are
at the top level of the root filesystem, on no mounted path; "subvault
rollback reset STATE PATH" makes the next boot come up in one.`

func newSnapshotsCommand() *cobra.Command {
	return newClientCommand(&cobra.Command{
		Use:               "snapshots PLAN [--json] [--bus BUS]",
		Short:             "list a plan's local snapshots",
		Long:              snapshotsAbout,
		GroupID:           groupStatus,
		Args:              expects(1, 1, "a PLAN"),
		ValidArgsFunction: completeArgs(planNames),
	}, withJSON, runSnapshots)
}

func runSnapshots(cc *clientCmd, pos []string) int {
	ctx := context.Background()
	if code, ok := cc.dial(ctx); !ok {
		return code
	}
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
	table(cc.stdout, []string{"NAME", "TAKEN", "KEPT", "PATH"}, rows)
	return exitOK
}

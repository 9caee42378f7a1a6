package main

import (
	"context"
	"io"
)

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

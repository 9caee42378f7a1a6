package main

import (
	"context"
	"fmt"
	"io"
)

const cancelAbout = `Cancels job ID: a queued job ends at once; a running one has restic
interrupted and its snapshots removed. A user may cancel the jobs they
started; others' jobs need the manage authorization.`

func runCancel(args []string, stdout, stderr io.Writer) int {
	cc := newClientCmd("cancel", "ID [--bus BUS]", cancelAbout, false, stdout, stderr)
	pos, code, ok := cc.parse(args, 1, 1, "a job ID")
	if !ok {
		return code
	}
	id, err := parseJobID(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "subvault cancel: %v\n", err)
		return exitUsage
	}
	ctx := context.Background()
	if code, ok := cc.dial(ctx); !ok {
		return code
	}
	defer cc.close()
	if err := cc.c.Cancel(ctx, id); err != nil {
		return cc.fail(err)
	}
	fmt.Fprintf(stdout, "job %d canceled\n", id)
	return exitOK
}

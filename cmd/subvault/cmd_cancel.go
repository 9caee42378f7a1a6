package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
)

const cancelAbout = `Cancels job ID: a queued job ends at once; a running one has restic
interrupted and its snapshots removed. A user may cancel the jobs they
started; others' jobs need the manage authorization.`

func newCancelCommand() *cobra.Command {
	return newClientCommand(&cobra.Command{
		Use:               "cancel ID [--bus BUS]",
		Short:             "cancel a queued or running job",
		Long:              cancelAbout,
		GroupID:           groupJobs,
		Args:              expects(1, 1, "a job ID"),
		ValidArgsFunction: completeArgs(jobIDs(true)),
	}, withoutJSON, runCancel)
}

func runCancel(cc *clientCmd, pos []string) int {
	id, err := parseJobID(pos[0])
	if err != nil {
		fmt.Fprintf(cc.stderr, "subvault cancel: %v\n", err)
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
	fmt.Fprintf(cc.stdout, "job %d canceled\n", id)
	return exitOK
}

package main

import (
	"context"
	"io"

	"github.com/subvault/subvault/api/client"
)

const pruneAbout = `Starts a prune of PLAN: restic forget --prune with the plan's retention
(this host's archives of the plan only), and keep_snapshots for the local
snapshots.`

func runPrune(args []string, stdout, stderr io.Writer) int {
	return runStart("prune", "PLAN [--wait] [--bus BUS]", pruneAbout, args, stdout, stderr,
		func(ctx context.Context, c *client.Client, plan string) (uint32, error) {
			return c.StartPrune(ctx, plan)
		})
}

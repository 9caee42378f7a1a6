package main

import (
	"context"
	"io"

	"github.com/subvault/subvault/api/client"
)

const checkAbout = `Starts a check of PLAN's repository: restic check, reading the subset of
the data the plan's check_read_data_subset says.`

func runCheck(args []string, stdout, stderr io.Writer) int {
	return runStart("check", "PLAN [--wait] [--bus BUS]", checkAbout, args, stdout, stderr,
		func(ctx context.Context, c *client.Client, plan string) (uint32, error) {
			return c.StartCheck(ctx, plan)
		})
}

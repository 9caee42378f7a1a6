package main

import (
	"github.com/spf13/cobra"

	"github.com/subvault/subvault/api/client"
)

const checkAbout = `Starts a check of PLAN's repository: restic check, reading the subset of
the data the plan's check_read_data_subset says.`

func newCheckCommand() *cobra.Command {
	return newPlanJobCommand("check", "check a plan's repository", checkAbout, (*client.Client).StartCheck)
}

package main

import (
	"github.com/spf13/cobra"

	"github.com/subvault/subvault/api/client"
)

const pruneAbout = `Starts a prune of PLAN: restic forget --prune with the plan's retention
(this host's archives of the plan only), and keep_snapshots for the local
snapshots.`

func newPruneCommand() *cobra.Command {
	return newPlanJobCommand("prune", "apply a plan's retention to its archives and snapshots", pruneAbout, (*client.Client).StartPrune)
}

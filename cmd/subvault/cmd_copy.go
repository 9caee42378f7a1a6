package main

import (
	"github.com/spf13/cobra"

	"github.com/subvault/subvault/api/client"
)

const copyAbout = `Starts a copy of PLAN's latest archive (of this host) to the repositories
the plan's copy_to names (restic copy). Each backup of such a plan queues a
copy of its new archive by itself; this is for a copy that failed, or a
copy_to just added. An archive a repository has already is not sent again.`

func newCopyCommand() *cobra.Command {
	return newPlanJobCommand("copy", "copy a plan's latest archive to its copy_to repositories", copyAbout, (*client.Client).StartCopy)
}

package main

import (
	"context"
	"strings"

	"github.com/spf13/cobra"
)

const archivesAbout = `Lists a plan's archives (restic snapshots) in its repository, newest first:
short id, time, host, the paths as backed up (the subvolumes' own paths),
and tags. It reads the repository, so it needs the same authorization as a
backup.`

func newArchivesCommand() *cobra.Command {
	return newClientCommand(&cobra.Command{
		Use:               "archives PLAN [--json] [--bus BUS]",
		Short:             "list a plan's archives in its repository",
		Long:              archivesAbout,
		GroupID:           groupStatus,
		Args:              expects(1, 1, "a PLAN"),
		ValidArgsFunction: completeArgs(planNames),
	}, withJSON, runArchives)
}

func runArchives(cc *clientCmd, pos []string) int {
	ctx := context.Background()
	if code, ok := cc.dial(ctx); !ok {
		return code
	}
	defer cc.close()
	archives, err := cc.c.Archives(ctx, pos[0])
	if err != nil {
		return cc.fail(err)
	}
	if *cc.json {
		return cc.printJSON(nonNil(archives))
	}
	rows := make([][]string, 0, len(archives))
	for _, a := range archives {
		rows = append(rows, []string{printable(a.ID), cc.out.when(a.Time), printable(a.Host), strings.Join(printableAll(a.Paths), ","),
			dash(strings.Join(printableAll(a.Tags), ","))})
	}
	table(cc.stdout, []string{"ID", "TIME", "HOST", "PATHS", "TAGS"}, rows)
	return exitOK
}

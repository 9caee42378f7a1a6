package main

import (
	"context"
	"io"
	"strings"
)

const archivesAbout = `Lists a plan's archives (restic snapshots) in its repository, newest first:
short id, time, host, the paths as backed up (the subvolumes' own paths),
and tags. It reads the repository, so it needs the same authorization as a
backup.`

func runArchives(args []string, stdout, stderr io.Writer) int {
	cc := newClientCmd("archives", "PLAN [--json] [--bus BUS]", archivesAbout, true, stdout, stderr)
	pos, code, ok := cc.connect(args, 1, 1, "a PLAN")
	if !ok {
		return code
	}
	ctx := context.Background()
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
	table(stdout, []string{"ID", "TIME", "HOST", "PATHS", "TAGS"}, rows)
	return exitOK
}

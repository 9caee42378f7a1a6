package main

import (
	"bufio"
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/api/contract"
)

const diffAbout = `Lists what differs from A to B in PLAN, one path a line after a mark:
"+" added, "-" removed, "M" changed, "T" changed type (a file became a
link), "U" metadata only; then a line with the counts. Each of A and B is
an archive of the plan ("latest", or an id from "subvault archives PLAN"),
"live" (the plan's subvolumes as they are now), a local snapshot (a name
from "subvault snapshots PLAN") or a snapshot's copy on an onsite target,
TARGET:NAME (the target's disk mounted on this system); at least one is an
archive. Paths are the subvolumes' own; a directory's ends in "/".

  subvault diff home 1a2b3c4d latest     what the last backup changed
  subvault diff home latest live         what changed since the last backup
  subvault diff home SNAPSHOT latest     a local snapshot against an archive
  subvault diff home latest usb:SNAPSHOT the copy on target usb against it

Two archives are compared by restic diff (content, type, added, removed)
and by their listings (mode, owner, modification time). An archive and
"live" or a snapshot are compared by each path's type, size, modification
time, mode and owner, as restic decides what to read again: file contents
are not read, so a file rewritten with the same size and time shows no
difference.
What the plan's backups leave out (exclude rules, snapshot directories) is
not compared, nor anything below a mount point or nested subvolume.

A directory whose entries came or went has a new modification time:
metadata-only changes ("U") are left out unless --metadata. To check a
recovery, compare the archive it came from with "live" once the files are
back in place, or back up and compare the new archive with the old one
(docs/recovery.md).

It names files, also in directories you may not be able to read, so it
needs the restore authorization: root, or an administrator's password
(polkit); a plan's allow_users are not enough. It can take minutes on a big
tree (it waits up to 30 minutes); the rows come through a pipe (DiffTo), so
a difference of any size is listed whole.

Exit status: 0 no differences, 1 differences (as diff(1)), 2 trouble (a
wrong command line, no such plan, archive or snapshot, or the comparison
failed), 4 not authorized, 5 the daemon is not on the bus.`

func newDiffCommand() *cobra.Command {
	var metadata bool
	cmd := newClientCommand(&cobra.Command{
		Use:               "diff PLAN A B [--metadata] [--json] [--bus BUS]",
		Short:             "list what differs between two archives, or an archive and the live subvolumes or a snapshot",
		Long:              diffAbout,
		GroupID:           groupStatus,
		Args:              expects(3, 3, "PLAN A B"),
		ValidArgsFunction: completeArgs(planNames, diffSides, diffSides),
	}, withJSON, func(cc *clientCmd, pos []string) int { return runDiff(cc, pos, metadata) })
	cmd.Flags().BoolVar(&metadata, "metadata", false, "also list paths whose metadata alone changed (\"U\"), parent directories of added and removed paths among them")
	return cmd
}

func runDiff(cc *clientCmd, pos []string, metadata bool) int {
	ctx := context.Background()
	if code, ok := cc.dial(ctx); !ok {
		return code
	}
	defer cc.close()
	// Rows are printed as they come (a diff of a big tree is tens of MiB);
	// --json collects them into one array.
	var shown []contract.Change
	listed := 0
	counts := map[contract.ChangeKind]int{}
	out := bufio.NewWriter(cc.stdout)
	_, err := cc.c.DiffEach(ctx, pos[0], pos[1], pos[2], func(c contract.Change) error {
		counts[c.Kind]++
		if c.Kind == contract.ChangeMetadata && !metadata {
			return nil
		}
		listed++
		if *cc.json {
			shown = append(shown, c)
			return nil
		}
		fmt.Fprintf(out, "%s  %s\n", cc.out.paint(changeColor[c.Kind], changeMark[c.Kind]), printable(c.Path))
		return nil
	})
	if err != nil {
		out.Flush() //nolint:errcheck,gosec // what came before the trouble
		// Like diff(1), 1 means "they differ": every trouble is 2 or more.
		if code := cc.fail(err); code != exitFailure {
			return code
		}
		return exitUsage
	}
	if *cc.json {
		if code := cc.printJSON(nonNil(shown)); code != exitOK {
			return exitUsage
		}
	} else {
		fmt.Fprintln(out, diffSummary(counts, metadata))
		if err := out.Flush(); err != nil {
			return exitUsage
		}
	}
	if listed > 0 {
		return exitFailure
	}
	return exitOK
}

// changeMark is restic diff's mark for each kind.
var changeMark = map[contract.ChangeKind]string{
	contract.ChangeAdded: "+", contract.ChangeRemoved: "-", contract.ChangeChanged: "M",
	contract.ChangeTypeChanged: "T", contract.ChangeMetadata: "U",
}

var changeColor = map[contract.ChangeKind]string{
	contract.ChangeAdded: colorGreen, contract.ChangeRemoved: colorRed, contract.ChangeChanged: colorYellow,
	contract.ChangeTypeChanged: colorYellow, contract.ChangeMetadata: colorDim,
}

// diffSummary is the last line: the counts, and what --metadata would add.
func diffSummary(counts map[contract.ChangeKind]int, metadata bool) string {
	n := counts[contract.ChangeAdded] + counts[contract.ChangeRemoved] + counts[contract.ChangeChanged] + counts[contract.ChangeTypeChanged]
	if metadata {
		n += counts[contract.ChangeMetadata]
	}
	var s string
	switch n {
	case 0:
		s = "no differences"
	case 1:
		s = "1 difference"
	default:
		s = fmt.Sprintf("%d differences", n)
	}
	s += fmt.Sprintf(": %d added, %d removed, %d changed, %d changed type", counts[contract.ChangeAdded],
		counts[contract.ChangeRemoved], counts[contract.ChangeChanged], counts[contract.ChangeTypeChanged])
	if metadata {
		return s + fmt.Sprintf(", %d metadata only", counts[contract.ChangeMetadata])
	}
	if m := counts[contract.ChangeMetadata]; m > 0 {
		s += fmt.Sprintf(" (and %d metadata only, not listed: --metadata lists them)", m)
	}
	return s
}

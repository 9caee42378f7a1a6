package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/api/client"
)

const restoreAbout = `Starts a restore of ARCHIVE of PLAN: an id as "subvault archives PLAN"
shows it, or latest (the plan's newest archive).

Into TARGET, a directory that does not exist yet (its parent must) or is
empty: the archive's paths are recreated below it, so /home/ann/notes.txt
lands at TARGET/home/ann/notes.txt. Without --in-place a restore never
writes over anything: a TARGET that is not empty is refused.

--subvolume: TARGET must not exist and its directory must be on btrfs. A
btrfs subvolume is created there and the archive restored into it; an
archive of one subvolume fills it with that subvolume's content, so the
restored tree can be snapshotted, swapped in (mv) or thrown away (btrfs
subvolume delete) in one step. A failed restore deletes the subvolume.

--in-place (root only; no TARGET): restores the archive's paths where they
were, over what is there now. First each subvolume the archive holds gets
a pinned read-only snapshot ("subvault snapshots PLAN" lists it;
keep_snapshots never deletes it): the summary names it, and it is the way
back. Files created since the archive stay; mount points and nested
subvolumes are left alone.

Files keep their owners, modes, times, extended attributes and ACLs, hard
links and symbolic links (a link is restored as a link and never
followed, whatever it points to). Sparse files stay sparse with restic 0.15
or newer; restic 0.14 writes their holes out as zeros. --verify has restic
read every restored file back and compare it with the archive; a
difference fails the job. --include restores only the paths given (repeat
it; paths as the archive holds them).`

type restoreOptions struct {
	client.RestoreOptions
	include []string
}

func newRestoreCommand() *cobra.Command {
	var opts restoreOptions
	cmd := newStartCommand(&cobra.Command{
		Use:               "restore PLAN ARCHIVE {TARGET [--subvolume] | --in-place} [--include PATH]... [--verify] [--wait] [--bus BUS]",
		Short:             "restore an archive, or some paths of it, into a new directory or subvolume, or in place",
		Long:              restoreAbout,
		GroupID:           groupJobs,
		Args:              expects(2, 3, "PLAN ARCHIVE TARGET, or PLAN ARCHIVE --in-place"),
		ValidArgsFunction: completeArgs(planNames, archiveIDs),
	}, func(sc *startCmd, pos []string) int { return runRestore(sc, pos, opts) })
	cmd.Flags().StringArrayVar(&opts.include, "include", nil, "restore only this `path` of the archive (repeatable)")
	cmd.Flags().BoolVar(&opts.Subvolume, "subvolume", false, "create a btrfs subvolume at TARGET and restore into it")
	cmd.Flags().BoolVar(&opts.InPlace, "in-place", false, "restore over the plan's subvolumes, after a pinned snapshot of each (root only; no TARGET)")
	cmd.Flags().BoolVar(&opts.Verify, "verify", false, "read every restored file back and compare it with the archive")
	return cmd
}

func runRestore(sc *startCmd, pos []string, opts restoreOptions) int {
	var target string
	switch {
	case opts.InPlace && len(pos) == 3 && pos[2] != "/":
		fmt.Fprintf(sc.stderr, "subvault restore: --in-place restores the archive's paths where they were; it takes no TARGET (or /), not %q\n", pos[2])
		return exitUsage
	case opts.InPlace:
		target = "/"
	case len(pos) < 3:
		fmt.Fprintf(sc.stderr, "subvault restore: expects PLAN ARCHIVE TARGET (or --in-place without TARGET); run \"subvault restore --help\" for its usage\n")
		return exitUsage
	default:
		abs, err := filepath.Abs(pos[2])
		if err != nil {
			return sc.fail(err)
		}
		target = abs
	}
	sc.defaultWait()
	return sc.startAndWait(func(ctx context.Context) (uint32, error) {
		return sc.c.StartRestoreWith(ctx, pos[0], pos[1], target, opts.include, opts.RestoreOptions)
	})
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/api/client"
)

const rollbackAbout = `Puts SUBVOLUME, one of PLAN's, back to SNAPSHOT, one of its local
snapshots (a name from "subvault snapshots PLAN"). It first shows what it
will do and, on a terminal, asks; --yes does it without asking (needed when
stdin is not a terminal), --dry-run only shows.

A subvolume that is not mounted, with nothing mounted inside it and no
process working in it, is replaced at once. Its current state is kept
first as a pinned read-only snapshot (subvault-pinned@..., listed by
"subvault snapshots PLAN", never deleted by keep_snapshots); then a
writable copy of SNAPSHOT takes its place in one atomic step, the
subvolumes inside the old one (its .subvault-snapshots among them) move
into the new one unchanged, and the old one is deleted. To undo it, roll
back to the pinned snapshot:

  subvault rollback PLAN subvault-pinned@... SUBVOLUME

A mounted subvolume (/, or /home mounted with subvol=) is not replaced
under the programs that use it. A writable copy of SNAPSHOT is made next
to it at the top level of the filesystem, and the command prints what to
change for the next boot (subvol= in /etc/fstab and the boot loader's
rootflags=, or the default subvolume, which --set-default sets), how to
move the subvolumes nested in the old one over, and how to undo it. The
mounted subvolume stays as it is: it is the way back.

A subvolume the reset manages (subvault.yaml(5), reset) is rolled back
with PLAN "reset" and one of its reset snapshots (subvault snapshots
reset): the next boot comes up in SNAPSHOT instead of the clean snapshot,
with nothing copied over, and keeps the state it leaves as a previous
state, as every reset does. It lasts one boot. Only root may ask for it:
  subvault rollback reset subvault@reset@... /

The plan's jobs and a rollback exclude each other: while a backup of PLAN
runs, a rollback is refused.

Exit status: 0 done, 1 failed, 2 wrong command line, unknown plan or
snapshot, 4 not authorized, 5 the daemon is not running, 130 not
confirmed.`

type rollbackOptions struct {
	yes, dryRun, setDefault bool
}

func newRollbackCommand() *cobra.Command {
	var opts rollbackOptions
	cmd := newClientCommand(&cobra.Command{
		Use:               "rollback PLAN SNAPSHOT SUBVOLUME [--yes] [--dry-run] [--set-default] [--bus BUS]",
		Short:             "put a subvolume back to a local snapshot, or prepare that for the next boot",
		Long:              rollbackAbout,
		GroupID:           groupJobs,
		Args:              expects(3, 3, "PLAN SNAPSHOT SUBVOLUME"),
		ValidArgsFunction: completeArgs(planNames, snapshotNames, subvolumes),
	}, withoutJSON, func(cc *clientCmd, pos []string) int { return runRollback(cc, pos, opts) })
	cmd.Flags().BoolVar(&opts.yes, "yes", false, "roll back without asking")
	cmd.Flags().BoolVar(&opts.dryRun, "dry-run", false, "only say what would be done")
	cmd.Flags().BoolVar(&opts.setDefault, "set-default", false, "for a mounted subvolume: make the prepared one the filesystem's default subvolume")
	return cmd
}

func runRollback(cc *clientCmd, pos []string, opts rollbackOptions) int {
	stdout, stderr := cc.stdout, cc.stderr
	subvolume, err := filepath.Abs(pos[2])
	if err != nil {
		return cc.fail(err)
	}
	interactive := isTerminal(os.Stdin)
	if !opts.yes && !opts.dryRun && !interactive {
		fmt.Fprintf(stderr, "subvault rollback: stdin is not a terminal, so nobody can confirm: give --yes to roll back %s without asking, or --dry-run to see what would be done\n", printable(subvolume))
		return exitUsage
	}
	ctx := context.Background()
	if code, ok := cc.dial(ctx); !ok {
		return code
	}
	defer cc.close()
	_, plan, err := cc.c.Rollback(ctx, pos[0], pos[1], subvolume, client.RollbackOptions{DryRun: true, SetDefault: opts.setDefault})
	if err != nil {
		return cc.fail(err)
	}
	if opts.dryRun {
		fmt.Fprintln(stdout, printableText(plan))
		return exitOK
	}
	if !opts.yes {
		fmt.Fprintln(stderr, printableText(plan))
		fmt.Fprintf(stderr, "Roll %s back to %s? [y/N] ", printable(subvolume), printable(pos[1]))
		answer, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			fmt.Fprintln(stderr, "nothing changed")
			return exitCanceled
		}
	}
	_, message, err := cc.c.Rollback(ctx, pos[0], pos[1], subvolume, client.RollbackOptions{SetDefault: opts.setDefault})
	if err != nil {
		return cc.fail(err)
	}
	fmt.Fprintln(stdout, printableText(message))
	return exitOK
}

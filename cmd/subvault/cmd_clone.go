package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/shell"
)

const cloneAbout = `Makes a writable btrfs snapshot of one of PLAN's local snapshots (a name
from "subvault snapshots PLAN") at TARGET, which must not exist (its parent
must): to look inside the old state or run it in a container. The snapshot
itself stays as it was, whatever is written into the clone. Remove the
clone with "btrfs subvolume delete TARGET".

SNAPSHOT may be a snapshot's copy on an onsite target, TARGET_NAME:SNAPSHOT
("usb:subvault@home@..."), when that target is reachable on this system (a
disk named by UUID must be mounted: mount UUID=... /mnt); the clone is made
on the target's filesystem (a btrfs snapshot stays on its filesystem), so
TARGET must be a path there, outside the directory of the copies: how a
broken machine's state is run from the onsite disk (docs/recovery.md).

--nspawn prints, after TARGET's path, the systemd-nspawn command that runs
the old state in a container (on a line of its own), and --run runs it
(in this terminal; root):

  a whole system (TARGET holds /usr/lib/systemd/systemd, /lib/systemd/systemd
  or /sbin/init): it boots, systemd-nspawn --directory=TARGET --boot;
  a NixOS root (TARGET holds /nix/var/nix/profiles/system/init): that init
  runs as the container's first process;
  anything else (a snapshot of /home or /var/lib/nextcloud): this machine's
  own system boots from its /usr and /etc (read-only) on an empty /var,
  with the clone at the snapshot's original path, so that today's
  configuration serves the old data:
  systemd-nspawn --directory=/ --volatile=yes --bind-ro=/etc --bind=TARGET:PATH --boot

The container has a private network (loopback only), so the old services
reach nobody and nobody reaches them; add --network-veth to the command to
talk to it from this machine. It is called --machine NAME (default: TARGET's
last element), for machinectl.`

type cloneOptions struct {
	nspawn, run bool
	machine     string
}

func newCloneCommand() *cobra.Command {
	var opts cloneOptions
	cmd := newClientCommand(&cobra.Command{
		Use:               "clone PLAN SNAPSHOT TARGET [--nspawn [--run] [--machine NAME]] [--bus BUS]",
		Short:             "make a writable copy of a local snapshot, and run it in a container",
		Long:              cloneAbout,
		GroupID:           groupJobs,
		Args:              expects(3, 3, "PLAN SNAPSHOT TARGET"),
		ValidArgsFunction: completeArgs(planNames, snapshotNames),
	}, withoutJSON, func(cc *clientCmd, pos []string) int { return runClone(cc, pos, opts) })
	cmd.Flags().BoolVar(&opts.nspawn, "nspawn", false, "also print the systemd-nspawn command that runs the clone in a container")
	cmd.Flags().BoolVar(&opts.run, "run", false, "run that command (implies --nspawn; root)")
	cmd.Flags().StringVar(&opts.machine, "machine", "", "the container's machine `name` (default: from TARGET)")
	return cmd
}

func runClone(cc *clientCmd, pos []string, opts cloneOptions) int {
	stdout, stderr := cc.stdout, cc.stderr
	target, err := filepath.Abs(pos[2])
	if err != nil {
		return cc.fail(err)
	}
	if opts.machine != "" && machineName(opts.machine) != opts.machine {
		fmt.Fprintf(stderr, "subvault clone: machine name %q: use letters, digits and \"-\", at most 64\n", opts.machine)
		return exitUsage
	}
	ctx := context.Background()
	if code, ok := cc.dial(ctx); !ok {
		return code
	}
	defer cc.close()
	path, err := cc.c.Clone(ctx, pos[0], pos[1], target)
	if err != nil {
		return cc.fail(err)
	}
	fmt.Fprintln(stdout, printable(path))
	if !opts.nspawn && !opts.run {
		return exitOK
	}
	name := opts.machine
	if name == "" {
		name = machineName(filepath.Base(path))
	}
	subvolume := ""
	snapshot := pos[1]
	if _, copyName, ok := strings.Cut(snapshot, ":"); ok {
		snapshot = copyName // TARGET:NAME, a target's copy
	}
	if s, err := btrfs.ParseName(snapshot); err == nil {
		subvolume = s.Subvolume
	}
	argv, kind := nspawnCommand(path, subvolume, name)
	// A path with a control character in it shows escaped, not as a
	// command that pastes as it is.
	fmt.Fprintln(stdout, printable(shell.Join(argv)))
	fmt.Fprintf(stderr, "%s; when done: btrfs subvolume delete %s\n", printable(kind), printable(shell.Quote(path)))
	if !opts.run {
		return exitOK
	}
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		return cc.fail(fmt.Errorf("cannot run the container: %w (apt install systemd-container)", err))
	}
	cc.close()
	// The container takes over this process and its terminal.
	err = syscall.Exec(bin, argv, os.Environ()) //nolint:gosec // the argv is ours, built above
	return cc.fail(fmt.Errorf("cannot run %s: %w", bin, err))
}

// nspawnCommand is the systemd-nspawn argv that runs the clone at target,
// a snapshot of subvolume, as machine; kind says which of the three ways
// it is run (see cloneAbout).
func nspawnCommand(target, subvolume, machine string) (argv []string, kind string) {
	has := func(p string) bool { _, err := os.Lstat(filepath.Join(target, p)); return err == nil }
	base := []string{"systemd-nspawn"}
	common := []string{"--machine=" + machine, "--private-network"}
	switch {
	case has("usr/lib/systemd/systemd") || has("lib/systemd/systemd") || has("sbin/init"):
		return append(append(append(base, "--directory="+target), common...), "--boot"),
			"the clone holds a system: it boots in the container"
	case has("nix/var/nix/profiles/system/init"):
		return append(append(append(base, "--directory="+target), common...), "/nix/var/nix/profiles/system/init"),
			"the clone holds a NixOS root: its init runs in the container"
	case subvolume == "" || subvolume == "/":
		return append(append(append(base, "--directory="+target), common...), "--boot"),
			"the clone holds no init that systemd-nspawn knows; it will say what it looked for"
	}
	// --volatile=yes: a tmpfs root with this machine's /usr; systemd 252
	// refuses the directory / with overlay or state.
	return append(append(append(base, "--directory=/", "--volatile=yes", "--bind-ro=/etc", "--bind="+target+":"+subvolume), common...), "--boot"),
		"the clone holds data, not a system: this machine's system (/usr, /etc read-only, an empty /var) boots in the container with the clone at " + subvolume
}

// machineName makes a machine name of s: letters, digits and "-", at most
// 64, never empty.
func machineName(s string) string {
	var b strings.Builder
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			b.WriteRune(c)
		default:
			b.WriteByte('-')
		}
	}
	name := strings.Trim(b.String(), "-")
	if len(name) > 64 {
		name = strings.TrimRight(name[:64], "-")
	}
	if name == "" {
		name = "subvault-clone"
	}
	return name
}

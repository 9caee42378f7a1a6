// Command subvault makes atomic, incremental restic backups of btrfs
// subvolumes. `subvault daemon` is the service; the other subcommands check
// its configuration or talk to it over D-Bus.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// version is stamped at build time: -ldflags "-X main.version=...".
var version = "0.0.0-dev"

// Exit codes, documented in subvault(1).
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and the answer is "no" (invalid config, failed job)
	exitUsage   = 2 // wrong command line
)

// A command is one subcommand. Its --help text (newFlags) is the one source
// of its documentation: the man pages in docs/man are generated from it
// ("subvault man", make man).
type command struct {
	name    string
	summary string
	group   string // the heading it is listed under in --help and subvault(1)
	run     func(args []string, stdout, stderr io.Writer) int
	hidden  bool // not listed (tools for the build)
}

// The groups of commands, in the order --help lists them.
const (
	groupStatus  = "Look"
	groupJobs    = "Start and steer jobs"
	groupDesktop = "Desktop"
	groupAdmin   = "Configuration and service"
)

var groupOrder = []string{groupStatus, groupJobs, groupDesktop, groupAdmin}

func commands() []command {
	return []command{
		{name: "status", summary: "show the daemon and every plan at a glance; exit 1 when a plan needs attention", group: groupStatus, run: runStatus},
		{name: "plans", summary: "list the plans, their last backup and next run", group: groupStatus, run: runPlans},
		{name: "jobs", summary: "list the queued, running and past jobs", group: groupStatus, run: runJobs},
		{name: "job", summary: "show one job: progress, result, cause, summary", group: groupStatus, run: runJob},
		{name: "snapshots", summary: "list a plan's local snapshots", group: groupStatus, run: runSnapshots},
		{name: "archives", summary: "list a plan's archives in its repository", group: groupStatus, run: runArchives},
		{name: "diff", summary: "list what differs between two archives, or an archive and the live subvolumes or a snapshot", group: groupStatus, run: runDiff},
		{name: "watch", summary: "follow every job live", group: groupStatus, run: runWatch},
		{name: "logs", summary: "show the daemon's journal entries, of one plan or all", group: groupStatus, run: runLogs},
		{name: "backup", summary: "back up a plan now and follow it", group: groupJobs, run: runBackupCmd},
		{name: "prune", summary: "apply a plan's retention to its archives and snapshots", group: groupJobs, run: runPrune},
		{name: "check", summary: "check a plan's repository", group: groupJobs, run: runCheck},
		{name: "restore", summary: "restore an archive, or some paths of it, into a new directory or subvolume, or in place", group: groupJobs, run: runRestore},
		{name: "cancel", summary: "cancel a queued or running job", group: groupJobs, run: runCancel},
		{name: "clone", summary: "make a writable copy of a local snapshot, and run it in a container", group: groupJobs, run: runClone},
		{name: "rollback", summary: "put a subvolume back to a local snapshot, or prepare that for the next boot", group: groupJobs, run: runRollback},
		{name: "waybar", summary: "print the backups' state as a status bar's JSON line (waybar, i3blocks)", group: groupDesktop, run: runWaybar},
		{name: "notify", summary: "show desktop notifications when a backup fails or is overdue", group: groupDesktop, run: runNotify},
		{name: "reload", summary: "make the daemon re-read its configuration", group: groupAdmin, run: runReload},
		{name: "check-config", summary: "check the configuration file and print the verdict", group: groupAdmin, run: runCheckConfig},
		{name: "emergency-kit", summary: "write the printable kit that restores the backups without subvault (root)", group: groupAdmin, run: runEmergencyKit},
		{name: "daemon", summary: "run the backup daemon (what systemd starts)", group: groupAdmin, run: runDaemon},
		{name: "run", summary: "run one job in the foreground without the daemon: run backup PLAN", group: groupAdmin, run: runRun},
		{name: "version", summary: "print the version", group: groupAdmin, run: runVersion},
		{name: "man", summary: "write the man pages (for the build)", group: groupAdmin, run: runMan, hidden: true},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		usage(stdout)
		return exitOK
	case "--version":
		return runVersion(nil, stdout, stderr)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "subvault: unknown command %q; run \"subvault --help\" for the list\n", args[0])
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "subvault %s: atomic, incremental restic backups of btrfs subvolumes\n\n", version)
	fmt.Fprintln(w, "Usage: subvault COMMAND [OPTIONS]")
	cmds := commands()
	slices.SortFunc(cmds, func(a, b command) int { return strings.Compare(a.name, b.name) })
	for _, g := range groupOrder {
		heading := false
		for _, c := range cmds {
			if c.group != g || c.hidden {
				continue
			}
			if !heading {
				fmt.Fprintf(w, "\n%s:\n", g)
				heading = true
			}
			fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprintln(w, "\nRun \"subvault COMMAND --help\" for a command's options. See subvault(1).")
}

// newFlags makes a flag set for one subcommand: --help prints its usage to
// stdout, errors go to stderr with a pointer to --help.
//
// The help text is, in this order: "Usage: subvault NAME SYNOPSIS", a blank
// line, about (paragraphs separated by blank lines; lines indented by two
// spaces are shown as they are), a blank line, "Options:" and the flags.
// The man page generator reads exactly this shape.
func newFlags(name, synopsis, about string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("subvault "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	// The flag package calls Usage on every parse error; parseFlags prints
	// the usage itself, once, where it belongs.
	fs.Usage = func() {}
	usages[fs] = func(w io.Writer) {
		fmt.Fprintf(w, "Usage: subvault %s %s\n", name, synopsis)
		if about != "" {
			fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(about))
		}
		var b strings.Builder
		fs.SetOutput(&b)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
		if b.Len() > 0 {
			fmt.Fprintf(w, "\nOptions:\n%s", b.String())
		}
	}
	return fs
}

var usages = map[*flag.FlagSet]func(io.Writer){}

// parseFlags parses a subcommand's arguments; ok is false when the command
// should return code at once (help printed, or a usage error).
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (code int, ok bool) {
	name := strings.TrimPrefix(fs.Name(), "subvault ")
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		usages[fs](stdout)
		return exitOK, false
	}
	if err != nil {
		fmt.Fprintf(fs.Output(), "run \"subvault %s --help\" for its usage\n", name)
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "subvault %s: unexpected argument %q; run \"subvault %s --help\" for its usage\n", name, fs.Arg(0), name)
		return exitUsage, false
	}
	return exitOK, true
}

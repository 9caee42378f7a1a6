// Command subvault makes atomic, incremental restic backups of btrfs
// subvolumes. `subvault daemon` is the service; the other subcommands check
// its configuration or talk to it over D-Bus.
//
// The command line is cobra's: one cmd_X.go per command, each with a
// newXCommand that declares its flags and arguments and a runX that does
// the work and returns the exit code.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is stamped at build time: -ldflags "-X main.version=...".
var version = "0.0.0-dev"

// Exit codes, documented in subvault(1).
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and the answer is "no" (invalid config, failed job)
	exitUsage   = 2 // wrong command line
)

// The groups of commands, in the order --help lists them.
const (
	groupStatus  = "Look"
	groupJobs    = "Start and steer jobs"
	groupDesktop = "Desktop"
	groupAdmin   = "Configuration and service"
)

var groupOrder = []string{groupStatus, groupJobs, groupDesktop, groupAdmin}

// commands are the subcommands, made anew for each command line (cobra
// keeps the parsed flags in them).
func commands() []*cobra.Command {
	return []*cobra.Command{
		newStatusCommand(), newPlansCommand(), newJobsCommand(), newJobCommand(), newSnapshotsCommand(),
		newArchivesCommand(), newTargetsCommand(), newDiffCommand(), newWatchCommand(), newLogsCommand(),
		newBackupCommand(), newPruneCommand(), newCheckCommand(), newCopyCommand(), newSendCommand(), newRestoreCommand(), newCancelCommand(),
		newCloneCommand(), newRollbackCommand(),
		newWaybarCommand(), newNotifyCommand(),
		newReloadCommand(), newCheckConfigCommand(), newEmergencyKitCommand(), newDaemonCommand(), newRunCommand(), newResetCommand(),
		newCompletionCommand(), newVersionCommand(), newManCommand(),
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the command line args and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCommand()
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(twoDashes(root, args))
	cmd, err := root.ExecuteC()
	var status exitStatus
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &status):
		return int(status)
	}
	// What is left is a wrong command line: cobra's own errors (flags,
	// unknown commands) and the commands' argument checks. One line.
	if cmd == nil || !cmd.HasParent() {
		fmt.Fprintf(stderr, "subvault: %s; run \"subvault --help\" for the list\n", printableText(err.Error()))
	} else {
		fmt.Fprintf(stderr, "%s: %s; run \"%s --help\" for its usage\n", cmd.CommandPath(), printableText(err.Error()), cmd.CommandPath())
	}
	return exitUsage
}

// exitStatus is what a command returns for an exit status other than 0,
// once it has said why.
type exitStatus int

func (s exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(s)) }

// exitWith is the error of exit status code: nil for exitOK.
func exitWith(code int) error {
	if code == exitOK {
		return nil
	}
	return exitStatus(code)
}

// runs adapts a run function that returns an exit status to cobra.
func runs(f func(cmd *cobra.Command, args []string) int) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error { return exitWith(f(cmd, args)) }
}

func newRootCommand() *cobra.Command {
	var showVersion bool
	root := &cobra.Command{
		Use:   "subvault",
		Short: "atomic, incremental restic backups of btrfs subvolumes",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				return fmt.Errorf("unknown command %q (did you mean %s?)", args[0], strings.Join(s, " or "))
			}
			return fmt.Errorf("unknown command %q", args[0])
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if showVersion {
				printVersion(cmd.OutOrStdout())
				return nil
			}
			usage(cmd.ErrOrStderr(), cmd)
			return exitStatus(exitUsage)
		},
		SilenceErrors:              true,
		SilenceUsage:               true,
		SuggestionsMinimumDistance: 2,
		CompletionOptions:          cobra.CompletionOptions{DisableDefaultCmd: true}, // ours is `subvault completion`
	}
	root.Flags().BoolVar(&showVersion, "version", false, "print the version")
	// The options every command of a kind takes may come before the
	// command too (subvault --bus X status): declared here, hidden, they
	// tell cobra which of them take a value, so that it finds the command
	// after them; the command itself parses them.
	root.Flags().String("bus", "", "")
	root.Flags().Bool("json", false, "")
	root.Flags().String("config", "", "")
	for _, name := range []string{"bus", "json", "config"} {
		_ = root.Flags().MarkHidden(name)
	}
	for _, g := range groupOrder {
		root.AddGroup(&cobra.Group{ID: g, Title: g})
	}
	root.AddCommand(commands()...)
	root.SetHelpFunc(help)
	root.SetFlagErrorFunc(flagError)
	return root
}

// usage is subvault --help: the commands by group.
func usage(w io.Writer, root *cobra.Command) {
	fmt.Fprintf(w, "subvault %s: %s\n\n", version, root.Short)
	fmt.Fprintln(w, "Usage: subvault COMMAND [OPTIONS]")
	for _, g := range groupOrder {
		heading := false
		for _, c := range root.Commands() { // sorted by name
			if c.GroupID != g || c.Hidden {
				continue
			}
			if !heading {
				fmt.Fprintf(w, "\n%s:\n", g)
				heading = true
			}
			fmt.Fprintf(w, "  %-14s %s\n", c.Name(), c.Short)
		}
	}
	fmt.Fprintln(w, "\nRun \"subvault COMMAND --help\" for a command's options. See subvault(1).")
}

// help prints a command's --help, to stdout. Its text is the one source of
// the command's documentation: subvault(1) is made from the same fields
// (cmd_man.go). The shape is the one it has had since the first release:
// "Usage: subvault NAME SYNOPSIS", a blank line, the about text (Long:
// paragraphs separated by blank lines, lines indented by two spaces shown
// as they are), a blank line, "Options:" and the flags as Go's flag
// package lists them.
func help(cmd *cobra.Command, _ []string) { writeHelp(cmd.OutOrStdout(), cmd) }

func writeHelp(w io.Writer, cmd *cobra.Command) {
	if !cmd.HasParent() {
		usage(w, cmd)
		return
	}
	fmt.Fprintf(w, "Usage: %s\n", useLine(cmd))
	if cmd.Long != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(cmd.Long))
	}
	if s := flagDefaults(cmd.LocalFlags()); s != "" {
		fmt.Fprintf(w, "\nOptions:\n%s", s)
	}
}

// useLine is "subvault NAME SYNOPSIS": Use after the parent's path.
func useLine(cmd *cobra.Command) string {
	return cmd.Parent().CommandPath() + " " + cmd.Use
}

// documentedFlags are the flags a command's help and man page list: not
// cobra's --help, nor hidden ones.
func documentedFlags(fs *pflag.FlagSet) []*pflag.Flag {
	var flags []*pflag.Flag
	fs.VisitAll(func(f *pflag.Flag) { // sorted by name
		if !f.Hidden && f.Name != "help" {
			flags = append(flags, f)
		}
	})
	return flags
}

// flagDefaults lists flags as flag.PrintDefaults does: "  -name value",
// the usage on the next line after four spaces and a tab (a one-letter
// switch has it on the same line), then the default when it is not the
// zero value.
func flagDefaults(fs *pflag.FlagSet) string {
	var b strings.Builder
	for _, f := range documentedFlags(fs) {
		line := "  -" + f.Name
		name, usage := pflag.UnquoteUsage(f)
		if name != "" {
			line += " " + name
		}
		if len(line) <= 4 {
			line += "\t"
		} else {
			line += "\n    \t"
		}
		b.WriteString(line + strings.ReplaceAll(usage+defaultText(f), "\n", "\n    \t") + "\n")
	}
	return b.String()
}

// defaultText is " (default X)" for a flag whose default is not its type's
// zero value.
func defaultText(f *pflag.Flag) string {
	switch f.DefValue {
	case "", "false", "0", "[]":
		return ""
	}
	if f.Value.Type() == "string" {
		return fmt.Sprintf(" (default %q)", f.DefValue)
	}
	return " (default " + f.DefValue + ")"
}

// flagError words pflag's complaint about a value as a person would.
func flagError(_ *cobra.Command, err error) error {
	var invalid *pflag.InvalidValueError
	if errors.As(err, &invalid) {
		what := "not a number"
		if invalid.GetFlag().Value.Type() == "bool" {
			what = "not true or false"
		}
		return fmt.Errorf("invalid value %q for --%s: %s", invalid.GetValue(), invalid.GetFlag().Name, what)
	}
	return err
}

// twoDashes lets every option take one dash or two, as Go's flag package
// did (subvault(1) says so, and scripts may write -config): a word of one
// dash and more than one letter, -config or -config=PATH, becomes
// --config. A value after an option that takes one is left alone, and so
// is everything after "--" (logs hands it to journalctl). One dash and one
// letter stays what it is: a shorthand (-f, -n 10, -h).
func twoDashes(root *cobra.Command, args []string) []string {
	takesValue := map[string]bool{}
	var visit func(*cobra.Command)
	visit = func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) { takesValue[f.Name] = f.NoOptDefVal == "" })
		for _, sub := range c.Commands() {
			visit(sub)
		}
	}
	visit(root)
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			a = "-" + a
		}
		out = append(out, a)
		if name, ok := strings.CutPrefix(a, "--"); ok && !strings.Contains(name, "=") && takesValue[name] && i+1 < len(args) {
			out = append(out, args[i+1])
			i++
		} else if len(a) == 2 && a[0] == '-' && takesValue[a[1:]] && i+1 < len(args) {
			out = append(out, args[i+1])
			i++
		}
	}
	return out
}

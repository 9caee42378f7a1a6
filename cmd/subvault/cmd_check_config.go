package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/daemon/config"
)

const defaultConfigPath = config.DefaultPath

const checkConfigAbout = `Loads and validates the configuration file and prints the verdict: the
plans it defines, or every error as FILE:LINE: KEY.PATH: what is wrong;
expected ... Nothing else happens. The unit runs it before the daemon starts
and before a reload.

Exit status: 0 valid, 1 invalid or unreadable, 2 wrong command line.`

func newCheckConfigCommand() *cobra.Command {
	var path string
	var quiet bool
	cmd := &cobra.Command{
		Use:               "check-config [--config PATH] [--quiet]",
		Short:             "check the configuration file and print the verdict",
		Long:              checkConfigAbout,
		GroupID:           groupAdmin,
		Args:              atMost(0),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: runs(func(cmd *cobra.Command, _ []string) int {
			return runCheckConfig(cmd.OutOrStdout(), cmd.ErrOrStderr(), path, quiet)
		}),
	}
	configFlag(cmd, &path, "configuration `file` to check")
	cmd.Flags().BoolVar(&quiet, "quiet", false, "print nothing when the file is valid")
	return cmd
}

// configFlag adds --config, the configuration file, to cmd.
func configFlag(cmd *cobra.Command, path *string, usage string) {
	cmd.Flags().StringVar(path, "config", defaultConfigPath, usage)
	_ = cmd.MarkFlagFilename("config", "yaml", "yml")
}

func runCheckConfig(stdout, stderr io.Writer, path string, quiet bool) int {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, printableText(err.Error()))
		var list *config.Errors
		if errors.As(err, &list) && len(list.List) > 1 {
			fmt.Fprintf(stderr, "%s: %d errors; the file was refused and nothing else happened\n", printable(path), len(list.List))
		}
		return exitFailure
	}
	if quiet {
		return exitOK
	}
	targets := ""
	if len(cfg.Targets) > 0 {
		targets = ", " + plural(len(cfg.Targets), "target", "targets")
	}
	fmt.Fprintf(stdout, "%s: valid: %s%s, %s\n", printable(cfg.File),
		plural(len(cfg.Repositories), "repository", "repositories"), targets, plural(len(cfg.Plans), "plan", "plans"))
	for _, name := range cfg.TargetNames() {
		fmt.Fprintf(stdout, "  target %s: %s\n", printable(name), printable(describeTarget(cfg.Targets[name])))
	}
	for _, name := range cfg.PlanNames() {
		p := cfg.Plans[name]
		schedule := p.Schedule
		if schedule == "" {
			schedule = "manual only"
		}
		fmt.Fprintf(stdout, "  plan %s: %s -> repository %s, schedule %s\n",
			printable(name), strings.Join(printableAll(p.Subvolumes), ", "), printable(p.Repository), printable(schedule))
		if len(p.SendTo) > 0 {
			when := "after every backup"
			if p.SendSchedule != "" {
				when = "schedule " + p.SendSchedule
			}
			fmt.Fprintf(stdout, "    send to %s, %s, keeping %s on each\n", strings.Join(printableAll(p.SendTo), ", "),
				printable(when), describeKeep(p.TargetRetention))
		}
		for _, n := range cfg.NotifyFor(name) {
			fmt.Fprintf(stdout, "    notify %s\n", printable(n.Describe()))
		}
	}
	if cfg.Reset != nil {
		for _, sv := range cfg.Reset.Subvolumes {
			persist := "persisting nothing"
			if len(sv.Persist) > 0 {
				persist = "persisting " + strings.Join(printableAll(sv.Persist), ", ")
			}
			fmt.Fprintf(stdout, "  reset %s at every boot to clean snapshot %s, %s, keeping %s previous states\n",
				printable(sv.Path), printable(sv.Clean), persist, describeKeep(sv.Keep))
		}
		for _, w := range cfg.ResetWarnings() {
			fmt.Fprintf(stderr, "subvault check-config: warning: %s\n", printableText(w))
		}
	}
	if mode, readable := cfg.NotifyReadable(); readable {
		fmt.Fprintf(stderr, "subvault check-config: warning: %s\n", printableText(cfg.NotifyReadableWarning(mode)))
	}
	return exitOK
}

// describeTarget says where a target is, for a person.
func describeTarget(t *config.Target) string {
	if t.UUID != "" {
		return "btrfs filesystem UUID " + t.UUID + ", directory " + t.Subdir
	}
	return "directory " + t.Path
}

// describeKeep says what a keep_snapshots-like policy keeps: "last 10,
// daily 7", or "the newest only" when every count is 0 (the newest copy on
// a target is always kept).
func describeKeep(k config.KeepSnapshots) string {
	var parts []string
	for _, c := range []struct {
		name string
		n    int
	}{{"last", k.Last}, {"hourly", k.Hourly}, {"daily", k.Daily}, {"weekly", k.Weekly}, {"monthly", k.Monthly}} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", c.name, c.n))
		}
	}
	if len(parts) == 0 {
		return "the newest only"
	}
	return strings.Join(parts, ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/spf13/cobra"
)

const logsAbout = `Shows the daemon's journal entries, all of them or those of one plan
(through journalctl, with the fields the daemon logs: SUBVAULT_PLAN,
SUBVAULT_JOB, SUBVAULT_EVENT, MESSAGE_ID). Options after -- go to journalctl
as they are, e.g. "subvault logs home -- --since today -o verbose".`

type logsOptions struct {
	follow bool
	lines  int
	job    string
}

func newLogsCommand() *cobra.Command {
	var opts logsOptions
	cmd := &cobra.Command{
		Use:     "logs [PLAN] [--job ID] [-f] [-n N] [-- JOURNALCTL-OPTIONS]",
		Short:   "show the daemon's journal entries, of one plan or all",
		Long:    logsAbout,
		GroupID: groupStatus,
		Args: func(cmd *cobra.Command, args []string) error {
			return atMost(1)(cmd, beforeDash(cmd, args))
		},
		ValidArgsFunction: completeArgs(planNames),
		RunE: runs(func(cmd *cobra.Command, args []string) int {
			pos := beforeDash(cmd, args)
			return runLogs(cmd.OutOrStdout(), cmd.ErrOrStderr(), pos, args[len(pos):], opts)
		}),
	}
	cmd.Flags().BoolVarP(&opts.follow, "f", "f", false, "follow: print new entries as they come")
	cmd.Flags().IntVarP(&opts.lines, "n", "n", 0, "print only the last `N` entries (0: all)")
	cmd.Flags().StringVar(&opts.job, "job", "", "only the entries of job `ID`")
	completeFlag(cmd, "job", daemonList(jobIDs(false)))
	return cmd
}

// beforeDash is the positional arguments before "--".
func beforeDash(cmd *cobra.Command, args []string) []string {
	if n := cmd.ArgsLenAtDash(); n >= 0 {
		return args[:n]
	}
	return args
}

// runLogs runs journalctl for the entries of the plan in pos, if any; extra
// are journalctl's own options.
func runLogs(stdout, stderr io.Writer, pos, extra []string, opts logsOptions) int {
	var plan string
	if len(pos) > 0 {
		plan = pos[0]
	}
	argv := []string{"--no-pager", "-o", "short-iso", "SYSLOG_IDENTIFIER=subvault"}
	if plan != "" {
		argv = append(argv, "SUBVAULT_PLAN="+plan)
	}
	if opts.job != "" {
		if _, err := parseJobID(opts.job); err != nil {
			fmt.Fprintf(stderr, "subvault logs: %v\n", err)
			return exitUsage
		}
		argv = append(argv, "SUBVAULT_JOB="+opts.job)
	}
	if opts.follow {
		argv = append(argv, "--follow")
	}
	if opts.lines > 0 {
		argv = append(argv, "--lines", fmt.Sprint(opts.lines))
	}
	argv = append(argv, extra...)
	cmd := exec.Command("journalctl", argv...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok { //nolint:errorlint // Run returns it unwrapped
			return ee.ExitCode()
		}
		fmt.Fprintf(stderr, "subvault logs: cannot run journalctl: %v (it comes with systemd)\n", err)
		return exitFailure
	}
	return exitOK
}

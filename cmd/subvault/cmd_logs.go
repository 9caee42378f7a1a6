package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
)

const logsAbout = `Shows the daemon's journal entries, all of them or those of one plan
(through journalctl, with the fields the daemon logs: SUBVAULT_PLAN,
SUBVAULT_JOB, SUBVAULT_EVENT, MESSAGE_ID). Options after -- go to journalctl
as they are, e.g. "subvault logs home -- --since today -o verbose".`

func runLogs(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("logs", "[PLAN] [--job ID] [-f] [-n N] [-- JOURNALCTL-OPTIONS]", logsAbout, stdout, stderr)
	follow := fs.Bool("f", false, "follow: print new entries as they come")
	lines := fs.Int("n", 0, "print only the last `N` entries (0: all)")
	job := fs.String("job", "", "only the entries of job `ID`")
	var plan string
	if len(args) > 0 && args[0] != "--" && (len(args[0]) == 0 || args[0][0] != '-') {
		plan, args = args[0], args[1:]
	}
	var extra []string
	for i, a := range args {
		if a == "--" {
			extra, args = args[i+1:], args[:i]
			break
		}
	}
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	argv := []string{"--no-pager", "-o", "short-iso", "SYSLOG_IDENTIFIER=subvault"}
	if plan != "" {
		argv = append(argv, "SUBVAULT_PLAN="+plan)
	}
	if *job != "" {
		if _, err := parseJobID(*job); err != nil {
			fmt.Fprintf(stderr, "subvault logs: %v\n", err)
			return exitUsage
		}
		argv = append(argv, "SUBVAULT_JOB="+*job)
	}
	if *follow {
		argv = append(argv, "--follow")
	}
	if *lines > 0 {
		argv = append(argv, "--lines", fmt.Sprint(*lines))
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

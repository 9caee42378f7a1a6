package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/subvault/subvault/internal/testutil"
)

// TestLogsAsksJournalctlForThePlansEntries checks the journalctl command
// line `subvault logs` makes (journalctl itself is exercised by the
// end-to-end test under systemd): the daemon's identifier, the plan's and
// the job's fields, and the options after -- passed on.
func TestLogsAsksJournalctlForThePlansEntries(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteFile(t, filepath.Join(dir, "journalctl"), "#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
	if err := os.Chmod(filepath.Join(dir, "journalctl"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	code, out, errOut := runCLI(t, "logs", "home", "--job", "7", "-n", "20", "--", "--since", "today")
	want := "--no-pager\n-o\nshort-iso\nSYSLOG_IDENTIFIER=subvault\nSUBVAULT_PLAN=home\nSUBVAULT_JOB=7\n--lines\n20\n--since\ntoday\n"
	if code != exitOK || out != want {
		t.Errorf("logs: exit %d, stderr %q, journalctl got:\n%s\nwant:\n%s", code, errOut, out, want)
	}
	if code, _, errOut = runCLI(t, "logs", "--job", "x"); code != exitUsage || !strings.Contains(errOut, "not a job id") {
		t.Errorf("logs --job x: exit %d, %q", code, errOut)
	}
}

package main

import (
	"bytes"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"frobnicate"}, {"check-config", "--nope"}, {"check-config", "extra"}} {
		if code, _, errOut := runCLI(t, args...); code != exitUsage || errOut == "" {
			t.Errorf("subvault %q: exit %d, stderr %q; want %d and a message", args, code, errOut, exitUsage)
		}
	}
}

func TestHelpGoesToStdout(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"check-config", "--help"}} {
		code, out, _ := runCLI(t, args...)
		if code != exitOK || !strings.Contains(out, "Usage: subvault") {
			t.Errorf("subvault %q: exit %d, stdout %q", args, code, out)
		}
	}
}

func TestVersionIsStamped(t *testing.T) {
	old := version
	version = "1.2.3-test"
	defer func() { version = old }()
	if _, out, _ := runCLI(t, "version"); !strings.HasPrefix(out, "subvault 1.2.3-test ") {
		t.Errorf("version output %q", out)
	}
}

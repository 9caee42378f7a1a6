package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
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

// A wrong command line is one line on stderr, which says how to get the
// usage, and exit 2; nothing on stdout.
func TestUsageErrorsAreOneLine(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `subvault: unknown command "frobnicate"; run "subvault --help" for the list`},
		{[]string{"stauts"}, `unknown command "stauts" (did you mean status?)`},
		{[]string{"--nope"}, `subvault: unknown flag: --nope`},
		{[]string{"status", "--nope"}, `subvault status: unknown flag: --nope; run "subvault status --help" for its usage`},
		{[]string{"status", "-nope"}, `subvault status: unknown flag: --nope`},
		{[]string{"jobs", "--limit", "x"}, `subvault jobs: invalid value "x" for --limit: not a number`},
		{[]string{"check-config", "--config"}, `subvault check-config: flag needs an argument: --config`},
		{[]string{"check-config", "extra"}, `subvault check-config: unexpected argument "extra"; run "subvault check-config --help" for its usage`},
		{[]string{"check-config", "--json"}, `subvault check-config: unknown flag: --json`},
		{[]string{"snapshots"}, `subvault snapshots: expects a PLAN; run "subvault snapshots --help" for its usage`},
		{[]string{"run", "frob"}, `subvault run: unknown job kind "frob" (only backup so far)`},
		{[]string{"run", "backup", "a", "b"}, `subvault run backup: unexpected argument "b"; run "subvault run backup --help" for its usage`},
		{[]string{"run", "--nope"}, `subvault run: unknown flag: --nope`},
		{[]string{"logs", "a", "b", "--", "c"}, `subvault logs: unexpected argument "b"`},
		{[]string{"completion", "tcsh"}, `subvault completion: expects bash, zsh or fish`},
	} {
		code, out, errOut := runCLI(t, c.args...)
		if code != exitUsage || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, c.want) {
			t.Errorf("subvault %q: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", c.args, code, out, errOut, c.want)
		}
	}
	// Without a command: the list of commands, on stderr.
	if code, out, errOut := runCLI(t); code != exitUsage || out != "" || !strings.HasPrefix(errOut, "subvault ") || !strings.Contains(errOut, "\nLook:\n") {
		t.Errorf("subvault: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// The options every command of a kind takes may come before the command,
// and any option may be spelt with one dash: the command gets them all the
// same.
func TestOptionsBeforeTheCommandAndWithOneDash(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	for _, args := range [][]string{
		{"--config", missing, "check-config"},
		{"--config=" + missing, "check-config", "--quiet"},
		{"-config", missing, "check-config"},
		{"check-config", "-config=" + missing},
		{"--config", missing, "run", "backup", "home"},
		{"run", "--config", missing, "backup", "home"},
		{"run", "backup", "-config", missing, "home"},
	} {
		code, out, errOut := runCLI(t, args...)
		if code != exitFailure || out != "" || !strings.Contains(errOut, missing) {
			t.Errorf("subvault %q: exit %d, stdout %q, stderr %q; want 1 and the configuration %s named", args, code, out, errOut, missing)
		}
	}
	// A bus nobody listens on: the client commands say so, whichever side
	// of the command --bus and --json are.
	bus := "unix:path=" + filepath.Join(t.TempDir(), "no-bus")
	for _, args := range [][]string{
		{"--bus", bus, "status"},
		{"--json", "--bus", bus, "plans"},
		{"-bus", bus, "-json", "jobs", "--limit", "3"},
		{"status", "-json", "-bus=" + bus},
		{"--bus", bus, "snapshots", "home"},
	} {
		code, out, errOut := runCLI(t, args...)
		if code != exitUnreachable || out != "" || !strings.Contains(errOut, "no-bus") {
			t.Errorf("subvault %q: exit %d, stdout %q, stderr %q; want %d and the bus named", args, code, out, errOut, exitUnreachable)
		}
	}
}

func TestTwoDashes(t *testing.T) {
	t.Parallel()
	root := newRootCommand()
	for in, want := range map[string]string{
		"-bus x status":                    "--bus x status",
		"status -json -bus=x":              "status --json --bus=x",
		"notify --terminal -xterm":         "notify --terminal -xterm", // a value stays as it is
		"logs -f -n 5 home -- -o verbose":  "logs -f -n 5 home -- -o verbose",
		"logs -job 3 -n -1":                "logs --job 3 -n -1",
		"-h":                               "-h",
		"restore home latest - --in-place": "restore home latest - --in-place",
	} {
		if got := strings.Join(twoDashes(root, strings.Fields(in)), " "); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
	// One name, one kind: an option that takes a value in one command
	// takes one in all, else twoDashes would take a word for its value.
	kinds := map[string]string{}
	var visit func(*cobra.Command)
	visit = func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			kind := "value"
			if f.NoOptDefVal != "" {
				kind = "switch"
			}
			if k, ok := kinds[f.Name]; ok && k != kind {
				t.Errorf("--%s is a %s in %s and a %s elsewhere", f.Name, kind, c.CommandPath(), k)
			}
			kinds[f.Name] = kind
		})
		for _, sub := range c.Commands() {
			visit(sub)
		}
	}
	visit(root)
}

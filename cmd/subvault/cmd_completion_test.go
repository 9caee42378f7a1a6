package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/internal/testutil"
)

// completions asks `subvault __complete ARGS...` (what the shells' scripts
// run) and returns the values offered, without their descriptions.
func completions(t *testing.T, args ...string) []string {
	t.Helper()
	code, out, errOut := runCmd(t, subvaultCmd(append([]string{"__complete"}, args...)...))
	if code != exitOK {
		t.Fatalf("subvault __complete %q: exit %d\n%s", args, code, errOut)
	}
	var values []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(line, ":") { // the directive
			continue
		}
		value, _, _ := strings.Cut(line, "\t")
		values = append(values, value)
	}
	return values
}

// TestBashCompletesFromTheDaemon: in an interactive bash on a terminal,
// with the bash-completion package loaded, as a user's bash has it, and
// the script of `subvault completion bash` where make install puts it, a
// Tab after
// "subvault backup h" completes the plan name from a daemon on a private
// bus: the one DBUS_SYSTEM_BUS_ADDRESS names (the default --bus system),
// or the one --bus names before the command. Then what the other
// completions offer after a backup: archive ids, snapshot names, job ids.
func TestBashCompletesFromTheDaemon(t *testing.T) {
	bash := testutil.RequireCommand(t, "bash", "bash")
	const bashCompletion = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(bashCompletion); err != nil {
		testutil.SkipOrFail(t, bashCompletion+" (apt-get install bash-completion): "+err.Error())
	}
	e := newAPIEnv(t, 1)
	e.startDaemon(t)

	// subvault on PATH is the test binary (the script runs it to ask for
	// the completions).
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin", "subvault")
	testutil.WriteFile(t, bin, "#!/bin/sh\nSUBVAULT_TEST_AS_MAIN=1 exec "+os.Args[0]+" \"$@\"\n")
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	code, script, errOut := runCLI(t, "completion", "bash")
	if code != exitOK || !strings.Contains(script, "__start_subvault") {
		t.Fatalf("subvault completion bash: exit %d, %s\n%s", code, errOut, script)
	}
	// Where make install PREFIX=dir puts it: bash-completion loads it from
	// there (XDG_DATA_DIRS, as /usr/local/share and /usr/share by default)
	// when subvault is first completed.
	testutil.WriteFile(t, filepath.Join(dir, "share", "bash-completion", "completions", "subvault"), script)
	testutil.WriteFile(t, filepath.Join(dir, "bashrc"), "PS1='$ '\n. "+bashCompletion+"\n")

	pty := testutil.NewPTY(t, 200, 50)
	cmd := exec.Command(bash, "--noprofile", "--rcfile", filepath.Join(dir, "bashrc"), "-i")
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "HOME="+dir, "TERM=dumb",
		"INPUTRC=/dev/null", "HISTFILE=/dev/null", "XDG_DATA_DIRS="+filepath.Join(dir, "share"), "DBUS_SYSTEM_BUS_ADDRESS="+e.bus.Address)
	pty.Attach(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	screen := func(what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(pty.Output.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q on the terminal:\n%s", what, pty.Output.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	screen("$ ")
	for _, c := range []struct{ typed, completed string }{
		{"subvault backup h\t", "subvault backup home "},
		{"subvault --bus " + e.bus.Address + " snapshots ho\t", "subvault --bus " + e.bus.Address + " snapshots home "},
	} {
		if err := pty.Type(c.typed); err != nil {
			t.Fatal(err)
		}
		screen(c.completed)
		// Ctrl-A and echo: the line bash would run is printed, not run.
		if err := pty.Type("\x01echo \r"); err != nil {
			t.Fatal(err)
		}
		screen("\n" + strings.TrimSpace(c.completed) + "\r\n")
	}
	if err := pty.Type("exit\r"); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("bash: %v", err)
	}
	t.Logf("the bash session:\n%s", strings.ReplaceAll(pty.Drain(), "\r", ""))

	// The other lists, once a backup made a job, an archive and a kept
	// snapshot.
	if code, out, errOut := e.cli(t, "backup", "home", "--wait"); code != exitOK {
		t.Fatalf("backup: exit %d\n%s%s", code, out, errOut)
	}
	bus := []string{"--bus", e.bus.Address}
	if got := completions(t, append(bus, "job", "")...); !slices.Contains(got, "1") {
		t.Errorf("job ids: %q, want 1 among them", got)
	}
	if got := completions(t, append(bus, "cancel", "")...); len(got) != 0 {
		t.Errorf("cancel offers %q, want nothing (no job is queued or running)", got)
	}
	archives := completions(t, append(bus, "restore", "home", "")...)
	if len(archives) != 2 || archives[0] != "latest" || !regexp.MustCompile(`^[0-9a-f]{8}$`).MatchString(archives[1]) {
		t.Errorf("restore home offers %q, want latest and the archive's short id", archives)
	}
	snapshots := completions(t, append(bus, "rollback", "home", "")...)
	if len(snapshots) != 1 || !strings.HasPrefix(snapshots[0], "subvault@home@") {
		t.Errorf("rollback home offers %q, want the kept snapshot", snapshots)
	}
	if got := completions(t, append(bus, "rollback", "home", snapshots[0], "")...); !slices.Equal(got, []string{e.fs.Path("home")}) {
		t.Errorf("rollback home SNAPSHOT offers %q, want the plan's subvolume", got)
	}
	if got := completions(t, append(bus, "diff", "home", "l")...); !slices.Equal(got, []string{"latest", "live"}) {
		t.Errorf("diff home l offers %q, want latest and live", got)
	}
	if got := completions(t, append(bus, "jobs", "--plan", "")...); !slices.Equal(got, []string{"home"}) {
		t.Errorf("jobs --plan offers %q, want home", got)
	}
}

// TestCompletionWithoutTheDaemon: with no daemon on the bus the
// completions offer nothing, at once, and start nothing.
func TestCompletionWithoutTheDaemon(t *testing.T) {
	bus := testutil.NewBus(t)
	start := time.Now()
	if got := completions(t, "--bus", bus.Address, "backup", ""); len(got) != 0 {
		t.Errorf("offered %q with no daemon", got)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %v with no daemon", took)
	}
	// What needs no daemon is offered all the same.
	if got := completions(t, "completion", ""); !slices.Equal(got, []string{"bash", "zsh", "fish"}) {
		t.Errorf("completion offers %q", got)
	}
	if got := completions(t, "waybar", "--format", ""); !slices.Equal(got, []string{"waybar", "i3blocks"}) {
		t.Errorf("waybar --format offers %q", got)
	}
}

// Each shell's script is what that shell loads: zsh's a #compdef file,
// fish's complete commands, all calling subvault __complete.
func TestCompletionScripts(t *testing.T) {
	t.Parallel()
	for shell, want := range map[string]string{"bash": "complete -o default -F __start_subvault subvault", "zsh": "#compdef subvault", "fish": "complete -c subvault"} {
		code, out, errOut := runCLI(t, "completion", shell)
		if code != exitOK || !strings.Contains(out, want) || !strings.Contains(out, "__complete") || errOut != "" {
			t.Errorf("subvault completion %s: exit %d, stderr %q, script without %q:\n%.400s", shell, code, errOut, want, out)
		}
	}
	if code, _, errOut := runCLI(t, "completion", "tcsh"); code != exitUsage || strings.Count(errOut, "\n") != 1 {
		t.Errorf("completion tcsh: exit %d, %q", code, errOut)
	}
}

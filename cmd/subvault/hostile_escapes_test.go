package main

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/internal/testutil"
)

// terminalAttack is a file name a local user can give, which a terminal
// acts on if it is printed raw: an OSC that retitles the window, a CSI that
// clears the screen, a CSI started by the one-byte C1 introducer U+009B,
// and U+202E, which shows the rest of the line backwards ("txt.exe" reads
// "exe.txt").
const terminalAttack = "\x1b]0;pwned\x07\x1b[2J\u009b31m\u202etxt.exe"

// terminalAttackShown is terminalAttack as the command line prints it.
const terminalAttackShown = `\x1b]0;pwned\x07\x1b[2J\u009b31m\u202etxt.exe`

func init() {
	// plant-escape-names DIR N makes DIR/terminalAttack holding N files of
	// 1 MiB, so that restic spends a while in there and reports them as
	// its current files; plant-escape-names DIR 0 adds one more file in
	// there, for a diff to find.
	testutil.RegisterHostile("plant-escape-names", func(args []string) error {
		dir := filepath.Join(args[0], terminalAttack)
		n, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		if n == 0 {
			return os.WriteFile(filepath.Join(dir, "late-"+terminalAttack), []byte("late"), 0o644)
		}
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		buf := make([]byte, 1<<20)
		for i := range n {
			if _, err := rand.Read(buf); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%03d", terminalAttack, i)), buf, 0o644); err != nil {
				return err
			}
		}
		return nil
	})
}

// ownSequences are the escapes the command line writes itself: the
// progress bar's return-and-erase, its colours, and the terminal's line
// ends.
var ownSequences = regexp.MustCompile(`\r\x1b\[K|\x1b\[(0|2|31|32|33)m|\r\n`)

// terminalControls lists what in out, beyond ownSequences, a terminal
// would act on: C0 controls but tab and newline, DEL, C1 controls, the
// bidirectional overrides and isolates, and bytes that are not UTF-8.
func terminalControls(out string) []string {
	rest := ownSequences.ReplaceAllString(out, "")
	var found []string
	for i, r := range rest {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(rest[i:], "\uFFFD"):
			found = append(found, fmt.Sprintf("byte %#x", rest[i]))
		case r == '\n' || r == '\t':
		case r < 0x20, r >= 0x7f && r <= 0x9f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			found = append(found, fmt.Sprintf("%U", r))
		}
	}
	return found
}

// checkNoTerminalControls fails the test when what command printed holds a
// character a terminal acts on; when shown is set, it must also show the
// planted name escaped.
func checkNoTerminalControls(t *testing.T, command, out string, shown bool) {
	t.Helper()
	if found := terminalControls(out); len(found) > 0 {
		t.Errorf("%s printed raw terminal controls %v:\n%q", command, found, out)
	}
	if shown && !strings.Contains(out, terminalAttackShown) {
		t.Errorf("%s does not show the planted name as %s:\n%q", command, terminalAttackShown, out)
	}
}

// TestHostileFileNamesReachNoTerminal (docs/security.md, attack 8): a user names a
// directory and files in a backed-up subvolume with terminal escapes (OSC,
// CSI, a C1 control, U+202E); while root backs it up, follows it, lists
// and compares, no command prints them raw, on a terminal or piped, and
// each shows them escaped.
func TestHostileFileNamesReachNoTerminal(t *testing.T) {
	e := newAPIEnv(t, 0)
	// The user reaches the subvolume, as /home is reached.
	if err := os.Chmod(filepath.Dir(e.fs.Mount), 0o755); err != nil {
		t.Fatal(err)
	}
	box := e.fs.Path("home", "box")
	if err := os.Mkdir(box, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(box, testutil.NobodyUID, testutil.NobodyGID); err != nil {
		t.Fatal(err)
	}
	if out, err := testutil.RunHostile(t, 2*time.Minute, "plant-escape-names", box, "200"); err != nil {
		t.Fatalf("the user could not plant the names: %v: %s", err, out)
	}
	e.startDaemon(t)

	// Root follows every job on a terminal, and backs up on another.
	terminal := func(args ...string) (*testutil.PTY, *exec.Cmd, chan error) {
		pty := testutil.NewPTY(t, 400, 40)
		cmd := subvaultCmd(append(args, "--bus", e.bus.Address)...)
		cmd.Env = append(cmd.Env, "TERM=xterm", "NO_COLOR=")
		pty.Attach(cmd)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		return pty, cmd, done
	}
	watchPTY, watch, watchDone := terminal("watch")
	time.Sleep(time.Second) // subscribed
	backupPTY, _, backupDone := terminal("backup", "home")

	// Once restic reads the planted files, it is stopped there, so that
	// every command below sees the job running with one as its current file.
	conn, err := dbus.Connect(e.bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	manager := conn.Object(contract.BusName, contract.ManagerPath)
	waitFor(t, 2*time.Minute, func() int {
		var files []string
		err := manager.Call(contract.ManagerInterface+".GetJobFiles", 0, uint32(1)).Store(&files)
		if err == nil && len(files) > 0 && strings.Contains(files[0], "pwned") {
			return 1
		}
		return 0
	})
	restic := testutil.ProcessBelow(os.Getpid(), "restic", "backup")
	if restic == 0 {
		t.Fatal("restic's backup is not running")
	}
	if err := syscall.Kill(restic, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			_ = syscall.Kill(restic, syscall.SIGCONT)
			resumed = true
		}
	}
	t.Cleanup(resume)

	for _, c := range []struct {
		args       []string
		piped, tty bool // the running job's current file is printed
	}{
		{[]string{"job", "1"}, true, true},
		// status shows no file name: the daemon names files only to
		// GetJobFiles, which job, watch and backup call.
		{[]string{"status"}, false, false},
		{[]string{"jobs"}, false, false},
		{[]string{"plans"}, false, false},
	} {
		code, out, errOut := e.cli(t, c.args...)
		if code != exitOK {
			t.Errorf("subvault %v: exit %d: %s", c.args, code, errOut)
		}
		checkNoTerminalControls(t, "piped subvault "+strings.Join(c.args, " "), out+errOut, c.piped)
		pty, _, done := terminal(c.args...)
		<-done
		checkNoTerminalControls(t, "subvault "+strings.Join(c.args, " ")+" on a terminal", pty.Drain(), c.tty)
	}
	resume()

	select {
	case err := <-backupDone:
		if err != nil {
			t.Errorf("backup on a terminal: %v", err)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("the backup did not end")
	}
	checkNoTerminalControls(t, "subvault backup (--wait) on a terminal", backupPTY.Drain(), true)

	// The user adds a file; diff lists it, against the live subvolume.
	if out, err := testutil.RunHostile(t, time.Minute, "plant-escape-names", box, "0"); err != nil {
		t.Fatalf("the user could not add a file: %v: %s", err, out)
	}
	for _, args := range [][]string{
		{"diff", "home", "latest", "live"},
		{"archives", "home"},
		{"snapshots", "home"},
		{"restore", "home", "latest", filepath.Join(t.TempDir(), "restored"), "--wait"},
	} {
		code, out, errOut := e.cli(t, args...)
		if code != exitOK && (args[0] != "diff" || code != exitFailure) {
			t.Errorf("subvault %v: exit %d: %s", args, code, errOut)
		}
		checkNoTerminalControls(t, "piped subvault "+strings.Join(args, " "), out+errOut, args[0] == "diff")
		if args[0] == "diff" {
			pty, _, done := terminal(args...)
			<-done
			checkNoTerminalControls(t, "subvault diff on a terminal", pty.Drain(), true)
		}
	}

	// --json keeps the names as they are for a program, and escapes every
	// control character, so that it prints safely on a terminal too.
	code, out, errOut := e.cli(t, "diff", "home", "latest", "live", "--json")
	var changes []struct{ Kind, Path string }
	if code != exitFailure || json.Unmarshal([]byte(out), &changes) != nil {
		t.Fatalf("diff --json: exit %d: %s%s", code, out, errOut)
	}
	found := false
	for _, c := range changes {
		found = found || strings.HasSuffix(c.Path, "/late-"+terminalAttack)
	}
	if !found {
		t.Errorf("diff --json does not list the new file by its name: %+v", changes)
	}
	checkNoTerminalControls(t, "piped subvault diff --json", out+errOut, false)

	_ = watch.Process.Signal(syscall.SIGTERM)
	<-watchDone
	checkNoTerminalControls(t, "subvault watch on a terminal", watchPTY.Drain(), true)
}

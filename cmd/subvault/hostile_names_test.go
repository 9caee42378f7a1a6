package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/internal/testutil"
)

// allowNobody puts uid 65534 in the plan's allow_users.
func (e *apiEnv) allowNobody(t *testing.T) {
	t.Helper()
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(cfg), "      last: 5\n", "      last: 5\n    allow_users: [65534]\n", 1)
	if !strings.Contains(edited, "allow_users") {
		t.Fatalf("cannot edit the configuration:\n%s", cfg)
	}
	testutil.WriteFile(t, e.config, edited)
}

// docs/security.md, attack 7: Diff names files, so it is no read for a plan's
// allow_users. A user allowed to back up the plan asked Diff for the names
// inside root's 0700 directory, even of a file made after the last backup
// (a live oracle of any directory the plan covers). Now Diff and DiffTo
// need the restore authorization (root, or polkit's admin), and that user
// gets AccessDenied and no name; root's subvault diff still lists them.
func TestHostileDiffNamesNeedTheRestoreAuthorization(t *testing.T) {
	testutil.RequireNobody(t)
	e := newAPIEnv(t, 1)
	e.allowNobody(t)
	private := e.fs.Path("home", "ann")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, private+"/ann-private-plans.txt", "x")
	e.startDaemon(t)
	e.mustCLI(t, "backup", "home", "--wait")
	testutil.WriteFile(t, private+"/ann-made-after-the-backup.txt", "x")

	for _, c := range []struct{ a, b, how string }{
		{"latest", "live", "reply"},
		{"live", "latest", "reply"},
		{"latest", "live", "fd"},
	} {
		out, err := testutil.RunHostile(t, 2*time.Minute, "diff", e.bus.Address, "home", c.a, c.b, c.how)
		if err != nil {
			t.Fatal(err)
		}
		method := map[string]string{"reply": "Diff", "fd": "DiffTo"}[c.how]
		rows := hostileRows(out)
		var leaked []string
		for _, r := range rows {
			if strings.Contains(r, "ann-") {
				leaked = append(leaked, r)
			}
		}
		t.Logf("as uid 65534 in allow_users, %s %s %s: %d rows, %d of them in root's 0700 %s; %s", method, c.a, c.b,
			len(rows), len(leaked), private, lastLine(out))
		if len(leaked) > 0 {
			t.Errorf("as uid 65534, %s %s %s named files in root's 0700 directory: %v", method, c.a, c.b, leaked)
		}
		if !strings.Contains(out, "error "+contract.ErrorAccessDenied+": ") {
			t.Errorf("as uid 65534, %s %s %s: want %s\n%s", method, c.a, c.b, contract.ErrorAccessDenied, out)
		}
	}
	// Root's subvault diff names the new file (through DiffTo).
	code, out, errOut := e.cli(t, "diff", "home", "latest", "live")
	if code != exitFailure || !strings.Contains(out, "+  "+private+"/ann-made-after-the-backup.txt\n") {
		t.Errorf("root's subvault diff home latest live: exit %d\n%s%s", code, out, errOut)
	}
}

// docs/security.md, attack 7: a running job's CurrentFiles told every user on the bus
// (even one not allowed for the plan) which files restic was reading, by
// Get and in PropertiesChanged. Now CurrentFiles is empty on the bus, and
// the names go only to a caller with the restore authorization, through
// GetJobFiles.
func TestHostileJobFilesHiddenFromOtherUsers(t *testing.T) {
	testutil.RequireNobody(t)
	e := newAPIEnv(t, 400) // a backup that reads for some seconds
	e.startDaemon(t)
	id := e.startJob(t, "StartBackup", "s", "home")
	path := contract.JobPath(id)
	snoop := testutil.StartHostile(t, "snoop", e.bus.Address, string(path), "180")

	// Root, meanwhile, asks with its authorization.
	conn, err := dbus.Connect(e.bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rootSaw := map[string]bool{}
	asks := 0
	var lastErr error
ask:
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		select {
		case <-snoop.Done(): // the job has ended
			break ask
		default:
		}
		var names []string
		err := conn.Object(contract.BusName, contract.ManagerPath).Call(contract.ManagerInterface+".GetJobFiles", 0, id).Store(&names)
		if err != nil {
			lastErr = err
			break
		}
		asks++
		for _, n := range names {
			rootSaw[n] = true
		}
	}
	if err := snoop.Wait(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	out := snoop.Output.String()
	t.Logf("uid 65534, not allowed for the plan, while job %d ran:\n%s", id, out)
	t.Logf("root's GetJobFiles: %d names in %d answers (then %v)", len(rootSaw), asks, lastErr)
	get := regexp.MustCompile(`(?m)^get: (\d+) names in (\d+) reads`).FindStringSubmatch(out)
	sig := regexp.MustCompile(`(?m)^signal: (\d+) names in (\d+) signals`).FindStringSubmatch(out)
	if get == nil || sig == nil {
		t.Fatalf("the snoop said:\n%s", out)
	}
	if n, _ := strconv.Atoi(get[1]); n != 0 {
		t.Errorf("uid 65534 read %d file names from CurrentFiles with Get", n)
	}
	if n, _ := strconv.Atoi(sig[1]); n != 0 {
		t.Errorf("uid 65534 got %d file names from CurrentFiles in PropertiesChanged", n)
	}
	if reads, _ := strconv.Atoi(get[2]); reads == 0 {
		t.Error("uid 65534 never read CurrentFiles: the check proved nothing")
	}
	if len(rootSaw) == 0 {
		t.Errorf("root's GetJobFiles never named a file (%d answers, then %v)", asks, lastErr)
	}
	for n := range rootSaw {
		if !strings.HasPrefix(n, e.fs.Path("home")+"/") {
			t.Errorf("GetJobFiles named %q, not a file of the plan", n)
		}
	}
	if result := e.signals.waitRemoved(t, id, 3*time.Minute); result != "done" {
		t.Errorf("the backup ended %s", result)
	}
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// docs/security.md, attack 7: a job's Error, and its plan's LastError, go to every
// user on the bus. A partial backup's named the files restic could not
// read; now it counts them, and the daemon's log names them. (restic here
// is a wrapper that reports one unreadable file after a real backup, as
// restic 0.14 does: a JSON error line and exit 3.)
func TestHostilePartialBackupErrorNamesNoFile(t *testing.T) {
	testutil.RequireNobody(t)
	e := newAPIEnv(t, 1)
	wrapper := filepath.Join(e.state, "restic-partial")
	testutil.WriteFile(t, wrapper, fmt.Sprintf(`#!/bin/sh
for a in "$@"; do
  if [ "$a" = backup ]; then
    %[1]q "$@" || exit $?
    echo '{"message_type":"error","error":{"Op":"open","Path":"/home/ann/ann-secret-plans.txt","Err":13},"during":"archival","item":"/home/ann/ann-secret-plans.txt"}' >&2
    exit 3
  fi
done
exec %[1]q "$@"
`, e.restic))
	if err := os.Chmod(wrapper, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, e.config, strings.Replace(string(cfg), "restic: "+e.restic, "restic: "+wrapper, 1))
	e.startDaemon(t)
	code, out, errOut := e.cli(t, "backup", "home", "--wait")
	t.Logf("subvault backup home --wait: exit %d\n%s%s", code, out, errOut)
	if code != exitPartial {
		t.Fatalf("backup: exit %d, want %d (partial)", code, exitPartial)
	}
	for _, p := range []struct{ path, iface, prop string }{
		{string(contract.JobPath(1)), contract.JobInterface, "Error"},
		{string(contract.PlanPath("home")), contract.PlanInterface, "LastError"},
	} {
		got, err := testutil.AsNobody("busctl", "--address="+e.bus.Address, "get-property", contract.BusName, p.path, p.iface, p.prop).CombinedOutput()
		t.Logf("as uid 65534, %s: %v %s", p.prop, err, got)
		if err != nil || strings.Contains(string(got), "ann-secret") || !strings.Contains(string(got), "could not read 1 file(s)") {
			t.Errorf("as uid 65534, %s %s: %v %s (want a count, no name)", p.path, p.prop, err, got)
		}
	}
}

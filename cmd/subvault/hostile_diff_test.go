package main

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/internal/testutil"
)

// docs/security.md, attack 2: a Diff whose reply is over dbus-daemon's 32 MiB
// message limit. A user makes 10,000 files with paths near PATH_MAX (3.8 KB
// each: the ~38 MB of 100,000 files with 200-byte names, made in seconds)
// after the last backup; root's Diff of that backup with the live
// subvolume would answer them all in one reply. The bus would drop the
// daemon for it, and every caller after that would get "not provided by
// any .service files" while the daemon ran on. Instead Diff refuses,
// naming DiffTo; the daemon stays on the bus; and subvault diff, which
// takes the rows through a pipe (DiffTo), prints every one of them.
func TestHostileBigDiffKeepsTheDaemonOnTheBus(t *testing.T) {
	testutil.RequireNobody(t)
	e := newAPIEnv(t, 1)
	openToNobody(t, e.fs.Mount)
	mine := e.fs.Path("home", "nobody")
	if err := os.Mkdir(mine, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(mine, testutil.NobodyUID, testutil.NobodyGID); err != nil {
		t.Fatal(err)
	}
	e.startDaemon(t)
	e.mustCLI(t, "backup", "home", "--wait")

	const depth, files = 14, 10000
	start := time.Now()
	out, err := testutil.RunHostile(t, 3*time.Minute, "bigtree", mine, "14", "10000")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the attacker: %s (%v)", strings.TrimSpace(out), time.Since(start).Round(time.Millisecond))

	conn, err := dbus.Connect(e.bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mgr := conn.Object(contract.BusName, contract.ManagerPath)
	start = time.Now()
	var changes []struct{ Kind, Path string }
	err = mgr.Call(contract.ManagerInterface+".Diff", 0, "home", "latest", "live").Store(&changes)
	t.Logf("root's Diff latest live: %d rows, %v (%v)", len(changes), err, time.Since(start).Round(time.Millisecond))

	var plans []struct {
		Name string
		Path dbus.ObjectPath
	}
	if err := mgr.Call(contract.ManagerInterface+".ListPlans", 0).Store(&plans); err != nil {
		alive := "gone"
		if pid := testutil.ProcessBelow(os.Getpid(), "subvault.test", "daemon"); pid != 0 {
			alive = "still running"
		}
		t.Fatalf("after the Diff the daemon is off the bus (its process: %s): ListPlans: %v", alive, err)
	}
	var derr dbus.Error
	if !errors.As(err, &derr) || derr.Name != contract.ErrorFailed || !strings.Contains(derr.Error(), "DiffTo") {
		t.Errorf("Diff of a result over the reply bound: %v, want %s naming DiffTo", err, contract.ErrorFailed)
	}

	start = time.Now()
	code, out, errOut := e.cli(t, "diff", "home", "latest", "live")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	added := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "+  "+mine+"/") {
			added++
		}
	}
	t.Logf("subvault diff home latest live: exit %d, %d lines, %d MB (%v); last: %s", code, len(lines), len(out)>>20,
		time.Since(start).Round(time.Millisecond), lines[len(lines)-1])
	if code != exitFailure || errOut != "" || added != depth+files {
		t.Errorf("subvault diff: exit %d, %d paths of the attacker's added (want %d), stderr: %s", code, added, depth+files, errOut)
	}
	if want := "10014 differences: 10014 added, 0 removed, 0 changed, 0 changed type"; !strings.HasPrefix(lines[len(lines)-1], want) {
		t.Errorf("subvault diff's last line: %q, want %q...", lines[len(lines)-1], want)
	}
}

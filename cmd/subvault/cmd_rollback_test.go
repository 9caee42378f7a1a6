package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/internal/testutil"
)

const snapshotDirName = ".subvault-snapshots"

// takeSnapshot makes a snapshot of home named as a backup of plan home
// names it (job id job), without restic.
func (e *apiEnv) takeSnapshot(t *testing.T, job uint32) btrfs.Snapshot {
	t.Helper()
	home := e.fs.Path("home")
	s := btrfs.Snapshot{Plan: "home", Time: time.Now().UTC().Truncate(time.Second), JobID: job, Subvolume: home}
	s.Path = filepath.Join(home, snapshotDirName, s.Name())
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := btrfs.SnapshotReadOnly(home, s.Path); err != nil {
		t.Fatal(err)
	}
	return s
}

// richFiles adds an owner, modes, an extended attribute, a symlink and a
// hard link to home.
func richFiles(t *testing.T, home string) {
	t.Helper()
	testutil.WriteFile(t, filepath.Join(home, "etc", "app.conf"), "version=1\n")
	for _, err := range []error{
		os.Chown(filepath.Join(home, "etc", "app.conf"), 1234, 5678),
		os.Chmod(filepath.Join(home, "etc"), 0o1750),
		unix.Setxattr(filepath.Join(home, "etc", "app.conf"), "user.origin", []byte("subvault test"), 0),
		os.Symlink("etc/app.conf", filepath.Join(home, "conf-link")),
		os.Link(filepath.Join(home, "etc", "app.conf"), filepath.Join(home, "conf-hardlink")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func sameState(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	if d := testutil.DiffStates(want, got); len(d) > 0 {
		t.Errorf("%s:\n%s", what, strings.Join(d, "\n"))
	}
}

// subvault rollback: refused without a terminal or --yes, shown with
// --dry-run, refused while a backup of the plan runs; then done, and undone
// with the pinned snapshot it names.
func TestRollbackThroughTheCLI(t *testing.T) {
	e := newAPIEnv(t, 5)
	home := e.fs.Path("home")
	richFiles(t, home)
	good := e.takeSnapshot(t, 1)
	e.startDaemon(t)
	goodState := testutil.TreeState(t, good.Path, snapshotDirName)

	// A bad upgrade: one file changed, one gone, one new, and many more
	// (so that a backup runs long enough to be caught running).
	testutil.WriteFile(t, filepath.Join(home, "etc", "app.conf"), "version=2\n")
	if err := os.Remove(filepath.Join(home, "d1", "a1")); err != nil {
		t.Fatal(err)
	}
	e.addFiles(t, "upgrade", 300)
	bad := testutil.TreeState(t, home, snapshotDirName)
	unchanged := func(what string) {
		t.Helper()
		sameState(t, what+" changed home", bad, testutil.TreeState(t, home, snapshotDirName))
	}

	code, _, errOut := e.cli(t, "rollback", "home", good.Name(), home)
	if code != exitUsage || !strings.Contains(errOut, "give --yes") {
		t.Errorf("without a terminal or --yes: exit %d, %s", code, errOut)
	}
	unchanged("a refused rollback")
	code, out, errOut := e.cli(t, "rollback", "home", good.Name(), home, "--dry-run")
	if code != exitOK || !strings.Contains(out, home+" is replaced by a writable copy of snapshot "+good.Name()) {
		t.Errorf("--dry-run: exit %d, %s%s", code, out, errOut)
	}
	unchanged("--dry-run")

	// A backup of the plan is running: refused.
	id := e.startJob(t, "StartBackup", "s", "home")
	waitFor(t, time.Minute, func() int {
		out, _ := e.busctl("get-property", contract.BusName, string(contract.JobPath(id)), contract.JobInterface, "State")
		if strings.Contains(out, "running") {
			return 1
		}
		return 0
	})
	code, _, errOut = e.cli(t, "rollback", "home", good.Name(), home, "--yes")
	if code != exitFailure || !strings.Contains(errOut, "another job of plan home is running") {
		t.Errorf("during a backup: exit %d, %s", code, errOut)
	}
	t.Logf("during a backup: %s", errOut)
	if out, err := e.busctl("call", contract.BusName, string(contract.JobPath(id)), contract.JobInterface, "Cancel"); err != nil {
		t.Fatalf("cancel the backup: %v %s", err, out)
	}
	if result := e.signals.waitRemoved(t, id, time.Minute); result != "canceled" {
		t.Fatalf("the backup ended %s", result)
	}
	unchanged("a rollback during a backup")

	code, out, errOut = e.cli(t, "rollback", "home", good.Name(), home, "--yes")
	if code != exitOK {
		t.Fatalf("rollback --yes: exit %d: %s", code, errOut)
	}
	t.Logf("rollback:\n%s", out)
	// The name has backslashes: it comes quoted for the shell.
	m := regexp.MustCompile(`subvault rollback home '(subvault-pinned@[^' ]+)' ` + regexp.QuoteMeta(home)).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the rollback does not say how to undo it:\n%s", out)
	}
	pinned, rolled := m[1], out
	sameState(t, "after the rollback, home is not the snapshot", goodState, testutil.TreeState(t, home, snapshotDirName))
	code, out, _ = e.cli(t, "snapshots", "home")
	if code != exitOK || !strings.Contains(out, pinned) || !strings.Contains(out, good.Name()) {
		t.Errorf("snapshots after the rollback: exit %d\n%s", code, out)
	}

	// The undo command, run as printed by a shell (with a subvault that is
	// this test binary).
	undo := regexp.MustCompile(`to undo: (subvault rollback .*)`).FindStringSubmatch(rolled)
	if undo == nil || !strings.Contains(undo[1], pinned) {
		t.Fatalf("no undo command in:\n%s", rolled)
	}
	bin := t.TempDir()
	testutil.WriteFile(t, filepath.Join(bin, "subvault"), "#!/bin/sh\nSUBVAULT_TEST_AS_MAIN=1 exec "+os.Args[0]+" \"$@\"\n")
	if err := os.Chmod(filepath.Join(bin, "subvault"), 0o755); err != nil {
		t.Fatal(err)
	}
	sh := exec.Command("sh", "-c", undo[1]+" --yes --bus "+e.bus.Address)
	sh.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	code, out, errOut = runCmd(t, sh)
	if code != exitOK {
		t.Fatalf("%s: exit %d: %s", undo[1], code, errOut)
	}
	sameState(t, "rolled back to the pinned snapshot, home is not as before the first rollback", bad, testutil.TreeState(t, home, snapshotDirName))
	if !strings.Contains(out, "subvault rollback home 'subvault-pinned@") {
		t.Errorf("the second rollback names no pinned snapshot:\n%s", out)
	}

	code, _, errOut = e.cli(t, "rollback", "home", good.Name(), e.fs.Path("other"), "--yes")
	if code != exitUsage || !strings.Contains(errOut, "is not a subvolume of plan home") {
		t.Errorf("a path that is not the plan's: exit %d, %s", code, errOut)
	}
}

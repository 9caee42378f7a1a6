package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/api/client"
	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/internal/testutil"
)

// newRestoreEnv is the daemon on a private bus with the system bus's
// policy, restic bin, a btrfs of sizeMiB with the subvolume home, and a
// plan home whose snapshots go to snapshots/ beside it (so that home holds
// only what a test puts there, and keep_snapshots is 0).
func newRestoreEnv(t *testing.T, bin string, sizeMiB int) *apiEnv {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "busctl", "systemd")
	testutil.RequireRestic(t, bin)
	bus := testutil.NewSystemBus(t, busPolicy)
	run := newRunEnvWith(t, bin, sizeMiB)
	cfg, err := os.ReadFile(run.config)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, run.config, strings.Replace(string(cfg), "    repository: r\n",
		"    repository: r\n    snapshot_dir: "+run.fs.Path("snapshots")+"\n", 1))
	e := &apiEnv{daemonEnv: &daemonEnv{runEnv: run, bus: bus, notify: newNotifySocket(t), state: filepath.Dir(run.config)},
		called: map[string]bool{}}
	e.startDaemon(t)
	return e
}

// mustCLI runs a subvault command against the daemon and fails the test
// unless it exits 0; it returns stdout.
func (e *apiEnv) mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	start := time.Now()
	code, out, errOut := e.cli(t, args...)
	if code != exitOK {
		t.Fatalf("subvault %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	t.Logf("subvault %s (%v):\n%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), out)
	return out
}

// expectDiffs checks CompareTrees(a, b) against the differences a test
// expects, each given as the start of its line.
func expectDiffs(t *testing.T, a, b string, want ...string) {
	t.Helper()
	got := testutil.CompareTrees(t, a, b)
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = strings.HasPrefix(got[i], want[i])
	}
	if !ok {
		t.Errorf("%s against %s:\n%s\nwant %d difference(s):\n%s", a, b, strings.Join(got, "\n"), len(want), strings.Join(want, "\n"))
	}
}

// sparseDiff is what restic 0.14, which has no restore --sparse, leaves:
// the sparse file written out in full, nothing else.
func sparseDiff(version string) []string {
	if strings.HasPrefix(version, "0.14.") {
		return []string{"sparse/file: sparse (holes): a=true, b=false"}
	}
	return nil
}

// A tree with owners, modes, extended attributes, ACLs, hard links,
// symbolic links, a sparse file, names that are not UTF-8 (and, with the
// newest restic, a 1 GiB file) is backed up by the daemon, then restored by
// the daemon with --verify into a new directory and into a new subvolume:
// both are the tree, by content hash and metadata. (restic 0.14 writes the
// sparse file out; that is the one difference it may leave.)
func TestRestoreKeepsEverything(t *testing.T) {
	bins := testutil.ResticBinaries(t)
	newest := bins[len(bins)-1]
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		version := testutil.ResticVersion(bin)
		var big int64
		sizeMiB := 700
		if bin == newest {
			big, sizeMiB = 1<<30, 4096
		}
		e := newRestoreEnv(t, bin, sizeMiB)
		home := e.fs.Path("home")
		start := time.Now()
		testutil.MakeRichTree(t, home, big)
		t.Logf("tree made in %v (big file: %d bytes)", time.Since(start).Round(time.Millisecond), big)
		e.mustCLI(t, "backup", "home", "--wait")

		dir := e.fs.Path("restored-dir")
		out := e.mustCLI(t, "restore", "home", "latest", dir, "--verify", "--wait")
		for _, want := range []string{"mode: directory", "verified: true", "target: " + dir} {
			if !strings.Contains(out, want) {
				t.Errorf("restore summary lacks %q", want)
			}
		}
		expectDiffs(t, home, filepath.Join(dir, home), sparseDiff(version)...)

		sv := e.fs.Path("restored-subvolume")
		out = e.mustCLI(t, "restore", "home", "latest", "--subvolume", sv, "--verify", "--wait")
		if !strings.Contains(out, "subvolume root: "+home) || !strings.Contains(out, "verified: true") {
			t.Errorf("restore --subvolume summary lacks the subvolume's root or verified")
		}
		if ok, err := btrfs.IsSubvolume(sv); !ok || err != nil {
			t.Fatalf("%s is not a subvolume: %v", sv, err)
		}
		expectDiffs(t, home, sv, sparseDiff(version)...)
		if _, err := os.Lstat(filepath.Join(sv, ".subvault-restore-3")); !os.IsNotExist(err) {
			t.Errorf("the staging directory is left: %v", err)
		}

		if big == 0 {
			return
		}
		// A restore into a subvolume canceled half-way (the 1 GiB file
		// takes seconds) deletes the subvolume it made.
		gone := e.fs.Path("canceled")
		out = e.mustCLI(t, "restore", "home", "latest", "--subvolume", gone, "--wait=false")
		if !strings.HasPrefix(out, "job 4 queued") {
			t.Fatalf("restore --wait=false: %q", out)
		}
		waitFor(t, time.Minute, func() int {
			if _, err := os.Lstat(filepath.Join(gone, ".subvault-restore-4")); err == nil {
				return 1
			}
			return 0
		})
		e.mustCLI(t, "cancel", "4")
		if result := e.signals.waitRemoved(t, 4, time.Minute); result != "canceled" {
			t.Errorf("the canceled restore ended %s", result)
		}
		if _, err := os.Lstat(gone); !os.IsNotExist(err) {
			t.Errorf("the canceled restore left its subvolume: %v", err)
		}
	})
}

// A restore writes only at its target: symbolic links in the archive that
// point outside (absolute, relative) are restored as links, and an
// in-place restore replaces a symbolic link the live tree has where the
// archive has a directory instead of writing through it; a directory
// outside stays exactly as it was. Requests that would write over
// something, or elsewhere, are refused and nothing is written.
func TestRestoreNeverWritesOutsideItsTarget(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		e := newRestoreEnv(t, bin, 300)
		home := e.fs.Path("home")
		outside := filepath.Join(t.TempDir(), "outside")
		testutil.WriteFile(t, filepath.Join(outside, "victim", "evil"), "outside, before\n")
		testutil.WriteFile(t, filepath.Join(outside, "keep"), "outside, before\n")
		before := filepath.Join(t.TempDir(), "before")
		testutil.Run(t, "cp", "-a", outside, before)

		testutil.WriteFile(t, filepath.Join(home, "victim", "evil"), "from the archive\n")
		testutil.WriteFile(t, filepath.Join(home, "victim", "more", "file"), "from the archive\n")
		for name, target := range map[string]string{
			"escape-abs": outside, "escape-rel": strings.Repeat("../", 12) + strings.TrimPrefix(outside, "/"),
			"escape-file": filepath.Join(outside, "keep"),
		} {
			if err := os.Symlink(target, filepath.Join(home, name)); err != nil {
				t.Fatal(err)
			}
		}
		e.mustCLI(t, "backup", "home", "--wait")
		orig := e.fs.Path("orig")
		testutil.Run(t, "cp", "-a", home, orig)

		dir := e.fs.Path("dir")
		e.mustCLI(t, "restore", "home", "latest", dir, "--wait")
		expectDiffs(t, orig, filepath.Join(dir, home))
		sv := e.fs.Path("sv")
		e.mustCLI(t, "restore", "home", "latest", "--subvolume", sv, "--wait")
		expectDiffs(t, orig, sv)
		expectDiffs(t, before, outside)

		// The live tree now has a link to outside where the archive
		// has the directory victim: restic 0.14 would write through it.
		if err := os.RemoveAll(filepath.Join(home, "victim")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(outside, "victim"), filepath.Join(home, "victim")); err != nil {
			t.Fatal(err)
		}
		e.mustCLI(t, "restore", "home", "latest", "--in-place", "--wait")
		expectDiffs(t, before, outside)
		expectDiffs(t, orig, home)

		// Refused, with nothing written.
		nonEmpty := e.fs.Path("non-empty")
		testutil.WriteFile(t, filepath.Join(nonEmpty, "mine"), "mine\n")
		jobs := e.jobCount(t)
		for _, c := range []struct {
			args []string
			code int
			msg  string
		}{
			{[]string{"restore", "home", "latest", nonEmpty}, exitUsage, "is not empty"},
			{[]string{"restore", "home", "latest", nonEmpty, "--subvolume"}, exitUsage, "exists"},
			{[]string{"restore", "home", "latest", filepath.Join(t.TempDir(), "x"), "--subvolume"}, exitUsage, "on btrfs"},
			{[]string{"restore", "home", "latest", e.fs.Path("snapshots", "x")}, exitUsage, "snapshot directory"},
			{[]string{"restore", "home", "latest", e.fs.Path("nosuchdir", "x")}, exitUsage, "does not exist"},
			{[]string{"restore", "home", "latest", e.fs.Path("y"), "--in-place"}, exitUsage, "takes no TARGET"},
			{[]string{"restore", "home", "latest"}, exitUsage, "expects PLAN ARCHIVE TARGET"},
		} {
			code, out, errOut := e.cli(t, c.args...)
			if code != c.code || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, c.msg) {
				t.Errorf("subvault %v: exit %d, stdout %q, stderr %q; want exit %d and one line with %q", c.args, code, out, errOut, c.code, c.msg)
			}
		}
		manager := []string{"call", contract.BusName, string(contract.ManagerPath), contract.ManagerInterface, "StartRestoreWith", "sssasa{sv}", "home", "latest"}
		for _, c := range []struct {
			args []string
			msg  string
		}{
			{[]string{e.fs.Path("z"), "0", "1", "nosuch", "b", "true"}, "unknown restore option"},
			{[]string{e.fs.Path("z"), "0", "1", "verify", "s", "yes"}, "takes a boolean"},
			{[]string{"/", "0", "2", "in_place", "b", "true", "subvolume", "b", "true"}, "exclude each other"},
			{[]string{home, "0", "1", "in_place", "b", "true"}, `its target is "/"`},
			{[]string{"/", "0", "0"}, "cannot be /"},
		} {
			if out, err := e.busctl(append(manager, c.args...)...); err == nil || !strings.Contains(out, c.msg) {
				t.Errorf("StartRestoreWith %v: %v %s; want an error with %q", c.args, err, out, c.msg)
			}
		}
		// An in-place restore is for root alone, polkit or not: the
		// subvault command run as nobody says so (busctl would show
		// only "Access denied").
		testutil.RequireNobody(t)
		binDir, err := os.MkdirTemp("", "subvault-cli-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(binDir) })
		testutil.Run(t, "cp", os.Args[0], filepath.Join(binDir, "subvault"))
		if err := os.Chmod(binDir, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := testutil.AsNobody(filepath.Join(binDir, "subvault"), "restore", "home", "latest", "--in-place", "--bus", e.bus.Address)
		cmd.Env = append(cmd.Env, "SUBVAULT_TEST_AS_MAIN=1")
		if code, out, errOut := runCmd(t, cmd); code != exitDenied || out != "" || !strings.Contains(errOut, "only root") {
			t.Errorf("in-place restore as nobody: exit %d, stdout %q, stderr %q; want %d and why", code, out, errOut, exitDenied)
		} else {
			t.Logf("as nobody: %s", errOut)
		}
		if n := e.jobCount(t); n != jobs {
			t.Errorf("refused restores made jobs: %d, then %d", jobs, n)
		}
		if entries, _ := os.ReadDir(nonEmpty); len(entries) != 1 {
			t.Errorf("a refused restore wrote into %s: %v", nonEmpty, entries)
		}
		for _, p := range []string{e.fs.Path("z"), e.fs.Path("y"), e.fs.Path("snapshots", "x")} {
			if _, err := os.Lstat(p); !os.IsNotExist(err) {
				t.Errorf("a refused restore made %s", p)
			}
		}
		expectDiffs(t, before, outside)
	})
}

// An in-place restore brings back the archive's files over a changed tree
// (contents, modes, attributes, a hard link, a link replaced by a file, a
// directory by a file) and keeps what was there in a pinned snapshot,
// which the summary names, "subvault snapshots" lists, and a later backup
// with keep_snapshots 0 leaves alone. Files made since the archive stay.
func TestRestoreInPlaceKeepsUndoSnapshot(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		version := testutil.ResticVersion(bin)
		e := newRestoreEnv(t, bin, 700)
		home := e.fs.Path("home")
		testutil.MakeRichTree(t, home, 0)
		e.mustCLI(t, "backup", "home", "--wait")
		orig := e.fs.Path("orig")
		testutil.Run(t, "cp", "-a", home, orig)

		p := func(rel string) string { return filepath.Join(home, rel) }
		check := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		check(os.WriteFile(p("attrs/file"), []byte("changed\n"), 0o644))
		check(os.Chmod(p("bin/setuid"), 0o755))
		check(os.Remove(p("links/b")))
		check(os.Remove(p("links/rel")))
		check(os.WriteFile(p("links/rel"), []byte("a file where a link was\n"), 0o644))
		check(os.RemoveAll(p("private")))
		check(os.WriteFile(p("private"), []byte("a file where a directory was\n"), 0o644))
		check(os.WriteFile(p("added"), []byte("made after the archive\n"), 0o644))
		check(os.Lchown(p("owned/file"), 0, 0))
		changed := e.fs.Path("changed")
		testutil.Run(t, "cp", "-a", home, changed)

		out := e.mustCLI(t, "restore", "home", "latest", "--in-place", "--verify", "--wait")
		m := regexp.MustCompile(`(?m)^  undo snapshot: (\S+)$`).FindStringSubmatch(out)
		if m == nil || !strings.HasPrefix(m[1], "subvault-pinned@home@") {
			t.Fatalf("the summary names no undo snapshot:\n%s", out)
		}
		undo := m[1]
		// What the archive holds is back; "added" stays.
		expectDiffs(t, orig, home, append([]string{"added: only in b"}, sparseDiff(version)...)...)
		if _, err := os.Lstat(p(".subvault-restore-2")); !os.IsNotExist(err) {
			t.Errorf("the staging directory is left: %v", err)
		}

		// The undo snapshot holds the changed tree, is listed and kept.
		var snaps []client.Snapshot
		if err := json.Unmarshal([]byte(e.mustCLI(t, "snapshots", "home", "--json")), &snaps); err != nil || len(snaps) != 1 || snaps[0].Name != undo || !snaps[0].Kept {
			t.Fatalf("snapshots after the in-place restore: %v %+v", err, snaps)
		}
		expectDiffs(t, changed, snaps[0].Path)
		e.mustCLI(t, "backup", "home", "--wait")
		if err := json.Unmarshal([]byte(e.mustCLI(t, "snapshots", "home", "--json")), &snaps); err != nil || len(snaps) != 1 || snaps[0].Name != undo {
			t.Errorf("after a backup with keep_snapshots 0: %v %+v", err, snaps)
		}
	})
}

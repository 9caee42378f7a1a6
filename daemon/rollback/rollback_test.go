package rollback

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/journal/journaltest"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/shell"
	"github.com/subvault/subvault/daemon/state"
	"github.com/subvault/subvault/internal/testutil"
)

const snapDirName = ".subvault-snapshots"

// rollbackEnv is a configuration whose plans name subvolumes of a
// loop-device btrfs; snapshots are made as a backup makes them, without
// restic.
type rollbackEnv struct {
	fs    *testutil.BtrfsFS
	cfg   *config.Config
	state string
	jobID uint32
	log   *journaltest.Recorder // the rollbacks' log
}

// newRollbackEnv writes a configuration with one plan per name → subvolume
// and loads it.
func newRollbackEnv(t *testing.T, fs *testutil.BtrfsFS, plans map[string]string) *rollbackEnv {
	t.Helper()
	dir := t.TempDir()
	password := filepath.Join(dir, "password")
	testutil.WriteSecret(t, password, "secret\n")
	var b strings.Builder
	fmt.Fprintf(&b, "repositories:\n  r:\n    url: %s\n    password_file: %s\nplans:\n", filepath.Join(dir, "repo"), password)
	for name, sv := range plans {
		fmt.Fprintf(&b, "  %s:\n    subvolumes: [%s]\n    repository: r\n", name, sv)
	}
	fmt.Fprintf(&b, "settings:\n  state_dir: %s\n  cache_dir: %s\n", filepath.Join(dir, "state"), filepath.Join(dir, "cache"))
	path := filepath.Join(dir, "config.yaml")
	testutil.WriteFile(t, path, b.String())
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := state.EnsureDir(cfg.Settings.StateDir); err != nil {
		t.Fatal(err)
	}
	return &rollbackEnv{fs: fs, cfg: cfg, state: cfg.Settings.StateDir, jobID: 100, log: journaltest.NewRecorder()}
}

// rollback rolls the plan's subvolume back to its snapshot called snapshot,
// as the daemon does once it has found the snapshot: a Job that Check
// refuses does not run.
func (e *rollbackEnv) rollback(t *testing.T, plan, snapshot, subvolume string, opts Options) (Result, error) {
	t.Helper()
	p := e.cfg.Plans[plan]
	all, err := planstore.Snapshots(p)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(all, func(s btrfs.Snapshot) bool { return s.Name() == snapshot })
	if i < 0 {
		t.Fatalf("plan %s has no snapshot %s", plan, snapshot)
	}
	job := &Job{Config: e.cfg, Plan: p, Snapshot: all[i], Subvolume: subvolume, Options: opts, Logger: slog.New(e.log)}
	if err := job.Check(); err != nil {
		return Result{}, err
	}
	return job.Run()
}

// snapshot takes a snapshot of the plan's subvolume as a backup does.
func (e *rollbackEnv) snapshot(t *testing.T, plan, subvolume string) btrfs.Snapshot {
	t.Helper()
	e.jobID++
	s := btrfs.Snapshot{Plan: plan, Time: time.Now().UTC().Truncate(time.Second), JobID: e.jobID, Subvolume: subvolume}
	s.Path = filepath.Join(subvolume, snapDirName, s.Name())
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := btrfs.SnapshotReadOnly(subvolume, s.Path); err != nil {
		t.Fatal(err)
	}
	return s
}

func subvolumeID(t *testing.T, path string) uint64 {
	t.Helper()
	info, err := btrfs.Info(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.ID
}

// sameTree fails the test when the trees under a and b differ (the snapshot
// directory and the nested subvolume left out: a snapshot shows them as
// empty directories).
func sameTree(t *testing.T, what, a, b string) {
	t.Helper()
	if d := testutil.DiffStates(testutil.TreeState(t, a, snapDirName, "nested"), testutil.TreeState(t, b, snapDirName, "nested")); len(d) > 0 {
		t.Errorf("%s: %s and %s differ:\n%s", what, a, b, strings.Join(d, "\n"))
	}
}

// fillTree makes files of every kind: owners, modes, an xattr, a symlink, a
// hardlink, a subvolume nested in the tree.
func fillTree(t *testing.T, root string) {
	t.Helper()
	testutil.WriteFile(t, filepath.Join(root, "etc", "app.conf"), "version=1\n")
	testutil.WriteFile(t, filepath.Join(root, "data", "owned"), "by 1234")
	testutil.WriteFile(t, filepath.Join(root, "data", "gone-later"), "x")
	for _, err := range []error{
		os.Chown(filepath.Join(root, "data", "owned"), 1234, 5678),
		os.Chmod(filepath.Join(root, "data"), 0o1777),
		unix.Setxattr(filepath.Join(root, "etc", "app.conf"), "user.origin", []byte("test"), 0),
		os.Symlink("../etc/app.conf", filepath.Join(root, "data", "link")),
		os.Link(filepath.Join(root, "data", "owned"), filepath.Join(root, "data", "hardlink")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	testutil.Run(t, "btrfs", "subvolume", "create", filepath.Join(root, "nested"))
	testutil.WriteFile(t, filepath.Join(root, "nested", "own-life"), "never rolled back with its parent")
}

// changeTree changes three things: a file's content, a file removed, a
// file added, and a mode.
func changeTree(t *testing.T, root string) {
	t.Helper()
	testutil.WriteFile(t, filepath.Join(root, "etc", "app.conf"), "version=2 (a bad upgrade)\n")
	if err := os.Remove(filepath.Join(root, "data", "gone-later")); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, filepath.Join(root, "data", "new"), "new")
	if err := os.Chmod(filepath.Join(root, "data", "owned"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// snapshotNames are the plan's snapshots, each with whether keep_snapshots
// keeps it.
func snapshotNames(t *testing.T, e *rollbackEnv, plan string) map[string]bool {
	t.Helper()
	p := e.cfg.Plans[plan]
	list, err := planstore.Snapshots(p)
	if err != nil {
		t.Fatal(err)
	}
	k := p.KeepSnapshots
	keep, _, _ := btrfs.SelectKeep(list, btrfs.KeepPolicy{Last: k.Last, Hourly: k.Hourly, Daily: k.Daily, Weekly: k.Weekly, Monthly: k.Monthly}, time.Now(), time.Local)
	out := map[string]bool{}
	for _, s := range list {
		out[s.Name()] = slices.ContainsFunc(keep, func(kept btrfs.Snapshot) bool { return kept.Path == s.Path })
	}
	return out
}

// A rollback of an unmounted subvolume: the snapshot's content comes back,
// the state before is a pinned snapshot a second rollback returns to, and
// the subvolume's own snapshots and nested subvolume survive both.
func TestRollbackUnmountedAndBack(t *testing.T) {
	fs := testutil.NewBtrfs(t, 256, "vol")
	vol := fs.Path("vol")
	fillTree(t, vol)
	e := newRollbackEnv(t, fs, map[string]string{"p": vol})
	good := e.snapshot(t, "p", vol)
	changeTree(t, vol)
	other := e.snapshot(t, "p", vol) // a later snapshot: it must survive both rollbacks
	bad := testutil.TreeState(t, vol, snapDirName, "nested")
	nestedBefore := testutil.TreeState(t, filepath.Join(vol, "nested"))
	idBefore := subvolumeID(t, vol)

	// A dry run says what would happen and changes nothing.
	dry, err := e.rollback(t, "p", good.Name(), vol, Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dry run: %s", dry.Message)
	if dry.Kept != "" || !strings.Contains(dry.Message, "is replaced by a writable copy of snapshot "+good.Name()) || !strings.Contains(dry.Message, "nested") {
		t.Errorf("dry run: %+v", dry)
	}
	if d := testutil.DiffStates(bad, testutil.TreeState(t, vol, snapDirName, "nested")); len(d) > 0 || subvolumeID(t, vol) != idBefore {
		t.Fatalf("a dry run changed %s: %v", vol, d)
	}

	res, err := e.rollback(t, "p", good.Name(), vol, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rollback: %s", res.Message)
	pinned, err := btrfs.ParseName(res.Kept)
	if err != nil || !pinned.Pinned || pinned.Subvolume != vol || res.Prepared {
		t.Fatalf("Kept %q (%+v, %v); want a pinned snapshot of %s", res.Kept, pinned, err, vol)
	}
	if !strings.Contains(res.Message, "subvault rollback p "+shell.Quote(res.Kept)+" "+vol) {
		t.Errorf("the message does not say how to undo: %s", res.Message)
	}
	// The journal: one rollback-done (the dry run logged nothing), whose
	// kept is the name the undo takes.
	e.log.Only(t, journal.EventRollbackDone).Want(t, "rollback-done", map[string]string{
		"SUBVAULT_PLAN": "p", "SUBVAULT_SUBVOLUME": vol, "SUBVAULT_SNAPSHOT": good.Path, "SUBVAULT_KEPT": res.Kept})
	if n := len(e.log.Events(journal.EventRollbackPrepared)) + len(e.log.Events(journal.EventRollbackFailed)); n != 0 {
		t.Errorf("%d rollback-prepared or rollback-failed entries, want none", n)
	}
	sameTree(t, "after the rollback, the subvolume and the snapshot", good.Path, vol)
	pinnedPath := filepath.Join(vol, snapDirName, res.Kept)
	if d := testutil.DiffStates(bad, testutil.TreeState(t, pinnedPath, snapDirName, "nested")); len(d) > 0 {
		t.Errorf("the pinned snapshot is not the state before the rollback:\n%s", strings.Join(d, "\n"))
	}
	if info, err := btrfs.Info(pinnedPath); err != nil || !info.ReadOnly {
		t.Errorf("the pinned snapshot: %+v, %v; want read-only", info, err)
	}
	if subvolumeID(t, vol) == idBefore {
		t.Error("the subvolume has its old id: it was not swapped")
	}
	if d := testutil.DiffStates(nestedBefore, testutil.TreeState(t, filepath.Join(vol, "nested"))); len(d) > 0 {
		t.Errorf("the nested subvolume changed: %v", d)
	}
	names := snapshotNames(t, e, "p")
	if len(names) != 3 || !names[res.Kept] {
		t.Errorf("snapshots after the rollback: %v; want %s, %s and %s (kept)", names, good.Name(), other.Name(), res.Kept)
	}
	// Nothing is left next to the subvolume.
	if entries, _ := os.ReadDir(fs.Mount); len(entries) != 1 {
		t.Errorf("next to the subvolume: %v", entries)
	}

	// The second rollback, to the pinned snapshot, returns to the state
	// before the first.
	res2, err := e.rollback(t, "p", res.Kept, vol, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d := testutil.DiffStates(bad, testutil.TreeState(t, vol, snapDirName, "nested")); len(d) > 0 {
		t.Errorf("after rolling back to %s, the state before the first rollback is not back:\n%s", res.Kept, strings.Join(d, "\n"))
	}
	names = snapshotNames(t, e, "p")
	for _, n := range []string{good.Name(), other.Name(), res.Kept, res2.Kept} {
		if _, ok := names[n]; !ok {
			t.Errorf("snapshot %s is gone after two rollbacks: %v", n, names)
		}
	}
	if d := testutil.DiffStates(nestedBefore, testutil.TreeState(t, filepath.Join(vol, "nested"))); len(d) > 0 {
		t.Errorf("the nested subvolume changed: %v", d)
	}
	// The snapshot directory holds subvolumes only: no placeholder of a
	// gone snapshot stays.
	entries, _ := os.ReadDir(filepath.Join(vol, snapDirName))
	for _, en := range entries {
		if ok, err := btrfs.IsSubvolume(filepath.Join(vol, snapDirName, en.Name())); !ok || err != nil {
			t.Errorf("%s in the snapshot directory is no subvolume", en.Name())
		}
	}

	// keep_snapshots (none here) deletes the others, never the pinned ones.
	if _, err := planstore.ApplyKeepSnapshots(e.cfg, e.cfg.Plans["p"], slog.New(e.log), time.Now(), time.Local, nil); err != nil {
		t.Fatal(err)
	}
	names = snapshotNames(t, e, "p")
	if len(names) != 2 || !names[res.Kept] || !names[res2.Kept] {
		t.Errorf("after keep_snapshots: %v; want the two pinned ones, kept", names)
	}
}

// What must refuse a rollback, changing nothing. (The daemon's
// TestRollbackArgumentsRefused has the arguments it refuses before a Job
// is made: a snapshot that is not the plan's.)
func TestRollbackRefusals(t *testing.T) {
	fs := testutil.NewBtrfs(t, 256, "vol", "other")
	vol := fs.Path("vol")
	fillTree(t, vol)
	e := newRollbackEnv(t, fs, map[string]string{"p": vol, "o": fs.Path("other")})
	good := e.snapshot(t, "p", vol)
	changeTree(t, vol)
	before := testutil.TreeState(t, vol)
	id := subvolumeID(t, vol)

	check := func(what string, err error, want ...string) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: no error", what)
			return
		}
		t.Logf("%s: %v", what, err)
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q lacks %q", what, err, w)
			}
		}
		if d := testutil.DiffStates(before, testutil.TreeState(t, vol)); len(d) > 0 || subvolumeID(t, vol) != id {
			t.Fatalf("%s changed %s: %v", what, vol, d)
		}
	}

	_, err := e.rollback(t, "p", good.Name(), fs.Path("other"), Options{})
	check("a subvolume of another plan", err, "is not a subvolume of plan p")
	_, err = e.rollback(t, "p", good.Name(), vol+"/", Options{})
	check("an unclean path", err, "clean")

	// A job of the plan holds its lock.
	lock, err := state.LockPlan(e.state, "p")
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.rollback(t, "p", good.Name(), vol, Options{})
	check("a running job", err, "another job of plan p is running", "wait for it, or cancel it")
	lock.Unlock()

	// A process working in it.
	sleep := exec.Command("sleep", "60")
	sleep.Dir = filepath.Join(vol, "data")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	_, err = e.rollback(t, "p", good.Name(), vol, Options{})
	check("a process in it", err, "in use by "+strconv.Itoa(sleep.Process.Pid)+" (sleep)", "stop them first")
	_ = sleep.Process.Kill()
	_ = sleep.Wait()

	// A mount inside it.
	mnt := filepath.Join(vol, "data", "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	before = testutil.TreeState(t, vol)
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	_, err = e.rollback(t, "p", good.Name(), vol, Options{})
	if uerr := unix.Unmount(mnt, 0); uerr != nil {
		t.Fatal(uerr)
	}
	check("a mount inside", err, "something is mounted inside it ("+mnt+")")

	// A nested subvolume that has no place in the snapshot's tree.
	testutil.Run(t, "btrfs", "subvolume", "create", filepath.Join(vol, "data", "mnt", "sub"))
	before = testutil.TreeState(t, vol)
	_, err = e.rollback(t, "p", good.Name(), vol, Options{})
	check("a nested subvolume without a place", err, "holds the subvolume "+filepath.Join(vol, "data", "mnt", "sub"), "move it out of")

	if names := snapshotNames(t, e, "p"); len(names) != 1 {
		t.Errorf("refused rollbacks made snapshots: %v", names)
	}

	// A rollback-failed entry for each real attempt (the busy plan, the
	// process, the mount, the nested subvolume), none for wrong arguments;
	// none has kept: nothing was made.
	failed := e.log.Events(journal.EventRollbackFailed)
	if len(failed) != 4 {
		t.Fatalf("%d rollback-failed entries, want 4: %+v", len(failed), failed)
	}
	for i, f := range failed {
		f.HasCatalogFields(t, journal.EventRollbackFailed)
		f.Want(t, fmt.Sprintf("rollback-failed %d", i), map[string]string{"SUBVAULT_SUBVOLUME": vol, "SUBVAULT_SNAPSHOT": good.Path, "SUBVAULT_KEPT": "", "SUBVAULT_NEW": ""})
		if f.Level != slog.LevelError {
			t.Errorf("rollback-failed %d: level %v, want error", i, f.Level)
		}
	}
	if err := failed[0].Fields["SUBVAULT_ERR"]; !strings.Contains(err, "another job of plan p is running") {
		t.Errorf("the first rollback-failed entry's err: %q", err)
	}
}

// writeFstab points the daemon at an fstab with lines for the test's mounts.
func writeFstab(t *testing.T, content string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fstab")
	testutil.WriteFile(t, p, content)
	old := fstabPath
	fstabPath = p
	t.Cleanup(func() { fstabPath = old })
}

// A subvolume mounted with subvol= is not replaced: a new subvolume waits
// next to it, the message says how to boot it, and nothing under the mount
// or in the mount table changes.
func TestRollbackMountedPreparesNextBoot(t *testing.T) {
	fs := testutil.NewBtrfs(t, 256, "vol")
	fillTree(t, fs.Path("vol"))
	mnt := filepath.Join(t.TempDir(), "srv")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "mount", "-t", "btrfs", "-o", "subvol=/vol", fs.Device, mnt)
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	e := newRollbackEnv(t, fs, map[string]string{"m": mnt, "top": fs.Mount, "v": fs.Path("vol")})
	good := e.snapshot(t, "m", mnt)
	viaTop := e.snapshot(t, "v", fs.Path("vol"))
	changeTree(t, mnt)
	before := testutil.TreeState(t, mnt)
	mountinfo := func() string { return testutil.HostMounts(t, fs.Mount, mnt) }
	mountsBefore := mountinfo()
	volID := subvolumeID(t, mnt)
	unchanged := func(what string) {
		t.Helper()
		if d := testutil.DiffStates(before, testutil.TreeState(t, mnt)); len(d) > 0 {
			t.Errorf("%s changed the mounted subvolume:\n%s", what, strings.Join(d, "\n"))
		}
		if subvolumeID(t, mnt) != volID {
			t.Errorf("%s: another subvolume is mounted at %s", what, mnt)
		}
		if got := mountinfo(); got != mountsBefore {
			t.Errorf("%s changed the mount table:\n%s\n---\n%s", what, mountsBefore, got)
		}
	}
	prepared := func(res Result) string {
		t.Helper()
		var fsPath string
		for _, line := range strings.Split(res.Message, "\n") {
			if rest, ok := strings.CutPrefix(line, "Made "); ok {
				fsPath, _, _ = strings.Cut(rest, " ")
			}
		}
		if fsPath == "" || !strings.HasPrefix(fsPath, "/vol.subvault-rollback-") {
			t.Fatalf("no prepared subvolume in the message:\n%s", res.Message)
		}
		return fs.Path(strings.TrimPrefix(fsPath, "/"))
	}

	// In /etc/fstab with subvol=: edit it.
	writeFstab(t, fmt.Sprintf("# a comment\nUUID=abc / ext4 defaults 0 1\nUUID=def %s btrfs noatime,subvol=vol,compress=zstd 0 0\n", mnt))
	dry, err := e.rollback(t, "m", good.Name(), mnt, Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(fs.Mount); len(entries) != 1 || !dry.Prepared {
		t.Errorf("a dry run made %v (prepared %v)", entries, dry.Prepared)
	}
	res, err := e.rollback(t, "m", good.Name(), mnt, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("prepared:\n%s", res.Message)
	newSV := prepared(res)
	if !res.Prepared || res.Kept != "/vol" {
		t.Errorf("result %+v; want prepared, kept /vol", res)
	}
	// The journal: one rollback-prepared (the dry run logged nothing) with
	// the printed steps.
	e.log.Only(t, journal.EventRollbackPrepared).Want(t, "rollback-prepared", map[string]string{
		"SUBVAULT_PLAN": "m", "SUBVAULT_SUBVOLUME": mnt, "SUBVAULT_SNAPSHOT": good.Path, "SUBVAULT_KEPT": "/vol",
		"SUBVAULT_KEPT_ID": strconv.FormatUint(volID, 10), "SUBVAULT_NEW": "/" + filepath.Base(newSV),
		"SUBVAULT_NEW_ID": strconv.FormatUint(subvolumeID(t, newSV), 10), "SUBVAULT_DEVICE": fs.Device,
		"SUBVAULT_MOUNT_POINT": mnt, "SUBVAULT_DEFAULT_SET": "false", "SUBVAULT_STEPS": res.Message})
	newName := filepath.Base(newSV)
	for _, want := range []string{
		mnt + " is mounted at " + mnt + ", so it is not replaced",
		"change subvol=vol to subvol=" + newName,
		"then reboot.",
		"The subvolumes inside /vol are not in the copy",
		"rmdir /mnt/" + newName + "/nested && mv /mnt/vol/nested /mnt/" + newName + "/nested\n",
		// Neither snapshot has a place in good's tree (both are younger
		// than the tree good shows); snapshots are read-only.
		"  btrfs property set " + shell.Quote("/mnt/vol/.subvault-snapshots/"+good.Name()) + " ro false && mv",
		"  btrfs property set " + shell.Quote("/mnt/vol/.subvault-snapshots/"+viaTop.Name()) + " ro false && mv",
		"btrfs subvolume delete /mnt/" + newName,
		"To go back after the reboot",
	} {
		if !strings.Contains(res.Message, want) {
			t.Errorf("the message lacks %q", want)
		}
	}
	sameTree(t, "the prepared subvolume and the snapshot", good.Path, newSV)
	if info, err := btrfs.Info(newSV); err != nil || info.ReadOnly {
		t.Errorf("prepared subvolume: %+v, %v; want writable", info, err)
	}
	unchanged("preparing a rollback")

	// Mounted without subvol= (so the default subvolume): set-default, by
	// the daemon when asked. The subvolume's path through the top level
	// counts as mounted too.
	writeFstab(t, fmt.Sprintf("UUID=def %s btrfs noatime 0 0\n", mnt))
	res, err = e.rollback(t, "m", good.Name(), mnt, Options{})
	if err != nil {
		t.Fatal(err)
	}
	newSV = prepared(res)
	newID := subvolumeID(t, newSV)
	if want := fmt.Sprintf("btrfs subvolume set-default %d %s", newID, mnt); !strings.Contains(res.Message, want) {
		t.Errorf("the message lacks %q:\n%s", want, res.Message)
	}
	res, err = e.rollback(t, "v", viaTop.Name(), fs.Path("vol"), Options{SetDefault: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("with --set-default:\n%s", res.Message)
	if prep := e.log.Events(journal.EventRollbackPrepared); len(prep) != 3 || prep[2].Fields["SUBVAULT_DEFAULT_SET"] != "true" {
		t.Errorf("rollback-prepared entries: %+v; want the third with default_set true", prep)
	}
	newSV = prepared(res)
	newID = subvolumeID(t, newSV)
	if out := testutil.Run(t, "btrfs", "subvolume", "get-default", fs.Mount); !strings.HasPrefix(out, fmt.Sprintf("ID %d ", newID)) {
		t.Errorf("the default subvolume after --set-default: %s (want %d)", out, newID)
	}
	if !strings.Contains(res.Message, fmt.Sprintf("btrfs subvolume set-default %d %s", volID, mnt)) {
		t.Errorf("the message does not say how to set the default back:\n%s", res.Message)
	}
	// viaTop's tree has an empty directory where good is.
	if want := "  rmdir " + shell.Quote("/mnt/"+filepath.Base(newSV)+"/.subvault-snapshots/"+good.Name()) + " && btrfs property set"; !strings.Contains(res.Message, want) {
		t.Errorf("the message lacks %q", want)
	}
	if err := btrfs.SetDefault(fs.Mount, btrfs.TopLevelID); err != nil {
		t.Fatal(err)
	}
	unchanged("preparing with set-default")

	// Not in fstab: say both ways.
	writeFstab(t, "")
	res, err = e.rollback(t, "m", good.Name(), mnt, Options{})
	if err != nil || !strings.Contains(res.Message, "is not in "+fstabPath) {
		t.Errorf("not in fstab: %v\n%s", err, res.Message)
	}
	// The top level has no place beside it.
	top := e.snapshot(t, "top", fs.Mount)
	_, err = e.rollback(t, "top", top.Name(), fs.Mount, Options{})
	if err == nil || !strings.Contains(err.Error(), "top level") {
		t.Errorf("a rollback of the top level: %v", err)
	}
	e.log.Only(t, journal.EventRollbackFailed).Want(t, "rollback-failed", map[string]string{
		"SUBVAULT_PLAN": "top", "SUBVAULT_SUBVOLUME": fs.Mount, "SUBVAULT_ERR": err.Error(), "SUBVAULT_NEW": ""})
	unchanged("all of it")
	subvols := testutil.Run(t, "btrfs", "subvolume", "list", fs.Mount)
	if n := strings.Count(subvols, "vol.subvault-rollback-"); n != 4 {
		t.Errorf("%d prepared subvolumes, want 4:\n%s", n, subvols)
	}
	if strings.Contains(subvols, "subvault-pinned") {
		t.Errorf("a pinned snapshot was made of a mounted subvolume:\n%s", subvols)
	}
}

func TestRollbackSuffix(t *testing.T) {
	for in, want := range map[string]string{
		"@":                                      "@",
		"@.subvault-rollback-20260102T100000Z-9": "@",
		"@home.subvault-rollback-20260102T100000Z-9": "@home",
		"@.subvault-rollback-2026":                   "@.subvault-rollback-2026",
	} {
		if got := rollbackSuffix.ReplaceAllString(in, ""); got != want {
			t.Errorf("%s without the suffix: %s, want %s", in, got, want)
		}
	}
}

func TestPrepareMessageBootLoader(t *testing.T) {
	msg := prepareMessage(prepareFacts{
		subvolume: "/", mountPoint: "/", device: "/dev/sda2", snapshot: "subvault@root@20260101T030000Z@7@-",
		oldPath: "/@", oldID: 256, newPath: "/@.subvault-rollback-20260102T100000Z-9", newID: 300,
		boot: bootConfig{fstab: "/etc/fstab", inFstab: true, fstabSubvol: "/@", cmdlineSubvol: "@"},
	})
	for _, want := range []string{
		"in /etc/fstab, on the line of /, change subvol=/@ to subvol=/@.subvault-rollback-20260102T100000Z-9",
		"change rootflags=...subvol=@ to subvol=@.subvault-rollback-20260102T100000Z-9",
		"mount -o subvolid=5 /dev/sda2 /mnt && btrfs subvolume delete /mnt/@.subvault-rollback-20260102T100000Z-9 && umount /mnt",
		"point the boot at /@ again (subvol=/@, subvolid=256",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the message lacks %q:\n%s", want, msg)
		}
	}
	b := func(fstab, cmdline string) bootConfig {
		t.Helper()
		writeFstab(t, fstab)
		p := filepath.Join(t.TempDir(), "cmdline")
		testutil.WriteFile(t, p, cmdline)
		old := cmdlinePath
		cmdlinePath = p
		defer func() { cmdlinePath = old }()
		return bootSetup("/")
	}
	got := b("UUID=x /   btrfs   rw,subvolid=256,subvol=/@ 0 0\nUUID=x /home btrfs subvol=@home 0 0\n", "BOOT_IMAGE=/vmlinuz root=UUID=x ro rootflags=subvol=@ quiet\n")
	if got.fstabSubvol != "/@" || got.fstabSubvolID != "256" || got.cmdlineSubvol != "@" || !got.inFstab {
		t.Errorf("bootSetup = %+v", got)
	}
	got = b("/dev/sda2 /mnt/my\\040disk btrfs defaults 0 0\n", "root=/dev/sda2")
	if got.inFstab || got.cmdlineSubvol != "" {
		t.Errorf("bootSetup of / not in fstab = %+v", got)
	}
	writeFstab(t, "/dev/sda2 /mnt/my\\040disk btrfs defaults 0 0\n")
	if got := bootSetup("/mnt/my disk"); !got.inFstab {
		t.Errorf("an escaped mount point: %+v", got)
	}
}

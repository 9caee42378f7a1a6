package btrfs_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/internal/testutil"
)

// subvolumeID asks btrfs-progs, to cross-check the ioctls.
func subvolumeID(t *testing.T, path string) uint64 {
	t.Helper()
	out := testutil.Run(t, "btrfs", "inspect-internal", "rootid", path)
	id, err := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatalf("btrfs inspect-internal rootid %s: %q", path, out)
	}
	return id
}

// mountSubvol mounts the subvolume at fsPath of fs at a new directory.
func mountSubvol(t *testing.T, fs *testutil.BtrfsFS, fsPath string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "m")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "mount", "-t", "btrfs", "-o", "subvol="+fsPath, fs.Device, dir)
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func TestNestedSubvolumesLists(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "home", "home/a", "home/d/e/b", "home/a/deeper")
	testutil.WriteFile(t, fs.Path("home", "plain", "f"), "x")
	got, err := btrfs.NestedSubvolumes(fs.Path("home"))
	if err != nil {
		t.Fatal(err)
	}
	want := []btrfs.Nested{
		{Rel: "a", ID: subvolumeID(t, fs.Path("home", "a"))},
		{Rel: "d/e/b", ID: subvolumeID(t, fs.Path("home", "d", "e", "b"))},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("NestedSubvolumes(home) = %+v, want %+v (direct children only)", got, want)
	}
	if got, err := btrfs.NestedSubvolumes(fs.Path("home", "d", "e", "b")); err != nil || len(got) != 0 {
		t.Errorf("NestedSubvolumes of a leaf = %v, %v", got, err)
	}
	_, err = btrfs.NestedSubvolumes(fs.Path("home", "plain"))
	wantErr(t, err, "is not a btrfs subvolume")
}

// Exchange swaps two subvolumes; MoveSubvolume takes the place of an empty
// placeholder directory and refuses anything else.
func TestExchangeAndMove(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "a", "b", "a/inner")
	testutil.WriteFile(t, fs.Path("a", "which"), "a")
	testutil.WriteFile(t, fs.Path("b", "which"), "b")
	idA, idB := subvolumeID(t, fs.Path("a")), subvolumeID(t, fs.Path("b"))
	if err := btrfs.Exchange(fs.Path("a"), fs.Path("b")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(fs.Path("a", "which")); string(b) != "b" || subvolumeID(t, fs.Path("a")) != idB || subvolumeID(t, fs.Path("b")) != idA {
		t.Errorf("after Exchange, a holds %q (id %d, was b's %d)", b, subvolumeID(t, fs.Path("a")), idB)
	}
	if err := os.Mkdir(fs.Path("plain"), 0o755); err != nil {
		t.Fatal(err)
	}
	wantErr(t, btrfs.Exchange(fs.Path("a"), fs.Path("plain")), "is not a btrfs subvolume")

	// inner now lives in b; a (b's old tree) has a place for it.
	if err := os.Mkdir(fs.Path("a", "slot"), 0o700); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, fs.Path("a", "full", "x"), "x")
	wantErr(t, btrfs.MoveSubvolume(fs.Path("b", "inner"), fs.Path("a", "full")), "not empty")
	wantErr(t, btrfs.MoveSubvolume(fs.Path("b", "inner"), fs.Path("a", "which")), "exists")
	wantErr(t, btrfs.MoveSubvolume(fs.Path("b", "inner"), fs.Path("a", "no", "dir")), "does not exist")
	wantErr(t, btrfs.MoveSubvolume(fs.Path("b", "plain-missing"), fs.Path("a", "x")), "does not exist")
	if err := btrfs.MoveSubvolume(fs.Path("b", "inner"), fs.Path("a", "slot")); err != nil {
		t.Fatal(err)
	}
	if ok, err := btrfs.IsSubvolume(fs.Path("a", "slot")); !ok || err != nil {
		t.Errorf("a/slot after the move: subvolume %v, %v", ok, err)
	}
	if _, err := os.Lstat(fs.Path("b", "inner")); !os.IsNotExist(err) {
		t.Errorf("b/inner after the move: %v", err)
	}
	if err := btrfs.MoveSubvolume(fs.Path("a", "slot"), fs.Path("b", "back")); err != nil {
		t.Fatal(err)
	}
}

// The placeholder a snapshot shows for a nested subvolume is an empty
// directory a nested subvolume can take.
func TestMoveIntoSnapshotPlaceholder(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "home")
	testutil.WriteFile(t, fs.Path("home", "f"), "x")
	if err := os.Mkdir(fs.Path("home", ".snaps"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := btrfs.SnapshotReadOnly(fs.Path("home"), fs.Path("home", ".snaps", "s1")); err != nil {
		t.Fatal(err)
	}
	if err := btrfs.SnapshotWritable(fs.Path("home"), fs.Path("clone")); err != nil {
		t.Fatal(err)
	}
	if err := btrfs.CheckSlot(fs.Path("clone", ".snaps", "s1")); err != nil {
		t.Fatalf("the placeholder is no slot: %v", err)
	}
	if err := btrfs.MoveSubvolume(fs.Path("home", ".snaps", "s1"), fs.Path("clone", ".snaps", "s1")); err != nil {
		t.Fatal(err)
	}
	if got, err := btrfs.NestedSubvolumes(fs.Path("clone")); err != nil || len(got) != 1 || got[0].Rel != ".snaps/s1" {
		t.Errorf("clone's nested subvolumes after the move: %v, %v", got, err)
	}
	// A read-only one moves (the kernel refuses a plain rename with EROFS)
	// and stays read-only.
	if info, err := btrfs.Info(fs.Path("clone", ".snaps", "s1")); err != nil || !info.ReadOnly {
		t.Errorf("the moved snapshot: %+v, %v; want read-only", info, err)
	}
	if b, _ := os.ReadFile(fs.Path("clone", ".snaps", "s1", "f")); string(b) != "x" {
		t.Errorf("the moved snapshot holds %q", b)
	}
}

func TestSetDefault(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "@", "@new")
	id := subvolumeID(t, fs.Path("@new"))
	if err := btrfs.SetDefault(fs.Mount, id); err != nil {
		t.Fatal(err)
	}
	if out := testutil.Run(t, "btrfs", "subvolume", "get-default", fs.Mount); !strings.HasPrefix(out, "ID "+strconv.FormatUint(id, 10)+" ") {
		t.Errorf("btrfs subvolume get-default after SetDefault(%d): %s", id, out)
	}
	if err := btrfs.SetDefault(fs.Mount, btrfs.TopLevelID); err != nil {
		t.Fatal(err)
	}
	if out := testutil.Run(t, "btrfs", "subvolume", "get-default", fs.Mount); !strings.HasPrefix(out, "ID 5 ") {
		t.Errorf("btrfs subvolume get-default after SetDefault(5): %s", out)
	}
	wantErr(t, btrfs.SetDefault(fs.Mount, 999), "BTRFS_IOC_DEFAULT_SUBVOL")
	wantErr(t, btrfs.SetDefault(tmpfs(t), 5), "is not on btrfs")
}

// SnapshotBeside reaches the directory of a mounted subvolume through the
// top level, mounted nowhere; the host's mount table does not change.
func TestSnapshotBeside(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "@", "@/.snaps/s1", "vols", "vols/data")
	testutil.WriteFile(t, fs.Path("@", "etc", "version"), "1")
	if err := btrfs.SnapshotReadOnly(fs.Path("@"), fs.Path("@", ".snaps", "old")); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, fs.Path("@", "etc", "version"), "2")
	root := mountSubvol(t, fs, "/@")
	data := mountSubvol(t, fs, "/vols/data")
	mountinfo := func() string {
		b, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	before := mountinfo()

	if at, err := btrfs.MountedAt(root); err != nil || !reflect.DeepEqual(at, []string{root}) {
		t.Errorf("MountedAt(%s) = %v, %v", root, at, err)
	}
	if at, err := btrfs.MountedAt(fs.Path("@")); err != nil || !reflect.DeepEqual(at, []string{root}) {
		t.Errorf("MountedAt(%s) = %v, %v; want the subvol= mount", fs.Path("@"), at, err)
	}
	if at, err := btrfs.MountedAt(fs.Path("vols")); err != nil || len(at) != 0 {
		t.Errorf("MountedAt(vols) = %v, %v; want none", at, err)
	}
	if p, _, err := btrfs.FSPath(filepath.Join(root, ".snaps")); err != nil || p != "/@/.snaps" {
		t.Errorf("FSPath = %q, %v", p, err)
	}

	sib, err := btrfs.SnapshotBeside(filepath.Join(root, ".snaps", "old"), root, "@.rollback")
	if err != nil {
		t.Fatal(err)
	}
	if sib.FSPath != "/@.rollback" || sib.ID != subvolumeID(t, fs.Path("@.rollback")) {
		t.Errorf("SnapshotBeside = %+v; btrfs says id %d", sib, subvolumeID(t, fs.Path("@.rollback")))
	}
	if b, _ := os.ReadFile(fs.Path("@.rollback", "etc", "version")); string(b) != "1" {
		t.Errorf("the sibling holds version %q, want the snapshot's 1", b)
	}
	if info, err := btrfs.Info(fs.Path("@.rollback")); err != nil || info.ReadOnly {
		t.Errorf("the sibling: %+v, %v; want writable", info, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc", "version")); string(b) != "2" {
		t.Errorf("the mounted subvolume changed: version %q", b)
	}
	// Deeper: the directory is /vols, below the top level.
	if err := btrfs.SnapshotReadOnly(data, filepath.Join(data, "ro")); err != nil {
		t.Fatal(err)
	}
	if sib, err := btrfs.SnapshotBeside(filepath.Join(data, "ro"), data, "data.new"); err != nil || sib.FSPath != "/vols/data.new" {
		t.Errorf("SnapshotBeside in /vols = %+v, %v", sib, err)
	}
	if ok, err := btrfs.IsSubvolume(fs.Path("vols", "data.new")); !ok || err != nil {
		t.Errorf("vols/data.new: %v %v", ok, err)
	}
	if after := mountinfo(); after != before {
		t.Errorf("the mount table changed:\n%s\n---\n%s", before, after)
	}
	_, err = btrfs.SnapshotBeside(filepath.Join(root, ".snaps", "old"), root, "@.rollback")
	wantErr(t, err, "already exists")
	_, err = btrfs.SnapshotBeside(filepath.Join(root, ".snaps", "old"), fs.Mount, "x")
	wantErr(t, err, "top level")
	_, err = btrfs.SnapshotBeside(filepath.Join(root, ".snaps", "old"), root, "a/b")
	wantErr(t, err, "bad name")
}

func TestMountPointsUnder(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "home")
	if err := os.Mkdir(fs.Path("home", "mnt"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := btrfs.MountPointsUnder(fs.Path("home")); err != nil || len(got) != 0 {
		t.Errorf("MountPointsUnder before: %v, %v", got, err)
	}
	if err := unix.Mount("tmpfs", fs.Path("home", "mnt"), "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(fs.Path("home", "mnt"), 0)
	if got, err := btrfs.MountPointsUnder(fs.Path("home")); err != nil || !reflect.DeepEqual(got, []string{fs.Path("home", "mnt")}) {
		t.Errorf("MountPointsUnder: %v, %v", got, err)
	}
}

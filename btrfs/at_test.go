package btrfs

import (
	"os"
	"strings"
	"testing"

	"github.com/subvault/subvault/internal/testutil"
)

// The descriptor operations: a snapshot made from descriptors is the
// subvolume's (parent UUID) and read-only; a subvolume made in a directory
// is the empty one made; a subvolume is deleted by UUID only; snapshots are
// listed and deleted through the directory's descriptor, a name that is not
// subvault's refused.
func TestDescriptorOperations(t *testing.T) {
	fs := testutil.NewBtrfs(t, 256, "home")
	testutil.WriteFile(t, fs.Path("home", "a"), "a")
	if err := os.Mkdir(fs.Path("snaps"), 0o700); err != nil {
		t.Fatal(err)
	}
	open := func(p string) *os.File {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	home, snaps, top := open(fs.Path("home")), open(fs.Path("snaps")), open(fs.Path())
	src, err := InfoOf(home)
	if err != nil {
		t.Fatal(err)
	}
	s := Snapshot{Plan: "p", JobID: 1, Subvolume: "/home"}
	snap, info, err := SnapshotAt(home, snaps, s.Name(), true)
	if err != nil {
		t.Fatal(err)
	}
	snap.Close()
	if info.ParentUUID != src.UUID || !info.ReadOnly {
		t.Errorf("snapshot %+v of %+v", info, src)
	}
	if _, _, err := SnapshotAt(home, snaps, s.Name(), true); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("a second snapshot of the same name: %v", err)
	}
	list, err := ListSnapshotsAt(snaps)
	if err != nil || len(list) != 1 || list[0].Name() != s.Name() {
		t.Fatalf("ListSnapshotsAt: %v, %v", list, err)
	}

	sv, made, err := CreateSubvolumeAt(top, "new")
	if err != nil {
		t.Fatal(err)
	}
	sv.Close()
	if _, _, err := CreateSubvolumeAt(top, "new"); err == nil {
		t.Error("a subvolume made over an existing one")
	}
	if err := DeleteSubvolumeAt(top, "new", src.UUID); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Errorf("deleted by another subvolume's UUID: %v", err)
	}
	if err := DeleteSubvolumeAt(top, "new", made.UUID); err != nil {
		t.Error(err)
	}
	if err := DeleteSnapshotAt(top, "home"); err == nil || !strings.Contains(err.Error(), "not a subvault snapshot name") {
		t.Errorf("DeleteSnapshotAt of a subvolume without a subvault name: %v", err)
	}
	if err := DeleteSnapshotAt(snaps, s.Name()); err != nil {
		t.Error(err)
	}
	if list, _ := ListSnapshotsAt(snaps); len(list) != 0 {
		t.Errorf("left: %v", list)
	}
}

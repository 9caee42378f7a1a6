package btrfs_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/internal/testutil"
)

// A subvolume made by CreateSubvolume is deleted, content and all, by
// DeleteSubvolume with its UUID; another subvolume, or a plain directory,
// at that path is refused and left alone.
func TestCreateAndDeleteSubvolume(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "home")
	target := fs.Path("restored")
	sv, err := btrfs.CreateSubvolume(target)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := btrfs.IsSubvolume(target); !ok || err != nil || sv.UUID == "" || sv.ReadOnly {
		t.Fatalf("after CreateSubvolume: subvolume %v (%v), %+v", ok, err, sv)
	}
	testutil.WriteFile(t, filepath.Join(target, "a", "b"), "content")

	wantErr(t, func() error { _, err := btrfs.CreateSubvolume(target); return err }(), "already exists")
	wantErr(t, func() error { _, err := btrfs.CreateSubvolume(filepath.Join(tmpfs(t), "x")); return err }(), "not on btrfs")

	other, err := btrfs.Info(fs.Path("home"))
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, btrfs.DeleteSubvolume(target, other.UUID), "refusing", other.UUID)
	wantErr(t, btrfs.DeleteSubvolume(fs.Path("home"), sv.UUID), "refusing")
	if err := os.Mkdir(fs.Path("plain"), 0o755); err != nil {
		t.Fatal(err)
	}
	wantErr(t, btrfs.DeleteSubvolume(fs.Path("plain"), sv.UUID), "not a subvolume")
	exists(t, filepath.Join(target, "a", "b"))
	exists(t, fs.Path("home"))

	if err := btrfs.DeleteSubvolume(target, sv.UUID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Errorf("after DeleteSubvolume: %v", err)
	}
}

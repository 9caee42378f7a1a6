package restore

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/internal/testutil"
)

func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
}

// The merge replaces what the staged tree replaces, never writes through a
// symbolic link of the destination, leaves entries the staged tree lacks,
// gives merged directories the staged owner, mode, attributes and times,
// and never enters a mount point: not one in the destination, not one in a
// replaced directory when the staging tree is removed.
func TestMergeReplacesWithoutFollowingOrCrossing(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	stage, dst, outside := filepath.Join(dir, "dst", ".stage"), filepath.Join(dir, "dst"), filepath.Join(dir, "outside")
	testutil.WriteFile(t, filepath.Join(outside, "victim"), "outside\n")

	testutil.WriteFile(t, filepath.Join(dst, "keep"), "not in the archive\n")
	testutil.WriteFile(t, filepath.Join(dst, "file"), "old\n")
	testutil.WriteFile(t, filepath.Join(dst, "dir", "old"), "old\n")
	if err := os.Symlink(outside, filepath.Join(dst, "link")); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, filepath.Join(dst, "mnt"))
	testutil.WriteFile(t, filepath.Join(dst, "mnt", "mounted"), "on the tmpfs\n")
	// A read-only bind mount of the same filesystem, as systemd's
	// ProtectSystem= makes of /usr and /etc: same device, other mount.
	testutil.WriteFile(t, filepath.Join(dst, "robind", "f"), "under a read-only bind\n")
	if err := unix.Mount(filepath.Join(dst, "robind"), filepath.Join(dst, "robind"), "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("", filepath.Join(dst, "robind"), "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, filepath.Join(dst, "olddir", "m"))
	testutil.WriteFile(t, filepath.Join(dst, "olddir", "m", "mounted"), "on the tmpfs\n")
	t.Cleanup(func() {
		for _, m := range []string{filepath.Join(dst, "robind"), filepath.Join(dst, "mnt"), filepath.Join(stage, "root", "olddir", "m"), filepath.Join(dst, "olddir", "m")} {
			_ = unix.Unmount(m, 0)
		}
	})

	src := filepath.Join(stage, "root")
	testutil.WriteFile(t, filepath.Join(src, "file"), "new\n")
	testutil.WriteFile(t, filepath.Join(src, "dir", "new"), "new\n")
	testutil.WriteFile(t, filepath.Join(src, "link", "victim"), "restored\n")
	testutil.WriteFile(t, filepath.Join(src, "mnt", "x"), "would land on the tmpfs\n")
	testutil.WriteFile(t, filepath.Join(src, "robind", "f"), "would fail: read-only\n")
	testutil.WriteFile(t, filepath.Join(src, "olddir"), "a file where a directory was\n")
	if err := unix.Setxattr(filepath.Join(src, "dir"), "user.a", []byte("b"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(src, "dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(src, "dir"), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	ts := unix.NsecToTimespec(1_234_567_890_123_456_789)
	if err := unix.UtimesNano(filepath.Join(src, "dir"), []unix.Timespec{ts, ts}); err != nil {
		t.Fatal(err)
	}

	m := &merger{skip: ".stage"}
	srcDir, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer srcDir.Close()
	dstDir, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer dstDir.Close()
	if err := m.merge(srcDir, dstDir); err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		data, err := os.ReadFile(p)
		if err != nil {
			return "(" + err.Error() + ")"
		}
		return string(data)
	}
	for p, want := range map[string]string{
		"keep": "not in the archive\n", "file": "new\n", "dir/old": "old\n", "dir/new": "new\n",
		"link/victim": "restored\n", "mnt/mounted": "on the tmpfs\n", "olddir": "a file where a directory was\n",
		"robind/f": "under a read-only bind\n",
	} {
		if got := read(filepath.Join(dst, p)); got != want {
			t.Errorf("%s: %q, want %q", p, got, want)
		}
	}
	if got := read(filepath.Join(outside, "victim")); got != "outside\n" {
		t.Errorf("the merge wrote through the link: outside/victim is %q", got)
	}
	if _, err := os.Lstat(filepath.Join(dst, "mnt", "x")); !os.IsNotExist(err) {
		t.Errorf("the merge entered a mount point: %v", err)
	}
	slices.Sort(m.skipped)
	if !slices.Equal(m.skipped, []string{"mnt", "robind"}) {
		t.Errorf("skipped %v, want [mnt robind]", m.skipped)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dst, "dir"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o700 || st.Uid != 1234 || st.Gid != 5678 || st.Mtim != ts {
		t.Errorf("merged dir: mode %o, owner %d:%d, mtime %v; want 0700, 1234:5678, %v", st.Mode&0o7777, st.Uid, st.Gid, st.Mtim, ts)
	}
	if v, err := unix.Getxattr(filepath.Join(dst, "dir"), "user.a", make([]byte, 8)); err != nil || v != 1 {
		t.Errorf("merged dir lacks user.a: %v", err)
	}

	// The replaced olddir, with its mount point, is in the staging tree
	// now: removing the staging tree leaves the mount and what is on it.
	dfd, err := openDirNoFollow(unix.AT_FDCWD, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	left, err := removeTree(dfd, ".stage")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(left, []string{".stage/root/olddir/m"}) {
		t.Errorf("removeTree left %v, want the mount point", left)
	}
	if got := read(filepath.Join(stage, "root", "olddir", "m", "mounted")); got != "on the tmpfs\n" {
		t.Errorf("removeTree entered a mount point: %q", got)
	}
	for _, gone := range []string{"file", "dir", "link", "mnt"} {
		if _, err := os.Lstat(filepath.Join(stage, "root", gone)); !os.IsNotExist(err) {
			t.Errorf("removeTree left %s: %v", gone, err)
		}
	}
}

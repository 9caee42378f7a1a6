package btrfs_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/internal/testutil"
	"golang.org/x/sys/unix"
)

func snapName(plan string, job uint32, subvolume string) string {
	return btrfs.Snapshot{Plan: plan, Time: time.Date(2026, 11, 21, 3, 0, 0, 0, time.UTC), JobID: job, Subvolume: subvolume}.Name()
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", parts)
	}
	t.Logf("error: %v", err)
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

func exists(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("%s is gone: %v", path, err)
	}
}

// tmpfs mounts a tmpfs on a new directory of the test's temp dir.
func tmpfs(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func TestIsSubvolume(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "home", "srv", "srv/db")
	testutil.WriteFile(t, fs.Path("home/plain/file"), "x")
	for path, want := range map[string]bool{
		fs.Mount:                   true, // the top-level subvolume (id 5) has inode 256 too
		fs.Path("home"):            true,
		fs.Path("srv/db"):          true,
		fs.Path("home/plain"):      false,
		fs.Path("home/plain/file"): false,
	} {
		got, err := btrfs.IsSubvolume(path)
		if err != nil || got != want {
			t.Errorf("IsSubvolume(%s) = %v, %v; want %v", path, got, err, want)
		}
	}
	_, err := btrfs.IsSubvolume(fs.Path("missing"))
	wantErr(t, err, "does not exist")
	_, err = btrfs.IsSubvolume(tmpfs(t))
	wantErr(t, err, "is not on btrfs (it is on tmpfs at ")
}

func TestSnapshotErrors(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "home", "snaps")
	testutil.WriteFile(t, fs.Path("home/data/file"), "x")

	err := btrfs.SnapshotReadOnly(fs.Path("home/data"), fs.Path("snaps/a"))
	wantErr(t, err, "cannot snapshot "+fs.Path("home/data"), "is not a btrfs subvolume (it is a plain directory on btrfs; create it with \"btrfs subvolume create\" or back up the subvolume that holds it: "+fs.Path("home")+")")

	err = btrfs.SnapshotReadOnly(fs.Path("nothere"), fs.Path("snaps/a"))
	wantErr(t, err, "cannot snapshot "+fs.Path("nothere"), "does not exist")

	other := tmpfs(t)
	err = btrfs.SnapshotReadOnly(fs.Path("home"), filepath.Join(other, "a"))
	wantErr(t, err, "cannot snapshot "+fs.Path("home")+" into "+other+": the snapshot directory is on a different filesystem (tmpfs at "+other+"), snapshots must be on the same btrfs filesystem as the subvolume")

	// /tmp on this machine is not btrfs; when it is, the tmpfs case above still runs.
	var st unix.Statfs_t
	if err := unix.Statfs(os.TempDir(), &st); err == nil && uint32(st.Type) != 0x9123683e {
		err = btrfs.SnapshotReadOnly(fs.Path("home"), filepath.Join(os.TempDir(), "subvault-never"))
		wantErr(t, err, "the snapshot directory is on a different filesystem (")
	}

	// Another btrfs filesystem: same type, different FSID.
	fs2 := testutil.NewBtrfs(t, 128, "snaps")
	err = btrfs.SnapshotReadOnly(fs.Path("home"), fs2.Path("snaps/a"))
	wantErr(t, err, "the snapshot directory is on a different filesystem (btrfs ")

	err = btrfs.SnapshotReadOnly(fs.Path("home"), fs.Path("snaps/missing/a"))
	wantErr(t, err, "snaps/missing does not exist")

	testutil.WriteFile(t, fs.Path("snaps/taken"), "")
	err = btrfs.SnapshotReadOnly(fs.Path("home"), fs.Path("snaps/taken"))
	wantErr(t, err, "already exists")

	entries, _ := os.ReadDir(fs.Path("snaps"))
	if len(entries) != 1 {
		t.Errorf("failed snapshots left entries in %s: %v", fs.Path("snaps"), entries)
	}
}

func TestReadOnlyAndInfo(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "home", "snaps")
	testutil.WriteFile(t, fs.Path("home/file"), "v1")
	src, err := btrfs.Info(fs.Path("home"))
	if err != nil {
		t.Fatal(err)
	}
	if src.ReadOnly || src.UUID == "" || src.ParentUUID != "" || src.ID < 256 || src.Path != fs.Path("home") {
		t.Errorf("Info(home) = %+v", src)
	}

	snap := fs.Path("snaps", snapName("nightly", 1, "/home"))
	if err := btrfs.SnapshotReadOnly(fs.Path("home"), snap); err != nil {
		t.Fatal(err)
	}
	info, err := btrfs.Info(snap)
	if err != nil {
		t.Fatal(err)
	}
	if !info.ReadOnly || info.ParentUUID != src.UUID || info.UUID == src.UUID || info.ID == src.ID {
		t.Errorf("Info(snapshot) = %+v, source %+v", info, src)
	}

	// Cross-check with btrfs-progs.
	out := testutil.Run(t, "btrfs", "subvolume", "show", snap)
	for _, want := range []string{"UUID: \t\t\t" + info.UUID, "Parent UUID: \t\t" + src.UUID, fmt.Sprintf("Subvolume ID: \t\t%d", info.ID), "Flags: \t\t\treadonly"} {
		if !strings.Contains(out, want) {
			t.Errorf("btrfs subvolume show disagrees: want %q in\n%s", want, out)
		}
	}

	err = os.WriteFile(filepath.Join(snap, "new"), []byte("x"), 0o644)
	if !errors.Is(err, unix.EROFS) {
		t.Errorf("write into a read-only snapshot: %v, want EROFS", err)
	}
	if err := btrfs.SetReadOnly(snap, false); err != nil {
		t.Fatal(err)
	}
	if info, _ := btrfs.Info(snap); info.ReadOnly {
		t.Error("still read-only after SetReadOnly(false)")
	}
	if err := os.WriteFile(filepath.Join(snap, "new"), []byte("x"), 0o644); err != nil {
		t.Errorf("write after SetReadOnly(false): %v", err)
	}
	if err := btrfs.SetReadOnly(snap, true); err != nil {
		t.Fatal(err)
	}
	if info, _ := btrfs.Info(snap); !info.ReadOnly {
		t.Error("not read-only after SetReadOnly(true)")
	}
	if err := os.WriteFile(filepath.Join(snap, "new2"), []byte("x"), 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write after SetReadOnly(true): %v, want EROFS", err)
	}

	// The generation rises when the subvolume changes and is committed.
	testutil.WriteFile(t, fs.Path("home/file2"), "v2")
	unix.Sync()
	after, err := btrfs.Info(fs.Path("home"))
	if err != nil {
		t.Fatal(err)
	}
	if after.Generation <= src.Generation {
		t.Errorf("generation %d after a write, was %d", after.Generation, src.Generation)
	}

	_, err = btrfs.Info(fs.Path("home/file"))
	wantErr(t, err, "is not a btrfs subvolume")
	err = btrfs.SetReadOnly(fs.Path("snaps"), false)
	if err != nil {
		t.Errorf("SetReadOnly(false) on a writable subvolume: %v", err)
	}
}

func TestWritableSnapshotOfReadOnly(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "home", "snaps")
	testutil.WriteFile(t, fs.Path("home/file"), "v1")
	ro := fs.Path("snaps", snapName("nightly", 1, "/home"))
	if err := btrfs.SnapshotReadOnly(fs.Path("home"), ro); err != nil {
		t.Fatal(err)
	}
	clone := fs.Path("snaps", snapName("inspect", 2, "/home"))
	if err := btrfs.SnapshotWritable(ro, clone); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(clone, "file"), []byte("changed"), 0o644); err != nil {
		t.Fatalf("write into a writable clone: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(ro, "file")); string(b) != "v1" {
		t.Errorf("the read-only snapshot changed: %q", b)
	}
	ci, _ := btrfs.Info(clone)
	ri, _ := btrfs.Info(ro)
	if ci.ReadOnly || ci.ParentUUID != ri.UUID {
		t.Errorf("clone %+v, read-only snapshot %+v", ci, ri)
	}
}

func TestDelete(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "home", "snaps", "snaps/mysnap")
	ro := fs.Path("snaps", snapName("nightly", 1, "/home"))
	if err := btrfs.SnapshotReadOnly(fs.Path("home"), ro); err != nil {
		t.Fatal(err)
	}

	// Not ours: a subvolume with another name, a plain directory with our name.
	err := btrfs.Delete(fs.Path("snaps/mysnap"))
	wantErr(t, err, "refusing to delete "+fs.Path("snaps/mysnap"), "not a subvault snapshot name")
	exists(t, fs.Path("snaps/mysnap"))

	plain := fs.Path("snaps", snapName("nightly", 2, "/home"))
	testutil.WriteFile(t, filepath.Join(plain, "keep"), "x")
	err = btrfs.Delete(plain)
	wantErr(t, err, "refusing to delete "+plain, "not a btrfs subvolume")
	exists(t, filepath.Join(plain, "keep"))

	// A symlink with our name pointing at a subvolume is not followed.
	link := fs.Path("snaps", snapName("nightly", 3, "/home"))
	if err := os.Symlink(fs.Path("home"), link); err != nil {
		t.Fatal(err)
	}
	err = btrfs.Delete(link)
	wantErr(t, err, "refusing to delete", "not a btrfs subvolume")
	exists(t, fs.Path("home"))

	// The subvolume holding the snapshots is not ours either.
	err = btrfs.Delete(fs.Path("snaps"))
	wantErr(t, err, "refusing to delete")
	err = btrfs.Delete(fs.Path("snaps", snapName("nightly", 9, "/home")))
	wantErr(t, err, "does not exist")

	// A read-only snapshot is deleted.
	if err := btrfs.Delete(ro); err != nil {
		t.Fatalf("delete read-only snapshot: %v", err)
	}
	if _, err := os.Lstat(ro); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", ro, err)
	}

	// A snapshot holding a nested subvolume someone made in a writable clone:
	// refused, nothing deleted.
	clone := fs.Path("snaps", snapName("inspect", 4, "/home"))
	if err := btrfs.SnapshotWritable(fs.Path("home"), clone); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "btrfs", "subvolume", "create", filepath.Join(clone, "nested"))
	err = btrfs.Delete(clone)
	wantErr(t, err, "nested subvolumes")
	exists(t, filepath.Join(clone, "nested"))
}

func TestNestedSubvolumes(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "srv", "srv/db", "snaps")
	testutil.WriteFile(t, fs.Path("srv/www/index.html"), "hi")
	testutil.WriteFile(t, fs.Path("srv/db/table"), "rows")
	srvSnap := fs.Path("snaps", snapName("p", 1, "/srv"))
	dbSnap := fs.Path("snaps", snapName("p", 1, "/srv/db"))
	if err := btrfs.SnapshotReadOnly(fs.Path("srv"), srvSnap); err != nil {
		t.Fatal(err)
	}
	if err := btrfs.SnapshotReadOnly(fs.Path("srv/db"), dbSnap); err != nil {
		t.Fatal(err)
	}
	// A snapshot does not descend into nested subvolumes: srv's snapshot has
	// an empty directory where db was, which is no subvolume.
	if ok, err := btrfs.IsSubvolume(filepath.Join(srvSnap, "db")); err != nil || ok {
		t.Errorf("IsSubvolume(srv snapshot/db) = %v, %v", ok, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(srvSnap, "db")); len(entries) != 0 {
		t.Errorf("srv snapshot/db has %d entries", len(entries))
	}
	if b, _ := os.ReadFile(filepath.Join(dbSnap, "table")); string(b) != "rows" {
		t.Errorf("db snapshot table = %q", b)
	}
	list, err := btrfs.ListSnapshots(fs.Path("snaps"))
	if err != nil || len(list) != 2 || list[0].Subvolume != "/srv" || list[1].Subvolume != "/srv/db" {
		t.Errorf("ListSnapshots = %+v, %v", list, err)
	}
	for _, p := range []string{srvSnap, dbSnap} {
		if err := btrfs.Delete(p); err != nil {
			t.Error(err)
		}
	}
}

func TestFindMount(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "srv", "srv/db")
	testutil.WriteFile(t, fs.Path("srv/db/dir/file"), "x")
	uuid := strings.TrimSpace(testutil.Run(t, "blkid", "-s", "UUID", "-o", "value", fs.Device))
	for _, p := range []string{fs.Mount, fs.Path("srv"), fs.Path("srv/db"), fs.Path("srv/db/dir/file")} {
		m, err := btrfs.FindMount(p)
		if err != nil {
			t.Errorf("FindMount(%s): %v", p, err)
			continue
		}
		want := btrfs.Mount{MountPoint: fs.Mount, Device: fs.Device, FSID: uuid, Subvol: "/", SubvolID: 5}
		if m != want {
			t.Errorf("FindMount(%s) = %+v, want %+v", p, m, want)
		}
	}

	// A second mount of the nested subvolume, at a path with a space (mountinfo
	// escapes it as \040), reached through a symlink.
	dir := filepath.Join(t.TempDir(), "db mount")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "mount", "-t", "btrfs", "-o", "subvol=/srv/db", fs.Device, dir)
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(filepath.Join(dir, "dir"), link); err != nil {
		t.Fatal(err)
	}
	db, err := btrfs.Info(fs.Path("srv/db"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := btrfs.FindMount(link)
	want := btrfs.Mount{MountPoint: dir, Device: fs.Device, FSID: uuid, Subvol: "/srv/db", SubvolID: db.ID}
	if err != nil || m != want {
		t.Errorf("FindMount(%s) = %+v, %v; want %+v", link, m, err, want)
	}

	other := tmpfs(t)
	_, err = btrfs.FindMount(other)
	wantErr(t, err, "is not on btrfs (it is on tmpfs at "+other+")")
	_, err = btrfs.FindMount(fs.Path("missing"))
	wantErr(t, err, "does not exist")
}

func TestListSnapshots(t *testing.T) {
	fs := testutil.NewBtrfs(t, 512, "home", "snaps")
	testutil.WriteFile(t, fs.Path("home/file"), "x")
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const n = 1000
	// Made in reverse time order so the listing has to sort.
	for i := n - 1; i >= 0; i-- {
		s := btrfs.Snapshot{Plan: "nightly", Time: base.Add(time.Duration(i/2) * time.Hour), JobID: uint32(n - i), Subvolume: "/home"}
		if err := btrfs.SnapshotReadOnly(fs.Path("home"), fs.Path("snaps", s.Name())); err != nil {
			t.Fatal(err)
		}
	}
	// Foreign entries: a subvolume, a plain dir and a file with our names'
	// shape, a near-miss name.
	testutil.Run(t, "btrfs", "subvolume", "create", fs.Path("snaps/mysnap"))
	testutil.WriteFile(t, fs.Path("snaps", snapName("nightly", 5000, "/home"), "x"), "")
	testutil.WriteFile(t, fs.Path("snaps", snapName("nightly", 5001, "/home")), "")
	if err := btrfs.SnapshotReadOnly(fs.Path("home"), fs.Path("snaps", snapName("nightly", 5002, "/home")+"@x")); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	list, err := btrfs.ListSnapshots(fs.Path("snaps"))
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ListSnapshots of %d snapshots + 4 foreign entries: %v", n, elapsed)
	if len(list) != n {
		t.Fatalf("ListSnapshots returned %d snapshots, want %d", len(list), n)
	}
	for i, s := range list {
		wantTime := base.Add(time.Duration(i/2) * time.Hour)
		if !s.Time.Equal(wantTime) || s.Subvolume != "/home" || s.Path != fs.Path("snaps", s.Name()) {
			t.Fatalf("list[%d] = %+v, want time %v", i, s, wantTime)
		}
		if i > 0 && s.Time.Equal(list[i-1].Time) && s.JobID <= list[i-1].JobID {
			t.Fatalf("list[%d] job %d after job %d at the same time", i, s.JobID, list[i-1].JobID)
		}
	}

	if empty, err := btrfs.ListSnapshots(fs.Path("snaps/none")); err != nil || len(empty) != 0 {
		t.Errorf("ListSnapshots(missing dir) = %v, %v", empty, err)
	}
	_, err = btrfs.ListSnapshots(tmpfs(t))
	wantErr(t, err, "is not on btrfs (it is on tmpfs")

	// Delete them all; the foreign entries stay.
	for _, s := range list {
		if err := btrfs.Delete(s.Path); err != nil {
			t.Fatal(err)
		}
	}
	left, _ := os.ReadDir(fs.Path("snaps"))
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	if len(names) != 4 {
		t.Errorf("after deleting every listed snapshot, %s holds %v", fs.Path("snaps"), names)
	}
}

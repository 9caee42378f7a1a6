package compare

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/internal/testutil"
	"github.com/subvault/subvault/restic"
)

// listing is what restic ls --json would give for the tree at dir backed
// up as path: its nodes, the directories above path included.
func listing(t *testing.T, dir, path string) []restic.Node {
	t.Helper()
	var nodes []restic.Node
	for d := filepath.Dir(path); d != "/"; d = filepath.Dir(d) {
		nodes = append(nodes, restic.Node{Path: d, Type: "dir", Mode: fs.ModeDir | 0o755})
	}
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		uid, gid := owner(fi)
		n := restic.Node{Path: restic.JSONPath(path + strings.TrimPrefix(p, dir)), Type: nodeType(fi.Mode()), Mode: fi.Mode(),
			UID: uid, GID: gid, ModTime: fi.ModTime()}
		if n.Type == "file" {
			n.Size = uint64(fi.Size())
		}
		nodes = append(nodes, n)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return nodes
}

func owner(fi fs.FileInfo) (uid, gid uint32) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid, st.Gid
	}
	return 0, 0
}

// openDir opens a directory for the test, closed when it ends.
func openDir(t *testing.T, dir string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	return fd
}

func write(t *testing.T, p, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func changesText(cs []contract.Change) string {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString(string(c.Kind) + " " + c.Path + "\n")
	}
	return b.String()
}

// Every kind of difference, each found from metadata alone, in both
// orientations; excluded paths and what lies above the root are not
// compared; a name that is not UTF-8 matches its U+FFFD form in the
// archive.
func TestTrees(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "home")
	const orig = "/srv/home"
	for _, f := range []string{"keep", "gone", "grow", "touch", "chmod", "typ", "sub/x", "olddir/f", "cache/junk", "bad\xffname", "tagged/data"} {
		write(t, filepath.Join(dir, f), "body")
	}
	write(t, filepath.Join(dir, "tagged", "CACHEDIR.TAG"), "Signature: 8a477f597d28d172789f06886806bc55 and more")
	if err := os.Symlink("keep", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	for _, f := range []string{"keep", "gone", "grow", "touch", "chmod", "typ", "sub/x", "sub", "bad\xffname", "link"} {
		if err := os.Chtimes(filepath.Join(dir, f), old, old); err != nil && f != "link" {
			t.Fatal(err)
		}
	}
	nodes := listing(t, dir, orig)

	// What changed since the "archive".
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Remove(filepath.Join(dir, "gone")))
	must(os.WriteFile(filepath.Join(dir, "grow"), []byte("longer body"), 0o644))
	must(os.Chtimes(filepath.Join(dir, "touch"), time.Now(), time.Now()))
	must(os.Chmod(filepath.Join(dir, "chmod"), 0o600))
	must(os.Remove(filepath.Join(dir, "typ")))
	must(os.Mkdir(filepath.Join(dir, "typ"), 0o755))
	must(os.RemoveAll(filepath.Join(dir, "olddir")))
	write(t, filepath.Join(dir, "sub", "added"), "new")
	write(t, filepath.Join(dir, "cache", "more-junk"), "x")
	write(t, filepath.Join(dir, "tagged", "more"), "x")
	write(t, filepath.Join(dir, "new\xfe"), "x")
	// The directory itself, as its entries changed: metadata only.
	must(os.Chtimes(filepath.Join(dir, "sub"), time.Now(), time.Now()))

	excl := NewExcluder([]string{"cache", "*.tmp"}, []string{"CACHEDIR.TAG:Signature: 8a477f597d28d172789f06886806bc55"})
	got, err := Trees(context.Background(), nodes, Options{Roots: []Root{{Path: orig, Dir: dir}}, Exclude: excl, ArchiveFirst: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []contract.Change{
		{Kind: contract.ChangeMetadata, Path: orig + "/"}, // gone, typ, olddir, new... came and went
		{Kind: contract.ChangeMetadata, Path: orig + "/chmod"},
		{Kind: contract.ChangeRemoved, Path: orig + "/gone"},
		{Kind: contract.ChangeChanged, Path: orig + "/grow"},
		{Kind: contract.ChangeAdded, Path: orig + "/new\xfe"},
		{Kind: contract.ChangeRemoved, Path: orig + "/olddir/"},
		{Kind: contract.ChangeRemoved, Path: orig + "/olddir/f"},
		{Kind: contract.ChangeMetadata, Path: orig + "/sub/"},
		{Kind: contract.ChangeAdded, Path: orig + "/sub/added"},
		{Kind: contract.ChangeChanged, Path: orig + "/touch"},
		{Kind: contract.ChangeTypeChanged, Path: orig + "/typ/"},
	}
	if g, w := changesText(got), changesText(want); g != w {
		t.Errorf("archive first:\n%s\nwant\n%s", g, w)
	}

	// The other way round: added and removed swap, the rest stays.
	got, err = Trees(context.Background(), nodes, Options{Roots: []Root{{Path: orig, Dir: dir}}, Exclude: excl})
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		switch want[i].Kind {
		case contract.ChangeAdded:
			want[i].Kind = contract.ChangeRemoved
		case contract.ChangeRemoved:
			want[i].Kind = contract.ChangeAdded
		}
	}
	if g, w := changesText(got), changesText(want); g != w {
		t.Errorf("disk first:\n%s\nwant\n%s", g, w)
	}
}

func TestTreesUnchangedAndMissingRoot(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "home")
	write(t, filepath.Join(dir, "a", "b"), "x")
	nodes := listing(t, dir, "/home")
	got, err := Trees(context.Background(), nodes, Options{Roots: []Root{{Path: "/home", Dir: dir}}, ArchiveFirst: true})
	if err != nil || len(got) != 0 {
		t.Errorf("an unchanged tree: %v, %v", got, err)
	}
	got, err = Trees(context.Background(), nodes, Options{Roots: []Root{{Path: "/home", Dir: dir + "-gone"}}, ArchiveFirst: true})
	if err != nil || changesText(got) != "removed /home/\nremoved /home/a/\nremoved /home/a/b\n" {
		t.Errorf("a root that is not there:\n%s%v", changesText(got), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 5000 {
		write(t, filepath.Join(dir, "many", strings.Repeat("x", i%7)+string(rune('a'+i%26))+strings.Repeat("y", i/26)), "")
	}
	if _, err := Trees(ctx, nodes, Options{Roots: []Root{{Path: "/home", Dir: dir}}}); err == nil {
		t.Error("a canceled comparison of 5000 files went on to the end")
	}
}

func TestExcluder(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		patterns []string
		path     string
		want     bool
	}{
		{[]string{"*.tmp"}, "/home/a/x.tmp", true},
		{[]string{"*.tmp"}, "/home/a/x.tmpl", false},
		{[]string{"/home/a"}, "/home/a", true},
		{[]string{"/home/a"}, "/srv/home/a", false},
		{[]string{"home/a"}, "/srv/home/a", true},
		{[]string{"cache"}, "/home/cache", true},
		{[]string{"cache"}, "/home/cache/x", true}, // restic matches a window anywhere in the path
		{[]string{"/home/*/.cache"}, "/home/ann/.cache", true},
		{[]string{"/home/*/.cache"}, "/home/ann/b/.cache", false},
		{[]string{"/home/**/.cache"}, "/home/ann/b/.cache", true},
		{[]string{"/home/**/.cache"}, "/home/.cache", true},
		{[]string{"**/*.o"}, "/src/a/b.o", true},
		{[]string{"/home/.subvault-snapshots"}, "/home/.subvault-snapshots", true},
		{[]string{"/home/.subvault-snapshots/"}, "/home/.subvault-snapshots", true},
		{[]string{"*.log", "!keep.log"}, "/var/keep.log", false},
		{[]string{"*.log", "!keep.log"}, "/var/other.log", true},
		{[]string{"", "  "}, "/x", false},
	} {
		if got := NewExcluder(c.patterns, nil).Excluded(c.path, -1); got != c.want {
			t.Errorf("%q excludes %s: %v, want %v", c.patterns, c.path, got, c.want)
		}
	}
	var none *Excluder
	if none.Excluded("/x", -1) {
		t.Error("a nil Excluder excluded")
	}
	dir := t.TempDir()
	write(t, filepath.Join(dir, "tagged", ".nobackup"), "")
	write(t, filepath.Join(dir, "cache", "CACHEDIR.TAG"), "Signature: 8a477f597d28d172789f06886806bc55")
	write(t, filepath.Join(dir, "fake", "CACHEDIR.TAG"), "no signature")
	e := NewExcluder(nil, []string{".nobackup", "CACHEDIR.TAG:Signature: 8a477f597d28d172789f06886806bc55"})
	for name, want := range map[string]bool{"tagged": true, "cache": true, "fake": false} {
		if got := e.Excluded("/home/"+name, openDir(t, filepath.Join(dir, name))); got != want {
			t.Errorf("exclude_if_present, %s: %v, want %v", name, got, want)
		}
	}
	if e.Excluded("/home/tagged", -1) {
		t.Error("exclude_if_present applied to a file")
	}
}

// Below a mount point (a bind mount of the same file system included)
// nothing is compared on either side: the walk does not leave the root's
// mount, and the archive's entries there are not reported.
func TestTreesStopAtMountPoints(t *testing.T) {
	testutil.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "home")
	write(t, filepath.Join(dir, "mnt", "under"), "in the archive, hidden by the mount")
	write(t, filepath.Join(dir, "a"), "x")
	nodes := listing(t, dir, "/home")
	other := t.TempDir()
	write(t, filepath.Join(other, "only-in-the-mount"), "y")
	if err := unix.Mount(other, filepath.Join(dir, "mnt"), "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(filepath.Join(dir, "mnt"), unix.MNT_DETACH) })
	got, err := Trees(context.Background(), nodes, Options{Roots: []Root{{Path: "/home", Dir: dir}}, ArchiveFirst: true})
	if err != nil {
		t.Fatal(err)
	}
	// The mount point itself is compared: the bind shows the other
	// directory's times and mode.
	for _, c := range got {
		if strings.HasPrefix(c.Path, "/home/mnt/") && c.Path != "/home/mnt/" {
			t.Errorf("compared below a mount point: %v", got)
		}
	}
	t.Logf("with a bind mount at /home/mnt: %v", got)
}

func TestListings(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 1, time.UTC)
	node := func(p, typ string, mode fs.FileMode, uid uint32, mt time.Time) restic.Node {
		return restic.Node{Path: p, Type: typ, Mode: mode, UID: uid, GID: uid, ModTime: mt}
	}
	first := []restic.Node{
		node("/", "dir", fs.ModeDir|0o755, 0, t0),
		node("/home", "dir", fs.ModeDir|0o755, 0, t0),
		node("/home/same", "file", 0o644, 1000, t0),
		node("/home/chmod", "file", 0o644, 1000, t0),
		node("/home/chown", "file", 0o644, 1000, t0),
		node("/home/touched", "file", 0o644, 1000, t0),
		node("/home/content", "file", 0o644, 1000, t0),
		node("/home/typ", "file", 0o644, 1000, t0),
		node("/home/gone", "file", 0o644, 1000, t0),
		node("/home/sub", "dir", fs.ModeDir|0o755, 1000, t0),
		node("/home/setuid", "file", 0o755, 0, t0),
	}
	t1 := t0.Add(time.Nanosecond)
	second := []restic.Node{
		node("/", "dir", fs.ModeDir|0o700, 0, t1), // above the root: not the plan's
		node("/home", "dir", fs.ModeDir|0o755, 0, t0),
		node("/home/same", "file", 0o644, 1000, t0),
		node("/home/chmod", "file", 0o600, 1000, t0),
		node("/home/chown", "file", 0o644, 0, t0),
		node("/home/touched", "file", 0o644, 1000, t1),
		node("/home/content", "file", 0o644, 1000, t1),
		node("/home/typ", "symlink", fs.ModeSymlink|0o777, 1000, t1),
		node("/home/new", "file", 0o644, 1000, t1),
		node("/home/sub", "dir", fs.ModeDir|0o755, 1000, t1),
		node("/home/setuid", "file", fs.ModeSetuid|0o755, 0, t0),
	}
	got := Listings(first, second, []string{"/home"}, map[string]bool{"/home/content": true})
	want := "metadata /home/chmod\nmetadata /home/chown\nmetadata /home/touched\nmetadata /home/sub/\nmetadata /home/setuid\n"
	if g := changesText(got); g != want {
		t.Errorf("Listings:\n%s\nwant\n%s", g, want)
	}
}

// A tree holding named pipes and links to devices and pipes, as markers
// of exclude_if_present (with and without a header) and as plain entries:
// the walk opens none of them and follows no link, so it ends, and what
// restic's backup does with them (any entry named as a marker without a
// header excludes its directory, as restic only lstats it) is what the
// comparison does.
func TestTreesOpenNoPipeOrDevice(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "home")
	elsewhere := t.TempDir()
	for _, f := range []string{"pipe/x", "devlink/x", "pipelink/x", "tagpipe/x", "taglink/x", "plain/x"} {
		write(t, filepath.Join(dir, f), "x")
	}
	for _, p := range []string{filepath.Join(dir, "pipe", ".nobackup"), filepath.Join(dir, "tagpipe", "CACHEDIR.TAG"),
		filepath.Join(dir, "plain", "fifo"), filepath.Join(elsewhere, "fifo")} {
		if err := unix.Mkfifo(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"devlink/.nobackup":    "/dev/zero",
		"pipelink/.nobackup":   filepath.Join(elsewhere, "fifo"),
		"taglink/CACHEDIR.TAG": filepath.Join(elsewhere, "fifo"),
		"plain/zero":           "/dev/zero",
		"plain/to-a-pipe":      filepath.Join(elsewhere, "fifo"),
		"plain/to-a-dir":       elsewhere,
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	nodes := listing(t, dir, "/home")
	write(t, filepath.Join(dir, "pipe", "new"), "x")
	write(t, filepath.Join(dir, "devlink", "new"), "x")
	write(t, filepath.Join(dir, "pipelink", "new"), "x")
	write(t, filepath.Join(dir, "tagpipe", "new"), "x")

	excl := NewExcluder(nil, []string{".nobackup", "CACHEDIR.TAG:Signature: 8a477f597d28d172789f06886806bc55"})
	type result struct {
		changes []contract.Change
		err     error
	}
	done := make(chan result, 1)
	go func() {
		got, err := Trees(context.Background(), nodes, Options{Roots: []Root{{Path: "/home", Dir: dir}}, Exclude: excl, ArchiveFirst: true})
		done <- result{got, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the comparison of a tree with named pipes and device links did not end")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	// pipe, devlink and pipelink are excluded by their markers; tagpipe's
	// and taglink's are not regular files with the header, so they are
	// compared: tagpipe's new file shows. The rest is as it was.
	want := "metadata /home/tagpipe/\nadded /home/tagpipe/new\n"
	if got := changesText(r.changes); got != want {
		t.Errorf("changes:\n%s\nwant\n%s", got, want)
	}
}

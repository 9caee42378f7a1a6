package reset

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/internal/testutil"
)

// What uid 65534 leaves in the subvolume cannot make the reset write
// outside the new subvolume or copy what it should not.
func TestResetHostileContent(t *testing.T) {
	const nobody = 65534
	t.Run("a link where a persisted path's parent is", func(t *testing.T) {
		m := prepared(t, 512, "home/nobody/data/keep")
		home := filepath.Join(m.Root, "home/nobody")
		if err := os.MkdirAll(home, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(home, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		// The user's data dir is a link to /etc: a reset that followed it
		// would copy /etc/keep of the host, or write into /etc.
		if err := os.Symlink("/etc", filepath.Join(home, "data")); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(filepath.Join(home, "data"), nobody, nobody); err != nil {
			t.Fatal(err)
		}
		ref := m.reference(t)
		rec, err := m.boot(t, t0)
		failedWith(t, rec, err, "not symbolic links")
		m.unchanged(t, ref)
		m.onlyOurs(t, []string{"@", resetDirName, "reference"}, 1)
	})
	t.Run("links in a persisted directory", func(t *testing.T) {
		m := newMachine(t, 512, "home/nobody")
		testutil.WriteFile(t, filepath.Join(m.Root, "etc/secret"), "root's\n")
		if err := os.Chmod(filepath.Join(m.Root, "etc/secret"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Init(context.Background(), m.cfg, m.Root, nil); err != nil {
			t.Fatal(err)
		}
		home := filepath.Join(m.Root, "home/nobody")
		testutil.WriteFile(t, filepath.Join(home, "notes"), "mine\n")
		for _, link := range []struct{ name, target string }{{"etc", "/etc"}, {"shadow", "/etc/shadow"}, {"up", "../../etc"}} {
			if err := os.Symlink(link.target, filepath.Join(home, link.name)); err != nil {
				t.Fatal(err)
			}
		}
		// A hard link to a root file outside the persisted paths (as if
		// protected_hardlinks were off).
		if err := os.Link(filepath.Join(m.Root, "etc/secret"), filepath.Join(home, "secret-link")); err != nil {
			t.Fatal(err)
		}
		testutil.Run(t, "chown", "-h", "65534:65534", filepath.Join(home, "notes"), filepath.Join(home, "etc"), filepath.Join(home, "shadow"), filepath.Join(home, "up"), home)
		if err := unix.Mkfifo(filepath.Join(home, "fifo"), 0o644); err != nil {
			t.Fatal(err)
		}
		testutil.WriteFile(t, filepath.Join(m.Root, "etc/secret"), "changed by root in the running system\n")
		want := t.TempDir()
		copyTree(t, home, filepath.Join(want, "nobody"))
		if rec, err := m.boot(t, t0); err != nil {
			t.Fatalf("%+v, %v", rec, err)
		}
		// The links are copied as links, the fifo as a fifo, never followed
		// or opened; the hard link is a file of its own now (as cp -a of
		// the directory alone makes it).
		if d := testutil.CompareTrees(t, filepath.Join(want, "nobody"), home); len(d) > 0 {
			t.Errorf("home/nobody after the reset:\n%s", strings.Join(d, "\n"))
		}
		var a, b unix.Stat_t
		if err := unix.Lstat(filepath.Join(m.Root, "etc/secret"), &a); err != nil {
			t.Fatal(err)
		}
		if err := unix.Lstat(filepath.Join(home, "secret-link"), &b); err != nil {
			t.Fatal(err)
		}
		if a.Ino == b.Ino || a.Nlink != 1 || b.Uid != 0 || b.Mode&0o777 != 0o600 {
			t.Errorf("etc/secret (ino %d, %d links) and home/nobody/secret-link (ino %d, uid %d, mode %o): want two inodes, the copy root's 0600", a.Ino, a.Nlink, b.Ino, b.Uid, b.Mode&0o777)
		}
		if got, _ := os.ReadFile(filepath.Join(m.Root, "etc/secret")); string(got) != "root's\n" {
			t.Errorf("etc/secret is %q, want the clean snapshot's", got)
		}
	})
	t.Run("a top level or .subvault-reset others may change", func(t *testing.T) {
		m := prepared(t, 512, "var/lib/keep")
		ref := m.reference(t)
		for _, c := range []struct {
			dir  string
			mode os.FileMode
			uid  int
			want string
		}{
			{m.fs.Mount, 0o777, 0, "another user could rename the subvolumes in it"},
			{m.fs.Mount, 0o755, nobody, "another user could rename the subvolumes in it"},
			{m.fs.Path(resetDirName), 0o755, 0, "so others may enter it"},
			{m.fs.Path(resetDirName), 0o700, nobody, "is owned by uid 65534"},
		} {
			if err := os.Chmod(c.dir, c.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(c.dir, c.uid, c.uid); err != nil {
				t.Fatal(err)
			}
			rec, err := m.boot(t, t0)
			if err == nil || len(rec.Results) != 1 || rec.Results[0].Result != ResultFailed || !strings.Contains(rec.Results[0].Reason, c.want) {
				t.Errorf("%s mode %04o uid %d: %+v, %v; want failed: %s", c.dir, c.mode, c.uid, rec, err, c.want)
			}
			_ = os.Chown(c.dir, 0, 0)
			_ = os.Chmod(c.dir, map[bool]os.FileMode{true: 0o755, false: 0o700}[c.dir == m.fs.Mount])
		}
		m.unchanged(t, ref)
		m.onlyOurs(t, []string{"@", resetDirName, "reference"}, 1)
	})
}

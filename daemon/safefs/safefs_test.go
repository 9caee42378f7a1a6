package safefs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/subvault/subvault/internal/testutil"
)

// tree makes, in a fresh directory that others may reach: root/ (root's,
// 0755), user/ (uid 65534's), a link in each to root/target, and a
// directory others may write, with a link in it too.
func tree(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t)
	dir, err := os.MkdirTemp("", "subvault-safefs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, d := range []string{"root/target/deep", "user", "open"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(dir, "user"), testutil.NobodyUID, testutil.NobodyGID); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "open"), 0o777); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"root/link", "user/link", "open/link"} {
		if err := os.Symlink(filepath.Join(dir, "root", "target"), filepath.Join(dir, l)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("target", filepath.Join(dir, "root", "rel")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestOpenDirRefusesEveryLink(t *testing.T) {
	dir := tree(t)
	f, err := OpenDir(filepath.Join(dir, "root", "target", "deep"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, p := range []string{"root/link/deep", "root/link", "user/link"} {
		if f, err := OpenDir(filepath.Join(dir, p)); err == nil || !errors.Is(err, ErrSymlink) {
			if f != nil {
				f.Close()
			}
			t.Errorf("OpenDir(%s): %v, want ErrSymlink", p, err)
		}
	}
	if _, err := OpenDir("relative"); err == nil {
		t.Error("a relative path was opened")
	}
}

// A link is followed where only root could have made it (a root 0755
// directory, relative or absolute), never in a directory another user owns
// or may write; the error names the link.
func TestOpenTrustedDirFollowsOnlyRootsLinks(t *testing.T) {
	dir := tree(t)
	target, err := os.Stat(filepath.Join(dir, "root", "target", "deep"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"root/link/deep", "root/rel/deep"} {
		f, err := OpenTrustedDir(filepath.Join(dir, p))
		if err != nil {
			t.Errorf("OpenTrustedDir(%s): %v", p, err)
			continue
		}
		got, _ := f.Stat()
		if !os.SameFile(got, target) {
			t.Errorf("OpenTrustedDir(%s) opened another directory", p)
		}
		f.Close()
	}
	for _, c := range []struct{ path, want string }{
		{"user/link/deep", "owned by uid 65534"},
		{"open/link", "others may write (mode 0777)"},
	} {
		f, err := OpenTrustedDir(filepath.Join(dir, c.path))
		if err == nil {
			f.Close()
			t.Errorf("OpenTrustedDir(%s) followed the link", c.path)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), filepath.Join(dir, c.path[:strings.Index(c.path, "link")+4])) {
			t.Errorf("OpenTrustedDir(%s): %v; want the link named and %q", c.path, err, c.want)
		}
	}
}

// The private directory is made 0700, found again, and refused when
// another user owns it, others may enter it, or it is a link or a file;
// with fresh, an existing one is refused.
func TestMakePrivateDir(t *testing.T) {
	dir := tree(t)
	parent, err := OpenDir(filepath.Join(dir, "user"))
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	f, err := MakePrivateDir(parent, "mine", false)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := Stat(f)
	if st.Uid != 0 || st.Mode&0o7777 != 0o700 {
		t.Errorf("made uid %d mode %04o", st.Uid, st.Mode&0o7777)
	}
	f.Close()
	if f, err = MakePrivateDir(parent, "mine", false); err != nil {
		t.Errorf("the directory made before: %v", err)
	} else {
		f.Close()
	}
	if _, err := MakePrivateDir(parent, "mine", true); err == nil {
		t.Error("fresh accepted a directory that exists")
	}

	user := filepath.Join(dir, "user")
	if err := os.Mkdir(filepath.Join(user, "theirs"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(user, "theirs"), testutil.NobodyUID, testutil.NobodyGID); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(user, "open"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "root", "target"), filepath.Join(user, "linked")); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, filepath.Join(user, "file"), "x")
	for name, want := range map[string]string{
		"theirs": "owned by uid 65534",
		"open":   "chmod 0700",
		"linked": "not a directory",
		"file":   "not a directory",
	} {
		if f, err := MakePrivateDir(parent, name, false); err == nil || !strings.Contains(err.Error(), want) {
			if f != nil {
				f.Close()
			}
			t.Errorf("MakePrivateDir(%s): %v; want %q", name, err, want)
		}
		if f, err := OpenPrivateDir(parent, name); err == nil {
			f.Close()
			t.Errorf("OpenPrivateDir(%s) accepted it", name)
		}
	}
	if _, err := OpenPrivateDir(parent, "missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenPrivateDir(missing): %v", err)
	}
	if f, err := OpenOwnedDir(parent, "open"); err != nil {
		t.Errorf("OpenOwnedDir of root's 0755 directory: %v", err)
	} else {
		f.Close()
	}
	if _, err := OpenOwnedDir(parent, "theirs"); err == nil || !strings.Contains(err.Error(), "uid 65534") {
		t.Errorf("OpenOwnedDir(theirs): %v", err)
	}
	if empty, err := IsEmpty(parent); err != nil || empty {
		t.Errorf("IsEmpty of a full directory: %t, %v", empty, err)
	}
	e, _ := OpenPrivateDir(parent, "mine")
	if empty, err := IsEmpty(e); err != nil || !empty {
		t.Errorf("IsEmpty of an empty directory: %t, %v", empty, err)
	}
	e.Close()
}

package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// CompareTrees finds no difference between MakeRichTree's tree and a
// `cp -a` copy, and finds each single change made to a copy: a test helper
// that cannot fail would let a lossy restore pass.
func TestCompareTreesFindsEachDifference(t *testing.T) {
	RequireRoot(t)
	RequireCommand(t, "cp", "coreutils")
	src := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	notable := MakeRichTree(t, src, 1<<20)
	copyTree := func(t *testing.T) string {
		dst := filepath.Join(t.TempDir(), "copy")
		Run(t, "cp", "-a", src, dst)
		return dst
	}
	if d := CompareTrees(t, src, copyTree(t)); len(d) != 0 {
		t.Fatalf("a cp -a copy differs:\n%s", strings.Join(d, "\n"))
	}

	// keepTime runs change and then puts rel's times back, so that only
	// what change meant to change differs.
	keepTime := func(t *testing.T, dst, rel string, change func(p string)) {
		t.Helper()
		p := filepath.Join(dst, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		change(p)
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
	must := func(t *testing.T, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name   string
		change func(t *testing.T, dst string)
		want   string
	}{
		{"mode", func(t *testing.T, dst string) {
			must(t, os.Chmod(filepath.Join(dst, notable["setuid"]), 0o755))
		}, notable["setuid"] + ": mode: a=4755, b=0755"},
		{"owner", func(t *testing.T, dst string) {
			must(t, os.Lchown(filepath.Join(dst, notable["owner"]), 0, 5678))
		}, notable["owner"] + ": owner: a=1234:5678, b=0:5678"},
		{"xattr", func(t *testing.T, dst string) {
			must(t, unix.Lsetxattr(filepath.Join(dst, notable["xattr"]), "user.note", []byte("hellO"), 0))
		}, notable["xattr"] + `: xattr user.note: a="hello", b="hellO"`},
		{"acl", func(t *testing.T, dst string) {
			must(t, unix.Lremovexattr(filepath.Join(dst, notable["acl"]), "system.posix_acl_access"))
		}, notable["acl"] + ": xattr system.posix_acl_access"},
		{"content, same size and time", func(t *testing.T, dst string) {
			keepTime(t, dst, notable["xattr"], func(p string) { must(t, os.WriteFile(p, []byte("with attributez\n"), 0o644)) })
		}, notable["xattr"] + ": content sha256"},
		{"mtime by a nanosecond", func(t *testing.T, dst string) {
			p := filepath.Join(dst, notable["acl"])
			var st unix.Stat_t
			must(t, unix.Lstat(p, &st))
			ts := unix.NsecToTimespec(st.Mtim.Nano() + 1)
			must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, 0))
		}, notable["acl"] + ": mtime"},
		{"symlink target", func(t *testing.T, dst string) {
			keepTime(t, dst, filepath.Dir(notable["symlink"]), func(string) {
				p := filepath.Join(dst, notable["symlink"])
				var st unix.Stat_t
				must(t, unix.Lstat(p, &st))
				must(t, os.Remove(p))
				must(t, os.Symlink("/etc/hosts", p))
				must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW))
			})
		}, notable["symlink"] + ": symlink target: a=/etc/hostname, b=/etc/hosts"},
		{"hard link broken", func(t *testing.T, dst string) {
			keepTime(t, dst, "links", func(string) {
				b := filepath.Join(dst, "links", "b")
				data, err := os.ReadFile(b)
				must(t, err)
				var st unix.Stat_t
				must(t, unix.Lstat(b, &st))
				must(t, os.Remove(b))
				must(t, os.WriteFile(b, data, 0o644))
				must(t, unix.UtimesNanoAt(unix.AT_FDCWD, b, []unix.Timespec{st.Atim, st.Mtim}, 0))
			})
		}, "links/a: hard links: a=[links/a links/b links/sub/c], b=[links/a links/sub/c]\n" +
			"links/b: hard links: a=[links/a links/b links/sub/c], b=[]\n" +
			"links/sub/c: hard links: a=[links/a links/b links/sub/c], b=[links/a links/sub/c]"},
		{"sparse file written out", func(t *testing.T, dst string) {
			keepTime(t, dst, notable["sparse"], func(p string) {
				data, err := os.ReadFile(p)
				must(t, err)
				f, err := os.OpenFile(p, os.O_WRONLY, 0)
				must(t, err)
				_, err = f.WriteAt(data, 0)
				must(t, err)
				must(t, f.Close())
			})
		}, notable["sparse"] + ": sparse (holes): a=true, b=false"},
		{"a file more", func(t *testing.T, dst string) {
			keepTime(t, dst, "empty-dir", func(p string) { WriteFile(t, filepath.Join(p, "new"), "x") })
		}, "empty-dir/new: only in b"},
		{"a file less, name not UTF-8", func(t *testing.T, dst string) {
			keepTime(t, dst, "names", func(string) { must(t, os.Remove(filepath.Join(dst, notable["not-utf8"]))) })
		}, notable["not-utf8"] + ": only in a"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst := copyTree(t)
			c.change(t, dst)
			d := CompareTrees(t, src, dst)
			want := strings.Split(c.want, "\n")
			ok := len(d) == len(want)
			for i := 0; ok && i < len(d); i++ {
				ok = strings.HasPrefix(d[i], want[i])
			}
			if !ok {
				t.Errorf("differences:\n%s\nwant:\n%s", strings.Join(d, "\n"), c.want)
			}
		})
	}
}

package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TreeState describes every entry under root (root itself is "."), by its
// path relative to root: type, mode bits (setuid, setgid and sticky too),
// owner, group, link count, modification time (ns), size, content SHA-256,
// symlink target and extended attributes (POSIX ACLs are
// system.posix_acl_* attributes). Two trees hold the same files exactly
// when their states are equal. Entries under a skip path (relative) are
// left out, the skip path itself too. Symlinks are never followed.
func TreeState(t testing.TB, root string, skip ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		for _, s := range skip {
			if rel == s || strings.HasPrefix(rel, s+"/") {
				if rel == s {
					var st unix.Stat_t
					if unix.Lstat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
						return filepath.SkipDir
					}
				}
				return nil
			}
		}
		desc, err := describe(p)
		if err != nil {
			return err
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("tree state of %s: %v", root, err)
	}
	return out
}

// btrfsEmptySubvolDir is BTRFS_EMPTY_SUBVOL_DIR_OBJECTID, the inode number
// of the placeholder a snapshot shows for a nested subvolume.
const btrfsEmptySubvolDir = 2

func describe(p string) (string, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return "", err
	}
	var b strings.Builder
	if st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Ino == btrfsEmptySubvolDir {
		// Where a snapshot had a nested subvolume, btrfs shows an empty
		// directory made up on the spot, with the time of the lookup.
		return fmt.Sprintf("placeholder of a nested subvolume, mode=%04o", st.Mode&0o7777), nil
	}
	fmt.Fprintf(&b, "type=%o mode=%04o uid=%d gid=%d nlink=%d mtime=%d", st.Mode&unix.S_IFMT, st.Mode&0o7777, st.Uid, st.Gid, st.Nlink, st.Mtim.Nano())
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		// nlink of a btrfs directory is always 1; its size is the sum of
		// its entries' name lengths, so it says which names it holds.
		fmt.Fprintf(&b, " size=%d", st.Size)
	case unix.S_IFLNK:
		target, err := os.Readlink(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, " target=%q", target)
	case unix.S_IFREG:
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close() //nolint:errcheck,gosec // read-only
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, " size=%d sha256=%s", st.Size, hex.EncodeToString(h.Sum(nil)))
	}
	xattrs, err := xattrsOf(p)
	if err != nil {
		return "", err
	}
	for _, x := range xattrs {
		fmt.Fprintf(&b, " xattr:%s", x)
	}
	return b.String(), nil
}

func xattrsOf(p string) ([]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if err != nil || size == 0 {
		return nil, err
	}
	buf := make([]byte, size)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		vsize, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, err
		}
		val := make([]byte, vsize)
		if vsize > 0 {
			if vsize, err = unix.Lgetxattr(p, name, val); err != nil {
				return nil, err
			}
		}
		out = append(out, fmt.Sprintf("%s=%x", name, val[:vsize]))
	}
	sort.Strings(out)
	return out, nil
}

// DiffStates lists how two tree states differ, one line per path, sorted;
// empty when they are equal.
func DiffStates(a, b map[string]string) []string {
	var out []string
	for p, da := range a {
		db, ok := b[p]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s: only in the first (%s)", p, da))
		case da != db:
			out = append(out, fmt.Sprintf("%s: %s -> %s", p, da, db))
		}
	}
	for p, db := range b {
		if _, ok := a[p]; !ok {
			out = append(out, fmt.Sprintf("%s: only in the second (%s)", p, db))
		}
	}
	sort.Strings(out)
	return out
}

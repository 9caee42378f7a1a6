package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// treeEntry is what CompareTrees compares of one entry.
type treeEntry struct {
	typ, mode, uid, gid uint32
	mtime               int64 // ns
	size                int64 // regular files
	sha256              string
	target              string // symlinks
	xattrs              map[string]string
	ino                 uint64
	nlink               uint64
	allocated           int64 // bytes (st_blocks * 512), regular files
	holes               bool  // SEEK_HOLE finds a hole before the end
}

// CompareTrees compares the trees at a and b (each root too, as ".") and
// returns their differences, one line each ("path: what: a=..., b=..."),
// sorted; none for trees that hold the same. It compares each entry's
// type, mode (with setuid, setgid and sticky), owner, group, modification
// time to the nanosecond, size, content (SHA-256), symbolic link target,
// extended attributes (POSIX ACLs are system.posix_acl_* attributes),
// hard-link grouping (the paths that share an inode) and sparseness: a
// file with holes against one without, or allocations that differ by more
// than 1 MiB and a tenth. Symbolic links are never followed. Not compared:
// access and change times, inode numbers, directory sizes and link counts
// (filesystem details).
func CompareTrees(t testing.TB, a, b string) []string {
	t.Helper()
	ta, err := scanTree(a)
	if err != nil {
		t.Fatalf("CompareTrees: %v", err)
	}
	tb, err := scanTree(b)
	if err != nil {
		t.Fatalf("CompareTrees: %v", err)
	}
	var diffs []string
	add := func(p, what string, va, vb any) {
		diffs = append(diffs, fmt.Sprintf("%s: %s: a=%v, b=%v", p, what, va, vb))
	}
	groupsA, groupsB := linkGroups(ta), linkGroups(tb)
	for p, ea := range ta {
		eb, ok := tb[p]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%s: only in a", p))
			continue
		}
		if ea.typ != eb.typ {
			add(p, "type", fmt.Sprintf("%o", ea.typ), fmt.Sprintf("%o", eb.typ))
			continue
		}
		if ea.mode != eb.mode {
			add(p, "mode", fmt.Sprintf("%04o", ea.mode), fmt.Sprintf("%04o", eb.mode))
		}
		if ea.uid != eb.uid || ea.gid != eb.gid {
			add(p, "owner", fmt.Sprintf("%d:%d", ea.uid, ea.gid), fmt.Sprintf("%d:%d", eb.uid, eb.gid))
		}
		if ea.mtime != eb.mtime {
			add(p, "mtime", ea.mtime, eb.mtime)
		}
		if ea.target != eb.target {
			add(p, "symlink target", ea.target, eb.target)
		}
		if ea.size != eb.size {
			add(p, "size", ea.size, eb.size)
		}
		if ea.sha256 != eb.sha256 {
			add(p, "content sha256", ea.sha256, eb.sha256)
		}
		for _, k := range unionKeys(ea.xattrs, eb.xattrs) {
			va, ina := ea.xattrs[k]
			vb, inb := eb.xattrs[k]
			if ina != inb || va != vb {
				add(p, "xattr "+k, quoteOrMissing(va, ina), quoteOrMissing(vb, inb))
			}
		}
		if ga, gb := groupsA[p], groupsB[p]; ga != gb {
			add(p, "hard links", "["+ga+"]", "["+gb+"]")
		}
		if ea.typ == unix.S_IFREG {
			if ea.holes != eb.holes {
				add(p, "sparse (holes)", ea.holes, eb.holes)
			} else if d := ea.allocated - eb.allocated; max(d, -d) > 1<<20+max(ea.allocated, eb.allocated)/10 {
				add(p, "allocated bytes", ea.allocated, eb.allocated)
			}
		}
	}
	for p := range tb {
		if _, ok := ta[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: only in b", p))
		}
	}
	sort.Strings(diffs)
	return diffs
}

func scanTree(root string) (map[string]*treeEntry, error) {
	out := map[string]*treeEntry{}
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		e, err := readTreeEntry(p)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		out[rel] = e
		return nil
	})
	return out, err
}

func readTreeEntry(p string) (*treeEntry, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil, err
	}
	e := &treeEntry{typ: st.Mode & unix.S_IFMT, mode: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid,
		mtime: st.Mtim.Nano(), ino: st.Ino, nlink: st.Nlink}
	xattrs, err := entryXattrs(p)
	if err != nil {
		return nil, err
	}
	e.xattrs = xattrs
	switch e.typ {
	case unix.S_IFLNK:
		if e.target, err = os.Readlink(p); err != nil {
			return nil, err
		}
	case unix.S_IFREG:
		e.size, e.allocated = st.Size, st.Blocks*512
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		defer f.Close() //nolint:errcheck // read only
		if st.Size > 0 {
			hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
			if err != nil {
				return nil, fmt.Errorf("SEEK_HOLE: %w", err)
			}
			e.holes = hole < st.Size
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return nil, err
			}
		}
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return nil, err
		}
		e.sha256 = hex.EncodeToString(h.Sum(nil))
	}
	return e, nil
}

// entryXattrs reads the extended attributes of p itself (not of what a
// symbolic link points to).
func entryXattrs(p string) (map[string]string, error) {
	out := map[string]string{}
	size, err := unix.Llistxattr(p, nil)
	if errors.Is(err, unix.ENOTSUP) {
		return out, nil
	}
	if err != nil || size == 0 {
		return out, err
	}
	buf := make([]byte, size)
	if size, err = unix.Llistxattr(p, buf); err != nil {
		return nil, err
	}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		n, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, fmt.Errorf("xattr %s: %w", name, err)
		}
		v := make([]byte, n)
		if n, err = unix.Lgetxattr(p, name, v); err != nil {
			return nil, fmt.Errorf("xattr %s: %w", name, err)
		}
		out[name] = string(v[:n])
	}
	return out, nil
}

// linkGroups maps each path of a non-directory that shares its inode with
// other paths of the tree to the sorted list of those paths.
func linkGroups(tree map[string]*treeEntry) map[string]string {
	byIno := map[uint64][]string{}
	for p, e := range tree {
		if e.typ != unix.S_IFDIR && e.nlink > 1 {
			byIno[e.ino] = append(byIno[e.ino], p)
		}
	}
	out := map[string]string{}
	for _, paths := range byIno {
		if len(paths) < 2 {
			continue // its other names are outside the tree
		}
		slices.Sort(paths)
		for _, p := range paths {
			out[p] = strings.Join(paths, " ")
		}
	}
	return out
}

func unionKeys(a, b map[string]string) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

func quoteOrMissing(v string, present bool) string {
	if !present {
		return "(none)"
	}
	return fmt.Sprintf("%q", v)
}

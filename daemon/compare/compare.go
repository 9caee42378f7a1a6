// Package compare compares an archive with a tree on disk, the live
// subvolume or a local snapshot of it, which restic diff cannot do (it
// compares two archives).
//
// A path differs when its type, size, modification time, permission bits
// or owner differ: what restic itself looks at to decide that a file
// changed and must be read again. Contents are not read, so a file whose
// bytes changed under the same size and time does not show.
package compare

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/restic"
)

// Root is one tree to compare: the archive's Path, read on disk at Dir
// (the subvolume itself, or a snapshot of it, whose paths are mapped back
// to the subvolume's).
type Root struct {
	Path string
	Dir  string
}

// Options is one comparison.
type Options struct {
	Roots []Root
	// Exclude is the backup's exclude rules: what it leaves out is not
	// compared, on either side.
	Exclude *Excluder
	// ArchiveFirst is set when the archive is the first (older) side, so
	// that what is only on disk is "added"; otherwise it is "removed".
	ArchiveFirst bool
}

// Trees compares the archive's nodes under the roots with the trees on
// disk and returns every path that differs, sorted by path; directories'
// paths end in "/", as restic diff prints them.
//
// The walk stays on each root's file system and does not descend into a
// mount point or a nested subvolume (a snapshot shows those as empty
// directories, and so does the archive made from it); neither side is
// compared below one.
func Trees(ctx context.Context, nodes []restic.Node, opts Options) ([]restic.Change, error) {
	w := &walker{ctx: ctx, opts: opts, archive: map[string]restic.Node{}, skipped: map[string]bool{}}
	for _, n := range nodes {
		if underAny(n.Path, opts.Roots) {
			w.archive[n.Path] = n
		}
	}
	for _, r := range opts.Roots {
		if err := w.root(r); err != nil {
			return nil, err
		}
	}
	for p, n := range w.archive {
		if !w.skipped[p] && !w.skippedAbove(p) {
			w.add(restic.ChangeRemoved, displayPath(p, n.Type == "dir"), true)
		}
	}
	sort.Slice(w.changes, func(i, k int) bool { return w.changes[i].Path < w.changes[k].Path })
	return w.changes, nil
}

type walker struct {
	ctx  context.Context
	opts Options
	// archive holds the nodes not yet met on disk, by restic's path.
	archive map[string]restic.Node
	// skipped are the keys of directories not compared below.
	skipped map[string]bool
	changes []restic.Change
	visited int
}

// add records a change; onlyArchive says which side the path is on for
// added and removed.
func (w *walker) add(kind, p string, onlyArchive bool) {
	if kind == restic.ChangeRemoved || kind == restic.ChangeAdded {
		// Seen from the archive as the old side: only in the archive is
		// removed, only on disk is added; the other way round otherwise.
		kind = restic.ChangeAdded
		if onlyArchive == w.opts.ArchiveFirst {
			kind = restic.ChangeRemoved
		}
	}
	w.changes = append(w.changes, restic.Change{Kind: kind, Path: p})
}

func (w *walker) root(r Root) error {
	fi, err := os.Lstat(r.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // everything under it is only in the archive
	}
	if err != nil {
		return fmt.Errorf("cannot compare %s: %w", r.Dir, err)
	}
	dev, _ := device(fi)
	return w.visit(r.Dir, r.Path, fi, dev, true)
}

// visit compares one entry, then the entries of a directory.
func (w *walker) visit(disk, orig string, fi fs.FileInfo, rootDev uint64, isRoot bool) error {
	if w.visited++; w.visited%4096 == 0 {
		if err := w.ctx.Err(); err != nil {
			return err
		}
	}
	key := restic.JSONPath(orig)
	if !isRoot && w.opts.Exclude.Excluded(orig, disk, fi.IsDir()) {
		w.skipped[key] = true
		return nil
	}
	n, inArchive := w.archive[key]
	delete(w.archive, key)
	if !inArchive {
		w.add(restic.ChangeAdded, displayPath(orig, fi.IsDir()), false)
	} else if kind := differs(n, fi); kind != "" {
		w.add(kind, displayPath(orig, fi.IsDir()), false)
	}
	if !fi.IsDir() {
		return nil
	}
	if !isRoot {
		dev, _ := device(fi)
		if dev != rootDev || mountRoot(disk) {
			w.skipped[key] = true
			return nil
		}
	}
	entries, err := os.ReadDir(disk)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // removed while we looked
	}
	if err != nil {
		return fmt.Errorf("cannot compare %s: %w", disk, err)
	}
	for _, e := range entries {
		child, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("cannot compare %s: %w", path.Join(disk, e.Name()), err)
		}
		if err := w.visit(path.Join(disk, e.Name()), path.Join(orig, e.Name()), child, rootDev, false); err != nil {
			return err
		}
	}
	return nil
}

// skippedAbove reports whether a directory above p was not compared below.
func (w *walker) skippedAbove(p string) bool {
	for d := path.Dir(p); ; d = path.Dir(d) {
		if w.skipped[d] {
			return true
		}
		if d == "/" || d == "." {
			return false
		}
	}
}

// differs says how the entry on disk differs from the archive's node, ""
// when it does not.
func differs(n restic.Node, fi fs.FileInfo) string {
	typ := nodeType(fi.Mode())
	if typ != n.Type {
		return restic.ChangeTypeChanged
	}
	sameTime := fi.ModTime().Equal(n.ModTime)
	switch typ {
	case "file":
		if uint64(fi.Size()) != n.Size || !sameTime {
			return restic.ChangeChanged
		}
	case "symlink":
		// restic 0.14 to 0.18 list no target; a new target is a new
		// symlink, with a new time.
		if !sameTime {
			return restic.ChangeChanged
		}
	default:
		if !sameTime {
			return restic.ChangeMetadata
		}
	}
	const bits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
	uid, gid := owner(fi)
	if fi.Mode()&bits != n.Mode&bits || uid != n.UID || gid != n.GID {
		return restic.ChangeMetadata
	}
	return ""
}

// nodeType is restic's name for a file type.
func nodeType(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "dir"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeDevice != 0 && m&fs.ModeCharDevice != 0:
		return "chardev"
	case m&fs.ModeDevice != 0:
		return "dev"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return "file"
}

func owner(fi fs.FileInfo) (uid, gid uint32) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid, st.Gid
	}
	return 0, 0
}

func device(fi fs.FileInfo) (uint64, bool) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Dev, true
	}
	return 0, false
}

// mountRoot reports whether a directory is the root of a mount (a bind
// mount of the same file system included, which st_dev cannot tell).
func mountRoot(p string) bool {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_TYPE, &stx); err != nil {
		return false
	}
	return stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0
}

// underAny reports whether p is a root's path or below one.
func underAny(p string, roots []Root) bool {
	for _, r := range roots {
		key := restic.JSONPath(r.Path)
		if p == key || key == "/" || strings.HasPrefix(p, key+"/") {
			return true
		}
	}
	return false
}

func displayPath(p string, dir bool) string {
	if dir && p != "/" {
		return p + "/"
	}
	return p
}

// Listings finds what restic diff (without --metadata) leaves out between
// two archives: every path below the roots that both list, of the same
// type, whose permission bits, owner, group or modification time differ;
// a file's new time alone is metadata here, as restic diff has said
// whether its content changed. reported holds the paths restic diff
// listed (in the listings' form, without a trailing "/"), which are not
// listed again.
func Listings(first, second []restic.Node, roots []string, reported map[string]bool) []restic.Change {
	var rs []Root
	for _, r := range roots {
		rs = append(rs, Root{Path: r})
	}
	old := map[string]restic.Node{}
	for _, n := range first {
		if underAny(n.Path, rs) {
			old[n.Path] = n
		}
	}
	const bits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
	var changes []restic.Change
	for _, n := range second {
		o, ok := old[n.Path]
		if !ok || reported[n.Path] || o.Type != n.Type {
			continue
		}
		if o.Mode&bits != n.Mode&bits || o.UID != n.UID || o.GID != n.GID || !o.ModTime.Equal(n.ModTime) {
			changes = append(changes, restic.Change{Kind: restic.ChangeMetadata, Path: displayPath(n.Path, n.Type == "dir")})
		}
	}
	return changes
}

// Package compare finds what differs between two states of a plan (Diff):
// two archives, through restic diff and their listings; or an archive and
// a tree on disk, the live subvolume or a local snapshot of it, which
// restic diff cannot do (it compares two archives), through a walk.
//
// In the walk (Trees) a path differs when its type, size, modification
// time, permission bits or owner differ: what restic itself looks at to
// decide that a file changed and must be read again. Contents are not
// read, so a file whose bytes changed under the same size and time does
// not show.
package compare

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/restic"
)

// Root is one tree to compare: the archive's Path, read on disk at Dir
// (the subvolume itself, or a snapshot of it, whose paths are mapped back
// to the subvolume's).
type Root struct {
	Path string
	Dir  string
	// Open, when set, is Dir opened and checked by the caller: the walk
	// starts from this descriptor rather than looking Dir up again.
	Open *os.File
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
func Trees(ctx context.Context, nodes []restic.Node, opts Options) ([]contract.Change, error) {
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
			w.add(contract.ChangeRemoved, displayPath(p, n.Type == "dir"), true)
		}
	}
	slices.SortFunc(w.changes, func(a, b contract.Change) int { return strings.Compare(a.Path, b.Path) })
	return w.changes, nil
}

type walker struct {
	ctx  context.Context
	opts Options
	// archive holds the nodes not yet met on disk, by restic's path.
	archive map[string]restic.Node
	// skipped are the keys of directories not compared below.
	skipped map[string]bool
	changes []contract.Change
	visited int
}

// add records a change; onlyArchive says which side the path is on for
// added and removed.
func (w *walker) add(kind contract.ChangeKind, p string, onlyArchive bool) {
	if kind == contract.ChangeRemoved || kind == contract.ChangeAdded {
		// Seen from the archive as the old side: only in the archive is
		// removed, only on disk is added; the other way round otherwise.
		kind = contract.ChangeAdded
		if onlyArchive == w.opts.ArchiveFirst {
			kind = contract.ChangeRemoved
		}
	}
	w.changes = append(w.changes, contract.Change{Kind: kind, Path: p})
}

// The walk opens directories only, each relative to its parent's
// descriptor, with O_NOFOLLOW and O_DIRECTORY (which fails on anything
// else before it is opened) and O_NONBLOCK; every other entry is only
// lstat-ed (fstatat with AT_SYMLINK_NOFOLLOW). So a named pipe, a device
// or a link another user put in the tree is never opened or followed,
// and a directory swapped for a link while the walk runs is not entered.
const dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC | unix.O_NOCTTY

func (w *walker) root(r Root) error {
	// The root is the plan's subvolume or a snapshot of it, named by
	// root's configuration; its last component is not followed.
	var fd int
	var err error
	if r.Open != nil {
		fd, err = unix.Openat(int(r.Open.Fd()), ".", dirFlags, 0)
	} else {
		fd, err = unix.Open(r.Dir, dirFlags, 0)
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil // everything under it is only in the archive
	case errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP):
		var st unix.Stat_t
		if err := unix.Lstat(r.Dir, &st); err != nil {
			return fmt.Errorf("cannot compare %s: %w", r.Dir, err)
		}
		return w.visit(-1, r.Dir, r.Path, newEntry(&st), 0, 0)
	case err != nil:
		return fmt.Errorf("cannot compare %s: %w", r.Dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		_ = unix.Close(fd)
		return fmt.Errorf("cannot compare %s: %w", r.Dir, err)
	}
	e := newEntry(&st)
	return w.visit(fd, r.Dir, r.Path, e, e.dev, 0)
}

// visit compares one entry, then the entries of a directory. fd is the
// directory's descriptor, which visit closes, or -1 for anything else;
// depth is 0 for a root.
func (w *walker) visit(fd int, disk, orig string, e entry, rootDev uint64, depth int) error {
	if fd >= 0 {
		defer unix.Close(fd)
	}
	if w.visited++; w.visited%256 == 0 {
		if err := w.ctx.Err(); err != nil {
			return err
		}
	}
	key := restic.JSONPath(orig)
	if depth > 0 && w.opts.Exclude.Excluded(orig, fd) {
		w.skipped[key] = true
		return nil
	}
	isDir := e.mode.IsDir()
	n, inArchive := w.archive[key]
	delete(w.archive, key)
	if !inArchive {
		w.add(contract.ChangeAdded, displayPath(orig, isDir), false)
	} else if kind := differs(n, e); kind != "" {
		w.add(kind, displayPath(orig, isDir), false)
	}
	if fd < 0 {
		return nil
	}
	// restic reads by path, and cannot read below PATH_MAX: nor is there
	// anything there to compare. This also bounds the descriptors the walk
	// holds open at once, one a level.
	if depth > 0 && (e.dev != rootDev || mountRoot(fd) || len(disk) >= unix.PathMax) {
		w.skipped[key] = true
		return nil
	}
	if err := w.ctx.Err(); err != nil {
		return err
	}
	names, err := readNames(fd)
	if err != nil {
		return fmt.Errorf("cannot compare %s: %w", disk, err)
	}
	for _, name := range names {
		var st unix.Stat_t
		err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) {
			continue // removed while we looked
		}
		if err != nil {
			return fmt.Errorf("cannot compare %s: %w", path.Join(disk, name), err)
		}
		child, childFd := newEntry(&st), -1
		if child.mode.IsDir() {
			childFd, err = unix.Openat(fd, name, dirFlags, 0)
			switch {
			case err == nil:
				// What was opened is what is compared: the entry may have
				// been swapped since fstatat.
				if err := unix.Fstat(childFd, &st); err != nil {
					_ = unix.Close(childFd)
					return fmt.Errorf("cannot compare %s: %w", path.Join(disk, name), err)
				}
				child = newEntry(&st)
			case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP):
				// Removed, or swapped for something else, while we looked:
				// compared as it was, not entered.
				childFd = -1
			default:
				return fmt.Errorf("cannot compare %s: %w", path.Join(disk, name), err)
			}
		}
		if err := w.visit(childFd, path.Join(disk, name), path.Join(orig, name), child, rootDev, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// readNames lists the directory open at fd, without closing it.
func readNames(fd int) ([]string, error) {
	var names []string
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.ReadDirent(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
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

// entry is what the comparison reads of a file on disk.
type entry struct {
	mode     fs.FileMode
	size     int64
	modTime  time.Time
	uid, gid uint32
	dev      uint64
}

func newEntry(st *unix.Stat_t) entry {
	mode := fs.FileMode(st.Mode & 0o777)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	}
	if st.Mode&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if st.Mode&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if st.Mode&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return entry{mode: mode, size: st.Size, modTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		uid: st.Uid, gid: st.Gid, dev: st.Dev}
}

// differs says how the entry on disk differs from the archive's node, ""
// when it does not.
func differs(n restic.Node, e entry) contract.ChangeKind {
	typ := nodeType(e.mode)
	if typ != n.Type {
		return contract.ChangeTypeChanged
	}
	sameTime := e.modTime.Equal(n.ModTime)
	switch typ {
	case "file":
		if uint64(e.size) != n.Size || !sameTime {
			return contract.ChangeChanged
		}
	case "symlink":
		// restic 0.14 to 0.18 list no target; a new target is a new
		// symlink, with a new time.
		if !sameTime {
			return contract.ChangeChanged
		}
	default:
		if !sameTime {
			return contract.ChangeMetadata
		}
	}
	const bits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
	if e.mode&bits != n.Mode&bits || e.uid != n.UID || e.gid != n.GID {
		return contract.ChangeMetadata
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

// mountRoot reports whether the directory open at fd is the root of a
// mount (a bind mount of the same file system included, which st_dev
// cannot tell).
func mountRoot(fd int) bool {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_TYPE, &stx); err != nil {
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
func Listings(first, second []restic.Node, roots []string, reported map[string]bool) []contract.Change {
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
	var changes []contract.Change
	for _, n := range second {
		o, ok := old[n.Path]
		if !ok || reported[n.Path] || o.Type != n.Type {
			continue
		}
		if o.Mode&bits != n.Mode&bits || o.UID != n.UID || o.GID != n.GID || !o.ModTime.Equal(n.ModTime) {
			changes = append(changes, contract.Change{Kind: contract.ChangeMetadata, Path: displayPath(n.Path, n.Type == "dir")})
		}
	}
	return changes
}

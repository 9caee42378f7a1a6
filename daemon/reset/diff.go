package reset

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/safefs"
)

// Diff lists what the next reset of path throws away: every path of the
// live subvolume mounted at path that differs from the clean snapshot (or
// from the state a rollback chose, PrepareNext, which keeps nothing) and is
// not persisted. An added or removed directory is one change with the size
// of everything in it, unless a persisted path is below it. Other mounts
// and nested subvolumes are left out: the reset moves the nested ones over.
// Both trees are walked through descriptors, following no link.
func Diff(ctx context.Context, cfg *config.Config, path string) ([]Change, error) {
	fail := func(err error) ([]Change, error) {
		return nil, fmt.Errorf("cannot tell what the next reset of %s throws away: %w", path, err)
	}
	sub, err := resetSubvolume(cfg, path)
	if err != nil {
		return fail(err)
	}
	live, err := safefs.OpenTrustedDir(path)
	if err != nil {
		return fail(err)
	}
	defer live.Close() //nolint:errcheck // a directory
	if _, err := btrfs.InfoOf(live); err != nil {
		return fail(err)
	}
	t, _, err := topOf(path, false)
	if err != nil {
		return fail(err)
	}
	defer t.Close()
	snaps, err := t.snapshots()
	if err != nil {
		return fail(err)
	}
	from, ok := clean(snaps, sub)
	if !ok {
		return fail(fmt.Errorf("no clean snapshot of %s (run subvault reset init %s)", path, path))
	}
	var persist []string
	var nexts next
	if err := readMeta(t.dir, nextFile, &nexts); err != nil {
		return fail(err)
	}
	if i := slices.IndexFunc(nexts.Next, func(e nextEntry) bool { return e.Path == path }); i >= 0 {
		j := slices.IndexFunc(snaps, func(s btrfs.Snapshot) bool { return s.Name() == nexts.Next[i].State })
		if j < 0 {
			return fail(fmt.Errorf("the state a rollback chose, %s, is not there any more", nexts.Next[i].State))
		}
		from = snaps[j]
	} else {
		for _, p := range sub.Persist {
			if rel, ok := relUnder(p, path); ok {
				persist = append(persist, rel)
			}
		}
	}
	cleanDir, err := btrfs.OpenAt(t.dir, from.Name())
	if err != nil {
		return fail(err)
	}
	defer cleanDir.Close() //nolint:errcheck // a directory
	w := &differ{ctx: ctx, root: path, persist: persist}
	if w.liveDev, err = devOf(live); err != nil {
		return fail(err)
	}
	if w.cleanDev, err = devOf(cleanDir); err != nil {
		return fail(err)
	}
	if err := w.walk(live, cleanDir, "."); err != nil {
		return fail(err)
	}
	return w.changes, nil
}

type differ struct {
	ctx               context.Context
	root              string
	persist           []string
	liveDev, cleanDev uint64
	changes           []Change
}

func devOf(f *os.File) (uint64, error) {
	st, err := safefs.Stat(f)
	return st.Dev, err
}

// persisted says whether rel is a persisted path or below one.
func (d *differ) persisted(rel string) bool {
	return slices.ContainsFunc(d.persist, func(p string) bool { _, in := relUnder(rel, p); return in })
}

// holdsPersisted says whether a persisted path is below rel.
func (d *differ) holdsPersisted(rel string) bool {
	return slices.ContainsFunc(d.persist, func(p string) bool { _, in := relUnder(p, rel); return in })
}

// walk compares the directory rel of both trees; either may be nil (only
// the other has it).
func (d *differ) walk(live, clean *os.File, rel string) error {
	if err := d.ctx.Err(); err != nil {
		return err
	}
	names := map[string]bool{}
	for _, dir := range []*os.File{live, clean} {
		if dir == nil {
			continue
		}
		n, err := readNames(dir)
		if err != nil {
			return fmt.Errorf("cannot read %s: %w", dir.Name(), err)
		}
		for _, name := range n {
			names[name] = true
		}
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	slices.Sort(sorted)
	for _, name := range sorted {
		r := filepath.Join(rel, name)
		if d.persisted(r) {
			continue
		}
		var lst, cst unix.Stat_t
		inLive, inClean := false, false
		if live != nil {
			if err := unix.Fstatat(int(live.Fd()), name, &lst, unix.AT_SYMLINK_NOFOLLOW); err == nil {
				if lst.Dev != d.liveDev {
					continue // another mount, or a nested subvolume: not the reset's
				}
				inLive = true
			} else if !errors.Is(err, unix.ENOENT) {
				return err
			}
		}
		if clean != nil {
			if err := unix.Fstatat(int(clean.Fd()), name, &cst, unix.AT_SYMLINK_NOFOLLOW); err == nil {
				inClean = cst.Dev == d.cleanDev
			} else if !errors.Is(err, unix.ENOENT) {
				return err
			}
		}
		switch {
		case inLive && inClean:
			if err := d.both(live, clean, name, r, &lst, &cst); err != nil {
				return err
			}
		case inLive:
			if err := d.one(live, name, r, &lst, "added", true); err != nil {
				return err
			}
		case inClean:
			if err := d.one(clean, name, r, &cst, "removed", false); err != nil {
				return err
			}
		}
	}
	return nil
}

// one is an entry only one side has: one change, or, for a directory with
// a persisted path below it, its entries one by one.
func (d *differ) one(dir *os.File, name, rel string, st *unix.Stat_t, kind string, isLive bool) error {
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		sub, err := openDirNoFollow(dir, name)
		if err != nil {
			return err
		}
		defer sub.Close() //nolint:errcheck // a directory
		if d.holdsPersisted(rel) {
			if isLive {
				return d.walk(sub, nil, rel)
			}
			return d.walk(nil, sub, rel)
		}
		size, err := treeSize(sub, st.Dev)
		if err != nil {
			return err
		}
		d.add(rel, kind, st, size)
		return nil
	}
	d.add(rel, kind, st, regularSize(st))
	return nil
}

// both compares an entry both sides have.
func (d *differ) both(live, clean *os.File, name, rel string, lst, cst *unix.Stat_t) error {
	if lst.Mode&unix.S_IFMT != cst.Mode&unix.S_IFMT {
		d.add(rel, "changed", lst, regularSize(lst))
		return nil
	}
	meta := lst.Mode != cst.Mode || lst.Uid != cst.Uid || lst.Gid != cst.Gid
	if lst.Mode&unix.S_IFMT == unix.S_IFDIR {
		if meta {
			d.add(rel, "changed", lst, 0)
		}
		l, err := openDirNoFollow(live, name)
		if err != nil {
			return err
		}
		defer l.Close() //nolint:errcheck // a directory
		c, err := openDirNoFollow(clean, name)
		if err != nil {
			return err
		}
		defer c.Close() //nolint:errcheck // a directory
		return d.walk(l, c, rel)
	}
	changed := meta || lst.Size != cst.Size || lst.Mtim != cst.Mtim || lst.Rdev != cst.Rdev
	if !changed && lst.Mode&unix.S_IFMT == unix.S_IFLNK {
		a, err1 := readlinkat(int(live.Fd()), name)
		b, err2 := readlinkat(int(clean.Fd()), name)
		changed = err1 != nil || err2 != nil || a != b
	}
	if changed {
		d.add(rel, "changed", lst, regularSize(lst))
	}
	return nil
}

func (d *differ) add(rel, kind string, st *unix.Stat_t, size int64) {
	d.changes = append(d.changes, Change{Path: filepath.Join(d.root, rel), Kind: kind, Type: typeName(st.Mode), Size: size})
}

func regularSize(st *unix.Stat_t) int64 {
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		return st.Size
	}
	return 0
}

// treeSize adds up the sizes of the regular files below dir, on its
// device only.
func treeSize(dir *os.File, dev uint64) (int64, error) {
	names, err := readNames(dir)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Dev != dev {
			continue
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			total += regularSize(&st)
			continue
		}
		sub, err := openDirNoFollow(dir, name)
		if err != nil {
			return 0, err
		}
		n, err := treeSize(sub, dev)
		sub.Close() //nolint:errcheck,gosec // a directory
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "device"
	}
	return "file"
}

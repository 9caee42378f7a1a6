package restore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// merger moves a restored tree (restic's work in a staging directory) into
// its destination by renames, through directory descriptors opened with
// O_NOFOLLOW, so that nothing is written through a symbolic link of the
// destination, nothing is copied, and each file appears complete or not at
// all. Staging and destination must be in the same btrfs subvolume
// (renames do not cross subvolumes).
//
// An entry of the staging tree that the destination lacks is moved there;
// one the destination has is exchanged with it (RENAME_EXCHANGE), so the
// replaced entry lands in the staging tree and goes with it; a directory
// both have is merged entry by entry and then given the restored
// directory's owner, mode, extended attributes and times. Destination
// entries on another filesystem, subvolume or mount (mount points, nested
// subvolumes, bind mounts such as systemd's read-only /usr and /etc or its
// private /tmp) are left alone, and so is what the staging tree held for
// them. Entries the archive does not hold stay as they are.
type merger struct {
	dev     uint64 // the destination's device and mount: entries elsewhere are not touched
	mnt     uint64
	skip    string   // a name in the destination's top directory never touched: the staging directory
	skipped []string // destination paths left alone (relative)
	moved   int      // entries moved or exchanged
}

// merge moves the entries of the open directory src into the open
// directory dst.
func (m *merger) merge(src, dst *os.File) error {
	var err error
	if m.dev, m.mnt, err = identity(int(dst.Fd()), ""); err != nil {
		return fmt.Errorf("stat %s: %w", dst.Name(), err)
	}
	return m.mergeAt(int(src.Fd()), int(dst.Fd()), "")
}

func (m *merger) mergeAt(sfd, dfd int, rel string) error {
	names, err := readDirNames(sfd)
	if err != nil {
		return fmt.Errorf("read the staging directory %s: %w", displayRel(rel), err)
	}
	for _, name := range names {
		p := filepath.Join(rel, name)
		if rel == "" && name == m.skip {
			return fmt.Errorf("the archive holds an entry named %s, the name of the staging directory; restore into a directory instead", name)
		}
		var ss, ds unix.Stat_t
		if err := unix.Fstatat(sfd, name, &ss, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("stat staged %s: %w", p, err)
		}
		err := unix.Fstatat(dfd, name, &ds, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case errors.Is(err, unix.ENOENT):
			if err := unix.Renameat2(sfd, name, dfd, name, unix.RENAME_NOREPLACE); err != nil {
				return fmt.Errorf("move %s into place: %w", p, err)
			}
			m.moved++
			if err := keepTimes(dfd, name, &ss); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		case err != nil:
			return fmt.Errorf("stat %s: %w", p, err)
		case ds.Dev != m.dev || m.otherMount(dfd, name):
			// A mount point or a nested subvolume: not this restore's.
			m.skipped = append(m.skipped, p)
		case isDir(&ss) && isDir(&ds):
			if err := m.mergeDir(sfd, dfd, name, p); err != nil {
				return err
			}
		default:
			if err := unix.Renameat2(sfd, name, dfd, name, unix.RENAME_EXCHANGE); err != nil {
				return fmt.Errorf("replace %s: %w", p, err)
			}
			m.moved++
			if err := keepTimes(dfd, name, &ss); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
	}
	return nil
}

// otherMount reports whether the entry name of dfd is on another mount than
// the destination: a bind mount of the same filesystem has its device.
func (m *merger) otherMount(dfd int, name string) bool {
	_, mnt, err := identity(dfd, name)
	return err != nil || mnt != m.mnt
}

// identity is the device and mount id of the entry name in dirfd (dirfd
// itself for ""), symbolic links not followed. The mount id is 0 on kernels
// before 5.8, where only devices tell mounts apart.
func identity(dirfd int, name string) (dev, mnt uint64, err error) {
	flags := unix.AT_SYMLINK_NOFOLLOW
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	var stx unix.Statx_t
	if err := unix.Statx(dirfd, name, flags, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, 0, err
	}
	dev = unix.Mkdev(stx.Dev_major, stx.Dev_minor)
	if stx.Mask&unix.STATX_MNT_ID != 0 {
		mnt = stx.Mnt_id
	}
	return dev, mnt, nil
}

// mergeDir merges a directory both trees have, then gives the
// destination's the staged one's metadata (after its entries changed, so
// that the times stay).
func (m *merger) mergeDir(sfd, dfd int, name, rel string) error {
	sub, err := openDirNoFollow(sfd, name)
	if err != nil {
		return fmt.Errorf("staged %s: %w", rel, err)
	}
	defer unix.Close(sub)
	dsub, err := openDirNoFollow(dfd, name)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	defer unix.Close(dsub)
	md, err := readMeta(sub)
	if err != nil {
		return fmt.Errorf("staged %s: %w", rel, err)
	}
	if err := m.mergeAt(sub, dsub, rel); err != nil {
		return err
	}
	if err := md.apply(dsub); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	return nil
}

// keepTimes sets a moved directory's times back to what restic restored
// (a rename into another directory rewrites its ".." entry).
func keepTimes(dfd int, name string, st *unix.Stat_t) error {
	if !isDir(st) {
		return nil
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(dfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// meta is what a restore gives a directory it merges into rather than
// replaces: owner, mode (with setuid, setgid and sticky bits), extended
// attributes (POSIX ACLs among them) and times.
type meta struct {
	uid, gid     uint32
	mode         uint32
	atime, mtime unix.Timespec
	xattrs       map[string][]byte
}

func readMeta(fd int) (meta, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return meta{}, fmt.Errorf("stat: %w", err)
	}
	xattrs, err := readXattrs(fd)
	if err != nil {
		return meta{}, err
	}
	return meta{uid: st.Uid, gid: st.Gid, mode: st.Mode & 0o7777, atime: st.Atim, mtime: st.Mtim, xattrs: xattrs}, nil
}

// apply sets m on the open directory fd: the owner first (chown clears
// setuid and setgid), the attributes (an ACL sets the group bits), then the
// mode, then the times, which each of those would move.
func (m meta) apply(fd int) error {
	if err := unix.Fchown(fd, int(m.uid), int(m.gid)); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	have, err := readXattrs(fd)
	if err != nil {
		return err
	}
	for name := range have {
		if _, keep := m.xattrs[name]; !keep {
			if err := unix.Fremovexattr(fd, name); err != nil && !errors.Is(err, unix.ENODATA) {
				return fmt.Errorf("remove attribute %s: %w", name, err)
			}
		}
	}
	for name, value := range m.xattrs {
		if err := unix.Fsetxattr(fd, name, value, 0); err != nil {
			return fmt.Errorf("set attribute %s: %w", name, err)
		}
	}
	if err := unix.Fchmod(fd, m.mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	ts := [2]unix.Timespec{m.atime, m.mtime}
	// futimens(fd, ts): utimensat with a NULL path sets the times of fd.
	if _, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0); errno != 0 {
		return fmt.Errorf("set times: %w", errno)
	}
	return nil
}

func readXattrs(fd int) (map[string][]byte, error) {
	out := map[string][]byte{}
	size, err := unix.Flistxattr(fd, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return out, nil
		}
		return nil, fmt.Errorf("list attributes: %w", err)
	}
	if size == 0 {
		return out, nil
	}
	buf := make([]byte, size)
	if size, err = unix.Flistxattr(fd, buf); err != nil {
		return nil, fmt.Errorf("list attributes: %w", err)
	}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		n, err := unix.Fgetxattr(fd, name, nil)
		if err != nil {
			return nil, fmt.Errorf("read attribute %s: %w", name, err)
		}
		value := make([]byte, n)
		if n > 0 {
			if n, err = unix.Fgetxattr(fd, name, value); err != nil {
				return nil, fmt.Errorf("read attribute %s: %w", name, err)
			}
		}
		out[name] = value[:n]
	}
	return out, nil
}

// removeTree removes the directory name in dirfd with everything in it,
// never following a symbolic link and never entering another filesystem,
// subvolume or mount (whatever a replaced directory of the destination held
// as a mount point or nested subvolume). It returns the paths it left, which
// also keep their parents.
func removeTree(dirfd int, name string) (left []string, err error) {
	dev, mnt, err := identity(dirfd, name)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, err
	}
	return removeAt(dirfd, name, name, dev, mnt)
}

func removeAt(dirfd int, name, rel string, dev, mnt uint64) ([]string, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, err
	}
	if d, m, err := identity(dirfd, name); err != nil || d != dev || m != mnt {
		return []string{rel}, err
	}
	if !isDir(&st) {
		return nil, unix.Unlinkat(dirfd, name, 0)
	}
	fd, err := openDirNoFollow(dirfd, name)
	if err != nil {
		return nil, err
	}
	names, err := readDirNames(fd)
	var left []string
	for _, n := range names {
		if err != nil {
			break
		}
		var l []string
		l, err = removeAt(fd, n, filepath.Join(rel, n), dev, mnt)
		left = append(left, l...)
	}
	unix.Close(fd)
	if err != nil {
		return left, err
	}
	if len(left) > 0 {
		return left, nil
	}
	return nil, unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}

// removeStaging removes the restore's staging directory stage, an entry of
// dst: its content through its own descriptor, then the entry itself, if
// dst's entry is still this very directory (another process may have
// renamed it away; it is then left, empty, where it went). It returns the
// paths it left, as removeTree.
func removeStaging(dst, stage *os.File) ([]string, error) {
	fd := int(stage.Fd())
	dev, mnt, err := identity(fd, "")
	if err != nil {
		return nil, err
	}
	names, err := readDirNames(fd)
	if err != nil {
		return nil, err
	}
	var left []string
	for _, n := range names {
		l, err := removeAt(fd, n, filepath.Join(filepath.Base(stage.Name()), n), dev, mnt)
		left = append(left, l...)
		if err != nil {
			return left, err
		}
	}
	if len(left) > 0 {
		return left, nil
	}
	var st, here unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	name := filepath.Base(stage.Name())
	if err := unix.Fstatat(int(dst.Fd()), name, &here, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return []string{name + " (moved away by another process; left empty)"}, nil
		}
		return nil, err
	}
	if here.Dev != st.Dev || here.Ino != st.Ino {
		return []string{name + " (another directory took its name; left alone)"}, nil
	}
	return nil, unix.Unlinkat(int(dst.Fd()), name, unix.AT_REMOVEDIR)
}

func openDirNoFollow(dirfd int, name string) (int, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", name, err)
	}
	return fd, nil
}

// readDirNames lists the open directory fd without closing it.
func readDirNames(fd int) ([]string, error) {
	dup, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var names []string
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(dup, buf)
		if err != nil {
			unix.Close(dup)
			return nil, err
		}
		if n <= 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	unix.Close(dup)
	return names, nil
}

func isDir(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }

func displayRel(rel string) string {
	if rel == "" {
		return "(top)"
	}
	return rel
}

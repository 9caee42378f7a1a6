package reset

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// plainCopyEnv, set to 1, makes the reset copy file contents byte by byte
// instead of sharing their extents (for bench/, to measure what reflinks
// save).
const plainCopyEnv = "SUBVAULT_RESET_PLAIN_COPY"

// copier copies persisted paths from the previous state (read-only, but
// written by users) into the new subvolume, through descriptors only: no
// link in the previous state is ever followed, no file but a regular one
// is ever opened for reading.
type copier struct {
	src, dst *os.File // the roots of the previous state and the new subvolume
	plain    bool
	// links maps a source inode with more links to the path (from dst's
	// root) of its first copy: the other names become hard links to it.
	links map[[2]uint64]string
	files int   // entries copied: files, links, directories, fifos, devices
	bytes int64 // the files' sizes
}

func newCopier(src, dst *os.File) *copier {
	return &copier{src: src, dst: dst, plain: os.Getenv(plainCopyEnv) == "1", links: map[[2]uint64]string{}}
}

// copyPath copies rel (a path from the subvolume's root) from src to dst,
// replacing what dst has there. Parents missing in dst are made with the
// owner, mode and times of src's.
func (c *copier) copyPath(rel string) error {
	parts := strings.Split(rel, "/")
	srcDir, err := dupDir(c.src)
	if err != nil {
		return err
	}
	defer func() { srcDir.Close() }() //nolint:errcheck // a directory
	dstDir, err := dupDir(c.dst)
	if err != nil {
		return err
	}
	defer func() { dstDir.Close() }() //nolint:errcheck // a directory
	for i, name := range parts[:len(parts)-1] {
		at := strings.Join(parts[:i+1], "/")
		next, err := openDirNoFollow(srcDir, name)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("persisted path /%s is missing in the previous state (/%s is not there)", rel, at)
			}
			return fmt.Errorf("cannot open /%s in the previous state: %w (a persisted path's parents must be directories, not symbolic links)", at, err)
		}
		srcDir.Close() //nolint:errcheck,gosec // a directory
		srcDir = next
		dnext, err := openDirNoFollow(dstDir, name)
		if errors.Is(err, unix.ENOENT) {
			var st unix.Stat_t
			if err := unix.Fstat(int(srcDir.Fd()), &st); err != nil {
				return err
			}
			if err := unix.Mkdirat(int(dstDir.Fd()), name, 0o700); err != nil {
				return fmt.Errorf("cannot make /%s in the new subvolume: %w", at, err)
			}
			dnext, err = openDirNoFollow(dstDir, name)
			if err == nil {
				err = setMeta(dnext, nil, &st)
			}
		}
		if err != nil {
			return fmt.Errorf("cannot open /%s in the new subvolume: %w (the clean snapshot must have a directory there)", at, err)
		}
		dstDir.Close() //nolint:errcheck,gosec // a directory
		dstDir = dnext
	}
	leaf := parts[len(parts)-1]
	var st unix.Stat_t
	if err := unix.Fstatat(int(srcDir.Fd()), leaf, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("persisted path /%s is missing in the previous state", rel)
		}
		return fmt.Errorf("cannot read /%s in the previous state: %w", rel, err)
	}
	if err := removeAll(dstDir, leaf); err != nil {
		return fmt.Errorf("cannot remove the clean snapshot's /%s from the new subvolume: %w", rel, err)
	}
	return c.copyEntry(srcDir, dstDir, leaf, rel, &st)
}

// copyEntry copies the entry name of srcDir, whose lstat is st, to dstDir.
func (c *copier) copyEntry(srcDir, dstDir *os.File, name, rel string, st *unix.Stat_t) error {
	sfd, dfd := int(srcDir.Fd()), int(dstDir.Fd())
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := unix.Mkdirat(dfd, name, 0o700); err != nil {
			return fmt.Errorf("cannot make /%s: %w", rel, err)
		}
		s, err := openDirNoFollow(srcDir, name)
		if err != nil {
			return fmt.Errorf("cannot open /%s in the previous state: %w", rel, err)
		}
		defer s.Close() //nolint:errcheck // a directory
		if err := sameInode(s, st); err != nil {
			return fmt.Errorf("/%s in the previous state: %w", rel, err)
		}
		d, err := openDirNoFollow(dstDir, name)
		if err != nil {
			return fmt.Errorf("cannot open /%s in the new subvolume: %w", rel, err)
		}
		defer d.Close() //nolint:errcheck // a directory
		names, err := readNames(s)
		if err != nil {
			return fmt.Errorf("cannot read /%s in the previous state: %w", rel, err)
		}
		for _, n := range names {
			var cst unix.Stat_t
			if err := unix.Fstatat(int(s.Fd()), n, &cst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("cannot read /%s in the previous state: %w", rel+"/"+n, err)
			}
			if cst.Dev != st.Dev {
				continue // a nested subvolume's placeholder or a mount: not this subvolume's
			}
			if err := c.copyEntry(s, d, n, rel+"/"+n, &cst); err != nil {
				return err
			}
		}
		if err := setMeta(d, s, st); err != nil {
			return fmt.Errorf("/%s: %w", rel, err)
		}
		c.files++
		return nil
	case unix.S_IFREG:
		key := [2]uint64{st.Dev, st.Ino}
		if st.Nlink > 1 {
			if first, ok := c.links[key]; ok {
				if err := unix.Linkat(int(c.dst.Fd()), first, dfd, name, 0); err != nil {
					return fmt.Errorf("cannot link /%s to /%s: %w", rel, first, err)
				}
				c.files++
				return nil
			}
		}
		if err := c.copyFile(srcDir, dstDir, name, rel, st); err != nil {
			return err
		}
		if st.Nlink > 1 {
			c.links[key] = rel
		}
		c.files++
		return nil
	case unix.S_IFLNK:
		target, err := readlinkat(sfd, name)
		if err != nil {
			return fmt.Errorf("cannot read the link /%s: %w", rel, err)
		}
		if err := unix.Symlinkat(target, dfd, name); err != nil {
			return fmt.Errorf("cannot make the link /%s: %w", rel, err)
		}
	case unix.S_IFIFO, unix.S_IFCHR, unix.S_IFBLK, unix.S_IFSOCK:
		if err := unix.Mknodat(dfd, name, st.Mode&(unix.S_IFMT|0o777), int(st.Rdev)); err != nil {
			return fmt.Errorf("cannot make /%s: %w", rel, err)
		}
	default:
		return fmt.Errorf("/%s has an unknown file type %#o", rel, st.Mode&unix.S_IFMT)
	}
	// Neither opened for reading nor writing: a link, fifo or device is
	// reached through an O_PATH descriptor (its xattrs) and by name in the
	// new subvolume, which no one else reaches.
	p, err := openPath(dstDir, name)
	if err != nil {
		return fmt.Errorf("cannot open /%s in the new subvolume: %w", rel, err)
	}
	defer p.Close() //nolint:errcheck // O_PATH
	sp, err := openPath(srcDir, name)
	if err != nil {
		return fmt.Errorf("cannot open /%s in the previous state: %w", rel, err)
	}
	defer sp.Close() //nolint:errcheck // O_PATH
	if err := sameInode(sp, st); err != nil {
		return fmt.Errorf("/%s in the previous state: %w", rel, err)
	}
	c.files++
	if err := unix.Fchownat(dfd, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("/%s: chown: %w", rel, err)
	}
	if err := copyXattrs(sp, p, true); err != nil {
		return fmt.Errorf("/%s: %w", rel, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Fchmodat(dfd, name, st.Mode&0o7777, 0); err != nil {
			return fmt.Errorf("/%s: chmod: %w", rel, err)
		}
	}
	if err := unix.UtimesNanoAt(dfd, name, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("/%s: set times: %w", rel, err)
	}
	return nil
}

// copyFile copies a regular file's content (shared extents when it can),
// owner, mode, xattrs and times.
func (c *copier) copyFile(srcDir, dstDir *os.File, name, rel string, st *unix.Stat_t) error {
	sfd, err := unix.Openat(int(srcDir.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cannot open /%s in the previous state: %w", rel, err)
	}
	src := os.NewFile(uintptr(sfd), rel)
	defer src.Close() //nolint:errcheck // read only
	if err := sameInode(src, st); err != nil {
		return fmt.Errorf("/%s in the previous state: %w", rel, err)
	}
	dfd, err := unix.Openat(int(dstDir.Fd()), name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("cannot make /%s in the new subvolume: %w", rel, err)
	}
	dst := os.NewFile(uintptr(dfd), rel)
	defer dst.Close() //nolint:errcheck // closed below on success
	cloned := false
	if !c.plain && st.Size > 0 {
		err := unix.IoctlFileClone(dfd, sfd)
		switch {
		case err == nil:
			cloned = true
		case errors.Is(err, unix.EXDEV), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOTTY):
		default:
			return fmt.Errorf("cannot copy /%s: FICLONE: %w", rel, explain(err))
		}
	}
	if !cloned && st.Size > 0 {
		if _, err := io.Copy(onlyWriter{dst}, onlyReader{src}); err != nil {
			return fmt.Errorf("cannot copy /%s: %w", rel, explain(err))
		}
	}
	c.bytes += st.Size
	if err := setMeta(dst, src, st); err != nil {
		return fmt.Errorf("/%s: %w", rel, err)
	}
	return dst.Close()
}

// onlyReader and onlyWriter hide ReadFrom/WriteTo, so that io.Copy reads and
// writes bytes (copy_file_range would share extents on btrfs too).
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }

func explain(err error) error {
	if errors.Is(err, unix.ENOSPC) {
		return fmt.Errorf("%w (the filesystem is full)", err)
	}
	return err
}

// sameInode checks that an opened file is the one lstat saw.
func sameInode(f *os.File, st *unix.Stat_t) error {
	var got unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &got); err != nil {
		return err
	}
	if got.Dev != st.Dev || got.Ino != st.Ino {
		return errors.New("it changed while it was copied")
	}
	return nil
}

// setMeta sets owner, extended attributes (those of src), mode and
// times of an opened file or directory, in that order: chown clears set-id
// bits and file capabilities (security.capability), so they come after it.
func setMeta(f, src *os.File, st *unix.Stat_t) error {
	fd := int(f.Fd())
	if err := unix.Fchown(fd, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if src != nil {
		if err := copyXattrs(src, f, false); err != nil {
			return err
		}
	}
	if err := unix.Fchmod(fd, st.Mode&0o7777); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	// utimensat(fd, NULL, ...) is futimens: nanoseconds, on the open file.
	ts := [2]unix.Timespec{st.Atim, st.Mtim}
	if _, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0); errno != 0 {
		return fmt.Errorf("set times: %w", errno)
	}
	return nil
}

// procPath names an opened file itself (/proc/self/fd/N is a magic link to
// the inode, not a path looked up again).
func procPath(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", f.Fd()) }

// copyXattrs copies every extended attribute (user, trusted, security, and
// the POSIX ACLs, system.posix_acl_access and _default) from src to dst.
//
// Both are reached through /proc/self/fd, whose magic links resolve to the
// very inode (a link itself, not its target); special is set for a link, a
// fifo or a device, on which user.* attributes are not allowed.
func copyXattrs(src, dst *os.File, special bool) error {
	list, get, set := unix.Listxattr, unix.Getxattr, unix.Setxattr
	sp, dp := procPath(src), procPath(dst)
	names, err := xattrNames(sp, list)
	if err != nil {
		return fmt.Errorf("cannot list its extended attributes: %w", err)
	}
	for _, name := range names {
		value, err := xattrValue(sp, name, get)
		if err != nil {
			return fmt.Errorf("cannot read its extended attribute %s: %w", name, err)
		}
		if err := set(dp, name, value, 0); err != nil {
			if special && errors.Is(err, unix.EPERM) {
				continue // user.* is not allowed there
			}
			return fmt.Errorf("cannot set its extended attribute %s: %w", name, explain(err))
		}
	}
	return nil
}

func xattrNames(p string, list func(string, []byte) (int, error)) ([]string, error) {
	for size := 1024; ; size *= 4 {
		buf := make([]byte, size)
		n, err := list(p, buf)
		if errors.Is(err, unix.ERANGE) && size < 1<<20 {
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		var out []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				out = append(out, s)
			}
		}
		return out, nil
	}
}

func xattrValue(p, name string, get func(string, string, []byte) (int, error)) ([]byte, error) {
	for size := 4096; ; size *= 4 {
		buf := make([]byte, size)
		n, err := get(p, name, buf)
		if errors.Is(err, unix.ERANGE) && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

func dupDir(f *os.File) (*os.File, error) {
	fd, err := unix.Openat(int(f.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

func openDirNoFollow(dir *os.File, name string) (*os.File, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir.Name(), name)), nil
}

func openPath(dir *os.File, name string) (*os.File, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir.Name(), name)), nil
}

func readNames(f *os.File) ([]string, error) {
	d, err := dupDir(f)
	if err != nil {
		return nil, err
	}
	defer d.Close() //nolint:errcheck // read only
	return d.Readdirnames(-1)
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// removeAll removes name from dir and everything below it, through
// descriptors, never following a link; a missing name is no error.
func removeAll(dir *os.File, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unix.Unlinkat(int(dir.Fd()), name, 0)
	}
	sub, err := openDirNoFollow(dir, name)
	if err != nil {
		return err
	}
	names, err := readNames(sub)
	if err == nil {
		for _, n := range names {
			if err = removeAll(sub, n); err != nil {
				break
			}
		}
	}
	sub.Close() //nolint:errcheck,gosec // a directory
	if err != nil {
		return err
	}
	return unix.Unlinkat(int(dir.Fd()), name, unix.AT_REMOVEDIR)
}

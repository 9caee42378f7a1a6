// Package safefs opens the paths a root daemon acts on the way it must:
// each resolved once into a descriptor, checked through that descriptor
// (owner, type, filesystem), and never followed through a link another user
// could have planted. Everything after the open is done relative to the
// descriptor (openat, mkdirat, renameat2), so a rename, swap or link made
// between the check and the use changes nothing.
//
// Two kinds of path reach the daemon. A path a caller names (a restore's
// target) may hold no symbolic link at all: OpenDir resolves it with
// openat2 and RESOLVE_NO_SYMLINKS. A path root configured (a plan's
// subvolume, its snapshot directory, the state directory) may go through a
// link only where only root could have made that link: OpenTrustedDir
// follows one when the directory holding it is root's and nobody else may
// write it, as systemd's chase() with CHASE_SAFE and sshd's StrictModes do.
package safefs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// maxLinks bounds the symbolic links one resolution follows (the kernel's
// own limit is 40).
const maxLinks = 40

// ErrSymlink is wrapped by OpenDir's error for a path with a symbolic
// link in it.
var ErrSymlink = errors.New("a symbolic link is on the way")

// OpenDir opens the directory at the absolute path, following no symbolic
// link anywhere on the way (and no /proc magic link), and refusing a path
// whose last element is not a directory.
func OpenDir(path string) (*os.File, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%s is not an absolute path", path)
	}
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := openat2(unix.AT_FDCWD, path, &how)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("open %s: %w; name the real path", path, ErrSymlink)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// OpenBeneath opens the directory rel below dir, never leaving dir, never
// following a symbolic link and never crossing into another mount
// (RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS, RESOLVE_NO_XDEV).
func OpenBeneath(dir *os.File, rel string) (*os.File, error) {
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	fd, err := openat2(int(dir.Fd()), rel, &how)
	if err != nil {
		return nil, fmt.Errorf("open %s below %s: %w", rel, dir.Name(), err)
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir.Name(), rel)), nil
}

func openat2(dirfd int, path string, how *unix.OpenHow) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, path, how)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			// openat2 asks for a retry when a rename raced the lookup.
			continue
		}
		return fd, err
	}
}

// OpenTrustedDir opens the directory at the absolute path root configured.
// A symbolic link on the way is followed only when the directory holding
// it is owned by root (or the daemon's own user) and nobody else may write
// it, so only root could have made or swapped it; any other link is
// refused with an error that names it.
func OpenTrustedDir(path string) (*os.File, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%s is not an absolute path", path)
	}
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /: %w", err)
	}
	walked := "/"
	rest := splitPath(path)
	links := 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		next, err := unix.Openat(fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("open %s: %w", path, &os.PathError{Op: "open", Path: filepath.Join(walked, name), Err: err})
		}
		var st unix.Stat_t
		if err := unix.Fstat(next, &st); err != nil {
			unix.Close(next)
			unix.Close(fd)
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			unix.Close(next)
			link := filepath.Join(walked, name)
			if err := trustedLinkDir(fd, link); err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("open %s: %w", path, err)
			}
			if links++; links > maxLinks {
				unix.Close(fd)
				return nil, fmt.Errorf("open %s: more than %d symbolic links", path, maxLinks)
			}
			target, err := readlinkat(fd, name)
			if err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("open %s: read link %s: %w", path, link, err)
			}
			rest = append(splitPath(target), rest...)
			if filepath.IsAbs(target) {
				unix.Close(fd)
				if fd, err = unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
					return nil, fmt.Errorf("open /: %w", err)
				}
				walked = "/"
			}
			continue
		}
		unix.Close(fd)
		fd = next
		walked = filepath.Join(walked, name)
	}
	dir, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	unix.Close(fd)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return os.NewFile(uintptr(dir), path), nil
}

// trustedLinkDir checks the directory dirfd that holds the symbolic link
// link: only root may have put the link there.
func trustedLinkDir(dirfd int, link string) error {
	var st unix.Stat_t
	if err := unix.Fstat(dirfd, &st); err != nil {
		return err
	}
	if !trustedOwner(st.Uid) || st.Mode&0o022 != 0 {
		return fmt.Errorf("%s is a symbolic link in %s, a directory %s, so another user could have made it: name the real path",
			link, filepath.Dir(link), describeOwner(&st))
	}
	return nil
}

func describeOwner(st *unix.Stat_t) string {
	if !trustedOwner(st.Uid) {
		return fmt.Sprintf("owned by uid %d", st.Uid)
	}
	return fmt.Sprintf("others may write (mode %04o)", st.Mode&0o7777)
}

func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
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

// trustedOwner is root, or the daemon's own user (root, but for trials as
// another user).
func trustedOwner(uid uint32) bool { return uid == 0 || uid == uint32(os.Geteuid()) }

// Stat is fstat of f.
func Stat(f *os.File) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstat(int(f.Fd()), &st)
	return st, err
}

// MakePrivateDir makes the directory name in dir, mode 0700, or opens the
// one there, and returns it opened after checking, through the open
// descriptor, that it is a directory (not a link to one), owned by root (or
// the daemon's user) and that nobody else may enter it. With fresh, an existing directory is an error: the caller
// needs one no other process has seen. The error of a directory that fails
// the checks names what is wrong and how to fix it.
func MakePrivateDir(dir *os.File, name string, fresh bool) (*os.File, error) {
	path := filepath.Join(dir.Name(), name)
	err := unix.Mkdirat(int(dir.Fd()), name, 0o700)
	switch {
	case errors.Is(err, unix.EEXIST) && !fresh:
	case err != nil:
		return nil, fmt.Errorf("cannot make %s: %w", path, err)
	}
	f, err := openDirAt(dir, name)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return nil, fmt.Errorf("%s is not a directory (a symbolic link or a file is there); subvault makes it itself: remove it", path)
		}
		return nil, fmt.Errorf("cannot open %s: %w", path, err)
	}
	if err := checkPrivate(dir, f); err != nil {
		f.Close() //nolint:errcheck,gosec // refused
		return nil, err
	}
	return f, nil
}

// OpenPrivateDir opens the existing directory name in dir with the checks
// of MakePrivateDir; a missing one is an error wrapping os.ErrNotExist.
func OpenPrivateDir(dir *os.File, name string) (*os.File, error) {
	f, err := openDirAt(dir, name)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir.Name(), name), os.ErrNotExist)
		}
		return nil, fmt.Errorf("cannot open %s: %w", filepath.Join(dir.Name(), name), err)
	}
	if err := checkPrivate(dir, f); err != nil {
		f.Close() //nolint:errcheck,gosec // refused
		return nil, err
	}
	return f, nil
}

func openDirAt(dir *os.File, name string) (*os.File, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir.Name(), name)), nil
}

func checkPrivate(_, f *os.File) error {
	st, err := Stat(f)
	if err != nil {
		return fmt.Errorf("cannot check %s: %w", f.Name(), err)
	}
	switch {
	case !trustedOwner(st.Uid):
		return fmt.Errorf("%s is owned by uid %d, not root, so another user controls what is in it; subvault makes this directory itself, root's and mode 0700: remove it (or chown root: %s && chmod 0700 %s if you made it)",
			f.Name(), st.Uid, f.Name(), f.Name())
	case st.Mode&0o077 != 0:
		return fmt.Errorf("%s has mode %04o, so others may enter it; subvault keeps this directory mode 0700: chmod 0700 %s",
			f.Name(), st.Mode&0o7777, f.Name())
	}
	return nil
}

// IsEmpty reports whether the open directory f has no entries.
func IsEmpty(f *os.File) (bool, error) {
	dup, err := unix.Openat(int(f.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	d := os.NewFile(uintptr(dup), f.Name())
	defer d.Close() //nolint:errcheck // read only
	names, err := d.Readdirnames(1)
	if len(names) > 0 {
		return false, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return true, nil
	}
	return false, err
}

// SameMount reports whether a and b are on the same mount (statx's mount
// id; the device number where the kernel has none, before 5.8): a directory
// another user mounted something on (FUSE) is not.
func SameMount(a, b *os.File) (bool, error) {
	ia, err := mountOf(a)
	if err != nil {
		return false, err
	}
	ib, err := mountOf(b)
	if err != nil {
		return false, err
	}
	return ia == ib, nil
}

type mountID struct{ dev, mnt uint64 }

func mountOf(f *os.File) (mountID, error) {
	var stx unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &stx); err != nil {
		return mountID{}, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	id := mountID{dev: unix.Mkdev(stx.Dev_major, stx.Dev_minor)}
	if stx.Mask&unix.STATX_MNT_ID != 0 {
		id.mnt = stx.Mnt_id
	}
	return id, nil
}

// OpenOwnedDir opens the existing directory name in dir without following
// a link, and checks that root (or the daemon's user) owns it, so that no
// other user made it: what the daemon may remove as its own leftover. A
// missing one is an error wrapping os.ErrNotExist.
func OpenOwnedDir(dir *os.File, name string) (*os.File, error) {
	f, err := openDirAt(dir, name)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir.Name(), name), os.ErrNotExist)
		}
		return nil, fmt.Errorf("cannot open %s: %w", filepath.Join(dir.Name(), name), err)
	}
	st, err := Stat(f)
	if err == nil && !trustedOwner(st.Uid) {
		err = fmt.Errorf("%s is owned by uid %d, so subvault did not make it", f.Name(), st.Uid)
	}
	if err != nil {
		f.Close() //nolint:errcheck,gosec // refused
		return nil, err
	}
	return f, nil
}

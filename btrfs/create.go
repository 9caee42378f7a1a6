package btrfs

import (
	"errors"
	"fmt"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

const iocSubvolCreate = 0x5000940e // _IOW(0x94, 14, struct btrfs_ioctl_vol_args)

// CreateSubvolume creates an empty subvolume at path, whose directory must
// exist on btrfs and which must not exist, and returns it (its UUID is
// what DeleteSubvolume asks for).
func CreateSubvolume(path string) (Subvolume, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Subvolume{}, fmt.Errorf("cannot create subvolume %s: %w", path, err)
	}
	dir, name := filepath.Split(abs)
	if name == "" || len(name) > 255 {
		return Subvolume{}, fmt.Errorf("cannot create subvolume %s: it needs a name of 1 to 255 bytes", path)
	}
	dir = filepath.Clean(dir)
	dirfd, err := openDir(dir)
	if err != nil {
		return Subvolume{}, fmt.Errorf("cannot create subvolume %s: %w", abs, err)
	}
	defer unix.Close(dirfd)
	var fs unix.Statfs_t
	if err := unix.Fstatfs(dirfd, &fs); err != nil {
		return Subvolume{}, fmt.Errorf("cannot create subvolume %s: %w", abs, err)
	}
	if uint32(fs.Type) != superMagic {
		if err := requireBtrfs(dir); err != nil {
			return Subvolume{}, fmt.Errorf("cannot create subvolume %s: %w", abs, err)
		}
		return Subvolume{}, fmt.Errorf("cannot create subvolume %s: %s is not on btrfs", abs, dir)
	}
	var args volArgs
	copy(args.Name[:], name)
	if err := ioctlPtr(dirfd, iocSubvolCreate, unsafe.Pointer(&args)); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return Subvolume{}, fmt.Errorf("cannot create subvolume %s: it already exists", abs)
		}
		return Subvolume{}, fmt.Errorf("cannot create subvolume %s: BTRFS_IOC_SUBVOL_CREATE: %w", abs, explainErrno(err))
	}
	return Info(abs)
}

// DeleteSubvolume deletes the subvolume at path, content and all, if it is
// the one whose UUID is uuid (one CreateSubvolume made): anything else at
// path is refused, untouched. Nested subvolumes make it fail (ENOTEMPTY).
func DeleteSubvolume(path, uuid string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("cannot delete subvolume %s: %w", path, err)
	}
	if uuid == "" {
		return fmt.Errorf("refusing to delete subvolume %s: no UUID to check it against", abs)
	}
	dir, name := filepath.Split(abs)
	dirfd, err := openDir(filepath.Clean(dir))
	if err != nil {
		return fmt.Errorf("cannot delete subvolume %s: %w", abs, err)
	}
	defer unix.Close(dirfd)
	// Identify and destroy through the same directory descriptor, so that
	// a rename of a parent between the two cannot redirect the delete.
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cannot delete subvolume %s: %w", abs, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return fmt.Errorf("cannot delete subvolume %s: %w", abs, err)
	}
	if !isSubvolumeRoot(&st) {
		unix.Close(fd)
		return fmt.Errorf("refusing to delete subvolume %s: it is not a subvolume", abs)
	}
	info, err := getSubvolInfo(fd)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("cannot delete subvolume %s: BTRFS_IOC_GET_SUBVOL_INFO: %w", abs, err)
	}
	if got := formatUUID(info.UUID); got != uuid {
		return fmt.Errorf("refusing to delete subvolume %s: it is subvolume %s, not %s", abs, got, uuid)
	}
	if err := snapDestroy(dirfd, name); err != nil {
		return fmt.Errorf("cannot delete subvolume %s: BTRFS_IOC_SNAP_DESTROY: %w", abs, explainErrno(err))
	}
	return nil
}

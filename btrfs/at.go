package btrfs

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The operations on an open directory and a name in it, for a caller that
// resolved and checked its paths once (a root daemon acting in directories
// other users may write): nothing here looks a path up again, so a rename or
// a planted link between the caller's check and the ioctl changes nothing.

// InfoOf is Info of an open subvolume. Its Path is the file's name.
func InfoOf(f *os.File) (Subvolume, error) {
	fd := int(f.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Subvolume{}, fmt.Errorf("cannot read subvolume %s: %w", f.Name(), err)
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return Subvolume{}, fmt.Errorf("cannot read subvolume %s: %w", f.Name(), err)
	}
	if uint32(fs.Type) != superMagic {
		return Subvolume{}, fmt.Errorf("cannot read subvolume %s: it is not on btrfs", f.Name())
	}
	if !isSubvolumeRoot(&st) {
		return Subvolume{}, fmt.Errorf("%s is not a btrfs subvolume", f.Name())
	}
	flags, err := getFlags(fd)
	if err != nil {
		return Subvolume{}, fmt.Errorf("cannot read subvolume %s: %w", f.Name(), err)
	}
	args, err := getSubvolInfo(fd)
	if err != nil {
		return Subvolume{}, fmt.Errorf("cannot read subvolume %s: BTRFS_IOC_GET_SUBVOL_INFO: %w", f.Name(), err)
	}
	return Subvolume{Path: f.Name(), ID: args.TreeID, Generation: args.Generation, UUID: formatUUID(args.UUID),
		ParentUUID: formatUUID(args.ParentUUID), ReceivedUUID: formatUUID(args.ReceivedUUID),
		ReadOnly: flags&subvolReadOnly != 0}, nil
}

// OpenAt opens the directory name in dir without following a symbolic
// link.
func OpenAt(dir *os.File, name string) (*os.File, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", filepath.Join(dir.Name(), name), err)
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir.Name(), name)), nil
}

// SnapshotAt snapshots the open subvolume src as name in the open directory
// dir (same filesystem), read-only or writable, and returns the snapshot,
// opened, after checking that it is the snapshot of src this call made: a
// subvolume whose parent UUID is src's, with the read-only flag asked for.
func SnapshotAt(src, dir *os.File, name string, readOnly bool) (*os.File, Subvolume, error) {
	dst := filepath.Join(dir.Name(), name)
	if name == "" || name == "." || name == ".." || len(name) > 255 || filepath.Base(name) != name {
		return nil, Subvolume{}, fmt.Errorf("cannot snapshot %s to %s: the snapshot needs a name of 1 to 255 bytes without /", src.Name(), dst)
	}
	source, err := InfoOf(src)
	if err != nil {
		return nil, Subvolume{}, fmt.Errorf("cannot snapshot %s: %w", src.Name(), err)
	}
	var args volArgsV2
	args.FD = int64(src.Fd())
	if readOnly {
		args.Flags = subvolReadOnly
	}
	copy(args.Name[:], name)
	if err := ioctlPtr(int(dir.Fd()), iocSnapCreateV2, unsafe.Pointer(&args)); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, Subvolume{}, fmt.Errorf("cannot snapshot %s to %s: %s already exists", src.Name(), dst, dst)
		}
		return nil, Subvolume{}, fmt.Errorf("cannot snapshot %s to %s: %w", src.Name(), dst, explainErrno(err))
	}
	f, err := OpenAt(dir, name)
	if err != nil {
		return nil, Subvolume{}, fmt.Errorf("cannot open the snapshot of %s just made: %w", src.Name(), err)
	}
	snap, err := InfoOf(f)
	if err == nil && (snap.ParentUUID != source.UUID || snap.ReadOnly != readOnly) {
		err = fmt.Errorf("%s is not the snapshot of %s just made (parent %s, read-only %t): something replaced it", dst, src.Name(), snap.ParentUUID, snap.ReadOnly)
	}
	if err != nil {
		f.Close() //nolint:errcheck,gosec // refused
		return nil, Subvolume{}, err
	}
	return f, snap, nil
}

// CreateSubvolumeAt creates the empty subvolume name in the open directory
// dir and returns it opened, after checking that what is there now is an
// empty subvolume owned by this process's user (another user could have
// swapped one of their own in).
func CreateSubvolumeAt(dir *os.File, name string) (*os.File, Subvolume, error) {
	path := filepath.Join(dir.Name(), name)
	if name == "" || name == "." || name == ".." || len(name) > 255 || filepath.Base(name) != name {
		return nil, Subvolume{}, fmt.Errorf("cannot create subvolume %s: it needs a name of 1 to 255 bytes without /", path)
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(dir.Fd()), &fs); err != nil {
		return nil, Subvolume{}, fmt.Errorf("cannot create subvolume %s: %w", path, err)
	}
	if uint32(fs.Type) != superMagic {
		return nil, Subvolume{}, fmt.Errorf("cannot create subvolume %s: %s is not on btrfs", path, dir.Name())
	}
	var args volArgs
	copy(args.Name[:], name)
	if err := ioctlPtr(int(dir.Fd()), iocSubvolCreate, unsafe.Pointer(&args)); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, Subvolume{}, fmt.Errorf("cannot create subvolume %s: it already exists", path)
		}
		return nil, Subvolume{}, fmt.Errorf("cannot create subvolume %s: BTRFS_IOC_SUBVOL_CREATE: %w", path, explainErrno(err))
	}
	f, err := OpenAt(dir, name)
	if err != nil {
		return nil, Subvolume{}, fmt.Errorf("cannot open subvolume %s just created: %w", path, err)
	}
	sv, err := InfoOf(f)
	if err == nil {
		err = checkFresh(f)
	}
	if err != nil {
		f.Close() //nolint:errcheck,gosec // refused
		return nil, Subvolume{}, fmt.Errorf("subvolume %s just created: %w", path, err)
	}
	return f, sv, nil
}

// checkFresh checks that the open directory is owned by this process's
// user and empty, as a subvolume it just created is.
func checkFresh(f *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	if st.Uid != uint32(os.Geteuid()) {
		return fmt.Errorf("it is owned by uid %d: another user replaced it", st.Uid)
	}
	names, err := readNames(f)
	if err != nil {
		return err
	}
	if len(names) > 0 {
		return errors.New("it is not empty: another user replaced it")
	}
	return nil
}

// DeleteSubvolumeAt deletes the subvolume name in the open directory dir,
// content and all, if it is the one whose UUID is uuid; anything else is
// refused, untouched. Nested subvolumes make it fail (ENOTEMPTY).
func DeleteSubvolumeAt(dir *os.File, name, uuid string) error {
	path := filepath.Join(dir.Name(), name)
	if uuid == "" {
		return fmt.Errorf("refusing to delete subvolume %s: no UUID to check it against", path)
	}
	f, err := OpenAt(dir, name)
	if err != nil {
		return fmt.Errorf("cannot delete subvolume %s: %w", path, err)
	}
	sv, err := InfoOf(f)
	f.Close() //nolint:errcheck,gosec // read only
	if err != nil {
		return fmt.Errorf("cannot delete subvolume %s: %w", path, err)
	}
	if sv.UUID != uuid {
		return fmt.Errorf("refusing to delete subvolume %s: it is subvolume %s, not %s", path, sv.UUID, uuid)
	}
	if err := snapDestroy(int(dir.Fd()), name); err != nil {
		return fmt.Errorf("cannot delete subvolume %s: BTRFS_IOC_SNAP_DESTROY: %w", path, explainErrno(err))
	}
	return nil
}

// DeleteSnapshotAt deletes the subvault snapshot name in the open directory
// dir, with Delete's checks: a subvault snapshot name, a subvolume, no
// nested subvolumes.
func DeleteSnapshotAt(dir *os.File, name string) error {
	return deleteSnapshot(int(dir.Fd()), filepath.Join(dir.Name(), name), name)
}

// ListSnapshotsAt is ListSnapshots of the open directory dir; each Path is
// below dir's name.
func ListSnapshotsAt(dir *os.File) ([]Snapshot, error) {
	fd := int(dir.Fd())
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return nil, fmt.Errorf("cannot list snapshots in %s: %w", dir.Name(), err)
	}
	if uint32(fs.Type) != superMagic {
		return nil, fmt.Errorf("cannot list snapshots in %s: it is not on btrfs", dir.Name())
	}
	names, err := readNames(dir)
	if err != nil {
		return nil, fmt.Errorf("cannot list snapshots in %s: %w", dir.Name(), err)
	}
	var snaps []Snapshot
	for _, name := range names {
		s, err := ParseName(name)
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // deleted while we listed
			}
			return nil, fmt.Errorf("cannot list snapshots in %s: %w", dir.Name(), err)
		}
		if !isSubvolumeRoot(&st) {
			continue
		}
		s.Path = filepath.Join(dir.Name(), name)
		snaps = append(snaps, s)
	}
	slices.SortFunc(snaps, func(a, b Snapshot) int {
		return cmp.Or(compareSnapshots(a, b), strings.Compare(a.Path, b.Path))
	})
	return snaps, nil
}

// readNames lists the open directory f without moving f's own offset.
func readNames(f *os.File) ([]string, error) {
	dup, err := unix.Openat(int(f.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	d := os.NewFile(uintptr(dup), f.Name())
	defer d.Close() //nolint:errcheck // read only
	return d.Readdirnames(-1)
}

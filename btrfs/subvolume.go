package btrfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	cbtrfs "github.com/containerd/btrfs/v2"
	"golang.org/x/sys/unix"
)

// Subvolume is a btrfs subvolume's identity and state.
type Subvolume struct {
	// Path is the absolute path of the subvolume, symlinks resolved.
	Path string
	// ID is the subvolume (tree) id.
	ID uint64
	// UUID is the subvolume's own UUID.
	UUID string
	// ParentUUID is the UUID of the subvolume it is a snapshot of; empty
	// for a subvolume that is not a snapshot.
	ParentUUID string
	// ReceivedUUID is, for a subvolume made by btrfs receive, the UUID of
	// the subvolume sent (set when the receive completed); empty otherwise.
	ReceivedUUID string
	// Generation is the last transaction that changed the subvolume.
	Generation uint64
	// ReadOnly reports the BTRFS_SUBVOL_RDONLY flag.
	ReadOnly bool
}

// IsSubvolume reports whether path (symlinks followed) is the root of a btrfs
// subvolume. A plain directory or file on btrfs gives false and nil; a path
// that does not exist or is not on btrfs gives an error that says so.
func IsSubvolume(path string) (bool, error) {
	resolved, err := resolve(path)
	if err != nil {
		return false, fmt.Errorf("cannot tell whether %s is a subvolume: %w", path, err)
	}
	if err := requireBtrfs(resolved); err != nil {
		return false, fmt.Errorf("cannot tell whether %s is a subvolume: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(resolved, &st); err != nil {
		return false, fmt.Errorf("cannot tell whether %s is a subvolume: %w", path, err)
	}
	return isSubvolumeRoot(&st), nil
}

func isSubvolumeRoot(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Ino == firstFreeObject
}

// requireBtrfs returns nil when path is on btrfs, or an error naming the
// filesystem it is on.
func requireBtrfs(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return err
	}
	if uint32(st.Type) == superMagic {
		return nil
	}
	entry, err := mountOf(path)
	if err != nil {
		return fmt.Errorf("%s is not on btrfs (filesystem magic %#x)", path, st.Type)
	}
	return errors.New(notBtrfs(path, entry))
}

// requireSubvolume returns the resolved path of a btrfs subvolume, or an
// error that says what path is instead and, for a plain directory, which
// subvolume holds it.
func requireSubvolume(path string) (string, error) {
	resolved, err := resolve(path)
	if err != nil {
		return "", err
	}
	if err := requireBtrfs(resolved); err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Lstat(resolved, &st); err != nil {
		return "", err
	}
	if isSubvolumeRoot(&st) {
		return resolved, nil
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return "", fmt.Errorf("%s is not a btrfs subvolume (it is not even a directory)", resolved)
	}
	holder := holdingSubvolume(resolved, st.Dev)
	return "", fmt.Errorf("%s is not a btrfs subvolume (it is a plain directory on btrfs; create it with \"btrfs subvolume create\" or back up the subvolume that holds it: %s)", resolved, holder)
}

// holdingSubvolume walks up from a plain directory to the root of the
// subvolume that holds it: the first ancestor on the same device whose inode
// is a subvolume root's.
func holdingSubvolume(dir string, dev uint64) string {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil || st.Dev != dev {
			return "(unknown)"
		}
		if st.Ino == firstFreeObject {
			return p
		}
		if p == "/" {
			return "(unknown)"
		}
	}
}

// Info returns the identity and state of the subvolume at path. It uses
// BTRFS_IOC_GET_SUBVOL_INFO (Linux ≥ 4.18, no root needed, one ioctl) and
// BTRFS_IOC_SUBVOL_GETFLAGS; containerd's SubvolInfo needs root and searches
// the whole root tree on every call.
func Info(path string) (Subvolume, error) {
	resolved, err := requireSubvolume(path)
	if err != nil {
		return Subvolume{}, fmt.Errorf("cannot read subvolume %s: %w", path, err)
	}
	fd, err := openDir(resolved)
	if err != nil {
		return Subvolume{}, fmt.Errorf("cannot read subvolume %s: %w", path, err)
	}
	defer unix.Close(fd)
	flags, err := getFlags(fd)
	if err != nil {
		return Subvolume{}, fmt.Errorf("cannot read subvolume %s: %w", path, err)
	}
	sv := Subvolume{Path: resolved, ReadOnly: flags&subvolReadOnly != 0}
	args, err := getSubvolInfo(fd)
	switch {
	case err == nil:
		sv.ID, sv.Generation = args.TreeID, args.Generation
		sv.UUID, sv.ParentUUID = formatUUID(args.UUID), formatUUID(args.ParentUUID)
		sv.ReceivedUUID = formatUUID(args.ReceivedUUID)
	case errors.Is(err, unix.ENOTTY):
		// A kernel older than 4.18: fall back to containerd's tree search (root only).
		ci, cerr := cbtrfs.SubvolInfo(resolved)
		if cerr != nil {
			return Subvolume{}, fmt.Errorf("cannot read subvolume %s: %w", path, cerr)
		}
		sv.ID, sv.Generation, sv.UUID, sv.ParentUUID = ci.ID, ci.Generation, ci.UUID, ci.ParentUUID
		sv.ReceivedUUID = ci.ReceivedUUID
	default:
		return Subvolume{}, fmt.Errorf("cannot read subvolume %s: BTRFS_IOC_GET_SUBVOL_INFO: %w", path, err)
	}
	return sv, nil
}

func openDir(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", path, err)
	}
	return fd, nil
}

// SnapshotReadOnly makes a read-only snapshot of the subvolume src at dst,
// which must not exist and must be in a directory of the same btrfs filesystem.
func SnapshotReadOnly(src, dst string) error { return snapshot(src, dst, true) }

// SnapshotWritable makes a writable snapshot of the subvolume src (which may
// be a read-only snapshot) at dst: a clone to inspect or boot in a container.
func SnapshotWritable(src, dst string) error { return snapshot(src, dst, false) }

func snapshot(src, dst string, readOnly bool) error {
	source, err := requireSubvolume(src)
	if err != nil {
		return fmt.Errorf("cannot snapshot %s: %w", src, err)
	}
	dstAbs, err := filepath.Abs(dst)
	if err != nil {
		return fmt.Errorf("cannot snapshot %s to %s: %w", src, dst, err)
	}
	dir, name := filepath.Split(dstAbs)
	dir = filepath.Clean(dir)
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("cannot snapshot %s to %s: the snapshot needs a name", src, dst)
	}
	if len(name) > 255 {
		return fmt.Errorf("cannot snapshot %s to %s: the name is %d bytes long, btrfs allows 255", src, dst, len(name))
	}
	dirResolved, err := resolve(dir)
	if err != nil {
		return fmt.Errorf("cannot snapshot %s into %s: %w", src, dir, err)
	}
	if fi, err := os.Stat(dirResolved); err != nil || !fi.IsDir() {
		return fmt.Errorf("cannot snapshot %s into %s: the snapshot directory is not a directory", src, dir)
	}
	if _, err := os.Lstat(filepath.Join(dirResolved, name)); err == nil {
		return fmt.Errorf("cannot snapshot %s to %s: %s already exists", src, dst, dstAbs)
	} else if !os.IsNotExist(err) {
		return fmt.Errorf("cannot snapshot %s to %s: %w", src, dst, err)
	}
	if err := sameFilesystem(source, dirResolved); err != nil {
		return fmt.Errorf("cannot snapshot %s into %s: %w", src, dir, err)
	}
	if err := cbtrfs.SubvolSnapshot(filepath.Join(dirResolved, name), source, readOnly); err != nil {
		return fmt.Errorf("cannot snapshot %s to %s: %w", src, dst, explainErrno(err))
	}
	return nil
}

// sameFilesystem checks, before any ioctl, that the snapshot directory is on
// the btrfs filesystem of the subvolume (the kernel would say only EXDEV).
func sameFilesystem(subvolume, dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return err
	}
	srcFSID, err := fsidOf(subvolume)
	if err != nil {
		return err
	}
	entry, mountErr := mountOf(dir)
	where := func(kind string) string {
		if mountErr != nil {
			return kind
		}
		return fmt.Sprintf("%s at %s", kind, entry.Mountpoint)
	}
	const tail = "snapshots must be on the same btrfs filesystem as the subvolume"
	if uint32(st.Type) != superMagic {
		kind := fmt.Sprintf("magic %#x", st.Type)
		if mountErr == nil {
			kind = entry.FSType
		}
		return fmt.Errorf("the snapshot directory is on a different filesystem (%s), %s", where(kind), tail)
	}
	dirFSID, err := fsidOf(dir)
	if err != nil {
		return err
	}
	if dirFSID != srcFSID {
		return fmt.Errorf("the snapshot directory is on a different filesystem (%s, the subvolume is on btrfs %s), %s", where("btrfs "+dirFSID), srcFSID, tail)
	}
	return nil
}

// explainErrno adds what an errno from a subvolume ioctl usually means here.
func explainErrno(err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w (subvolume operations need root)", err)
	case errors.Is(err, unix.EXDEV):
		return fmt.Errorf("%w (source and destination are on different filesystems)", err)
	case errors.Is(err, unix.EROFS):
		return fmt.Errorf("%w (the directory is on a read-only subvolume or mount)", err)
	case errors.Is(err, unix.ENOSPC):
		return fmt.Errorf("%w (the filesystem is full)", err)
	}
	return err
}

// SetReadOnly sets or clears the read-only flag of the subvolume at path.
func SetReadOnly(path string, readOnly bool) error {
	resolved, err := requireSubvolume(path)
	if err != nil {
		return fmt.Errorf("cannot set read-only=%t on %s: %w", readOnly, path, err)
	}
	fd, err := openDir(resolved)
	if err != nil {
		return fmt.Errorf("cannot set read-only=%t on %s: %w", readOnly, path, err)
	}
	defer unix.Close(fd)
	flags, err := getFlags(fd)
	if err != nil {
		return fmt.Errorf("cannot set read-only=%t on %s: %w", readOnly, path, err)
	}
	want := flags &^ subvolReadOnly
	if readOnly {
		want |= subvolReadOnly
	}
	if want == flags {
		return nil
	}
	if err := setFlags(fd, want); err != nil {
		return fmt.Errorf("cannot set read-only=%t on %s: %w", readOnly, path, explainErrno(err))
	}
	return nil
}

// Delete deletes the subvault snapshot at path, read-only or not. It refuses,
// touching nothing, a path whose base name is not a subvault snapshot name
// (ParseName) or that is not a subvolume, and a snapshot that holds nested
// subvolumes (those are not subvault's).
func Delete(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("cannot delete %s: %w", path, err)
	}
	dir, name := filepath.Split(abs)
	if _, err := ParseName(name); err != nil {
		return fmt.Errorf("refusing to delete %s: its name is not a subvault snapshot name, so subvault did not make it", abs)
	}
	dirfd, err := openDir(filepath.Clean(dir))
	if err != nil {
		return fmt.Errorf("cannot delete %s: %w", abs, err)
	}
	defer unix.Close(dirfd)
	return deleteSnapshot(dirfd, abs, name)
}

// deleteSnapshot is Delete of the entry name of dirfd (abs, for messages).
// It checks and destroys through the same directory descriptor, so that a
// rename of a parent between the two cannot redirect the delete.
func deleteSnapshot(dirfd int, abs, name string) error {
	if _, err := ParseName(name); err != nil {
		return fmt.Errorf("refusing to delete %s: its name is not a subvault snapshot name, so subvault did not make it", abs)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("cannot delete %s: it does not exist", abs)
		}
		return fmt.Errorf("cannot delete %s: %w", abs, err)
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(dirfd, &fs); err != nil {
		return fmt.Errorf("cannot delete %s: %w", abs, err)
	}
	if uint32(fs.Type) != superMagic || !isSubvolumeRoot(&st) {
		return fmt.Errorf("refusing to delete %s: it is not a btrfs subvolume, so subvault did not make it", abs)
	}
	if err := snapDestroy(dirfd, name); err != nil {
		if errors.Is(err, unix.ENOTEMPTY) {
			return fmt.Errorf("cannot delete %s: it holds nested subvolumes, which subvault did not make; delete them first", abs)
		}
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("cannot delete %s: %w (it is mounted somewhere, or is the default subvolume)", abs, err)
		}
		return fmt.Errorf("cannot delete %s: BTRFS_IOC_SNAP_DESTROY: %w", abs, explainErrno(err))
	}
	return nil
}

// ListSnapshots returns the subvault snapshots in dir: the entries whose names
// parse (ParseName) and that are subvolumes, with Path set, sorted by time,
// then job id. Other entries are ignored. A missing dir gives an empty list.
// It costs one readdir and one fstatat per candidate entry.
func ListSnapshots(dir string) ([]Snapshot, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("cannot list snapshots in %s: %w", dir, err)
	}
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close() //nolint:errcheck // read-only directory
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return nil, fmt.Errorf("cannot list snapshots in %s: %w", dir, err)
	}
	if uint32(fs.Type) != superMagic {
		if resolved, err := resolve(dir); err == nil {
			if err := requireBtrfs(resolved); err != nil {
				return nil, fmt.Errorf("cannot list snapshots in %s: %w", dir, err)
			}
		}
		return nil, fmt.Errorf("cannot list snapshots in %s: it is not on btrfs", dir)
	}
	return ListSnapshotsAt(f)
}

package btrfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// What a rollback needs beyond snapshots: the subvolumes nested in one,
// an atomic swap, a move, where a subvolume is mounted, a snapshot next to a
// mounted subvolume (outside every mount), and the default subvolume.

const (
	iocDefaultSubvol    = 0x40089413 // _IOW(0x94, 19, __u64)
	iocSnapCreateV2     = 0x50009417 // _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)
	iocGetSubvolRootref = 0xd000943d // _IOWR(0x94, 61, struct btrfs_ioctl_get_subvol_rootref_args)
	iocInoLookupUser    = 0xd000943e // _IOWR(0x94, 62, struct btrfs_ioctl_ino_lookup_user_args)

	// TopLevelID is the id of the filesystem's top-level subvolume
	// (BTRFS_FS_TREE_OBJECTID), the one every other hangs below.
	TopLevelID = 5
)

type volArgsV2 struct {
	FD      int64
	TransID uint64
	Flags   uint64
	Unused  [4]uint64
	Name    [4040]byte // BTRFS_SUBVOL_NAME_MAX + 1
}

type rootref struct{ TreeID, DirID uint64 }

type getSubvolRootrefArgs struct {
	MinTreeID uint64
	Rootref   [255]rootref
	NumItems  uint8
	_         [7]uint8
}

type inoLookupUserArgs struct {
	DirID  uint64
	TreeID uint64
	Name   [256]byte  // BTRFS_VOL_NAME_MAX + 1
	Path   [3824]byte // BTRFS_INO_LOOKUP_USER_PATH_MAX
}

var (
	_ [4096 - unsafe.Sizeof(volArgsV2{})]byte
	_ [unsafe.Sizeof(volArgsV2{}) - 4096]byte
	_ [4096 - unsafe.Sizeof(getSubvolRootrefArgs{})]byte
	_ [unsafe.Sizeof(getSubvolRootrefArgs{}) - 4096]byte
	_ [4096 - unsafe.Sizeof(inoLookupUserArgs{})]byte
	_ [unsafe.Sizeof(inoLookupUserArgs{}) - 4096]byte
)

// Nested is a subvolume directly inside another one.
type Nested struct {
	// Rel is its path from the outer subvolume's root, e.g.
	// ".subvault-snapshots/subvault@home@20260101T030000Z@7@home".
	Rel string
	// ID is its subvolume id.
	ID uint64
}

// NestedSubvolumes returns the subvolumes directly inside the subvolume at
// path (those nested deeper move with them), sorted by Rel. It uses
// BTRFS_IOC_GET_SUBVOL_ROOTREF and BTRFS_IOC_INO_LOOKUP_USER (Linux ≥ 4.18).
func NestedSubvolumes(path string) ([]Nested, error) {
	resolved, err := requireSubvolume(path)
	if err != nil {
		return nil, fmt.Errorf("cannot list the subvolumes in %s: %w", path, err)
	}
	fd, err := openDir(resolved)
	if err != nil {
		return nil, fmt.Errorf("cannot list the subvolumes in %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close() //nolint:errcheck // a directory
	return NestedSubvolumesAt(f)
}

// NestedSubvolumesAt is NestedSubvolumes of the open subvolume f.
func NestedSubvolumesAt(f *os.File) ([]Nested, error) {
	fd, path := int(f.Fd()), f.Name()
	var refs []rootref
	args := &getSubvolRootrefArgs{}
	for {
		err := ioctlPtr(fd, iocGetSubvolRootref, unsafe.Pointer(args))
		if err != nil && !errors.Is(err, unix.EOVERFLOW) {
			return nil, fmt.Errorf("cannot list the subvolumes in %s: BTRFS_IOC_GET_SUBVOL_ROOTREF: %w", path, err)
		}
		refs = append(refs, args.Rootref[:args.NumItems]...)
		if err == nil || args.NumItems == 0 {
			break
		}
		// EOVERFLOW: the kernel set MinTreeID past the last one it gave.
		args.NumItems = 0
	}
	var out []Nested
	for _, r := range refs {
		look := &inoLookupUserArgs{DirID: r.DirID, TreeID: r.TreeID}
		if err := ioctlPtr(fd, iocInoLookupUser, unsafe.Pointer(look)); err != nil {
			return nil, fmt.Errorf("cannot find the path of subvolume %d in %s: BTRFS_IOC_INO_LOOKUP_USER: %w", r.TreeID, path, err)
		}
		dir := cString(look.Path[:]) // "a/b/" or ""
		out = append(out, Nested{Rel: dir + cString(look.Name[:]), ID: r.TreeID})
	}
	slices.SortFunc(out, func(a, b Nested) int { return strings.Compare(a.Rel, b.Rel) })
	return out, nil
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// Exchange swaps the subvolumes at a and b atomically (renameat2 with
// RENAME_EXCHANGE): at every instant each path holds one of the two. Both
// must be subvolumes on the same filesystem.
func Exchange(a, b string) error {
	for _, p := range []string{a, b} {
		if _, err := requireSubvolume(p); err != nil {
			return fmt.Errorf("cannot swap %s and %s: %w", a, b, err)
		}
	}
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
		return fmt.Errorf("cannot swap %s and %s: renameat2 RENAME_EXCHANGE: %w", a, b, explainErrno(err))
	}
	return nil
}

// ExchangeAt is Exchange of the subvolumes a in the open directory dirA and
// b in dirB, looked up once, through the descriptors, without following a
// link.
func ExchangeAt(dirA *os.File, a string, dirB *os.File, b string) error {
	pa, pb := filepath.Join(dirA.Name(), a), filepath.Join(dirB.Name(), b)
	for _, e := range []struct {
		dir  *os.File
		name string
	}{{dirA, a}, {dirB, b}} {
		var st unix.Stat_t
		if err := unix.Fstatat(int(e.dir.Fd()), e.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("cannot swap %s and %s: %w", pa, pb, err)
		}
		if !isSubvolumeRoot(&st) {
			return fmt.Errorf("cannot swap %s and %s: %s is not a subvolume", pa, pb, filepath.Join(e.dir.Name(), e.name))
		}
	}
	if err := unix.Renameat2(int(dirA.Fd()), a, int(dirB.Fd()), b, unix.RENAME_EXCHANGE); err != nil {
		return fmt.Errorf("cannot swap %s and %s: renameat2 RENAME_EXCHANGE: %w", pa, pb, explainErrno(err))
	}
	return nil
}

// MoveSubvolume renames the subvolume at src to dst, on the same
// filesystem. dst must not exist, or be an empty directory that is not a
// subvolume (the placeholder a snapshot shows where a nested subvolume
// was), which it replaces; its directory must exist. Nothing is ever
// overwritten: the rename itself is RENAME_NOREPLACE.
//
// A read-only subvolume cannot change directories (the kernel must write
// its ".."): its read-only flag is cleared for the rename and set again
// right after, on either path. The directory of dst keeps its times.
func MoveSubvolume(src, dst string) error {
	if _, err := Info(src); err != nil {
		return fmt.Errorf("cannot move %s to %s: %w", src, dst, err)
	}
	if err := checkSlot(dst); err != nil {
		return fmt.Errorf("cannot move %s to %s: %w", src, dst, err)
	}
	srcDir, err := openDir(filepath.Dir(filepath.Clean(src)))
	if err != nil {
		return fmt.Errorf("cannot move %s to %s: %w", src, dst, err)
	}
	sd := os.NewFile(uintptr(srcDir), filepath.Dir(filepath.Clean(src)))
	defer sd.Close() //nolint:errcheck // a directory
	dstDir, err := openDir(filepath.Dir(filepath.Clean(dst)))
	if err != nil {
		return fmt.Errorf("cannot move %s to %s: %w", src, dst, err)
	}
	dd := os.NewFile(uintptr(dstDir), filepath.Dir(filepath.Clean(dst)))
	defer dd.Close() //nolint:errcheck // a directory
	return MoveSubvolumeAt(sd, filepath.Base(src), dd, filepath.Base(dst))
}

// MoveSubvolumeAt is MoveSubvolume of the subvolume src in the open
// directory srcDir to dst in the open directory dstDir, each name looked up
// once through its descriptor without following a link.
func MoveSubvolumeAt(srcDir *os.File, src string, dstDir *os.File, dst string) error {
	srcPath, dstPath := filepath.Join(srcDir.Name(), src), filepath.Join(dstDir.Name(), dst)
	fail := func(err error) error { return fmt.Errorf("cannot move %s to %s: %w", srcPath, dstPath, err) }
	sub, err := OpenAt(srcDir, src)
	if err != nil {
		return fail(err)
	}
	defer sub.Close() //nolint:errcheck // a directory
	sv, err := InfoOf(sub)
	if err != nil {
		return fail(err)
	}
	placeholder, err := checkSlotAt(dstDir, dst)
	if err != nil {
		return fail(err)
	}
	// The directory that takes it keeps its times: a rolled-back tree is the
	// snapshot's, to the nanosecond.
	var parent unix.Stat_t
	if err := unix.Fstat(int(dstDir.Fd()), &parent); err != nil {
		return fail(err)
	}
	defer unix.UtimesNanoAt(int(dstDir.Fd()), ".", []unix.Timespec{parent.Atim, parent.Mtim}, 0) //nolint:errcheck // times only
	if placeholder {
		if err := unix.Unlinkat(int(dstDir.Fd()), dst, unix.AT_REMOVEDIR); err != nil {
			return fail(fmt.Errorf("cannot remove the empty directory there: %w", err))
		}
	}
	var srcSt unix.Stat_t
	if err := unix.Fstat(int(srcDir.Fd()), &srcSt); err != nil {
		return fail(err)
	}
	flip := sv.ReadOnly && (srcSt.Dev != parent.Dev || srcSt.Ino != parent.Ino)
	if flip {
		if err := setReadOnlyFd(int(sub.Fd()), false); err != nil {
			return fmt.Errorf("cannot move the read-only %s to %s: %w", srcPath, dstPath, err)
		}
	}
	renameErr := unix.Renameat2(int(srcDir.Fd()), src, int(dstDir.Fd()), dst, unix.RENAME_NOREPLACE)
	if flip {
		// sub is the subvolume wherever the rename left it.
		if err := setReadOnlyFd(int(sub.Fd()), true); err != nil {
			at := dstPath
			if renameErr != nil {
				at = srcPath
			}
			return fmt.Errorf("%s stays writable after moving it to %s: %w", at, dstPath, errors.Join(renameErr, err))
		}
	}
	if renameErr != nil {
		return fail(explainErrno(renameErr))
	}
	return nil
}

func setReadOnlyFd(fd int, readOnly bool) error {
	flags, err := getFlags(fd)
	if err != nil {
		return err
	}
	want := flags &^ subvolReadOnly
	if readOnly {
		want |= subvolReadOnly
	}
	if want == flags {
		return nil
	}
	return explainErrno(setFlags(fd, want))
}

// checkSlotAt is checkSlot of name in the open directory dir; placeholder
// says an empty directory is there (which a move replaces).
func checkSlotAt(dir *os.File, name string) (placeholder bool, err error) {
	var st unix.Stat_t
	err = unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	p := filepath.Join(dir.Name(), name)
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || isSubvolumeRoot(&st) {
		return false, fmt.Errorf("%s exists", p)
	}
	f, err := OpenAt(dir, name)
	if err != nil {
		return false, err
	}
	names, err := readNames(f)
	f.Close() //nolint:errcheck,gosec // read-only
	if err != nil {
		return false, err
	}
	if len(names) > 0 {
		return false, fmt.Errorf("%s exists and is not empty", p)
	}
	return true, nil
}

// CheckSlot says whether MoveSubvolume could put a subvolume at dst: its
// directory exists, and dst does not or is an empty directory that is not
// a subvolume.
func CheckSlot(dst string) error { return checkSlot(dst) }

func checkSlot(dst string) error {
	fi, err := os.Stat(filepath.Dir(dst))
	if err != nil || !fi.IsDir() {
		return fmt.Errorf("its directory %s does not exist", filepath.Dir(dst))
	}
	var st unix.Stat_t
	err = unix.Lstat(dst, &st)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || isSubvolumeRoot(&st) {
		return fmt.Errorf("%s exists", dst)
	}
	f, err := os.Open(dst)
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(1)
	f.Close() //nolint:errcheck,gosec // read-only
	if len(names) > 0 {
		return fmt.Errorf("%s exists and is not empty", dst)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// SetDefault makes the subvolume with id the default subvolume of the
// filesystem that holds path: the one a mount without subvol= or subvolid=
// mounts, so the one the machine boots when its root is mounted that way
// (BTRFS_IOC_DEFAULT_SUBVOL, what `btrfs subvolume set-default` does).
func SetDefault(path string, id uint64) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cannot set the default subvolume of %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := requireBtrfs(path); err != nil {
		return fmt.Errorf("cannot set the default subvolume of %s: %w", path, err)
	}
	v := id
	if err := ioctlPtr(fd, iocDefaultSubvol, unsafe.Pointer(&v)); err != nil {
		return fmt.Errorf("cannot set the default subvolume of %s to %d: BTRFS_IOC_DEFAULT_SUBVOL: %w", path, id, explainErrno(err))
	}
	return nil
}

// MountedAt returns the mount points that show the subvolume at path (or a
// directory in it) as their root, from this thread's mountinfo: where it is
// mounted with subvol= or subvolid=, path itself when it is such a mount
// point, and bind mounts of it. A subvolume reached only through the mount
// of a subvolume above it gives none.
func MountedAt(path string) ([]string, error) {
	sv, err := Info(path)
	if err != nil {
		return nil, err
	}
	fsid, err := fsidOf(sv.Path)
	if err != nil {
		return nil, fmt.Errorf("cannot tell where %s is mounted: %w", path, err)
	}
	entries, err := mounts()
	if err != nil {
		return nil, fmt.Errorf("cannot tell where %s is mounted: %w", path, err)
	}
	var out []string
	for _, e := range entries {
		if e.FSType != "btrfs" || optionValue(e.VFSOptions, "subvolid") != strconv.FormatUint(sv.ID, 10) {
			continue
		}
		if id, err := fsidOf(e.Mountpoint); err != nil || id != fsid {
			continue
		}
		out = append(out, e.Mountpoint)
	}
	return out, nil
}

// MountPointsUnder returns the mount points strictly below the directory
// dir (any filesystem), from this thread's mountinfo.
func MountPointsUnder(dir string) ([]string, error) {
	resolved, err := resolve(dir)
	if err != nil {
		return nil, err
	}
	entries, err := mounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.Mountpoint != resolved && underMountPoint(e.Mountpoint, resolved) {
			out = append(out, e.Mountpoint)
		}
	}
	return out, nil
}

func optionValue(options, key string) string {
	for _, opt := range strings.Split(options, ",") {
		if v, ok := strings.CutPrefix(opt, key+"="); ok {
			return v
		}
	}
	return ""
}

// FSPath returns the path of the directory or subvolume at path from the
// top level of its btrfs filesystem, as subvol= names it ("/@home"), and
// the mount that holds it.
func FSPath(path string) (string, Mount, error) {
	resolved, err := resolve(path)
	if err != nil {
		return "", Mount{}, err
	}
	m, err := FindMount(resolved)
	if err != nil {
		return "", Mount{}, err
	}
	if m.Subvol == "" {
		return "", Mount{}, fmt.Errorf("cannot tell which subvolume is mounted at %s: no subvol= option in its mountinfo", m.MountPoint)
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(resolved, m.MountPoint), "/")
	return filepath.Join(m.Subvol, rel), m, nil
}

// Sibling is a subvolume made next to another one from the filesystem's
// top level, outside every mount.
type Sibling struct {
	// FSPath is its path from the top level, as subvol= names it.
	FSPath string
	// ID is its subvolume id, as subvolid= and set-default name it.
	ID uint64
}

// SnapshotBeside makes a writable snapshot of the subvolume src next to
// the subvolume at beside, called name, in the directory that holds beside
// in the filesystem, whether or not that directory is mounted anywhere
// (the top level of a root mounted with subvol=/@ usually is not). It
// reaches that directory through a detached mount of the top level
// (fsopen, fsmount: Linux ≥ 5.2, root), which is in no mount table and
// goes when it is closed. Nothing under any mount changes but the new
// entry in beside's directory, when that directory is visible somewhere.
func SnapshotBeside(src, beside, name string) (Sibling, error) {
	fail := func(err error) (Sibling, error) {
		return Sibling{}, fmt.Errorf("cannot snapshot %s next to %s: %w", src, beside, err)
	}
	if name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." || len(name) > 255 {
		return fail(fmt.Errorf("bad name %q", name))
	}
	source, err := requireSubvolume(src)
	if err != nil {
		return fail(err)
	}
	if _, err := requireSubvolume(beside); err != nil {
		return fail(err)
	}
	fsPath, m, err := FSPath(beside)
	if err != nil {
		return fail(err)
	}
	if fsPath == "/" {
		return fail(errors.New("it is the top level of its filesystem, which has nothing next to it"))
	}
	srcFSID, err := fsidOf(source)
	if err != nil {
		return fail(err)
	}
	if srcFSID != m.FSID {
		return fail(errors.New("they are on different filesystems"))
	}
	top, err := mountTopLevel(m.Device)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(top)
	if info, err := fsInfo(top); err != nil {
		return fail(err)
	} else if formatUUID(info.FSID) != m.FSID {
		return fail(fmt.Errorf("the top level mounted from %s is not the filesystem of %s", m.Device, beside))
	}
	parent := filepath.Dir(fsPath)
	dirfd := top
	if parent != "/" {
		dirfd, err = unix.Openat2(top, strings.TrimPrefix(parent, "/"), &unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV,
		})
		if err != nil {
			return fail(fmt.Errorf("cannot open %s from the top level: %w", parent, err))
		}
		defer unix.Close(dirfd)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		return fail(fmt.Errorf("%s already exists", filepath.Join(parent, name)))
	}
	srcfd, err := openDir(source)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(srcfd)
	args := &volArgsV2{FD: int64(srcfd)}
	copy(args.Name[:], name)
	if err := ioctlPtr(dirfd, iocSnapCreateV2, unsafe.Pointer(args)); err != nil {
		return fail(fmt.Errorf("BTRFS_IOC_SNAP_CREATE_V2: %w", explainErrno(err)))
	}
	newfd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(newfd)
	info, err := getSubvolInfo(newfd)
	if err != nil {
		return fail(fmt.Errorf("BTRFS_IOC_GET_SUBVOL_INFO: %w", err))
	}
	return Sibling{FSPath: filepath.Join(parent, name), ID: info.TreeID}, nil
}

// MountTopLevel returns a detached mount of the top level (subvolid 5) of
// the btrfs filesystem on device, opened: it is in no mount table, no path
// reaches it, and it goes when the file is closed (fsopen, fsmount: Linux
// ≥ 5.2, root). Its name is "DEVICE:", so paths below it read "/dev/vda2:/@home".
func MountTopLevel(device string) (*os.File, error) {
	fd, err := mountTopLevel(device)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), device+":"), nil
}

// mountTopLevel returns a detached mount of the top level of the btrfs
// filesystem on device.
func mountTopLevel(device string) (int, error) {
	fsfd, err := unix.Fsopen("btrfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen btrfs: %w", explainErrno(err))
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigSetString(fsfd, "source", device); err != nil {
		return -1, fmt.Errorf("fsconfig source=%s: %w", device, err)
	}
	if err := unix.FsconfigSetString(fsfd, "subvolid", strconv.Itoa(TopLevelID)); err != nil {
		return -1, fmt.Errorf("fsconfig subvolid=%d: %w", TopLevelID, err)
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("cannot mount the top level of %s: %w", device, err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("cannot mount the top level of %s: fsmount: %w", device, err)
	}
	defer unix.Close(mfd)
	// fsmount gives an O_PATH descriptor, on which ioctls fail; an open
	// directory keeps the detached mount alive by itself.
	fd, err := unix.Openat(mfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("cannot open the top level of %s: %w", device, err)
	}
	return fd, nil
}

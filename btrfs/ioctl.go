package btrfs

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The ioctls containerd/btrfs/v2 does not wrap, with the numbers and layouts
// of <linux/btrfs.h> (checked against the header with gcc on amd64; the
// sizes are asserted below).
const (
	iocSubvolGetFlags = 0x80089419 // _IOR(0x94, 25, __u64)
	iocSubvolSetFlags = 0x4008941a // _IOW(0x94, 26, __u64)
	iocFSInfo         = 0x8400941f // _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args)
	iocGetSubvolInfo  = 0x81f8943c // _IOR(0x94, 60, struct btrfs_ioctl_get_subvol_info_args)
	iocSnapDestroy    = 0x5000940f // _IOW(0x94, 15, struct btrfs_ioctl_vol_args)

	subvolReadOnly = 1 << 1 // BTRFS_SUBVOL_RDONLY

	superMagic      = 0x9123683e // BTRFS_SUPER_MAGIC
	firstFreeObject = 256        // BTRFS_FIRST_FREE_OBJECTID: the inode of a subvolume's root
	pathNameMax     = 4087       // BTRFS_PATH_NAME_MAX
)

type fsInfoArgs struct {
	MaxID      uint64
	NumDevices uint64
	FSID       [16]byte
	_          [1024 - 32]byte
}

type ioctlTimespec struct {
	Sec  uint64
	Nsec uint32
	_    uint32
}

type getSubvolInfoArgs struct {
	TreeID       uint64
	Name         [256]byte
	ParentID     uint64
	DirID        uint64
	Generation   uint64
	Flags        uint64
	UUID         [16]byte
	ParentUUID   [16]byte
	ReceivedUUID [16]byte
	CTransID     uint64
	OTransID     uint64
	STransID     uint64
	RTransID     uint64
	CTime        ioctlTimespec
	OTime        ioctlTimespec
	STime        ioctlTimespec
	RTime        ioctlTimespec
	Reserved     [8]uint64
}

type volArgs struct {
	FD   int64
	Name [pathNameMax + 1]byte
}

// Compile-time checks that the Go layouts match the kernel's sizes.
var (
	_ [1024 - unsafe.Sizeof(fsInfoArgs{})]byte
	_ [unsafe.Sizeof(fsInfoArgs{}) - 1024]byte
	_ [504 - unsafe.Sizeof(getSubvolInfoArgs{})]byte
	_ [unsafe.Sizeof(getSubvolInfoArgs{}) - 504]byte
	_ [4096 - unsafe.Sizeof(volArgs{})]byte
	_ [unsafe.Sizeof(volArgs{}) - 4096]byte
)

func ioctlPtr(fd int, req uint, arg unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}

func getFlags(fd int) (uint64, error) {
	var flags uint64
	if err := ioctlPtr(fd, iocSubvolGetFlags, unsafe.Pointer(&flags)); err != nil {
		return 0, fmt.Errorf("BTRFS_IOC_SUBVOL_GETFLAGS: %w", err)
	}
	return flags, nil
}

func setFlags(fd int, flags uint64) error {
	if err := ioctlPtr(fd, iocSubvolSetFlags, unsafe.Pointer(&flags)); err != nil {
		return fmt.Errorf("BTRFS_IOC_SUBVOL_SETFLAGS: %w", err)
	}
	return nil
}

func fsInfo(fd int) (fsInfoArgs, error) {
	var args fsInfoArgs
	if err := ioctlPtr(fd, iocFSInfo, unsafe.Pointer(&args)); err != nil {
		return args, fmt.Errorf("BTRFS_IOC_FS_INFO: %w", err)
	}
	return args, nil
}

func getSubvolInfo(fd int) (getSubvolInfoArgs, error) {
	var args getSubvolInfoArgs
	if err := ioctlPtr(fd, iocGetSubvolInfo, unsafe.Pointer(&args)); err != nil {
		return args, err
	}
	return args, nil
}

// snapDestroy deletes the subvolume named name in the directory dirfd, and
// only that one: unlike containerd's SubvolDelete it does not walk the tree
// and delete nested subvolumes (the kernel refuses with ENOTEMPTY).
func snapDestroy(dirfd int, name string) error {
	var args volArgs
	if len(name) > pathNameMax {
		return unix.ENAMETOOLONG
	}
	copy(args.Name[:], name)
	return ioctlPtr(dirfd, iocSnapDestroy, unsafe.Pointer(&args))
}

func formatUUID(b [16]byte) string {
	if b == [16]byte{} {
		return ""
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

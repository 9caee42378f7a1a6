package btrfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BTRFS_IOC_SEND, with the layout of struct btrfs_ioctl_send_args in
// <linux/btrfs.h> (72 bytes: reserved was 32 bytes before the version
// field took 4 of them).
const iocSend = 0x40489426 // _IOW(0x94, 38, struct btrfs_ioctl_send_args)

type sendArgs struct {
	SendFD            int64
	CloneSourcesCount uint64
	CloneSources      uintptr // __u64 __user *
	ParentRoot        uint64
	Flags             uint64
	Version           uint32
	_                 [28]byte
}

var (
	_ [72 - unsafe.Sizeof(sendArgs{})]byte
	_ [unsafe.Sizeof(sendArgs{}) - 72]byte
)

// Send writes the send stream of the read-only snapshot snap to out (a
// pipe or a file opened for writing), with BTRFS_IOC_SEND: a full stream
// when parent is nil, else the changes from parent, a read-only snapshot
// of the same filesystem that the receiving side has. clones are more
// read-only snapshots whose extents the stream may refer to instead of
// carrying their data (btrfs send -c); parent is one of them as
// btrfs-progs makes it, whether or not the caller lists it.
//
// The ioctl blocks this goroutine's thread until the whole stream is
// written: the kernel writes into out itself. out must be a blocking file
// (a pipe made with os.Pipe is non-blocking for Go's poller: use
// unix.Pipe2 and os.NewFile); to stop a send, close the read end of the
// pipe: the kernel's next write fails and Send returns an error wrapping
// EPIPE. Needs root (CAP_SYS_ADMIN).
func Send(snap, parent *os.File, clones []*os.File, out *os.File) error {
	src, err := InfoOf(snap)
	if err != nil {
		return fmt.Errorf("cannot send %s: %w", snap.Name(), err)
	}
	if !src.ReadOnly {
		return fmt.Errorf("cannot send %s: it is not read-only (only a read-only snapshot can be sent)", snap.Name())
	}
	args := sendArgs{SendFD: int64(out.Fd())}
	var roots []uint64
	addRoot := func(f *os.File, what string) (uint64, error) {
		sv, err := InfoOf(f)
		if err != nil {
			return 0, fmt.Errorf("cannot send %s with %s %s: %w", snap.Name(), what, f.Name(), err)
		}
		if !sv.ReadOnly {
			return 0, fmt.Errorf("cannot send %s with %s %s: it is not read-only", snap.Name(), what, f.Name())
		}
		for _, r := range roots {
			if r == sv.ID {
				return sv.ID, nil
			}
		}
		roots = append(roots, sv.ID)
		return sv.ID, nil
	}
	if parent != nil {
		id, err := addRoot(parent, "parent")
		if err != nil {
			return err
		}
		args.ParentRoot = id
	}
	for _, c := range clones {
		if _, err := addRoot(c, "clone source"); err != nil {
			return err
		}
	}
	if len(roots) > 0 {
		args.CloneSourcesCount = uint64(len(roots))
		args.CloneSources = uintptr(unsafe.Pointer(&roots[0]))
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, snap.Fd(), iocSend, uintptr(unsafe.Pointer(&args)))
	runtime.KeepAlive(roots)
	runtime.KeepAlive(out)
	if errno != 0 {
		var err error
		switch {
		case errors.Is(errno, unix.EPIPE):
			err = fmt.Errorf("%w (the receiving end was closed)", errno)
		case errors.Is(errno, unix.EAGAIN):
			err = fmt.Errorf("%w (the stream's file is non-blocking)", errno)
		default:
			err = explainErrno(errno)
		}
		return fmt.Errorf("cannot send %s: BTRFS_IOC_SEND: %w", snap.Name(), err)
	}
	return nil
}

// RenameNoReplace renames the entry oldName of the open directory oldDir
// to newName in the open directory newDir (same filesystem), failing with
// an error wrapping EEXIST, and changing nothing, when newName exists
// (renameat2 with RENAME_NOREPLACE): nothing already there is ever
// replaced.
func RenameNoReplace(oldDir *os.File, oldName string, newDir *os.File, newName string) error {
	for _, n := range []string{oldName, newName} {
		if n == "" || n == "." || n == ".." || filepath.Base(n) != n {
			return fmt.Errorf("cannot rename %s to %s: %q is not a name in a directory", filepath.Join(oldDir.Name(), oldName), filepath.Join(newDir.Name(), newName), n)
		}
	}
	if err := unix.Renameat2(int(oldDir.Fd()), oldName, int(newDir.Fd()), newName, unix.RENAME_NOREPLACE); err != nil {
		return fmt.Errorf("cannot rename %s to %s: %w", filepath.Join(oldDir.Name(), oldName), filepath.Join(newDir.Name(), newName), err)
	}
	return nil
}

// FilesystemUUIDOf returns the UUID of the btrfs filesystem that holds the
// open file f (BTRFS_IOC_FS_INFO), as FilesystemUUID reads it from a
// device.
func FilesystemUUIDOf(f *os.File) (string, error) {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil {
		return "", fmt.Errorf("%s: %w", f.Name(), err)
	}
	if uint32(fs.Type) != superMagic {
		return "", fmt.Errorf("%s is not on btrfs: %w", f.Name(), ErrNotBtrfs)
	}
	info, err := fsInfo(int(f.Fd()))
	if err != nil {
		return "", fmt.Errorf("%s: %w", f.Name(), err)
	}
	return formatUUID(info.FSID), nil
}

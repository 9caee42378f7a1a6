package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon"
)

// callerWriteIdle is how long DiffTo waits for a caller to take more of
// what it writes: one that stops reading fails the call then, rather than
// hold a goroutine, the comparison's memory and its descriptor. (A
// variable for the tests.)
var callerWriteIdle = 30 * time.Second

// DiffTo is Diff for results of any size: it writes the changes to fd, a
// descriptor the caller passes (the write end of a pipe, a stream socket
// or a regular file, as systemd's Dump methods take one), one record each
// (contract.ReadDiffRecords reads them), and answers how many. options is for
// later; today every key is refused.
func (m manager) DiffTo(msg dbus.Message, sender dbus.Sender, plan, a, b string, fd dbus.UnixFD, options map[string]dbus.Variant) (uint64, *dbus.Error) {
	// The descriptor is the daemon's own copy, made by the kernel when the
	// message came: closed whatever the answer, or it would stay open.
	defer closeFD(fd)
	if err := checkSignature(msg, "sssha{sv}"); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), diffTimeout)
	defer cancel()
	var out *callerOutput
	changes, derr := m.s.diff(ctx, msg, sender, plan, a, b, func() *dbus.Error {
		if len(options) > 0 {
			keys := slices.Sorted(maps.Keys(options))
			return invalidArgument("DiffTo has no option %s (it takes none yet: pass an empty a{sv})", quoteArg(keys[0]))
		}
		var derr *dbus.Error
		out, derr = openCallerOutput(fd)
		return derr
	})
	if out != nil {
		defer out.Close() //nolint:errcheck // written and flushed already, or failed
	}
	if derr != nil {
		return 0, derr
	}
	n, err := writeDiffRecords(ctx, out, changes)
	if err != nil {
		return 0, newError(contract.ErrorFailed, "cannot write the differences to the file descriptor passed (%d of %d written): %v", n, len(changes), err)
	}
	return uint64(n), nil
}

func writeDiffRecords(ctx context.Context, out *callerOutput, changes []daemon.Change) (int, error) {
	if deadline, ok := ctx.Deadline(); ok {
		out.deadline = deadline
	}
	w := bufio.NewWriterSize(out, 64<<10)
	var rec []byte
	for i, c := range changes {
		if err := ctx.Err(); err != nil {
			return i, err
		}
		rec = contract.AppendDiffRecord(rec[:0], c)
		if _, err := w.Write(rec); err != nil {
			return i, err
		}
	}
	return len(changes), w.Flush()
}

func closeFD(fd dbus.UnixFD) {
	if fd >= 0 {
		_ = unix.Close(int(fd))
	}
}

// callerOutput is a descriptor a caller passed, checked to be one it may
// have the daemon write to, and written so that the daemon never waits on
// it for long: a pipe through a non-blocking open of its own, a socket with
// MSG_DONTWAIT, each with a poll bounded by callerWriteIdle.
type callerOutput struct {
	fd       int
	owned    bool // fd was opened here (the reopened pipe): Close closes it
	socket   bool
	deadline time.Time // the call's
}

// errCallerNotReading is the write that waited callerWriteIdle in vain.
var errCallerNotReading = errors.New("the caller stopped reading (it must read while the call runs)")

// openCallerOutput checks fd: the write end of a pipe (or FIFO), a stream
// socket, or a regular file not on FUSE (whose server, any user, could
// stall a write for ever), open for writing. Anything else (a terminal, a
// device, a directory, a read-only descriptor) is InvalidArgument: the
// daemon writes as root, so it writes only where the caller could.
func openCallerOutput(fd dbus.UnixFD) (*callerOutput, *dbus.Error) {
	if fd < 0 {
		return nil, invalidArgument("no file descriptor came with the call; pass the write end of a pipe")
	}
	n := int(fd)
	var st unix.Stat_t
	if err := unix.Fstat(n, &st); err != nil {
		return nil, invalidArgument("cannot inspect the file descriptor passed: %v", err)
	}
	flags, err := unix.FcntlInt(uintptr(n), unix.F_GETFL, 0)
	if err != nil {
		return nil, invalidArgument("cannot inspect the file descriptor passed: %v", err)
	}
	if mode := flags & unix.O_ACCMODE; mode != unix.O_WRONLY && mode != unix.O_RDWR {
		return nil, invalidArgument("the file descriptor passed is not open for writing; pass the write end of a pipe")
	}
	out := &callerOutput{fd: n}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO:
		// O_NONBLOCK on the descriptor passed would be the caller's too
		// (they share one open file); a new open of the same pipe, through
		// the kernel's link to it (no path is looked up), has flags of its own.
		p, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", n), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, invalidArgument("cannot write to the pipe passed: %v (its read end must stay open while the call runs)", err)
		}
		out.fd, out.owned = p, true
	case unix.S_IFSOCK:
		typ, err := unix.GetsockoptInt(n, unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil || typ != unix.SOCK_STREAM {
			return nil, invalidArgument("the socket passed is not a stream socket; pass the write end of a pipe")
		}
		out.socket = true
	case unix.S_IFREG:
		var fs unix.Statfs_t
		if err := unix.Fstatfs(n, &fs); err != nil {
			return nil, invalidArgument("cannot inspect the file passed: %v", err)
		}
		if fs.Type == unix.FUSE_SUPER_MAGIC {
			return nil, invalidArgument("the file passed is on a FUSE filesystem; pass a pipe, or a file on another filesystem")
		}
	default:
		return nil, invalidArgument("the file descriptor passed is %s; DiffTo writes only to a pipe, a stream socket or a regular file", fileKind(st.Mode))
	}
	return out, nil
}

func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFCHR:
		return "a character device (a terminal?)"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symbolic link"
	}
	return "of an unknown kind"
}

// Write writes all of p, waiting at most callerWriteIdle for the caller to
// make room each time, and never past the call's deadline.
func (o *callerOutput) Write(p []byte) (int, error) {
	done := 0
	idleUntil := time.Now().Add(callerWriteIdle)
	for done < len(p) {
		var n int
		var err error
		if o.socket {
			n, err = unix.SendmsgN(o.fd, p[done:], nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		} else {
			n, err = unix.Write(o.fd, p[done:])
		}
		if n > 0 {
			done += n
			idleUntil = time.Now().Add(callerWriteIdle)
			continue
		}
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			until := idleUntil
			if !o.deadline.IsZero() && o.deadline.Before(until) {
				until = o.deadline
			}
			wait := time.Until(until)
			if wait <= 0 {
				if until.Equal(idleUntil) {
					return done, fmt.Errorf("%w: it took nothing for %s", errCallerNotReading, callerWriteIdle)
				}
				return done, context.DeadlineExceeded
			}
			fds := []unix.PollFd{{Fd: int32(o.fd), Events: unix.POLLOUT}} //nolint:gosec // a descriptor fits in int32
			if _, err := unix.Poll(fds, int(wait.Milliseconds())+1); err != nil && !errors.Is(err, unix.EINTR) {
				return done, err
			}
		case err != nil:
			if errors.Is(err, unix.EPIPE) {
				return done, errors.New("the caller closed its end")
			}
			return done, err
		default:
			return done, io.ErrShortWrite
		}
	}
	return done, nil
}

// Close closes the pipe opened anew; the descriptor passed is the
// handler's to close.
func (o *callerOutput) Close() error {
	if o.owned {
		return unix.Close(o.fd)
	}
	return nil
}

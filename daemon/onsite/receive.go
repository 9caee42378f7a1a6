package onsite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/subvault/subvault/btrfs"
	"golang.org/x/sys/unix"
)

// maxStderr bounds what is kept of btrfs receive's stderr (its last bytes).
const maxStderr = 64 << 10

// bindPlanDir mounts the checked plan subvolume pd over the private path
// recv, in the namespace of the calling thread, and checks that recv shows
// it: btrfs receive gets a path no other user can redirect, and finds the
// parent copies below that mount's root (it looks them up from the mount's
// subvolume, so a bind of a plain directory would not do).
func bindPlanDir(pd *os.File, recv string) error {
	tree, err := unix.OpenTree(int(pd.Fd()), "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return fmt.Errorf("cannot bind %s for btrfs receive: open_tree: %w", pd.Name(), err)
	}
	defer unix.Close(tree) // attached or not, the descriptor goes
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, recv, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("cannot bind %s over %s for btrfs receive: move_mount: %w", pd.Name(), recv, err)
	}
	var want, got unix.Stat_t
	if err := unix.Fstat(int(pd.Fd()), &want); err != nil {
		return err
	}
	if err := unix.Stat(recv, &got); err != nil {
		return fmt.Errorf("cannot check %s: %w", recv, err)
	}
	if want.Dev != got.Dev || want.Ino != got.Ino {
		return fmt.Errorf("%s does not show %s after the bind mount", recv, pd.Name())
	}
	return nil
}

// blockingPipe is a pipe the kernel's send writes and splice reads
// blocking (os.Pipe's are non-blocking, which BTRFS_IOC_SEND would see as
// EAGAIN).
func blockingPipe() (r, w *os.File, err error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, fmt.Errorf("cannot make a pipe: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "send-stream"), os.NewFile(uintptr(fds[1]), "send-stream"), nil
}

// stream is one send piped into one btrfs receive.
type stream struct {
	snap, parent *os.File
	clones       []*os.File
	name, tmp    string // the snapshot's name; the name it is received under
	recv         string // where the plan subvolume is bound
	target       string // the target's name, for messages
	progress     func(n uint64)
}

// run sends and receives, from the calling thread (the namespace's: btrfs
// receive is started from it). The stream goes from the kernel into a
// pipe, from there (its first command renamed, then spliced and counted)
// into btrfs receive's stdin. Whoever stops first ends the others: a
// receive that exits or is killed (ctx) closes the stream's pipe, which
// ends the ioctl with EPIPE.
func (s *stream) run(ctx context.Context) (uint64, error) {
	kr, kw, err := blockingPipe()
	if err != nil {
		return 0, err
	}
	rr, rw, err := blockingPipe()
	if err != nil {
		kr.Close() //nolint:errcheck,gosec // unused
		kw.Close() //nolint:errcheck,gosec // unused
		return 0, err
	}
	cmd := exec.CommandContext(ctx, "btrfs", "receive", s.recv)
	cmd.Stdin = rr
	stderr := &tail{max: maxStderr}
	cmd.Stdout, cmd.Stderr = io.Discard, stderr
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		for _, f := range []*os.File{kr, kw, rr, rw} {
			f.Close() //nolint:errcheck,gosec // unused
		}
		return 0, fmt.Errorf("cannot start btrfs receive (install btrfs-progs): %w", err)
	}
	rr.Close() //nolint:errcheck,gosec // the child has it

	sendErr := make(chan error, 1)
	go func() {
		err := btrfs.Send(s.snap, s.parent, s.clones, kw)
		kw.Close() //nolint:errcheck,gosec // the stream's end
		sendErr <- err
	}()
	var bytes uint64
	copyErr := make(chan error, 1)
	go func() {
		err := s.copy(kr, rw, &bytes)
		kr.Close() //nolint:errcheck,gosec // ends a send still writing (EPIPE)
		rw.Close() //nolint:errcheck,gosec // the receive's end of stream
		copyErr <- err
	}()
	recvErr := cmd.Wait()
	cerr, serr := <-copyErr, <-sendErr
	n := bytes
	switch {
	case ctx.Err() != nil:
		return n, fmt.Errorf("send of %s stopped: %w", s.name, context.Cause(ctx))
	case recvErr != nil:
		return n, receiveError(s.target, recvErr, stderr.String())
	case serr != nil:
		return n, serr
	case cerr != nil:
		return n, cerr
	}
	return n, nil
}

// copy moves the stream from the kernel's pipe to the receive's, the first
// command renamed, counting its bytes.
func (s *stream) copy(from, to *os.File, count *uint64) error {
	head, read, err := btrfs.RenameInStream(from, s.name, s.tmp)
	*count = uint64(read)
	if err != nil {
		return fmt.Errorf("send of %s: %w", s.name, err)
	}
	if _, err := to.Write(head); err != nil {
		return fmt.Errorf("send of %s: cannot write to btrfs receive: %w", s.name, err)
	}
	var last time.Time // the first chunk is told at once, then once a second
	for {
		n, err := unix.Splice(int(from.Fd()), nil, int(to.Fd()), nil, 1<<20, unix.SPLICE_F_MOVE|unix.SPLICE_F_MORE)
		if n > 0 {
			*count += uint64(n)
			if s.progress != nil && time.Since(last) >= time.Second {
				last = time.Now()
				s.progress(*count)
			}
		}
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return fmt.Errorf("send of %s: cannot pass the stream to btrfs receive: %w", s.name, err)
		case n == 0:
			return nil
		}
	}
}

// receiveError turns btrfs receive's failure into one line: its last
// ERROR line, and for a full target what to do.
func receiveError(target string, err error, stderr string) error {
	cause := ""
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "ERROR:") {
			cause = strings.TrimSpace(strings.TrimPrefix(line, "ERROR:"))
		} else if cause == "" && line != "" && !strings.HasPrefix(line, "At ") {
			cause = line
		}
	}
	if cause == "" {
		cause = err.Error()
	}
	if strings.Contains(stderr, "No space left on device") {
		return fmt.Errorf("target %s is full: btrfs receive: %s (free space on it, or lower the plan's target_retention)", target, cause)
	}
	if cause == err.Error() {
		return fmt.Errorf("btrfs receive on target %s failed: %s", target, cause)
	}
	return fmt.Errorf("btrfs receive on target %s failed: %s (%w)", target, cause, err)
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

package testutil

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// PTY is a pseudo-terminal: a command started on it sees a terminal of the
// given size on stdin, stdout and stderr, and everything it writes is
// collected in Output.
type PTY struct {
	Output *SyncBuffer
	master *os.File
	slave  *os.File
	done   chan struct{}
}

// NewPTY opens a pseudo-terminal of cols×rows; it is closed at cleanup.
func NewPTY(t testing.TB, cols, rows uint16) *PTY {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("cannot open a pseudo-terminal: %v", err)
	}
	master := os.NewFile(uintptr(fd), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		_ = master.Close()
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		_ = master.Close()
		t.Fatalf("ptsname: %v", err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		_ = master.Close()
		t.Fatalf("cannot open the pseudo-terminal's slave: %v", err)
	}
	if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: cols, Row: rows}); err != nil {
		t.Fatalf("set the terminal's size: %v", err)
	}
	p := &PTY{Output: &SyncBuffer{}, master: master, slave: slave, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		// Reading ends with EIO once the slave is closed and the
		// command is gone.
		if _, err := io.Copy(p.Output, master); err != nil && !errors.Is(err, syscall.EIO) && !errors.Is(err, os.ErrClosed) {
			fmt.Fprintf(p.Output, "\n[pty read: %v]\n", err)
		}
	}()
	t.Cleanup(func() {
		_ = slave.Close() // Drain may have closed it already
		_ = master.Close()
		<-p.done
	})
	return p
}

// Attach makes cmd run on the terminal, as its controlling terminal in a
// session of its own (so that it gets the terminal's signals).
func (p *PTY) Attach(cmd *exec.Cmd) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = p.slave, p.slave, p.slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
}

// Type writes s to the terminal as if typed.
func (p *PTY) Type(s string) error {
	_, err := p.master.WriteString(s)
	return err
}

// Drain waits until everything the command wrote has been read: call it
// after the command ended. It closes the slave side.
func (p *PTY) Drain() string {
	_ = p.slave.Close() // the read ends when no one holds the slave side
	<-p.done
	return p.Output.String()
}

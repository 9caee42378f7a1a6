package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultSocket is journald's native protocol socket.
const DefaultSocket = "/run/systemd/journal/socket"

// field is one journal field. A name may repeat: journald keeps every value.
type field struct{ name, value string }

// encode writes fields in journald's native protocol: "NAME=value\n", or for
// a value holding a newline "NAME\n", its length as a 64-bit little-endian
// integer, the value and "\n".
func encode(fields []field) []byte {
	var b bytes.Buffer
	for _, f := range fields {
		b.WriteString(f.name)
		if !strings.Contains(f.value, "\n") {
			b.WriteByte('=')
			b.WriteString(f.value)
			b.WriteByte('\n')
			continue
		}
		b.WriteByte('\n')
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(f.value)))
		b.Write(n[:])
		b.WriteString(f.value)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// sender sends entries to journald. Its socket is not connected: each entry
// is addressed to the path, so a journald that restarted (and made a new
// socket) still gets the next entry. One sender is shared by every handler
// derived with With or WithGroup; the kernel keeps datagrams whole, so no
// lock is needed.
type sender struct {
	conn *net.UnixConn
	addr *net.UnixAddr
}

// newSender checks that something listens on the socket at path and opens
// the socket entries are sent from.
func newSender(path string) (*sender, error) {
	addr := &net.UnixAddr{Name: path, Net: "unixgram"}
	probe, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return nil, fmt.Errorf("cannot reach journald at %s: %w", path, err)
	}
	// Only the connect mattered; closing a datagram socket that sent nothing
	// cannot fail in a way worth reporting.
	_ = probe.Close()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("cannot open a socket for journald: %w", err)
	}
	return &sender{conn: conn, addr: addr}, nil
}

// send sends one entry. An entry too large for a datagram goes as a sealed
// memfd passed with SCM_RIGHTS, which journald reads instead (the way
// sd_journal_sendv does it).
func (s *sender) send(entry []byte) error {
	_, _, err := s.conn.WriteMsgUnix(entry, nil, s.addr)
	if err == nil {
		return nil
	}
	if !errors.Is(err, syscall.EMSGSIZE) && !errors.Is(err, syscall.ENOBUFS) {
		return fmt.Errorf("cannot send to journald: %w", err)
	}
	fd, err := sealedMemfd(entry)
	if err != nil {
		return fmt.Errorf("cannot send a large entry to journald: %w", err)
	}
	defer unix.Close(fd)
	if _, _, err := s.conn.WriteMsgUnix(nil, unix.UnixRights(fd), s.addr); err != nil {
		return fmt.Errorf("cannot send a large entry to journald: %w", err)
	}
	return nil
}

func (s *sender) close() error { return s.conn.Close() }

// sealedMemfd returns a memfd holding b, sealed so that journald can trust
// it will not change under it.
func sealedMemfd(b []byte) (int, error) {
	fd, err := unix.MemfdCreate("subvault-journal", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, os.NewSyscallError("memfd_create", err)
	}
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err != nil {
			unix.Close(fd)
			return -1, os.NewSyscallError("write", err)
		}
		b = b[n:]
	}
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("fcntl F_ADD_SEALS", err)
	}
	return fd, nil
}

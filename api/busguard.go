package api

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/api/contract"
)

// The daemon's bus connection goes through a guard: the daemon dials the
// bus itself and gives godbus one end of a socket pair, and two goroutines
// relay between them. Everything godbus sends passes as it is. Every
// message from the bus is first decoded as godbus will decode it, in the
// guard's own goroutine, where a panic can be recovered; then:
//
//   - one godbus cannot decode does not reach it: godbus v5.2.4 panics in
//     its reading goroutine on an array of descriptors ("ah" with a
//     descriptor attached: reflect.Append of a UnixFD to a []UnixFDIndex),
//     which any user on the bus could send to kill the daemon, and it
//     closes the connection on other errors;
//   - the descriptors a message brings are kept only by DiffTo's call (one,
//     its fd argument) and by replies to the daemon's own calls (logind's
//     inhibitor); any other's are closed, as godbus hands them to no one,
//     and a call that brought some reaches godbus as a call of
//     descriptorsRefused, which it answers with UnknownMethod.
//
// So no user can crash the daemon, make it drop its connection, or fill its
// descriptor table through the bus.

// maxMessageBytes is the D-Bus protocol's limit on a message (and godbus's).
const maxMessageBytes = 1 << 27

// descriptorsRefused is the member a call that brought descriptors it may
// not is renamed to: no object has it, so godbus answers UnknownMethod, and
// the caller learns why from the name.
const descriptorsRefused = "FileDescriptorsNotAcceptedHere"

// dialGuarded connects to the bus ("system", "session" or an address of
// kind unix:) through a guard, authenticates and says Hello, as
// dbus.Connect does.
func dialGuarded(bus string, opts ...dbus.ConnOption) (*dbus.Conn, error) {
	address, err := busAddress(bus)
	if err != nil {
		return nil, err
	}
	upstream, err := dialUnixAddress(address)
	if err != nil {
		return nil, err
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		upstream.Close() //nolint:errcheck,gosec // the socket pair's error is the one to report
		return nil, fmt.Errorf("cannot make a socket pair: %w", err)
	}
	local, err := unixConnOf(pair[0], "bus-guard")
	if err == nil {
		var godbusEnd *net.UnixConn
		if godbusEnd, err = unixConnOf(pair[1], "bus"); err == nil {
			g := &busGuard{bus: upstream, local: local}
			go g.relayUp()
			go g.relayDown()
			conn, err := dbus.ConnectUnix(godbusEnd, opts...)
			if err != nil {
				g.close()
				return nil, err
			}
			return conn, nil
		}
		local.Close() //nolint:errcheck,gosec // the error is the one to report
	} else {
		_ = unix.Close(pair[1])
	}
	upstream.Close() //nolint:errcheck,gosec // the error is the one to report
	return nil, err
}

func unixConnOf(fd int, name string) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close() //nolint:errcheck // FileConn has its own copy
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("cannot use a socket pair: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close() //nolint:errcheck,gosec // not what was made
		return nil, errors.New("a socket pair that is not of unix sockets")
	}
	return uc, nil
}

// busAddress is the D-Bus address of "system", "session" or an address.
func busAddress(bus string) (string, error) {
	switch bus {
	case "", "system":
		if a := os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"); a != "" {
			return a, nil
		}
		return "unix:path=/run/dbus/system_bus_socket", nil
	case "session":
		if a := os.Getenv("DBUS_SESSION_BUS_ADDRESS"); a != "" {
			return a, nil
		}
		if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
			return "unix:path=" + filepath.Join(dir, "bus"), nil
		}
		return "", errors.New("no session bus: neither DBUS_SESSION_BUS_ADDRESS nor XDG_RUNTIME_DIR is set")
	}
	return bus, nil
}

// dialUnixAddress connects to the first unix: entry (path= or abstract=)
// of a D-Bus address.
func dialUnixAddress(address string) (*net.UnixConn, error) {
	for entry := range strings.SplitSeq(address, ";") {
		kind, keys, ok := strings.Cut(entry, ":")
		if !ok || kind != "unix" {
			continue
		}
		for kv := range strings.SplitSeq(keys, ",") {
			k, v, _ := strings.Cut(kv, "=")
			v = unescapeAddressValue(v)
			switch k {
			case "path":
				return net.DialUnix("unix", nil, &net.UnixAddr{Name: v, Net: "unix"})
			case "abstract":
				return net.DialUnix("unix", nil, &net.UnixAddr{Name: "@" + v, Net: "unix"})
			}
		}
	}
	return nil, fmt.Errorf("the bus address %q has no unix:path= or unix:abstract= entry (the daemon connects over a unix socket)", address)
}

// unescapeAddressValue undoes a D-Bus address value's %XX escapes.
func unescapeAddressValue(v string) string {
	if !strings.Contains(v, "%") {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '%' && i+2 < len(v) {
			var c byte
			if _, err := fmt.Sscanf(v[i+1:i+3], "%02x", &c); err == nil {
				b.WriteByte(c)
				i += 2
				continue
			}
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// busGuard relays between the bus (bus) and godbus (local).
type busGuard struct {
	bus, local *net.UnixConn
	begun      atomic.Bool // godbus said BEGIN: the bus now sends messages, not lines
	closeOnce  sync.Once
}

func (g *busGuard) close() {
	g.closeOnce.Do(func() {
		g.bus.Close()   //nolint:errcheck,gosec // the connection is over
		g.local.Close() //nolint:errcheck,gosec // the connection is over
	})
}

// relayUp passes what godbus writes to the bus, as it is; it notes the
// end of the authentication (BEGIN), after which the bus sends messages.
func (g *busGuard) relayUp() {
	defer g.close()
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(253*4))
	var line []byte // the authentication line so far
	for {
		n, oobn, _, _, err := g.local.ReadMsgUnix(buf, oob)
		if err != nil && n <= 0 {
			closeAll(parseRights(oob[:max(oobn, 0)]))
			return
		}
		data := buf[:n]
		fds := parseRights(oob[:oobn])
		if !g.begun.Load() {
			for _, c := range data {
				line = append(line, c)
				if c == '\n' {
					if bytes.Equal(bytes.TrimLeft(line, "\x00"), []byte("BEGIN\r\n")) {
						g.begun.Store(true)
					}
					line = line[:0]
				}
			}
		}
		err = writeAll(g.bus, data, fds)
		closeAll(fds)
		if err != nil {
			return
		}
	}
}

// relayDown passes the bus's authentication lines as they are, then each
// message after check.
func (g *busGuard) relayDown() {
	defer g.close()
	r := &messageReader{conn: g.bus}
	for {
		// A byte at a time, so that no read takes in more than one byte of
		// the messages (or their descriptors) in line mode. The bus sends
		// its last line before godbus says BEGIN and its first message
		// after: a byte read once godbus has said it is a message's.
		b, err := r.read(1)
		if err != nil {
			return
		}
		if g.begun.Load() {
			r.pending = b
			break
		}
		closeAll(r.takeFDs())
		if _, err := g.local.Write(b); err != nil {
			return
		}
	}
	for {
		raw, fds, err := r.message()
		if err != nil {
			closeAll(fds)
			return
		}
		out, keep := checkFromBus(raw, fds)
		if !keep {
			closeAll(fds)
			fds = nil
		}
		if out != nil {
			err = writeAll(g.local, out, fds)
		}
		closeAll(fds)
		if err != nil {
			return
		}
	}
}

// checkFromBus decides what godbus gets of a message from the bus: raw as
// it is with its descriptors (keep), a rewritten message without them, or
// nothing (out nil).
func checkFromBus(raw []byte, fds []int) (out []byte, keep bool) {
	msg, err := decodeLikeGodbus(raw, fds)
	if err != nil {
		if len(fds) == 0 {
			return nil, false // godbus would drop its connection over it
		}
		// An array of descriptors, which godbus panics on: without them
		// each is its index, and the message decodes.
		if msg, err = decodeLikeGodbus(raw, nil); err != nil {
			return nil, false
		}
		return refused(msg, raw[0])
	}
	want, _ := msg.Headers[dbus.FieldUnixFDs].Value().(uint32)
	if want == 0 && len(fds) == 0 {
		return raw, false
	}
	if int(want) == len(fds) {
		switch msg.Type {
		case dbus.TypeMethodReply, dbus.TypeError:
			return raw, true
		case dbus.TypeMethodCall:
			if isDiffToCall(msg, fds) {
				return raw, true
			}
		}
	}
	return refused(msg, raw[0])
}

// refused is what godbus gets of a message that brought descriptors it may
// not: a call goes on without them (and without its arguments) as a call
// of a method no object has, so that godbus answers UnknownMethod and the
// caller is not left waiting; anything else is dropped.
func refused(msg *dbus.Message, byteOrder byte) ([]byte, bool) {
	if msg.Type != dbus.TypeMethodCall {
		return nil, false
	}
	delete(msg.Headers, dbus.FieldUnixFDs)
	delete(msg.Headers, dbus.FieldSignature)
	msg.Headers[dbus.FieldMember] = dbus.MakeVariant(descriptorsRefused)
	msg.Body = nil
	var b bytes.Buffer
	order := binary.ByteOrder(binary.LittleEndian)
	if byteOrder == 'B' {
		order = binary.BigEndian
	}
	if err := msg.EncodeTo(&b, order); err != nil {
		return nil, false
	}
	return b.Bytes(), false
}

// isDiffToCall reports whether msg is a well-formed DiffTo call whose one
// descriptor is its fd argument.
func isDiffToCall(msg *dbus.Message, fds []int) bool {
	path, _ := msg.Headers[dbus.FieldPath].Value().(dbus.ObjectPath)
	iface, _ := msg.Headers[dbus.FieldInterface].Value().(string)
	member, _ := msg.Headers[dbus.FieldMember].Value().(string)
	sig, _ := msg.Headers[dbus.FieldSignature].Value().(dbus.Signature)
	if path != contract.ManagerPath || iface != contract.ManagerInterface || member != "DiffTo" || sig.String() != "sssha{sv}" || len(fds) != 1 || len(msg.Body) != 5 {
		return false
	}
	fd, ok := msg.Body[3].(dbus.UnixFD)
	return ok && int(fd) == fds[0]
}

// decodeLikeGodbus decodes raw with fds as godbus's reading goroutine
// will, and turns a panic of godbus's into an error.
func decodeLikeGodbus(raw []byte, fds []int) (msg *dbus.Message, err error) {
	defer func() {
		if p := recover(); p != nil {
			msg, err = nil, fmt.Errorf("godbus cannot decode the message: %v", p)
		}
	}()
	return dbus.DecodeMessageWithFDs(bytes.NewReader(raw), fds)
}

// messageReader reads the bus's messages one at a time, never past the
// end of the one it reads, so that the descriptors that came with a read
// are the message's.
type messageReader struct {
	conn    *net.UnixConn
	fds     []int
	oob     []byte
	pending []byte // read already, not yet taken
}

func (r *messageReader) takeFDs() []int {
	fds := r.fds
	r.fds = nil
	return fds
}

// read reads exactly n bytes, keeping the descriptors that come with them.
func (r *messageReader) read(n int) ([]byte, error) {
	if r.oob == nil {
		r.oob = make([]byte, unix.CmsgSpace(253*4))
	}
	buf := make([]byte, n)
	got := copy(buf, r.pending)
	r.pending = r.pending[got:]
	for got < n {
		k, oobn, flags, _, err := r.conn.ReadMsgUnix(buf[got:], r.oob)
		r.fds = append(r.fds, parseRights(r.oob[:max(oobn, 0)])...)
		got += max(k, 0)
		if flags&unix.MSG_CTRUNC != 0 {
			return nil, errors.New("descriptors from the bus were cut short")
		}
		if k == 0 && err == nil {
			err = errors.New("the bus closed the connection")
		}
		if err != nil && got < n {
			return nil, err
		}
	}
	return buf, nil
}

// message reads one message: its bytes and the descriptors that came with
// them.
func (r *messageReader) message() ([]byte, []int, error) {
	head, err := r.read(16)
	if err != nil {
		return nil, r.takeFDs(), err
	}
	var order binary.ByteOrder
	switch head[0] {
	case 'l':
		order = binary.LittleEndian
	case 'B':
		order = binary.BigEndian
	default:
		return nil, r.takeFDs(), errors.New("a message from the bus with an invalid byte order")
	}
	bodyLen := uint64(order.Uint32(head[4:8]))
	fieldsLen := uint64(order.Uint32(head[12:16]))
	total := 16 + (fieldsLen+7)/8*8 + bodyLen
	if total > maxMessageBytes {
		return nil, r.takeFDs(), fmt.Errorf("a message from the bus of %d bytes, over the protocol's limit", total)
	}
	rest, err := r.read(int(total) - 16)
	if err != nil {
		return nil, r.takeFDs(), err
	}
	return append(head, rest...), r.takeFDs(), nil
}

// parseRights returns the descriptors in a control message.
func parseRights(oob []byte) []int {
	if len(oob) == 0 {
		return nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range msgs {
		if rights, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			fds = append(fds, rights...)
		}
	}
	return fds
}

// writeAll writes data to c, with fds (if any) on its first byte.
func writeAll(c *net.UnixConn, data []byte, fds []int) error {
	if len(fds) > 0 {
		n, _, err := c.WriteMsgUnix(data, unix.UnixRights(fds...), nil)
		if err != nil {
			return err
		}
		data = data[n:]
	}
	for len(data) > 0 {
		n, err := c.Write(data)
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

package btrfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// The send stream's framing (btrfs-progs' Documentation/dev/dev-send-stream
// and the kernel's fs/btrfs/send.h): a header, "btrfs-stream\0" and a
// version, then commands, each a header (payload length, command,
// crc32c of header and payload with the checksum zeroed) and a payload of
// attributes (type, length, value). The first command creates the
// subvolume (SUBVOL) or the snapshot of the parent (SNAPSHOT); its PATH
// attribute is the name the receiving side gives it.
const (
	streamMagic     = "btrfs-stream\x00"
	streamHeaderLen = len(streamMagic) + 4
	cmdHeaderLen    = 10
	cmdSubvol       = 1
	cmdSnapshot     = 2
	attrPath        = 15
	maxFirstCommand = 1 << 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the kernel's crc32c(0, p): no inversion before or after.
func crc32c(p []byte) uint32 { return ^crc32.Update(0xffffffff, castagnoli, p) }

// RenameInStream reads the start of a send stream from r, its header and
// the first command (the subvolume or snapshot it creates), checks that
// the command names the subvolume want, and returns those bytes with the
// name replaced by name and the command's checksum made anew, and the
// number of bytes read from r. The caller writes head, then the rest of r
// as it is: btrfs receive then creates the subvolume under name.
//
// A read-only subvolume cannot be moved to another directory (its ".."
// would change: EROFS), only renamed within its own; so a receive that
// must land under a temporary name, checked and renamed into place in the
// same directory, renames it in the stream.
func RenameInStream(r io.Reader, want, name string) (head []byte, read int, err error) {
	if name == "" || len(name) > 255 {
		return nil, 0, fmt.Errorf("cannot rename %s in its send stream: the new name must be 1 to 255 bytes", want)
	}
	hdr := make([]byte, streamHeaderLen+cmdHeaderLen)
	n, err := io.ReadFull(r, hdr)
	read += n
	if err != nil {
		return nil, read, fmt.Errorf("cannot read the send stream's start: %w", err)
	}
	if string(hdr[:len(streamMagic)]) != streamMagic {
		return nil, read, errors.New("not a btrfs send stream (no btrfs-stream header)")
	}
	cmd := hdr[streamHeaderLen:]
	length := binary.LittleEndian.Uint32(cmd[0:4])
	kind := binary.LittleEndian.Uint16(cmd[4:6])
	sum := binary.LittleEndian.Uint32(cmd[6:10])
	if kind != cmdSubvol && kind != cmdSnapshot {
		return nil, read, fmt.Errorf("the send stream starts with command %d, not a subvolume or snapshot", kind)
	}
	if length > maxFirstCommand {
		return nil, read, fmt.Errorf("the send stream's first command is %d bytes long", length)
	}
	payload := make([]byte, length)
	n, err = io.ReadFull(r, payload)
	read += n
	if err != nil {
		return nil, read, fmt.Errorf("cannot read the send stream's first command: %w", err)
	}
	whole := append(append([]byte{}, cmd...), payload...)
	binary.LittleEndian.PutUint32(whole[6:10], 0)
	if got := crc32c(whole); got != sum {
		return nil, read, fmt.Errorf("the send stream's first command has checksum %#x, want %#x", sum, got)
	}
	var out []byte
	found := false
	for p := payload; len(p) > 0; {
		if len(p) < 4 {
			return nil, read, errors.New("the send stream's first command is cut short")
		}
		typ, l := binary.LittleEndian.Uint16(p[0:2]), int(binary.LittleEndian.Uint16(p[2:4]))
		if len(p) < 4+l {
			return nil, read, errors.New("the send stream's first command is cut short")
		}
		value := p[4 : 4+l]
		if typ == attrPath && !found {
			found = true
			if string(value) != want {
				return nil, read, fmt.Errorf("the send stream creates %q, not %q", value, want)
			}
			value = []byte(name)
		}
		out = binary.LittleEndian.AppendUint16(out, typ)
		out = binary.LittleEndian.AppendUint16(out, uint16(len(value)))
		out = append(out, value...)
		p = p[4+l:]
	}
	if !found {
		return nil, read, errors.New("the send stream's first command names no subvolume")
	}
	newCmd := make([]byte, cmdHeaderLen, cmdHeaderLen+len(out))
	binary.LittleEndian.PutUint32(newCmd[0:4], uint32(len(out)))
	binary.LittleEndian.PutUint16(newCmd[4:6], kind)
	newCmd = append(newCmd, out...)
	binary.LittleEndian.PutUint32(newCmd[6:10], crc32c(newCmd))
	head = append(append([]byte{}, hdr[:streamHeaderLen]...), newCmd...)
	return head, read, nil
}

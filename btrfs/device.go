package btrfs

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNotBtrfs is wrapped by FilesystemUUID's error when the device holds no
// btrfs filesystem (no btrfs superblock at 64 KiB, or a damaged one).
var ErrNotBtrfs = errors.New("no btrfs filesystem")

// Where block devices are listed, opened, and what udev knows of them. Tests
// of this package point them elsewhere (export_test.go).
var (
	sysBlockDir = "/sys/class/block"
	devDir      = "/dev"
	udevDataDir = "/run/udev/data"
)

// The primary superblock (fs/btrfs/disk-io.c, include/uapi/linux/btrfs_tree.h).
const (
	superOffset   = 64 << 10
	superSize     = 4096
	superMagicStr = "_BHRfS_M"
	csumSize      = 32
	offFSID       = 0x20
	offBytenr     = 0x30
	offMagic      = 0x40
	offCsumType   = 0xc4
	csumCRC32C    = 0
	csumSHA256    = 2
)

// BlockDevice is one entry of /sys/class/block.
type BlockDevice struct {
	// Name is the kernel's name, e.g. "sda1" or "loop3"; the device node is
	// /dev/<Name> (a "!" in the kernel's name is a "/" there).
	Name string
	// Dev is "major:minor".
	Dev string
	// Size is the device's size in bytes (0 for an unused loop device or an
	// empty drive).
	Size uint64
	// DiskSeq is the kernel's disk sequence number of the disk (of the
	// partition's disk for a partition), which changes when a loop device
	// is attached again or a medium changes; 0 when the kernel has none.
	DiskSeq uint64
}

// Path is the device node: /dev/<Name>.
func (d BlockDevice) Path() string {
	return filepath.Join(devDir, strings.ReplaceAll(d.Name, "!", "/"))
}

// BlockDevices lists the block devices of /sys/class/block, sorted by name.
// It reads only sysfs: no device is opened. Devices that vanish while it
// reads are left out.
func BlockDevices() ([]BlockDevice, error) {
	entries, err := os.ReadDir(sysBlockDir)
	if err != nil {
		return nil, fmt.Errorf("cannot list the block devices: %w", err)
	}
	var devs []BlockDevice
	for _, e := range entries {
		name := e.Name()
		dir := filepath.Join(sysBlockDir, name)
		dev, err := readSysfs(dir, "dev")
		if err != nil {
			continue // gone meanwhile
		}
		d := BlockDevice{Name: name, Dev: dev}
		if s, err := readSysfs(dir, "size"); err == nil {
			if sectors, err := strconv.ParseUint(s, 10, 64); err == nil {
				d.Size = sectors * 512 // always 512-byte sectors in sysfs
			}
		}
		seq, err := readSysfs(dir, "diskseq")
		if err != nil {
			// A partition: its disk is the parent directory of its
			// directory under /sys/devices.
			if real, rerr := filepath.EvalSymlinks(dir); rerr == nil {
				seq, err = readSysfs(filepath.Dir(real), "diskseq")
			}
		}
		if err == nil {
			d.DiskSeq, _ = strconv.ParseUint(seq, 10, 64)
		}
		devs = append(devs, d)
	}
	slices.SortFunc(devs, func(a, b BlockDevice) int { return strings.Compare(a.Name, b.Name) })
	return devs, nil
}

func readSysfs(dir, file string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, file))
	return strings.TrimSpace(string(b)), err
}

// Probeable tells whether a device is worth probing for a filesystem: it
// has a size and is no RAM disk.
func (d BlockDevice) Probeable() bool {
	return d.Size >= superOffset+superSize && !strings.HasPrefix(d.Name, "ram")
}

// FSUUID is the btrfs filesystem UUID on the device, "" when it holds no
// btrfs. It asks udev's database first (/run/udev/data/b<major>:<minor>, when
// udev has probed the device) and reads the superblock otherwise; a device
// that cannot be read is an error.
func (d BlockDevice) FSUUID() (string, error) {
	if typ, uuid, ok := udevFS(d.Dev, d.DiskSeq); ok {
		if typ != "btrfs" {
			return "", nil
		}
		return uuid, nil
	}
	uuid, err := d.probe()
	if errors.Is(err, ErrNotBtrfs) {
		return "", nil
	}
	return uuid, err
}

// udevFS reads ID_FS_TYPE and ID_FS_UUID from udev's database; ok is false
// when udev has no entry for the device, did not probe it, or its entry is
// of an earlier medium (a loop device attached again before udev caught up:
// its DISKSEQ differs from the kernel's).
func udevFS(dev string, diskseq uint64) (typ, uuid string, ok bool) {
	f, err := os.Open(filepath.Join(udevDataDir, "b"+dev))
	if err != nil {
		return "", "", false
	}
	defer f.Close() //nolint:errcheck // read only
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		line := sc.Text()
		if v, found := strings.CutPrefix(line, "E:ID_FS_TYPE="); found {
			typ, ok = v, true
		} else if v, found := strings.CutPrefix(line, "E:ID_FS_UUID="); found {
			uuid = v
		} else if v, found := strings.CutPrefix(line, "E:DISKSEQ="); found && diskseq != 0 && v != strconv.FormatUint(diskseq, 10) {
			return "", "", false
		}
	}
	if sc.Err() != nil {
		return "", "", false
	}
	return typ, uuid, ok
}

// probe opens the device node /dev/<Name> without following any link,
// checks that it is the block device sysfs named, and reads its superblock.
func (d BlockDevice) probe() (string, error) {
	dir, err := unix.Open(devDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("cannot open %s: %w", devDir, err)
	}
	defer unix.Close(dir)
	path := d.Path()
	fd, err := unix.Openat2(dir, strings.ReplaceAll(d.Name, "!", "/"), &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NONBLOCK | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NOCTTY,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return "", fmt.Errorf("cannot open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close() //nolint:errcheck // read only
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("cannot stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", fmt.Errorf("%s is not a block device: refusing to read it", path)
	}
	if got := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)); got != d.Dev {
		return "", fmt.Errorf("%s is device %s, not %s as /sys/class/block/%s says: refusing to read it", path, got, d.Dev, d.Name)
	}
	return readSuper(f, path)
}

// FilesystemUUID reads the btrfs filesystem UUID (as blkid's UUID= and
// `btrfs filesystem show` print it) from the primary superblock of a block
// device. The device is opened without following a final symlink and
// without blocking, and must be a block device; a device without a valid
// btrfs superblock is an error wrapping ErrNotBtrfs.
func FilesystemUUID(dev string) (string, error) {
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_NOCTTY, 0)
	if err != nil {
		return "", fmt.Errorf("cannot read the filesystem of %s: %w", dev, err)
	}
	defer f.Close() //nolint:errcheck // read only
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("cannot read the filesystem of %s: %w", dev, err)
	}
	if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return "", fmt.Errorf("cannot read the filesystem of %s: not a block device", dev)
	}
	return readSuper(f, dev)
}

// readSuper reads and checks the primary superblock.
func readSuper(f *os.File, name string) (string, error) {
	sb := make([]byte, superSize)
	n, err := f.ReadAt(sb, superOffset)
	if n < superSize {
		if err == nil || errors.Is(err, io.EOF) {
			return "", fmt.Errorf("%s: %w (too small for a btrfs superblock)", name, ErrNotBtrfs)
		}
		return "", fmt.Errorf("cannot read the superblock of %s: %w", name, err)
	}
	if !bytes.Equal(sb[offMagic:offMagic+8], []byte(superMagicStr)) {
		return "", fmt.Errorf("%s: %w (no btrfs magic at 64 KiB)", name, ErrNotBtrfs)
	}
	if binary.LittleEndian.Uint64(sb[offBytenr:]) != superOffset {
		return "", fmt.Errorf("%s: %w (the superblock at 64 KiB says it is elsewhere)", name, ErrNotBtrfs)
	}
	switch binary.LittleEndian.Uint16(sb[offCsumType:]) {
	case csumCRC32C:
		sum := crc32.Checksum(sb[csumSize:], crc32.MakeTable(crc32.Castagnoli))
		if binary.LittleEndian.Uint32(sb) != sum {
			return "", fmt.Errorf("%s: %w (the superblock's crc32c checksum does not match)", name, ErrNotBtrfs)
		}
	case csumSHA256:
		sum := sha256.Sum256(sb[csumSize:])
		if !bytes.Equal(sb[:sha256.Size], sum[:]) {
			return "", fmt.Errorf("%s: %w (the superblock's sha256 checksum does not match)", name, ErrNotBtrfs)
		}
	default:
		// xxhash64 and blake2b are not checked: the magic and the
		// superblock's own offset have matched.
	}
	return formatUUID([16]byte(sb[offFSID : offFSID+16])), nil
}

// FindDevice returns the device node (/dev/<name>) of a block device that
// holds the btrfs filesystem with this UUID, "" when none does. It looks only
// at the devices the kernel lists in /sys/class/block, opens only their nodes
// in /dev (never through a link, and only when the node is the block device
// sysfs names), and asks udev's database before reading a superblock. A
// device that cannot be read is passed over. For a filesystem on several
// devices, the first by name is returned.
func FindDevice(uuid string) (string, error) {
	want := strings.ToLower(strings.TrimSpace(uuid))
	if want == "" {
		return "", errors.New("cannot find a device: no filesystem UUID given")
	}
	devs, err := BlockDevices()
	if err != nil {
		return "", err
	}
	for _, d := range devs {
		if !d.Probeable() {
			continue
		}
		got, err := d.FSUUID()
		if err == nil && got == want {
			return d.Path(), nil
		}
	}
	return "", nil
}

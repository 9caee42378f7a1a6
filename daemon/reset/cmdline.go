package reset

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/btrfs"
)

// bootArgs is what a reset reads of the kernel command line.
type bootArgs struct {
	root         string // root=: UUID=..., LABEL=..., PARTUUID=..., /dev/...
	subvol       string // rootflags=subvol=
	subvolID     string // rootflags=subvolid=
	resume       string // resume=
	resumeOffset int64  // resume_offset=, in pages
	off          bool   // subvault.reset=0
}

func parseCmdline(cmdline string) bootArgs {
	var b bootArgs
	for _, arg := range strings.Fields(cmdline) {
		key, value, _ := strings.Cut(arg, "=")
		switch key {
		case "root":
			b.root = value
		case "rootflags":
			for _, opt := range strings.Split(value, ",") {
				if v, ok := strings.CutPrefix(opt, "subvol="); ok {
					b.subvol = v
				}
				if v, ok := strings.CutPrefix(opt, "subvolid="); ok {
					b.subvolID = v
				}
			}
		case "resume":
			b.resume = value
		case "resume_offset":
			b.resumeOffset, _ = strconv.ParseInt(value, 10, 64)
		case "subvault.reset":
			b.off = value == "0" || value == "no" || value == "false" || value == "off"
		}
	}
	return b
}

// devDiskDir is where udev's links to devices are; tests of this package
// point it elsewhere.
var devDiskDir = "/dev/disk"

// resolveDevice turns root=/resume= values into a device node: /dev/...
// as is, UUID=, LABEL=, PARTUUID=, PARTLABEL= through udev's /dev/disk/by-*
// links, and a btrfs UUID= without udev by reading the superblocks of the
// block devices sysfs lists.
func resolveDevice(spec string) (string, error) {
	if spec == "" {
		return "", errors.New("no device given")
	}
	if strings.HasPrefix(spec, "/dev/") {
		return filepath.EvalSymlinks(spec)
	}
	kind, value, ok := strings.Cut(spec, "=")
	if !ok {
		return "", fmt.Errorf("%q is not a device (want /dev/..., UUID=, LABEL=, PARTUUID= or PARTLABEL=)", spec)
	}
	dir := map[string]string{"UUID": "by-uuid", "LABEL": "by-label", "PARTUUID": "by-partuuid", "PARTLABEL": "by-partlabel"}[kind]
	if dir == "" {
		return "", fmt.Errorf("%q is not a device (want /dev/..., UUID=, LABEL=, PARTUUID= or PARTLABEL=)", spec)
	}
	if dev, err := filepath.EvalSymlinks(filepath.Join(devDiskDir, dir, value)); err == nil {
		return dev, nil
	}
	if kind == "UUID" {
		if dev, err := btrfs.FindDevice(value); err == nil && dev != "" {
			return dev, nil
		}
	}
	return "", fmt.Errorf("no device has %s (not in %s)", spec, filepath.Join(devDiskDir, dir))
}

// readAt reads n bytes at off of a block device node (never through a
// link, never anything but a block device).
func readAt(dev string, off int64, n int) ([]byte, error) {
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil, fmt.Errorf("%s is not a block device", dev)
	}
	buf := make([]byte, n)
	if _, err := unix.Pread(fd, buf, off); err != nil {
		return nil, err
	}
	return buf, nil
}

// hibernateLocation is systemd's EFI variable naming a hibernation image.
var hibernateLocation = "/sys/firmware/efi/efivars/HibernateLocation-8cf2644b-4b0b-428f-9387-6d876050dc67"

// hibernated says whether the resume= device holds a hibernation image:
// its swap header (the first page, or the page resume_offset names in a
// swap file) ends with S1SUSPEND (the kernel's) or ULSUSPEND (uswsusp's)
// instead of SWAPSPACE2.
//
// Without resume=, systemd (≥ 255) finds the image through the EFI
// variable HibernateLocation (JSON: the swap's filesystem UUID and offset),
// and so does this.
func hibernated(b bootArgs) (bool, string, error) {
	if b.resume == "" {
		data, err := os.ReadFile(hibernateLocation)
		if err != nil {
			return false, "", nil //nolint:nilerr // no variable, no image
		}
		var loc struct {
			UUID   string `json:"uuid"`
			Offset int64  `json:"offset"`
		}
		// efivarfs puts 4 bytes of attributes before the value.
		if len(data) < 4 || json.Unmarshal(data[4:], &loc) != nil || loc.UUID == "" {
			return true, hibernateLocation, errors.New("the EFI variable HibernateLocation is there but cannot be read")
		}
		b.resume, b.resumeOffset = "UUID="+loc.UUID, loc.Offset
	}
	dev, err := resolveDevice(b.resume)
	if err != nil {
		// No such device now: the kernel cannot resume from it either.
		return false, "", nil //nolint:nilerr // a missing resume device holds no image
	}
	page := int64(os.Getpagesize())
	hdr, err := readAt(dev, b.resumeOffset*page, int(page))
	if err != nil {
		return false, dev, fmt.Errorf("cannot read the swap header of the resume device %s: %w", dev, err)
	}
	sig := string(hdr[page-10:])
	return strings.HasPrefix(sig, "S1SUSPEND") || strings.HasPrefix(sig, "ULSUSPEND"), dev, nil
}

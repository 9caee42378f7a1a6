package btrfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Mount is the btrfs filesystem and mount that hold a path.
type Mount struct {
	// MountPoint is where the filesystem is mounted.
	MountPoint string
	// Device is the mount's source, e.g. /dev/sda2.
	Device string
	// FSID is the filesystem's UUID (as blkid and `btrfs filesystem show` print it).
	FSID string
	// Subvol is the subvolume mounted there (the subvol= option), e.g. "/" or "/@home".
	Subvol string
	// SubvolID is the id of that subvolume (the subvolid= option).
	SubvolID uint64
}

// FindMount returns the btrfs mount holding path: the mount with the longest
// mount point that contains the path with its symlinks resolved. It is an
// error, naming the filesystem type, when path is not on btrfs.
func FindMount(path string) (Mount, error) {
	resolved, err := resolve(path)
	if err != nil {
		return Mount{}, fmt.Errorf("cannot find the mount of %s: %w", path, err)
	}
	entry, err := mountOf(resolved)
	if err != nil {
		return Mount{}, fmt.Errorf("cannot find the mount of %s: %w", path, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(resolved, &st); err != nil {
		return Mount{}, fmt.Errorf("cannot find the mount of %s: %w", path, err)
	}
	if uint32(st.Type) != superMagic {
		return Mount{}, fmt.Errorf("cannot find the btrfs mount of %s: %s", path, notBtrfs(resolved, entry))
	}
	m := Mount{MountPoint: entry.Mountpoint, Device: entry.Source}
	m.Subvol, m.SubvolID = subvolOf(entry.VFSOptions)
	m.FSID, err = fsidOf(resolved)
	if err != nil {
		return Mount{}, fmt.Errorf("cannot find the mount of %s: %w", path, err)
	}
	return m, nil
}

// resolve makes path absolute and resolves its symlinks; it fails when the
// path does not exist.
func resolve(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		if os.IsNotExist(err) {
			return "", fmt.Errorf("%s does not exist", abs)
		}
		return "", err
	}
	return resolved, nil
}

// fsidOf returns the UUID of the btrfs filesystem holding path.
func fsidOf(path string) (string, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	info, err := fsInfo(fd)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return formatUUID(info.FSID), nil
}

// notBtrfs says what a path that is not on btrfs is on, e.g. "/tmp/x is not
// on btrfs (it is on ext4 at /)".
func notBtrfs(path string, entry *mountinfo.Info) string {
	return fmt.Sprintf("%s is not on btrfs (it is on %s at %s)", path, entry.FSType, entry.Mountpoint)
}

// mounts lists the mounts this thread sees (/proc/thread-self/mountinfo),
// their paths unescaped.
func mounts() ([]*mountinfo.Info, error) {
	entries, err := mountinfo.GetMounts(nil)
	if err != nil {
		return nil, fmt.Errorf("cannot list the mounts: %w", err)
	}
	return entries, nil
}

// mountOf returns the mountinfo entry of the mount holding the resolved
// absolute path. Of equal mount points the last one wins: it is mounted on top.
func mountOf(resolved string) (*mountinfo.Info, error) {
	entries, err := mounts()
	if err != nil {
		return nil, err
	}
	var best *mountinfo.Info
	for _, e := range entries {
		if !underMountPoint(resolved, e.Mountpoint) {
			continue
		}
		if best == nil || len(e.Mountpoint) >= len(best.Mountpoint) {
			best = e
		}
	}
	if best == nil {
		return nil, fmt.Errorf("no mount holds %s", resolved)
	}
	return best, nil
}

func underMountPoint(path, mountPoint string) bool {
	if mountPoint == "/" {
		return strings.HasPrefix(path, "/")
	}
	return path == mountPoint || strings.HasPrefix(path, mountPoint+"/")
}

// subvolOf reads the subvolume a btrfs mount shows from its superblock
// options (mountinfo's last field): subvol= and subvolid=. The kernel
// escapes a comma, a space or a backslash in an option's value, so the
// options are split at commas before the value is unescaped.
func subvolOf(options string) (subvol string, id uint64) {
	id, _ = strconv.ParseUint(optionValue(options, "subvolid"), 10, 64)
	return UnescapeOctal(optionValue(options, "subvol")), id
}

// UnescapeOctal undoes the \NNN octal escapes (\040 for a space, \134 for a
// backslash) that fstab(5) uses in its fields and the kernel in the values of
// mount options. mountinfo's paths come unescaped from
// github.com/moby/sys/mountinfo; a backslash that starts no escape stays.
func UnescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

package btrfs

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

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

// mountEntry is one line of /proc/self/mountinfo, unescaped.
type mountEntry struct {
	root, mountPoint, fsType, source, superOptions string
}

const mountinfoPath = "/proc/self/mountinfo"

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
	m := Mount{MountPoint: entry.mountPoint, Device: entry.source}
	for _, opt := range strings.Split(entry.superOptions, ",") {
		switch {
		case strings.HasPrefix(opt, "subvol="):
			m.Subvol = strings.TrimPrefix(opt, "subvol=")
		case strings.HasPrefix(opt, "subvolid="):
			m.SubvolID, _ = strconv.ParseUint(strings.TrimPrefix(opt, "subvolid="), 10, 64)
		}
	}
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
func notBtrfs(path string, entry mountEntry) string {
	return fmt.Sprintf("%s is not on btrfs (it is on %s at %s)", path, entry.fsType, entry.mountPoint)
}

// mountOf returns the mountinfo entry of the mount holding the resolved
// absolute path. Of equal mount points the last one wins: it is mounted on top.
func mountOf(resolved string) (mountEntry, error) {
	data, err := os.ReadFile(mountinfoPath)
	if err != nil {
		return mountEntry{}, err
	}
	entries, err := parseMountinfo(data)
	if err != nil {
		return mountEntry{}, err
	}
	best, found := mountEntry{}, false
	for _, e := range entries {
		if !underMountPoint(resolved, e.mountPoint) {
			continue
		}
		if !found || len(e.mountPoint) >= len(best.mountPoint) {
			best, found = e, true
		}
	}
	if !found {
		return mountEntry{}, fmt.Errorf("no mount in %s holds %s", mountinfoPath, resolved)
	}
	return best, nil
}

func underMountPoint(path, mountPoint string) bool {
	if mountPoint == "/" {
		return strings.HasPrefix(path, "/")
	}
	return path == mountPoint || strings.HasPrefix(path, mountPoint+"/")
}

// parseMountinfo parses proc(5) mountinfo lines:
// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
func parseMountinfo(data []byte) ([]mountEntry, error) {
	var entries []mountEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		fields := strings.Split(line, " ")
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 6 || sep < 0 || len(fields) < sep+4 {
			return nil, fmt.Errorf("malformed line in %s: %q", mountinfoPath, line)
		}
		entries = append(entries, mountEntry{
			root:         unescapeMountinfo(fields[3]),
			mountPoint:   unescapeMountinfo(fields[4]),
			fsType:       fields[sep+1],
			source:       unescapeMountinfo(fields[sep+2]),
			superOptions: unescapeMountinfo(fields[sep+3]),
		})
	}
	return entries, sc.Err()
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for space, \011,
// \012, \134 for backslash) in a mountinfo field.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

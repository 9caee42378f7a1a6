package onsite

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/safefs"
	"golang.org/x/sys/unix"
)

// The places on the host under state_dir, root's and 0700: the mount
// point of a UUID target's top level and that of the plan subvolume btrfs
// receive writes into, each mounted only inside a job's private mount
// namespace.
const (
	stateSubdir   = "onsite"
	mountDirName  = "mnt"
	receiveDir    = "receive"
	receivePrefix = ".subvault-receiving-"
)

// findDevice is btrfs.FindDevice; tests set it.
var findDevice = btrfs.FindDevice

// FindDevice returns the block device that holds the btrfs filesystem
// with this UUID, "" when none is plugged in.
func FindDevice(uuid string) (string, error) { return findDevice(uuid) }

// privatePaths makes state_dir/onsite/{mnt,receive} (root's, 0700) and
// returns their paths.
func privatePaths(cfg *config.Config) (mnt, recv string, err error) {
	if err := os.MkdirAll(cfg.Settings.StateDir, 0o700); err != nil {
		return "", "", fmt.Errorf("cannot create state directory %s: %w", cfg.Settings.StateDir, err)
	}
	st, err := safefs.OpenTrustedDir(cfg.Settings.StateDir)
	if err != nil {
		return "", "", err
	}
	defer st.Close() //nolint:errcheck // a directory
	dir, err := safefs.MakePrivateDir(st, stateSubdir, false)
	if err != nil {
		return "", "", err
	}
	defer dir.Close() //nolint:errcheck // a directory
	for _, n := range []string{mountDirName, receiveDir} {
		f, err := safefs.MakePrivateDir(dir, n, false)
		if err != nil {
			return "", "", err
		}
		f.Close() //nolint:errcheck,gosec // a directory
	}
	return filepath.Join(dir.Name(), mountDirName), filepath.Join(dir.Name(), receiveDir), nil
}

// place is a target found: its root directory, opened and checked.
type place struct {
	root  *os.File
	where string // the root's path (path target) or the device (UUID target)
}

func absent(t *config.Target, format string, args ...any) error {
	return fmt.Errorf("target %s: %s: %w", t.Name, fmt.Sprintf(format, args...), ErrAbsent)
}

// openTarget finds the target and opens its root. It runs on the
// namespace's thread: a UUID target's top level is mounted at mnt there,
// never in the host. create makes a UUID target's subdir when missing.
func openTarget(t *config.Target, mnt string, create bool) (*place, error) {
	if t.UUID == "" {
		f, err := safefs.OpenTrustedDir(t.Path)
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) {
			return nil, absent(t, "%s does not exist (is its disk mounted?)", t.Path)
		}
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", t.Name, err)
		}
		var fs unix.Statfs_t
		if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil {
			f.Close() //nolint:errcheck,gosec // refused
			return nil, fmt.Errorf("target %s: %w", t.Name, err)
		}
		if fs.Type != unix.BTRFS_SUPER_MAGIC {
			f.Close() //nolint:errcheck,gosec // refused
			return nil, absent(t, "%s is not on btrfs (is its disk mounted?)", t.Path)
		}
		if err := checkRoot(f); err != nil {
			f.Close() //nolint:errcheck,gosec // refused
			return nil, fmt.Errorf("target %s: %w", t.Name, err)
		}
		return &place{root: f, where: t.Path}, nil
	}
	dev, err := findDevice(t.UUID)
	if err != nil {
		return nil, fmt.Errorf("target %s: cannot look for the disk with btrfs UUID %s: %w", t.Name, t.UUID, err)
	}
	if dev == "" {
		return nil, absent(t, "no disk with btrfs filesystem UUID %s is plugged in", t.UUID)
	}
	if err := unix.Mount(dev, mnt, "btrfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC|unix.MS_NOATIME, "subvolid=5"); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENODEV) {
			return nil, absent(t, "cannot mount %s: %v", dev, err)
		}
		return nil, fmt.Errorf("target %s: cannot mount %s (btrfs UUID %s) in the job's private namespace: %w", t.Name, dev, t.UUID, err)
	}
	top, err := safefs.OpenTrustedDir(mnt)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", t.Name, err)
	}
	defer top.Close() //nolint:errcheck // a directory
	fsid, err := btrfs.FilesystemUUIDOf(top)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", t.Name, err)
	}
	if fsid != t.UUID {
		return nil, fmt.Errorf("target %s: %s holds btrfs %s, not %s (a disk was swapped?)", t.Name, dev, fsid, t.UUID)
	}
	subdir := t.Subdir
	if subdir == "" {
		subdir = config.DefaultTargetSubdir
	}
	f := top
	owned := false
	for _, name := range strings.Split(filepath.Clean(subdir), "/") {
		if name == "" || name == "." {
			continue
		}
		if create {
			if err := unix.Mkdirat(int(f.Fd()), name, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
				return nil, fmt.Errorf("target %s: cannot make %s: %w", t.Name, filepath.Join(f.Name(), name), err)
			}
		}
		next, err := btrfs.OpenAt(f, name)
		if owned {
			f.Close() //nolint:errcheck,gosec // a directory
		}
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("target %s: %s has no %s yet (nothing was sent there): %w", t.Name, dev, subdir, os.ErrNotExist)
		}
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", t.Name, err)
		}
		f, owned = next, true
		if err := checkRoot(f); err != nil {
			f.Close() //nolint:errcheck,gosec // refused
			return nil, fmt.Errorf("target %s: %w", t.Name, err)
		}
	}
	if !owned {
		return nil, fmt.Errorf("target %s: subdir %q names the top level", t.Name, subdir)
	}
	return &place{root: f, where: dev}, nil
}

// checkRoot refuses a target directory another user could change: it must
// be root's and writable by nobody else.
func checkRoot(f *os.File) error {
	st, err := safefs.Stat(f)
	if err != nil {
		return fmt.Errorf("cannot check %s: %w", f.Name(), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s is not a directory", f.Name())
	}
	if int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		return fmt.Errorf("%s is owned by uid %d with mode %04o: a target directory must be root's and writable by no one else, since whoever may write it could swap the copies (chown root: %s; chmod go-w %s)",
			f.Name(), st.Uid, st.Mode&0o7777, f.Name(), f.Name())
	}
	return nil
}

// openPlanDir opens the plan's subvolume in the target's root (made,
// root's and 0700, when create is set and it is missing) after checking
// that it is a subvolume, root's, that nobody else may enter. A missing
// one without create is an error wrapping os.ErrNotExist.
func openPlanDir(root *os.File, plan string, create bool) (*os.File, error) {
	if !btrfs.ValidPlanName(plan) {
		return nil, fmt.Errorf("plan name %q is not valid", plan)
	}
	f, err := btrfs.OpenAt(root, plan)
	if errors.Is(err, unix.ENOENT) {
		if !create {
			return nil, fmt.Errorf("%s: %w", filepath.Join(root.Name(), plan), os.ErrNotExist)
		}
		var sv btrfs.Subvolume
		f, sv, err = btrfs.CreateSubvolumeAt(root, plan)
		_ = sv
		if err == nil {
			err = unix.Fchmod(int(f.Fd()), 0o700)
		}
	}
	if err != nil {
		if f != nil {
			f.Close() //nolint:errcheck,gosec // refused
		}
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return nil, fmt.Errorf("%s is not a directory (a link or a file is there); subvault makes it itself: remove it", filepath.Join(root.Name(), plan))
		}
		return nil, err
	}
	if _, err := btrfs.InfoOf(f); err != nil {
		f.Close() //nolint:errcheck,gosec // refused
		return nil, fmt.Errorf("%s is not the btrfs subvolume subvault makes for the plan's copies (%w): move it away", f.Name(), err)
	}
	st, err := safefs.Stat(f)
	if err == nil && (int(st.Uid) != os.Geteuid() || st.Mode&0o077 != 0) {
		err = fmt.Errorf("%s is owned by uid %d with mode %04o: subvault keeps the plan's copies root's and mode 0700 (chown root: %s; chmod 0700 %s)",
			f.Name(), st.Uid, st.Mode&0o7777, f.Name(), f.Name())
	}
	if err != nil {
		f.Close() //nolint:errcheck,gosec // refused
		return nil, err
	}
	return f, nil
}

// HostDir is where the target's root is reachable in the host's mount
// namespace: a path target's path when it is there on btrfs, a UUID
// target's subdir under a host mount of its filesystem; "" when it is not
// mounted in the host.
func HostDir(cfg *config.Config, target string) (string, error) {
	t, ok := cfg.Targets[target]
	if !ok {
		return "", fmt.Errorf("target %q is not configured", target)
	}
	if t.UUID == "" {
		var fs unix.Statfs_t
		if err := unix.Statfs(t.Path, &fs); err != nil || fs.Type != unix.BTRFS_SUPER_MAGIC {
			return "", nil //nolint:nilerr // not there: not mounted
		}
		return t.Path, nil
	}
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("btrfs"))
	if err != nil {
		return "", fmt.Errorf("cannot list the host's mounts: %w", err)
	}
	subdir := t.Subdir
	if subdir == "" {
		subdir = config.DefaultTargetSubdir
	}
	want := "/" + strings.Trim(filepath.Clean(subdir), "/")
	best := ""
	for _, m := range mounts {
		rel, ok := strings.CutPrefix(want, strings.TrimSuffix(m.Root, "/")+"/")
		if !ok {
			continue
		}
		f, err := os.OpenFile(m.Mountpoint, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		if err != nil {
			continue
		}
		fsid, err := btrfs.FilesystemUUIDOf(f)
		f.Close() //nolint:errcheck,gosec // read only
		if err != nil || fsid != t.UUID {
			continue
		}
		p := filepath.Join(m.Mountpoint, rel)
		if best == "" || len(p) < len(best) {
			best = p
		}
	}
	return best, nil
}

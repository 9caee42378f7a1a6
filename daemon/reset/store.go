package reset

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/safefs"
)

// On the filesystem's top level, in .subvault-reset (root's, 0700): the
// clean snapshots, the previous states, subvolumes.json and next.json.
const (
	resetDirName   = ".subvault-reset"
	subvolumesFile = "subvolumes.json"
	nextFile       = "next.json"
	newPrefix      = "subvault-reset-new@"
	maxMetaFile    = 1 << 20
)

// top is the top level of the root filesystem, mounted detached, and its
// .subvault-reset directory.
type top struct {
	root, dir *os.File
	device    string
}

func (t *top) Close() {
	if t.dir != nil {
		t.dir.Close() //nolint:errcheck,gosec // a directory
	}
	t.root.Close() //nolint:errcheck,gosec // a directory; the detached mount goes with it
}

// openTop mounts the top level of the btrfs filesystem on device (a
// detached mount, in no mount table) and opens .subvault-reset, making it
// when create is set. A missing one without create leaves dir nil.
func openTop(device string, create bool) (*top, error) {
	root, err := btrfs.MountTopLevel(device)
	if err != nil {
		return nil, err
	}
	t := &top{root: root, device: device}
	if create {
		t.dir, err = safefs.MakePrivateDir(root, resetDirName, false)
	} else {
		t.dir, err = safefs.OpenPrivateDir(root, resetDirName)
		if errors.Is(err, os.ErrNotExist) {
			return t, nil
		}
	}
	if err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// topOf opens the top level of the filesystem that holds the running
// system's path.
func topOf(path string, create bool) (*top, btrfs.Mount, error) {
	m, err := btrfs.FindMount(path)
	if err != nil {
		return nil, btrfs.Mount{}, err
	}
	t, err := openTop(m.Device, create)
	if err != nil {
		return nil, btrfs.Mount{}, err
	}
	return t, m, nil
}

// subvolumes is subvolumes.json: where each reset path's subvolume is,
// from the top level, as `subvault reset init` found it.
type subvolumes struct {
	Subvolumes map[string]string `json:"subvolumes"` // path -> e.g. "@" or "@home"
}

// next is next.json: the subvolumes whose next reset comes up in a
// previous state instead of clean (a rollback).
type next struct {
	Next []nextEntry `json:"next"`
}

type nextEntry struct {
	Path  string `json:"path"`
	State string `json:"state"`
}

// readMeta reads one of .subvault-reset's JSON files into v; a missing one
// leaves v as it is.
func readMeta(dir *os.File, name string, v any) error {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", filepath.Join(dir.Name(), name), err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(dir.Name(), name))
	defer f.Close() //nolint:errcheck // read only
	data, err := readRegular(f)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("cannot read %s: %w", f.Name(), err)
	}
	return nil
}

// readRegular reads a regular file root owns, at most maxMetaFile bytes.
func readRegular(f *os.File) ([]byte, error) {
	st, err := safefs.Stat(f)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", f.Name(), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != uint32(os.Geteuid()) {
		return nil, fmt.Errorf("cannot read %s: not a regular file of root's", f.Name())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxMetaFile+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", f.Name(), err)
	}
	if len(data) > maxMetaFile {
		return nil, fmt.Errorf("cannot read %s: larger than %d bytes", f.Name(), maxMetaFile)
	}
	return data, nil
}

// writeMeta writes name in dir atomically (a temporary file, fsync, rename).
func writeMeta(dir *os.File, name string, v any, mode uint32) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	tmp := "." + name + ".tmp"
	_ = unix.Unlinkat(int(dir.Fd()), tmp, 0)
	fd, err := unix.Openat(int(dir.Fd()), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", filepath.Join(dir.Name(), name), err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(int(dir.Fd()), tmp, int(dir.Fd()), name)
	}
	if err != nil {
		_ = unix.Unlinkat(int(dir.Fd()), tmp, 0)
		return fmt.Errorf("cannot write %s: %w", filepath.Join(dir.Name(), name), explain(err))
	}
	return nil
}

// snapshots lists the reset's snapshots in .subvault-reset.
func (t *top) snapshots() ([]btrfs.Snapshot, error) {
	if t.dir == nil {
		return nil, nil
	}
	all, err := btrfs.ListSnapshotsAt(t.dir)
	if err != nil {
		return nil, err
	}
	var out []btrfs.Snapshot
	for _, s := range all {
		if s.Plan == config.ResetPlan && s.JobID == 0 {
			out = append(out, s)
		}
	}
	return out, nil
}

// clean returns the clean snapshot of path the configuration names: the
// newest pinned one for "latest" (or ""), else the one of that name.
func clean(snaps []btrfs.Snapshot, sub *config.ResetSubvolume) (btrfs.Snapshot, bool) {
	var found btrfs.Snapshot
	ok := false
	for _, s := range snaps {
		if !s.Pinned || s.Subvolume != sub.Path {
			continue
		}
		if sub.Clean == "" || sub.Clean == "latest" {
			found, ok = s, true // sorted by time: the last is the newest
		} else if s.Name() == sub.Clean {
			return s, true
		}
	}
	return found, ok
}

// openBeneath opens the directory rel (from the top level) without
// following a link or leaving the filesystem.
func openBeneath(root *os.File, rel string) (*os.File, error) {
	rel = strings.Trim(rel, "/")
	if rel == "" {
		return dupDir(root)
	}
	return safefs.OpenBeneath(root, rel)
}

// escaped is the last field of a snapshot name of path: path escaped as
// systemd-escape --path does.
func escaped(path string) string {
	name := btrfs.Snapshot{Plan: config.ResetPlan, Subvolume: path}.Name()
	return name[strings.LastIndex(name, "@")+1:]
}

// resetSubvolume returns the configured subvolume of path.
func resetSubvolume(cfg *config.Config, path string) (*config.ResetSubvolume, error) {
	if cfg.Reset == nil {
		return nil, errors.New("the configuration has no reset section (docs/configuration.md#reset)")
	}
	for _, s := range cfg.Reset.Subvolumes {
		if s.Path == path {
			return s, nil
		}
	}
	var paths []string
	for _, s := range cfg.Reset.Subvolumes {
		paths = append(paths, s.Path)
	}
	return nil, fmt.Errorf("%s is not a subvolume of the reset section (it has %s)", path, strings.Join(paths, ", "))
}

package reset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/safefs"
)

// recordDir and recordFile: the record is <state_dir>/reset/last.json.
const (
	recordDir  = "reset"
	recordFile = "last.json"
)

// writeRecord writes the record into the root that boots: the reset
// subvolume that holds state_dir (after the swap its path from the top
// level is the new one's), through descriptors, following no link and
// making what is missing (state_dir and reset/ root's, 0700).
func writeRecord(t *top, cfg *config.Config, known subvolumes, boot bootArgs, rec Record) error {
	stateDir := cfg.Settings.StateDir
	if stateDir == "" {
		stateDir = "/var/lib/subvault"
	}
	var holder *config.ResetSubvolume
	var rel string
	for _, s := range cfg.Reset.Subvolumes {
		if r, ok := relUnder(stateDir, s.Path); ok && (holder == nil || len(s.Path) > len(holder.Path)) {
			holder, rel = s, r
		}
	}
	if holder == nil {
		return fmt.Errorf("state_dir %s is on none of the reset's subvolumes, which are all the initrd knows", stateDir)
	}
	fsRel := subvolumePath(holder.Path, known, boot)
	if fsRel == "" {
		return fmt.Errorf("where %s's subvolume is is not known (run subvault reset init %s)", holder.Path, holder.Path)
	}
	dir, err := openBeneath(t.root, fsRel)
	if err != nil {
		return err
	}
	parts := []string{recordDir}
	if rel != "." {
		parts = append(strings.Split(rel, "/"), recordDir)
	}
	for i, name := range parts {
		mode := uint32(0o755)
		if i >= len(parts)-2 {
			mode = 0o700 // state_dir itself and reset/
		}
		if err := unix.Mkdirat(int(dir.Fd()), name, mode); err != nil && !errors.Is(err, unix.EEXIST) {
			dir.Close() //nolint:errcheck,gosec // a directory
			return fmt.Errorf("cannot make %s: %w", filepath.Join(dir.Name(), name), err)
		}
		next, err := openDirNoFollow(dir, name)
		dir.Close() //nolint:errcheck,gosec // a directory
		if err != nil {
			return fmt.Errorf("cannot open %s: %w (it must be a directory, not a link)", filepath.Join(dir.Name(), name), err)
		}
		dir = next
	}
	defer dir.Close() //nolint:errcheck // a directory
	return writeMeta(dir, recordFile, rec, 0o644)
}

// ReadRecord reads the last reset's record from the state directory
// (<state_dir>/reset/last.json) of the running system; a missing one is an
// error wrapping os.ErrNotExist.
func ReadRecord(cfg *config.Config) (Record, error) {
	stateDir := cfg.Settings.StateDir
	if stateDir == "" {
		stateDir = "/var/lib/subvault"
	}
	dir, err := safefs.OpenTrustedDir(stateDir)
	if err != nil {
		return Record{}, fmt.Errorf("cannot read the last reset's record: %w", err)
	}
	defer dir.Close() //nolint:errcheck // a directory
	sub, err := safefs.OpenPrivateDir(dir, recordDir)
	if err != nil {
		return Record{}, fmt.Errorf("cannot read the last reset's record: %w", err)
	}
	defer sub.Close() //nolint:errcheck // a directory
	fd, err := unix.Openat(int(sub.Fd()), recordFile, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return Record{}, fmt.Errorf("cannot read the last reset's record: %s: %w", filepath.Join(sub.Name(), recordFile), os.ErrNotExist)
		}
		return Record{}, fmt.Errorf("cannot read the last reset's record: %w", err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(sub.Name(), recordFile))
	defer f.Close() //nolint:errcheck // read only
	data, err := readRegular(f)
	if err != nil {
		return Record{}, fmt.Errorf("cannot read the last reset's record: %w", err)
	}
	var rec Record
	if err := json.Unmarshal(data, &rec); err != nil {
		return Record{}, fmt.Errorf("cannot read the last reset's record %s: %w", f.Name(), err)
	}
	return rec, nil
}

// States lists the reset's snapshots of every configured subvolume: the
// clean ones (Pinned) and the previous states, oldest first. Each Path is
// "DEVICE:/.subvault-reset/NAME" (the top level of DEVICE): they are on no mounted path;
// OpenState opens one.
func States(ctx context.Context, cfg *config.Config) ([]btrfs.Snapshot, error) {
	if cfg.Reset == nil || len(cfg.Reset.Subvolumes) == 0 {
		return nil, nil
	}
	t, _, err := topOf(cfg.Reset.Subvolumes[0].Path, false)
	if err != nil {
		return nil, fmt.Errorf("cannot list the reset's snapshots: %w", err)
	}
	defer t.Close()
	snaps, err := t.snapshots()
	if err != nil {
		return nil, fmt.Errorf("cannot list the reset's snapshots: %w", err)
	}
	var out []btrfs.Snapshot
	for _, s := range snaps {
		if slices.ContainsFunc(cfg.Reset.Subvolumes, func(r *config.ResetSubvolume) bool { return r.Path == s.Subvolume }) {
			out = append(out, s)
		}
	}
	return out, nil
}

// OpenState opens the reset snapshot name (a clean one or a previous
// state), read-only as it is; the detached mount of the top level that
// holds it lives as long as the file stays open.
func OpenState(cfg *config.Config, name string) (*os.File, btrfs.Snapshot, error) {
	s, err := btrfs.ParseName(name)
	if err != nil || s.Plan != config.ResetPlan {
		return nil, btrfs.Snapshot{}, fmt.Errorf("%q is not a reset snapshot's name", name)
	}
	if _, err := resetSubvolume(cfg, s.Subvolume); err != nil {
		return nil, btrfs.Snapshot{}, err
	}
	t, _, err := topOf(s.Subvolume, false)
	if err != nil {
		return nil, btrfs.Snapshot{}, err
	}
	defer t.Close()
	if t.dir == nil {
		return nil, btrfs.Snapshot{}, fmt.Errorf("there is no reset snapshot %s: %s has no %s", name, t.device, resetDirName)
	}
	f, err := btrfs.OpenAt(t.dir, name)
	if err != nil {
		return nil, btrfs.Snapshot{}, fmt.Errorf("there is no reset snapshot %s: %w", name, err)
	}
	if _, err := btrfs.InfoOf(f); err != nil {
		f.Close() //nolint:errcheck,gosec // refused
		return nil, btrfs.Snapshot{}, err
	}
	s.Path = f.Name()
	return f, s, nil
}

// PrepareNext makes the next reset of path come up in state (one of its
// previous states or clean snapshots, States) instead of clean, with
// nothing copied over: a rollback of a reset subvolume.
func PrepareNext(ctx context.Context, cfg *config.Config, path, state string) error {
	fail := func(err error) error {
		return fmt.Errorf("cannot make the next boot come up in %s: %w", state, err)
	}
	if _, err := resetSubvolume(cfg, path); err != nil {
		return fail(err)
	}
	s, err := btrfs.ParseName(state)
	if err != nil || s.Plan != config.ResetPlan || s.Subvolume != path {
		return fail(fmt.Errorf("it is not a reset snapshot of %s (subvault snapshots reset lists them)", path))
	}
	t, _, err := topOf(path, false)
	if err != nil {
		return fail(err)
	}
	defer t.Close()
	if t.dir == nil {
		return fail(fmt.Errorf("%s has no %s: run subvault reset init %s first", t.device, resetDirName, path))
	}
	f, err := btrfs.OpenAt(t.dir, state)
	if err != nil {
		return fail(err)
	}
	_, err = btrfs.InfoOf(f)
	f.Close() //nolint:errcheck,gosec // a directory
	if err != nil {
		return fail(err)
	}
	var n next
	if err := readMeta(t.dir, nextFile, &n); err != nil {
		return fail(err)
	}
	n.Next = slices.DeleteFunc(n.Next, func(e nextEntry) bool { return e.Path == path })
	n.Next = append(n.Next, nextEntry{Path: path, State: state})
	if err := writeMeta(t.dir, nextFile, n, 0o600); err != nil {
		return fail(err)
	}
	return nil
}

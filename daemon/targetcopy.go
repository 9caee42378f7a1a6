package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/onsite"
	"github.com/subvault/subvault/daemon/safefs"
)

// A snapshot argument of clone and diff names a copy on an onsite target
// as TARGET:NAME ("usb:subvault@home@20261203T030000Z@42@%2Fhome"): a
// snapshot name has no ":", and a target's name is a plan-like name.
const targetCopySep = ":"

// splitTargetCopy splits a TARGET:NAME snapshot argument; ok is false
// for a plain snapshot name.
func splitTargetCopy(arg string) (target, name string, ok bool) {
	target, name, ok = strings.Cut(arg, targetCopySep)
	return target, name, ok && target != "" && name != ""
}

// targetCopy is a copy of a plan's snapshot on an onsite target, opened
// in the host's mount namespace.
type targetCopy struct {
	btrfs.Snapshot // Path: where it is in the host
	Open           *os.File
	Dir            string // the target's directory in the host
}

// openTargetCopy opens the copy called name of plan on target, where the
// host reaches it (a UUID target's disk must be mounted): the target's
// directory and the plan's in it must be root's and writable by nobody
// else, and the copy a read-only subvolume.
func openTargetCopy(cfg *config.Config, plan *config.Plan, target, name string) (targetCopy, error) {
	t, ok := cfg.Targets[target]
	if !ok {
		return targetCopy{}, fmt.Errorf("%w: no target %q (targets: %s)", ErrNoSuchSnapshot, target, strings.Join(cfg.TargetNames(), ", "))
	}
	s, err := btrfs.ParseName(name)
	if err != nil || s.Plan != plan.Name || s.Pinned {
		return targetCopy{}, fmt.Errorf("%w: %q is not a snapshot name of plan %s (subvault targets lists the copies)", ErrNoSuchSnapshot, name, plan.Name)
	}
	dir, err := onsite.HostDir(cfg, target)
	if err != nil {
		return targetCopy{}, fmt.Errorf("target %s: %w", target, err)
	}
	if dir == "" {
		if t.UUID != "" {
			return targetCopy{}, fmt.Errorf("%w: target %s (filesystem UUID %s) is not mounted on this system: mount the disk (mount UUID=%s /mnt), then try again",
				ErrInvalidArgument, target, t.UUID, t.UUID)
		}
		return targetCopy{}, fmt.Errorf("%w: target %s (%s) is not there: mount its filesystem, then try again", ErrInvalidArgument, target, t.Path)
	}
	root, err := safefs.OpenTrustedDir(dir)
	if err != nil {
		return targetCopy{}, fmt.Errorf("target %s: %w", target, err)
	}
	defer root.Close() //nolint:errcheck // a directory
	if err := notWritableByOthers(root); err != nil {
		return targetCopy{}, fmt.Errorf("target %s: %w", target, err)
	}
	planDir, err := safefs.OpenOwnedDir(root, plan.Name)
	if errors.Is(err, os.ErrNotExist) {
		return targetCopy{}, fmt.Errorf("%w: target %s has no copy of plan %s", ErrNoSuchSnapshot, target, plan.Name)
	}
	if err != nil {
		return targetCopy{}, fmt.Errorf("target %s: %w", target, err)
	}
	defer planDir.Close() //nolint:errcheck // a directory
	if err := notWritableByOthers(planDir); err != nil {
		return targetCopy{}, fmt.Errorf("target %s: %w", target, err)
	}
	f, err := btrfs.OpenAt(planDir, name)
	if errors.Is(err, os.ErrNotExist) {
		return targetCopy{}, fmt.Errorf("%w: target %s has no copy %s of plan %s", ErrNoSuchSnapshot, target, name, plan.Name)
	}
	if err != nil {
		return targetCopy{}, fmt.Errorf("target %s: %w", target, err)
	}
	info, err := btrfs.InfoOf(f)
	if err == nil && !info.ReadOnly {
		err = fmt.Errorf("%s is not read-only, so it is no copy subvault received", f.Name())
	}
	if err != nil {
		f.Close() //nolint:errcheck,gosec // refused
		return targetCopy{}, fmt.Errorf("target %s: %w", target, err)
	}
	s.Path = filepath.Join(dir, plan.Name, name)
	return targetCopy{Snapshot: s, Open: f, Dir: dir}, nil
}

// notWritableByOthers refuses a directory of a target that another user
// owns or may write: they could swap what the daemon opens in it.
func notWritableByOthers(f *os.File) error {
	st, err := safefs.Stat(f)
	if err != nil {
		return fmt.Errorf("cannot check %s: %w", f.Name(), err)
	}
	if st.Uid != 0 && st.Uid != uint32(os.Geteuid()) || st.Mode&0o022 != 0 {
		return fmt.Errorf("%s is owned by uid %d with mode %04o: another user may change it; subvault keeps it root's, writable by root alone (chown root: %s && chmod go-w %s)",
			f.Name(), st.Uid, st.Mode&0o7777, f.Name(), f.Name())
	}
	return nil
}

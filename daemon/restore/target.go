package restore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/safefs"
)

// Where a restore writes.
const (
	// IntoDirectory restores into a directory that does not exist or is
	// empty; the archive's paths are recreated below it.
	IntoDirectory = "directory"
	// IntoSubvolume creates a btrfs subvolume at the target and restores
	// into it: an archive of one path fills the subvolume with that path's
	// content, an archive of several recreates their paths below it.
	IntoSubvolume = "subvolume"
	// InPlace restores the archive's paths where they were (target "/"),
	// over what is there, after a pinned read-only snapshot of each.
	InPlace = "in-place"
)

// InPlaceTarget is the target of an in-place restore: the archive's paths
// are restored at their own places, as restic restore --target / would.
const InPlaceTarget = "/"

// CheckTarget checks where a restore of the plan would write, before it is
// queued and again when it starts: for a directory, an absolute clean path
// outside the plan's snapshot directories that does not exist (its parent
// does) or is an empty directory; for a subvolume, the same but it must not
// exist and its parent must be on btrfs; in place, "/". The path may hold
// no symbolic link.
func CheckTarget(plan *config.Plan, target, mode string) error {
	if mode == InPlace {
		if target != InPlaceTarget {
			return fmt.Errorf("an in-place restore writes the archive's paths where they were; its target is %q, not %q", InPlaceTarget, target)
		}
		return nil
	}
	if mode != IntoDirectory && mode != IntoSubvolume {
		return fmt.Errorf("unknown restore mode %q", mode)
	}
	if !filepath.IsAbs(target) || filepath.Clean(target) != target || strings.ContainsRune(target, 0) || target == "/" {
		return fmt.Errorf("target %q must be an absolute, clean path (no \"..\", no trailing \"/\"), not /", target)
	}
	for _, sv := range plan.Subvolumes {
		dir := planstore.SnapshotDir(plan, sv)
		if target == dir || strings.HasPrefix(target, dir+"/") {
			return fmt.Errorf("target %s is inside the plan's snapshot directory %s", target, dir)
		}
	}
	// The job opens the target's directory with no symbolic link on the
	// way (safefs.OpenDir): say so now rather than when it runs.
	parent := filepath.Dir(target)
	pdir, err := safefs.OpenDir(parent)
	switch {
	case errors.Is(err, safefs.ErrSymlink):
		return fmt.Errorf("target %s: %w", target, err)
	case err != nil:
		return fmt.Errorf("the directory of target %s does not exist", target)
	}
	pdir.Close() //nolint:errcheck,gosec // a directory
	fi, err := os.Lstat(target)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if mode == IntoSubvolume {
			// IsSubvolume says whether the parent is on btrfs at all.
			if _, err := btrfs.IsSubvolume(parent); err != nil {
				return fmt.Errorf("a restore into a new subvolume needs its directory on btrfs: %w", err)
			}
		}
		return nil
	case err != nil:
		return fmt.Errorf("target %s: %w", target, err)
	case mode == IntoSubvolume:
		return fmt.Errorf("target %s exists; a restore into a new subvolume creates it, so name a path that does not exist", target)
	case !fi.IsDir():
		return fmt.Errorf("target %s exists and is not a directory", target)
	}
	// Opened as a directory without following a link: a pipe or a link
	// swapped in since the Lstat is refused, never waited on.
	f, err := safefs.OpenDir(target)
	if err != nil {
		return fmt.Errorf("target %s: %w", target, err)
	}
	defer f.Close() //nolint:errcheck // read only
	if empty, err := safefs.IsEmpty(f); err != nil || !empty {
		return fmt.Errorf("target %s is not empty; restore into a new or empty directory (or, as root, in place with --in-place)", target)
	}
	return nil
}

package daemon

import (
	"fmt"
	"strings"

	"github.com/subvault/subvault/daemon/restore"
)

// RestoreOptions are the options of StartRestoreWith.
type RestoreOptions struct {
	// InPlace restores the archive's paths where they were (target "/"),
	// after a pinned read-only snapshot of each subvolume it covers. Only
	// for root: the api layer checks the caller.
	InPlace bool
	// Subvolume creates a btrfs subvolume at the target and restores into
	// it.
	Subvolume bool
	// Verify has restic read every restored file back; a difference fails
	// the job.
	Verify bool
}

func (o RestoreOptions) mode() (string, error) {
	switch {
	case o.InPlace && o.Subvolume:
		return "", fmt.Errorf("%w: in_place and subvolume exclude each other: an in-place restore writes over the plan's subvolumes, a subvolume restore makes a new one", ErrInvalidArgument)
	case o.InPlace:
		return restore.InPlace, nil
	case o.Subvolume:
		return restore.IntoSubvolume, nil
	}
	return restore.IntoDirectory, nil
}

// StartRestoreWith queues a restore of archive (an id or "latest": the
// plan's newest) of the plan: into target, a new or empty directory, by
// default; into a new btrfs subvolume at target with Subvolume; over the
// plan's subvolumes with InPlace (target "/"). The target is checked now
// and again when the job starts.
func (d *Daemon) StartRestoreWith(planName, archive, target string, include []string, opts RestoreOptions, trigger string, caller int64) (Job, error) {
	_, plan, err := d.plan(planName)
	if err != nil {
		return Job{}, err
	}
	if archive != "latest" && !isHexPrefix(archive) {
		return Job{}, fmt.Errorf("%w: archive %q is neither an archive id (hex) nor \"latest\"", ErrInvalidArgument, archive)
	}
	mode, err := opts.mode()
	if err != nil {
		return Job{}, err
	}
	if err := restore.CheckTarget(plan, target, mode); err != nil {
		return Job{}, fmt.Errorf("%w: %s", ErrInvalidArgument, err.Error())
	}
	for _, p := range include {
		if p == "" || strings.ContainsRune(p, 0) {
			return Job{}, fmt.Errorf("%w: an include pattern is empty or holds a NUL byte", ErrInvalidArgument)
		}
	}
	j, _, err := d.queue.Enqueue(KindRestore, planName, trigger, caller,
		Job{Archive: archive, Target: target, Include: include, RestoreMode: mode, Verify: opts.Verify})
	return j, err
}

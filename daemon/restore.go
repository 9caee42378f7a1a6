package daemon

import (
	"fmt"
	"strings"

	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/daemon/restore"
)

// RestoreRequest asks for a restore of Archive (an id or "latest": the
// plan's newest) of Plan into Target, the paths of the archive that match
// Include (all when empty). Trigger and Caller say who asks, as in a
// JobRequest.
type RestoreRequest struct {
	Plan    string
	Archive string
	Target  string
	Include []string
	Options RestoreOptions
	Trigger queue.Trigger
	Caller  int64
}

// RestoreOptions say how a restore writes; the zero value restores into a
// new or empty directory.
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

// StartRestore queues the restore r asks for: into Target, a new or empty
// directory, by default; into a new btrfs subvolume at Target with
// Subvolume; over the plan's subvolumes with InPlace (Target "/"). Target
// must be an absolute path outside the plan's snapshot directories; it is
// checked now and again when the job starts.
func (d *Daemon) StartRestore(r RestoreRequest) (queue.Job, error) {
	_, plan, err := d.plan(r.Plan)
	if err != nil {
		return queue.Job{}, err
	}
	if r.Archive != "latest" && !isHexPrefix(r.Archive) {
		return queue.Job{}, fmt.Errorf("%w: archive %q is neither an archive id (hex) nor \"latest\"", ErrInvalidArgument, r.Archive)
	}
	mode, err := r.Options.mode()
	if err != nil {
		return queue.Job{}, err
	}
	if err := restore.CheckTarget(plan, r.Target, mode); err != nil {
		return queue.Job{}, fmt.Errorf("%w: %s", ErrInvalidArgument, err.Error())
	}
	for _, p := range r.Include {
		if p == "" || strings.ContainsRune(p, 0) {
			return queue.Job{}, fmt.Errorf("%w: an include pattern is empty or holds a NUL byte", ErrInvalidArgument)
		}
	}
	j, _, err := d.queue.Enqueue(queue.Order{Kind: queue.KindRestore, Plan: r.Plan, Trigger: r.Trigger, Caller: r.Caller,
		Restore: queue.RestoreArgs{Archive: r.Archive, Target: r.Target, Include: r.Include, RestoreMode: mode, Verify: r.Options.Verify}})
	return j, err
}

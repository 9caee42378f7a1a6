// Package onsite is the onsite tier: a plan's read-only snapshots sent to a
// local btrfs target (a directory on a mounted btrfs, or a disk found by its
// filesystem UUID) with btrfs send and receive, incrementally from a parent
// both sides have, received safely under a temporary name, and kept there
// per the plan's target_retention. docs/configuration.md#targets has the
// rules a user sees.
package onsite

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
)

// ErrAbsent is wrapped by the error of a job or a listing whose target is not
// there (a UUID target whose disk is not plugged in, a path target whose
// filesystem is not mounted): the job ends skipped, not failed.
var ErrAbsent = errors.New("target is absent")

// Options are one send's inputs.
type Options struct {
	Config *config.Config // state_dir, the targets
	Plan   *config.Plan   // its subvolumes, snapshot_dir, target_retention, target_pin_for
	Target string         // a key of Config.Targets, one of Plan.SendTo
	JobID  uint32
	Log    *slog.Logger
	// Progress, if set, is told the stream's bytes so far (all subvolumes),
	// at most every second.
	Progress func(bytes uint64)
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Sent is what one subvolume's send did.
type Sent struct {
	Subvolume string // the plan's subvolume path
	Snapshot  string // the snapshot's name, the copy's name on the target
	Parent    string // the -p parent's name; "" for a full send
	Clones    []string
	// FullReason says why a send was full ("first send to the target",
	// "the pinned parent was dropped after 90 days", ...); "" when incremental.
	FullReason string
	Bytes      uint64 // the stream's length
}

// Result is what a send job did.
type Result struct {
	Target   string
	Where    string // the target directory as found (for a UUID target: the device)
	Sent     []Sent // one per subvolume that needed a send
	UpToDate bool   // the newest snapshots were on the target already
	Removed  []string
}

// Copy is one copy on a target.
type Copy struct {
	btrfs.Snapshot     // parsed from its name; Path is where it is reachable, if it is
	UUID, ReceivedUUID string
	ReadOnly           bool
}

// Send sends the plan's newest snapshot of each subvolume to the target.
func Send(ctx context.Context, o Options) (Result, error) {
	return Result{}, errors.New("onsite: not built yet")
}

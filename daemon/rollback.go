package daemon

import (
	"fmt"

	"github.com/subvault/subvault/daemon/rollback"
)

// RollbackRequest asks for a rollback of Subvolume, one of Plan's
// subvolumes, to Snapshot, the name of one of the plan's snapshots of it.
type RollbackRequest struct {
	Plan      string
	Snapshot  string
	Subvolume string
	Options   rollback.Options
}

// Rollback makes the plan's subvolume hold the content of one of its
// snapshots again, or, when it is mounted, prepares that for the next boot
// (rollback.Job.Run). Wrong arguments are refused before anything is
// looked at, and not logged as a failed rollback.
//
// Plan "reset" while the configuration has a reset section is the reset's
// (rollbackReset): the next boot comes up in the snapshot.
func (d *Daemon) Rollback(r RollbackRequest) (rollback.Result, error) {
	if d.IsReset(r.Plan) {
		return d.rollbackReset(r)
	}
	cfg, plan, err := d.plan(r.Plan)
	if err != nil {
		return rollback.Result{}, err
	}
	s, err := d.findSnapshot(plan, r.Snapshot)
	if err != nil {
		return rollback.Result{}, err
	}
	job := &rollback.Job{Config: cfg, Plan: plan, Snapshot: s, Subvolume: r.Subvolume, Options: r.Options, Logger: d.log}
	if err := job.Check(); err != nil {
		return rollback.Result{}, fmt.Errorf("%w: %s", ErrInvalidArgument, err.Error())
	}
	return job.Run()
}

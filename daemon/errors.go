package daemon

import "errors"

// Errors the api layer maps to the contract's error names. The others it
// maps are the queue's (queue.ErrNoSuchJob, queue.ErrAskedByOthers) and
// the read calls' bound (ErrBusy).
var (
	// ErrNoSuchPlan is returned for a plan the configuration does not
	// define.
	ErrNoSuchPlan      = errors.New("no such plan")
	ErrNoSuchSnapshot  = errors.New("no such snapshot")
	ErrNoSuchArchive   = errors.New("no such archive")
	ErrInvalidArgument = errors.New("invalid argument")
)

package scheduler

import (
	"context"
	"errors"
	"time"
)

// Clock is the scheduler's view of time. Tests swap in a fake; the daemon
// uses RealClock.
type Clock interface {
	// Now is the current wall-clock time.
	Now() time.Time
	// Wait returns nil once the wall clock has reached until, however it
	// got there (running, suspended, or set forward). It returns ctx.Err()
	// when ctx is done first, and ErrClockChanged when the wall clock was
	// set (or the machine resumed) before until: the caller reads Now again
	// and decides. Any other error means the clock cannot wait at all.
	Wait(ctx context.Context, until time.Time) error
}

// ErrClockChanged is returned by Clock.Wait when the wall clock jumped
// before the instant waited for; a backward jump can make an earlier
// firing due, so the scheduler recomputes.
var ErrClockChanged = errors.New("the wall clock was changed")

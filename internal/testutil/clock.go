package testutil

import (
	"context"
	"sync"
	"time"
)

// FakeClock is a wall clock a test sets, with the Now and Wait of the
// daemon's clock seam (scheduler.Clock): a Wait returns once the test has
// set the clock to its instant or later. Waiting reports each instant
// waited for on Waits, so that a test knows its code is idle.
type FakeClock struct {
	// Waits receives the instant of every Wait, as it starts; it is
	// dropped when nobody reads it and the buffer is full.
	Waits chan time.Time

	mu      sync.Mutex
	now     time.Time
	changed chan struct{} // closed and replaced on every Set
}

// NewFakeClock is a clock that reads now until the test sets it.
func NewFakeClock(now time.Time) *FakeClock {
	return &FakeClock{now: now, changed: make(chan struct{}), Waits: make(chan time.Time, 100)}
}

// Now is the time the test set last.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Wait returns nil once the clock reads until or later, or ctx.Err().
func (c *FakeClock) Wait(ctx context.Context, until time.Time) error {
	select {
	case c.Waits <- until:
	default:
	}
	for {
		c.mu.Lock()
		now, changed := c.now, c.changed
		c.mu.Unlock()
		if !now.Before(until) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// Set moves the clock to now (forward: time passed, or the machine slept).
func (c *FakeClock) Set(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = now
	close(c.changed)
	c.changed = make(chan struct{})
}

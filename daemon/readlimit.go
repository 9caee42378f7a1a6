package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrBusy refuses a read call (ListArchives, Diff: a call that runs restic
// or walks a tree for its caller) when its caller, or the callers together,
// already have as many running as they may.
var ErrBusy = errors.New("too many read calls at once")

// The bounds of read calls. Each runs at most one restic process at a time,
// so these bound restic processes too: a local user allowed a plan cannot
// start more than ReadCallsPerCaller of them however many calls it sends
// on however many connections, nor the users together more than
// ReadCallsInAll. Root's calls count against root's own ReadCallsPerCaller
// only, so that no user can keep root from its own.
const (
	ReadCallsPerCaller = 2
	ReadCallsInAll     = 4
	// readCallWait is how long a call beyond the bounds waits for a slot
	// before it is refused, less than a bus client's usual 25 s timeout.
	readCallWait = 15 * time.Second
	// readCallQueue is how many calls of one caller may wait at once; more
	// are refused at once, so that a flood holds nothing but its own calls.
	readCallQueue = 4
)

type (
	callerKey struct{}
	slotKey   struct{}
)

// WithCaller marks ctx as a call of uid: the daemon bounds the read calls
// of each caller by it. The api layer sets it from the bus's word; a call
// without one counts as the daemon's own (uid -1).
func WithCaller(ctx context.Context, uid uint32) context.Context {
	return context.WithValue(ctx, callerKey{}, int64(uid))
}

func callerOf(ctx context.Context) int64 {
	if uid, ok := ctx.Value(callerKey{}).(int64); ok {
		return uid
	}
	return -1
}

// readLimiter hands out the slots of read calls.
type readLimiter struct {
	perCaller, inAll, queue int
	wait                    time.Duration

	mu      sync.Mutex
	running map[int64]int
	waiting map[int64]int
	total   int           // running, root's aside
	freed   chan struct{} // closed, and replaced, when a slot is released
}

func newReadLimiter(perCaller, inAll, queue int, wait time.Duration) *readLimiter {
	return &readLimiter{perCaller: perCaller, inAll: inAll, queue: queue, wait: wait,
		running: map[int64]int{}, waiting: map[int64]int{}, freed: make(chan struct{})}
}

// acquire takes a slot for ctx's caller, waiting for one at most the
// limiter's wait and while ctx lasts, and returns the context that holds
// it and the function that gives it back. A context that holds a slot
// already (a Diff that lists archives) is returned as it is: one call
// takes one slot, and never waits for a second one it might never get.
func (l *readLimiter) acquire(ctx context.Context) (context.Context, func(), error) {
	if ctx.Value(slotKey{}) != nil {
		return ctx, func() {}, nil
	}
	uid := callerOf(ctx)
	var timeout <-chan time.Time
	waiting := false
	defer func() {
		if waiting {
			l.mu.Lock()
			if l.waiting[uid]--; l.waiting[uid] <= 0 {
				delete(l.waiting, uid)
			}
			l.mu.Unlock()
		}
	}()
	for {
		l.mu.Lock()
		mine, all := l.running[uid] < l.perCaller, uid == 0 || l.total < l.inAll
		if mine && all {
			l.running[uid]++
			if uid != 0 {
				l.total++
			}
			l.mu.Unlock()
			var once sync.Once
			return context.WithValue(ctx, slotKey{}, true), func() { once.Do(func() { l.release(uid) }) }, nil
		}
		if !waiting {
			if l.waiting[uid] >= l.queue {
				l.mu.Unlock()
				return nil, nil, l.busy(uid, mine)
			}
			l.waiting[uid]++
			waiting = true
			timeout = time.After(l.wait)
		}
		freed := l.freed
		l.mu.Unlock()
		select {
		case <-freed:
		case <-timeout:
			l.mu.Lock()
			mine = l.running[uid] < l.perCaller
			l.mu.Unlock()
			return nil, nil, l.busy(uid, mine)
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

func (l *readLimiter) release(uid int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running[uid]--; l.running[uid] <= 0 {
		delete(l.running, uid)
	}
	if uid != 0 {
		l.total--
	}
	close(l.freed)
	l.freed = make(chan struct{})
}

// busy says why a call of uid gets no slot: its own calls (mine is false)
// or everyone's.
func (l *readLimiter) busy(uid int64, mine bool) error {
	if !mine {
		return fmt.Errorf("%w: uid %d already has %d calls that read a repository or walk a subvolume running (ListArchives, Diff), the most one user may; try again when they have ended", ErrBusy, uid, l.perCaller)
	}
	return fmt.Errorf("%w: %d calls that read a repository or walk a subvolume are running for users (ListArchives, Diff), the most the daemon runs at once; try again shortly", ErrBusy, l.inAll)
}

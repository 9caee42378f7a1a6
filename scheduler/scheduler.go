package scheduler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/subvault/subvault/api/contract"
)

// Triggers the scheduler passes to EnqueueFunc.
const (
	TriggerSchedule = contract.TriggerSchedule
	TriggerCatchUp  = contract.TriggerCatchUp
)

// Entry is one scheduled kind of job of one plan.
type Entry struct {
	Plan string
	Kind string // "backup", "prune" or "check"
	// Spec is parsed by config.CronParser; nil means manual only, and the
	// entry is ignored.
	Spec cron.Schedule
	// CatchUp runs a firing missed while the daemon was down once, at start.
	CatchUp bool
}

// EnqueueFunc hands a firing to the daemon's job queue. trigger is
// TriggerSchedule or TriggerCatchUp. An error (most often: the plan's job of
// that kind still runs) skips this firing; the scheduler logs it and goes on
// with the next one. It is called from Run, never under the scheduler's
// lock, and must only queue the job: while it runs, nothing else fires.
type EnqueueFunc func(plan, kind, trigger string) error

// Option adjusts a Scheduler made by New.
type Option func(*Scheduler)

// WithLocation sets the time zone the cron specs are read in (default
// time.Local, which is what the daemon wants: config refuses CRON_TZ).
func WithLocation(loc *time.Location) Option {
	return func(s *Scheduler) { s.loc = loc }
}

// WithMoved sets a function Run calls after a pass that moved an entry's
// next firing (a firing, or the wall clock set back), so that whoever
// shows the next run hears of it; Set's moves are its caller's to tell.
// It is called from Run, never under the scheduler's lock.
func WithMoved(moved func()) Option {
	return func(s *Scheduler) { s.moved = moved }
}

// Scheduler enqueues each entry's firings. All methods are safe for
// concurrent use; Run runs at most once at a time.
type Scheduler struct {
	clock   Clock
	enqueue EnqueueFunc
	log     *slog.Logger
	loc     *time.Location
	wake    chan struct{} // Set tells Run to recompute
	moved   func()        // nil, or WithMoved's

	mu      sync.Mutex
	entries map[entryKey]*entry // nil before the first Set
}

type entryKey struct{ plan, kind string }

type entry struct {
	Entry
	next     time.Time // zero: the spec never fires again
	lastFire time.Time // the scheduled instant of the latest firing
	catchUp  bool      // a missed run is to be enqueued by Run
}

type firing struct {
	plan, kind, trigger string
	next                time.Time
}

// New makes a scheduler that waits on clock and hands firings to enqueue.
// A nil clock is RealClock(); a nil log is slog.Default().
func New(clock Clock, enqueue EnqueueFunc, log *slog.Logger, opts ...Option) *Scheduler {
	s := &Scheduler{clock: clock, enqueue: enqueue, log: log, loc: time.Local, wake: make(chan struct{}, 1)}
	for _, o := range opts {
		o(s)
	}
	if s.clock == nil {
		s.clock = RealClock()
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.loc == nil {
		s.loc = time.Local
	}
	return s
}

// Set replaces the entries, at start and on every config reload. An entry
// whose spec is unchanged keeps its next firing; a changed spec is
// recomputed from now; a removed entry stops. A new entry (every entry of
// the first Set) with CatchUp whose previous firing after lastRun is already
// past is enqueued once by Run with TriggerCatchUp. lastRun may be nil; a
// zero last run means none is known, and nothing is caught up.
func (s *Scheduler) Set(entries []Entry, lastRun func(plan, kind string) time.Time) {
	now := s.now()
	s.mu.Lock()
	updated := make(map[entryKey]*entry, len(entries))
	for _, e := range entries {
		if e.Spec == nil {
			continue
		}
		k := entryKey{e.Plan, e.Kind}
		if _, dup := updated[k]; dup {
			s.log.Warn("scheduler: a second schedule for the same plan and kind is ignored", "plan", e.Plan, "kind", e.Kind)
			continue
		}
		old := s.entries[k]
		switch {
		case old != nil && reflect.DeepEqual(old.Spec, e.Spec):
			old.Entry = e
			updated[k] = old
		case old != nil:
			ne := &entry{Entry: e, lastFire: old.lastFire, catchUp: old.catchUp}
			ne.next = s.nextAfter(e.Spec, now, ne.lastFire)
			updated[k] = ne
			s.log.Info("schedule changed", "plan", e.Plan, "kind", e.Kind, "next", ne.next)
		default:
			ne := &entry{Entry: e}
			ne.next = s.nextAfter(e.Spec, now, time.Time{})
			if e.CatchUp && lastRun != nil {
				if last := lastRun(e.Plan, e.Kind); !last.IsZero() {
					missed := e.Spec.Next(last.In(s.loc))
					ne.catchUp = !missed.IsZero() && !missed.After(now)
					if ne.catchUp {
						s.log.Info("a scheduled run was missed; catching up", "plan", e.Plan, "kind", e.Kind, "last_run", last, "missed", missed)
					}
				}
			}
			updated[k] = ne
			s.log.Debug("scheduled", "plan", e.Plan, "kind", e.Kind, "next", ne.next)
		}
	}
	for k := range s.entries {
		if _, kept := updated[k]; !kept {
			s.log.Info("schedule removed", "plan", k.plan, "kind", k.kind)
		}
	}
	s.entries = updated
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Next is the next firing of plan's kind, zero when it is manual or unknown.
func (s *Scheduler) Next(plan, kind string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[entryKey{plan, kind}]; e != nil {
		return e.next
	}
	return time.Time{}
}

// NextAny is the soonest firing of all entries (ties by plan, then kind);
// at is zero when nothing is scheduled.
func (s *Scheduler) NextAny() (plan, kind string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, e := range s.entries {
		if e.next.IsZero() {
			continue
		}
		if at.IsZero() || e.next.Before(at) || e.next.Equal(at) && (k.plan < plan || k.plan == plan && k.kind < kind) {
			plan, kind, at = k.plan, k.kind, e.next
		}
	}
	return plan, kind, at
}

// Run enqueues firings until ctx is done, then returns nil. It returns an
// error only when the clock cannot wait.
func (s *Scheduler) Run(ctx context.Context) error {
	clockChanged := false
	for {
		// Everything Set did before this point is seen below.
		select {
		case <-s.wake:
		default:
		}
		now := s.now()
		firings, moved := s.due(now, clockChanged)
		for _, f := range firings {
			s.fire(f)
		}
		if moved && s.moved != nil {
			s.moved()
		}
		err := s.wait(ctx)
		if ctx.Err() != nil {
			return nil
		}
		clockChanged = errors.Is(err, ErrClockChanged)
		switch {
		case err == nil, clockChanged, errors.Is(err, context.Canceled):
		default:
			return fmt.Errorf("cannot wait for the next scheduled run: %w", err)
		}
	}
}

// due collects the firings whose time has come and computes each one's
// next time from now; moved says whether any entry's next time changed. A
// jump over several firings yields one.
func (s *Scheduler) due(now time.Time, clockChanged bool) (out []firing, moved bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, e := range s.entries {
		switch {
		case !e.next.IsZero() && !e.next.After(now):
			e.lastFire = e.next
			e.next = s.nextAfter(e.Spec, now, e.lastFire)
			out = append(out, firing{k.plan, k.kind, TriggerSchedule, e.next})
			moved = true
		case e.catchUp:
			out = append(out, firing{k.plan, k.kind, TriggerCatchUp, e.next})
		case clockChanged:
			// Set back, the clock may have an earlier firing ahead of it
			// than the one computed before the jump.
			if n := s.nextAfter(e.Spec, now, e.lastFire); !n.IsZero() && (e.next.IsZero() || n.Before(e.next)) {
				s.log.Info("the wall clock was set back; next run moved", "plan", k.plan, "kind", k.kind, "next", n)
				e.next = n
				moved = true
			}
		}
		e.catchUp = false
	}
	slices.SortFunc(out, func(a, b firing) int {
		return cmp.Or(cmp.Compare(a.plan, b.plan), cmp.Compare(a.kind, b.kind))
	})
	return out, moved
}

func (s *Scheduler) fire(f firing) {
	log := s.log.With("plan", f.plan, "kind", f.kind, "trigger", f.trigger)
	if err := s.enqueue(f.plan, f.kind, f.trigger); err != nil {
		log.Warn("scheduled run skipped", "reason", err, "next", f.next)
		return
	}
	log.Info("scheduled run enqueued", "next", f.next)
}

// wait waits for the soonest firing, or for Set to change the entries.
func (s *Scheduler) wait(ctx context.Context) error {
	_, _, until := s.NextAny()
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-s.wake:
			cancel()
		case <-waitCtx.Done():
		}
	}()
	// Joined before returning: a wake taken by this goroutine belongs to a
	// Set that the caller's next pass sees.
	defer func() { cancel(); <-done }()
	if until.IsZero() {
		<-waitCtx.Done()
		return waitCtx.Err()
	}
	return s.clock.Wait(waitCtx, until)
}

func (s *Scheduler) now() time.Time { return s.clock.Now().In(s.loc) }

// nextAfter is spec's first firing after from, zero when there is none. A
// cron spec fires at one wall-clock reading at most once: when the clocks
// fall back (or are set back), 02:30 happens twice, and only the first one
// counts, as in Vixie cron. A reading that does not exist (02:30 on the
// spring-forward day) is skipped by the cron library: no firing that day.
func (s *Scheduler) nextAfter(spec cron.Schedule, from, lastFire time.Time) time.Time {
	_, constant := spec.(cron.ConstantDelaySchedule)
	t := from.In(s.loc)
	for range 4 {
		n := spec.Next(t)
		switch {
		case n.IsZero():
			return n
		case !n.After(t):
			// Never seen from robfig/cron; guards the loop in Run.
			t = t.Add(time.Second)
		case !constant && sameReading(n, lastFire.In(s.loc)):
			t = n
		default:
			return n.In(s.loc)
		}
	}
	return time.Time{}
}

// sameReading says whether a and b show the same date and time on a wall
// clock of their zone, offsets aside.
func sameReading(a, b time.Time) bool {
	if b.IsZero() {
		return false
	}
	ay, am, ad := a.Date()
	by, bm, bd := b.Date()
	ah, amin, as := a.Clock()
	bh, bmin, bs := b.Clock()
	return ay == by && am == bm && ad == bd && ah == bh && amin == bmin && as == bs
}

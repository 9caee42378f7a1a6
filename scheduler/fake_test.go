package scheduler_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/subvault/subvault/scheduler"
)

// parser is config.CronParser (the scheduler may not import daemon/config).
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

func spec(t *testing.T, s string) cron.Schedule {
	t.Helper()
	sched, err := parser.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return sched
}

// fakeClock is a wall clock the test sets. Every Wait reports its instant
// on waits, so a test knows when Run has done its pass and is idle.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	jumps   int           // times the clock was set back (ErrClockChanged)
	changed chan struct{} // closed and replaced on every change
	waits   chan time.Time
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now, changed: make(chan struct{}), waits: make(chan time.Time, 100)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Wait(ctx context.Context, until time.Time) error {
	c.mu.Lock()
	jumps := c.jumps // before the test hears of this Wait and may set the clock back
	c.mu.Unlock()
	c.waits <- until
	for {
		c.mu.Lock()
		now, changed, jumped := c.now, c.changed, c.jumps != jumps
		c.mu.Unlock()
		switch {
		case !now.Before(until):
			return nil
		case jumped:
			return scheduler.ErrClockChanged
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// set moves the clock to now; back tells a waiter the clock was set back.
func (c *fakeClock) set(now time.Time, back bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = now
	if back {
		c.jumps++
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

type run struct {
	plan, kind, trigger string
	at                  time.Time
}

func (r run) String() string {
	return fmt.Sprintf("%s/%s %s at %s", r.plan, r.kind, r.trigger, r.at.Format("2006-01-02 15:04 MST"))
}

// harness runs a Scheduler on a fake clock and records what it enqueues.
type harness struct {
	t     *testing.T
	clock *fakeClock
	s     *scheduler.Scheduler
	until time.Time // what Run waits for now

	mu   sync.Mutex
	runs []run
	busy map[string]error // plan -> the error enqueue returns
	logs bytes.Buffer

	cancel context.CancelFunc
	done   chan error
}

func newHarness(t *testing.T, start time.Time, opts ...scheduler.Option) *harness {
	t.Helper()
	h := &harness{t: t, clock: newFakeClock(start), busy: map[string]error{}}
	log := slog.New(slog.NewTextHandler(lockedWriter{&h.mu, &h.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.s = scheduler.New(h.clock, h.enqueue, log, opts...)
	return h
}

type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (h *harness) enqueue(plan, kind, trigger string) error {
	now := h.clock.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.busy[plan]; err != nil {
		return err
	}
	h.runs = append(h.runs, run{plan, kind, trigger, now})
	return nil
}

// start runs Run and waits until it is idle.
func (h *harness) start() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.s.Run(ctx) }()
	h.t.Cleanup(h.stop)
	h.idle()
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		h.t.Error("Run did not return after cancel")
	}
	h.cancel = nil
}

// idle waits for Run to wait again, and returns what it waits for.
func (h *harness) idle() time.Time {
	h.t.Helper()
	select {
	case h.until = <-h.clock.waits:
		return h.until
	case <-time.After(5 * time.Second):
		h.t.Fatal("Run did not come back to wait")
		return time.Time{}
	}
}

// set moves the clock and, when that reaches what Run waits for, waits for
// Run's pass. The clock only moves forward, as if time passed or the machine
// was suspended; setBack is the other way.
func (h *harness) set(now time.Time) {
	h.t.Helper()
	h.clock.set(now, false)
	if !now.Before(h.until) {
		h.idle()
	}
}

func (h *harness) setBack(now time.Time) {
	h.t.Helper()
	h.clock.set(now, true)
	h.idle()
}

// reload calls Set while Run runs and waits for Run's next pass.
func (h *harness) reload(entries []scheduler.Entry, lastRun func(plan, kind string) time.Time) {
	h.t.Helper()
	h.s.Set(entries, lastRun)
	if h.cancel != nil {
		h.idle()
	}
}

// taken returns the runs enqueued since the last call.
func (h *harness) taken() []run {
	h.mu.Lock()
	defer h.mu.Unlock()
	runs := h.runs
	h.runs = nil
	return runs
}

func (h *harness) log() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.logs.String()
}

// expect checks the runs enqueued since the last call.
func (h *harness) expect(want ...run) {
	h.t.Helper()
	got := h.taken()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		h.t.Errorf("enqueued %v\n                want %v", got, want)
	}
}

func lastRunAt(at time.Time) func(plan, kind string) time.Time {
	return func(string, string) time.Time { return at }
}

var errBusy = errors.New("backup of plan home is still running (job 7)")

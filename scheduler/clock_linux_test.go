package scheduler_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/subvault/subvault/scheduler"
)

func TestRealClockWaitsUntilTheInstant(t *testing.T) {
	t.Parallel()
	clock := scheduler.RealClock()
	now := clock.Now()
	until := now.Add(200 * time.Millisecond)
	if err := clock.Wait(context.Background(), until); err != nil {
		t.Fatalf("Wait = %v", err)
	}
	after := clock.Now()
	if after.Before(until) {
		t.Errorf("Wait returned at %v, before %v", after, until)
	}
	// Generous: a loaded CI machine schedules late, never early.
	if late := after.Sub(until); late > time.Second {
		t.Errorf("Wait returned %v late", late)
	}
}

func TestRealClockNowIsWallClockOnly(t *testing.T) {
	t.Parallel()
	// With a monotonic reading, Sub and Before would ignore suspend.
	if now := scheduler.RealClock().Now(); now != now.Round(0) {
		t.Errorf("Now() = %v carries a monotonic reading", now)
	}
}

// A wait for an instant past returns at once; one that blocked instead
// would run into the context's deadline. How long "at once" took is
// logged, not bounded: a shared machine decides that.
func TestRealClockPastInstant(t *testing.T) {
	t.Parallel()
	clock := scheduler.RealClock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	begin := time.Now()
	if err := clock.Wait(ctx, clock.Now().Add(-time.Hour)); err != nil {
		t.Errorf("Wait for the past = %v, want nil", err)
	}
	if err := clock.Wait(ctx, time.Time{}); err != nil {
		t.Errorf("Wait for the zero time = %v, want nil", err)
	}
	t.Logf("two waits for the past took %v", time.Since(begin))
}

func TestRealClockCancel(t *testing.T) {
	t.Parallel()
	clock := scheduler.RealClock()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	begin := time.Now()
	err := clock.Wait(ctx, clock.Now().Add(time.Hour))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Wait after cancel = %v, want context.Canceled", err)
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("Wait returned %v after being canceled", d)
	}

	// Canceled before the call.
	if err := clock.Wait(ctx, clock.Now().Add(time.Hour)); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with a done context = %v, want context.Canceled", err)
	}
}

func TestRealClockManyWaitsCloseTheirTimers(t *testing.T) {
	t.Parallel()
	clock := scheduler.RealClock()
	for range 2000 { // more than a default RLIMIT_NOFILE of 1024
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = clock.Wait(ctx, clock.Now().Add(time.Hour))
		ctx, cancel = context.WithTimeout(context.Background(), time.Microsecond)
		if err := clock.Wait(ctx, clock.Now().Add(time.Hour)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait = %v, want context.DeadlineExceeded", err)
		}
		cancel()
	}
}

func TestRunOnRealClock(t *testing.T) {
	t.Parallel()
	runs := make(chan string, 10)
	s := scheduler.New(scheduler.RealClock(), func(plan, kind, trigger string) error {
		runs <- plan + "/" + kind + " " + trigger
		return nil
	}, slog.New(slog.DiscardHandler))
	s.Set([]scheduler.Entry{{Plan: "home", Kind: "backup", Spec: cron.Every(time.Second)}}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	select {
	case got := <-runs:
		if got != "home/backup schedule" {
			t.Errorf("enqueued %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Error("nothing enqueued within 5s of an @every 1s schedule")
	}
	// A reload wakes Run, which then waits for the new schedule.
	s.Set([]scheduler.Entry{{Plan: "home", Kind: "backup", Spec: cron.Every(time.Hour)}}, nil)
	if next := s.Next("home", "backup"); time.Until(next) < 59*time.Minute {
		t.Errorf("Next after the reload = %v", next)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(time.Second):
		t.Error("Run did not return within 1s of cancel")
	}
}

package scheduler_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin without the system's zoneinfo

	"github.com/subvault/subvault/scheduler"
)

// A Wednesday noon, in UTC unless a test says otherwise.
var start = time.Date(2026, 11, 18, 12, 0, 0, 0, time.UTC)

func utc(t *testing.T) *harness {
	t.Helper()
	return newHarness(t, start, scheduler.WithLocation(time.UTC))
}

func TestDailyFiresOncePerDay(t *testing.T) {
	t.Parallel()
	h := utc(t)
	h.s.Set([]scheduler.Entry{{Plan: "home", Kind: "backup", Spec: spec(t, "0 3 * * *")}}, nil)
	h.start()
	for day := range 10 {
		want := time.Date(2026, 11, 19+day, 3, 0, 0, 0, time.UTC)
		if !h.until.Equal(want) {
			t.Fatalf("day %d: Run waits for %v, want %v", day, h.until, want)
		}
		h.set(want)
		h.expect(run{"home", "backup", scheduler.TriggerSchedule, want})
		h.set(want.Add(9 * time.Hour)) // the rest of the day: nothing due
		h.expect()
	}
}

func TestCatchUp(t *testing.T) {
	t.Parallel()
	daily := spec(t, "0 3 * * *")
	for _, tc := range []struct {
		name    string
		catchUp bool
		lastRun func(plan, kind string) time.Time
		want    bool
	}{
		{"missed yesterday's run", true, lastRunAt(start.Add(-33 * time.Hour)), true},
		{"missed a week", true, lastRunAt(start.AddDate(0, 0, -7)), true},
		{"ran today at 03:00", true, lastRunAt(time.Date(2026, 11, 18, 3, 0, 0, 0, time.UTC)), false},
		{"catch_up off", false, lastRunAt(start.AddDate(0, 0, -7)), false},
		{"never ran", true, lastRunAt(time.Time{}), false},
		{"no last-run function", true, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := utc(t)
			entries := []scheduler.Entry{{Plan: "home", Kind: "backup", Spec: daily, CatchUp: tc.catchUp}}
			h.s.Set(entries, tc.lastRun)
			h.start()
			if tc.want {
				h.expect(run{"home", "backup", scheduler.TriggerCatchUp, start})
			} else {
				h.expect()
			}
			// A reload before the caught-up job has run (the last run is
			// still the old one) catches nothing up again.
			h.set(start.Add(time.Minute))
			h.reload(entries, tc.lastRun)
			h.expect()
			next := time.Date(2026, 11, 19, 3, 0, 0, 0, time.UTC)
			if got := h.s.Next("home", "backup"); !got.Equal(next) {
				t.Errorf("Next = %v, want %v", got, next)
			}
			h.set(next)
			h.expect(run{"home", "backup", scheduler.TriggerSchedule, next})
		})
	}
}

func TestCatchUpOfAnEntryAddedOnReload(t *testing.T) {
	t.Parallel()
	h := utc(t)
	lastWeek := lastRunAt(start.AddDate(0, 0, -7))
	home := scheduler.Entry{Plan: "home", Kind: "backup", Spec: spec(t, "0 3 * * *"), CatchUp: true}
	h.s.Set([]scheduler.Entry{home}, lastWeek)
	h.start()
	h.expect(run{"home", "backup", scheduler.TriggerCatchUp, start})

	h.set(start.Add(time.Hour))
	varLog := scheduler.Entry{Plan: "var", Kind: "backup", Spec: spec(t, "0 4 * * *"), CatchUp: true}
	h.reload([]scheduler.Entry{home, varLog}, lastWeek)
	h.expect(run{"var", "backup", scheduler.TriggerCatchUp, start.Add(time.Hour)})
}

func TestSuspendFiresOnceRightAfterWake(t *testing.T) {
	t.Parallel()
	h := utc(t)
	h.s.Set([]scheduler.Entry{
		{Plan: "home", Kind: "backup", Spec: spec(t, "0 3 * * *")},
		{Plan: "home", Kind: "check", Spec: spec(t, "@hourly")},
	}, nil)
	h.start()

	// Asleep from noon, the clock jumps 30 hours: over 03:00 once and 30
	// full hours. Each fires once, at the wake-up.
	wake := start.Add(30 * time.Hour)
	h.set(wake)
	h.expect(
		run{"home", "backup", scheduler.TriggerSchedule, wake},
		run{"home", "check", scheduler.TriggerSchedule, wake},
	)
	if got, want := h.s.Next("home", "backup"), time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("Next backup after the wake = %v, want %v", got, want)
	}
	if got, want := h.s.Next("home", "check"), wake.Add(time.Hour); !got.Equal(want) {
		t.Errorf("Next check after the wake = %v, want %v", got, want)
	}

	// Three nights asleep: still one backup.
	wake = wake.Add(3*24*time.Hour + 20*time.Minute)
	h.set(wake)
	h.expect(
		run{"home", "backup", scheduler.TriggerSchedule, wake},
		run{"home", "check", scheduler.TriggerSchedule, wake},
	)
}

func TestBusyFiringIsSkippedAndLogged(t *testing.T) {
	t.Parallel()
	h := utc(t)
	h.s.Set([]scheduler.Entry{{Plan: "home", Kind: "backup", Spec: spec(t, "0 3 * * *")}}, nil)
	h.start()

	h.mu.Lock()
	h.busy["home"] = errBusy
	h.mu.Unlock()
	first := time.Date(2026, 11, 19, 3, 0, 0, 0, time.UTC)
	h.set(first)
	h.expect()
	log := h.log()
	for _, want := range []string{"scheduled run skipped", "plan=home", "kind=backup", "trigger=schedule", errBusy.Error()} {
		if !strings.Contains(log, want) {
			t.Errorf("log has no %q:\n%s", want, log)
		}
	}
	if got, want := h.s.Next("home", "backup"), first.AddDate(0, 0, 1); !got.Equal(want) {
		t.Errorf("Next after a skipped firing = %v, want %v", got, want)
	}

	h.mu.Lock()
	delete(h.busy, "home")
	h.mu.Unlock()
	h.set(first.AddDate(0, 0, 1))
	h.expect(run{"home", "backup", scheduler.TriggerSchedule, first.AddDate(0, 0, 1)})
}

func TestSetWhileRunning(t *testing.T) {
	t.Parallel()
	h := utc(t)
	h.s.Set([]scheduler.Entry{{Plan: "home", Kind: "backup", Spec: spec(t, "@every 90m")}}, nil)
	h.start()
	if want := start.Add(90 * time.Minute); !h.until.Equal(want) {
		t.Fatalf("Run waits for %v, want %v", h.until, want)
	}

	// Unchanged (parsed anew, as a reload does): keeps its next time, which
	// recomputing from 12:40 would have moved to 14:10. Added: scheduled.
	// Manual (nil spec): ignored.
	h.set(start.Add(40 * time.Minute))
	h.reload([]scheduler.Entry{
		{Plan: "home", Kind: "backup", Spec: spec(t, "@every 90m")},
		{Plan: "var", Kind: "backup", Spec: spec(t, "0 3 * * *")},
		{Plan: "var", Kind: "prune"},
	}, nil)
	if got, want := h.s.Next("home", "backup"), start.Add(90*time.Minute); !got.Equal(want) {
		t.Errorf("unchanged entry: Next = %v, want %v", got, want)
	}
	if got, want := h.s.Next("var", "backup"), time.Date(2026, 11, 19, 3, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("added entry: Next = %v, want %v", got, want)
	}
	if got := h.s.Next("var", "prune"); !got.IsZero() {
		t.Errorf("manual entry: Next = %v, want zero", got)
	}
	h.set(start.Add(90 * time.Minute))
	h.expect(run{"home", "backup", scheduler.TriggerSchedule, start.Add(90 * time.Minute)})

	// Changed: recomputed from now. Removed: stops.
	now := start.Add(2 * time.Hour)
	h.set(now)
	h.reload([]scheduler.Entry{{Plan: "home", Kind: "backup", Spec: spec(t, "@every 2h")}}, nil)
	if got, want := h.s.Next("home", "backup"), now.Add(2*time.Hour); !got.Equal(want) {
		t.Errorf("changed entry: Next = %v, want %v", got, want)
	}
	if got := h.s.Next("var", "backup"); !got.IsZero() {
		t.Errorf("removed entry: Next = %v, want zero", got)
	}
	if !h.until.Equal(now.Add(2 * time.Hour)) {
		t.Errorf("Run waits for %v, want %v", h.until, now.Add(2*time.Hour))
	}
	h.set(now.Add(2 * time.Hour))
	h.expect(run{"home", "backup", scheduler.TriggerSchedule, now.Add(2 * time.Hour)})
	// At var's old time only home (due since 18:00) runs.
	varTime := time.Date(2026, 11, 19, 3, 0, 0, 0, time.UTC)
	h.set(varTime)
	h.expect(run{"home", "backup", scheduler.TriggerSchedule, varTime})
	if !strings.Contains(h.log(), "schedule removed") {
		t.Errorf("the removal is not logged:\n%s", h.log())
	}

	// Everything removed: Run waits for the next Set, not for a time.
	h.s.Set(nil, nil)
	if _, _, at := h.s.NextAny(); !at.IsZero() {
		t.Errorf("NextAny with no entries = %v, want zero", at)
	}
	h.s.Set([]scheduler.Entry{{Plan: "home", Kind: "backup", Spec: spec(t, "@every 1h")}}, nil)
	h.idle()
}

func TestNextAndNextAny(t *testing.T) {
	t.Parallel()
	h := utc(t)
	if plan, kind, at := h.s.NextAny(); plan != "" || kind != "" || !at.IsZero() {
		t.Errorf("NextAny before Set = %q %q %v, want nothing", plan, kind, at)
	}
	h.s.Set([]scheduler.Entry{
		{Plan: "home", Kind: "backup", Spec: spec(t, "0 3 * * *")},
		{Plan: "home", Kind: "prune", Spec: spec(t, "0 0 * * 0")},
		{Plan: "home", Kind: "check", Spec: spec(t, "0 0 1 * *")},
		{Plan: "var", Kind: "check", Spec: spec(t, "0 3 * * *")},
		{Plan: "docs", Kind: "backup", Spec: spec(t, "30 12 * * *")},
		{Plan: "docs", Kind: "prune"},
	}, nil)
	for _, tc := range []struct {
		plan, kind string
		want       time.Time
	}{
		{"home", "backup", time.Date(2026, 11, 19, 3, 0, 0, 0, time.UTC)},
		{"home", "prune", time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)},
		{"home", "check", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
		{"docs", "backup", time.Date(2026, 11, 18, 12, 30, 0, 0, time.UTC)},
		{"docs", "prune", time.Time{}},
		{"nobody", "backup", time.Time{}},
	} {
		if got := h.s.Next(tc.plan, tc.kind); !got.Equal(tc.want) {
			t.Errorf("Next(%s, %s) = %v, want %v", tc.plan, tc.kind, got, tc.want)
		}
	}
	if plan, kind, at := h.s.NextAny(); plan != "docs" || kind != "backup" || !at.Equal(start.Add(30*time.Minute)) {
		t.Errorf("NextAny = %s %s %v, want docs backup at 12:30", plan, kind, at)
	}

	h.start()
	h.set(start.Add(30 * time.Minute))
	h.expect(run{"docs", "backup", scheduler.TriggerSchedule, start.Add(30 * time.Minute)})
	// A tie: the plan first, then the kind.
	if plan, kind, at := h.s.NextAny(); plan != "home" || kind != "backup" || !at.Equal(time.Date(2026, 11, 19, 3, 0, 0, 0, time.UTC)) {
		t.Errorf("NextAny = %s %s %v, want home backup at 03:00", plan, kind, at)
	}
	at := time.Date(2026, 11, 19, 3, 0, 0, 0, time.UTC)
	h.set(at)
	h.expect(
		run{"home", "backup", scheduler.TriggerSchedule, at},
		run{"var", "check", scheduler.TriggerSchedule, at},
	)
}

func TestEveryAndHourly(t *testing.T) {
	t.Parallel()
	begin := start.Add(20 * time.Second)
	h := newHarness(t, begin, scheduler.WithLocation(time.UTC))
	h.s.Set([]scheduler.Entry{
		{Plan: "home", Kind: "backup", Spec: spec(t, "@every 90m")},
		{Plan: "var", Kind: "backup", Spec: spec(t, "@hourly")},
	}, nil)
	h.start()
	var got []time.Time
	for range 6 {
		at := h.until
		got = append(got, at)
		h.set(at)
		if n := len(h.taken()); n != 1 {
			t.Errorf("at %v: %d runs, want 1", at.Format("15:04:05"), n)
		}
	}
	want := []string{"13:00:00", "13:30:20", "14:00:00", "15:00:00", "15:00:20", "16:00:00"}
	for i := range want {
		if got[i].Format("15:04:05") != want[i] {
			t.Errorf("firings %v, want %v", got, want)
			break
		}
	}
}

func berlin(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// In Europe/Berlin, 2026-03-29 02:00 CET is followed by 03:00 CEST.
func TestSpringForward(t *testing.T) {
	t.Parallel()
	loc := berlin(t)
	h := newHarness(t, time.Date(2026, 3, 27, 12, 0, 0, 0, loc), scheduler.WithLocation(loc))
	h.s.Set([]scheduler.Entry{
		{Plan: "home", Kind: "backup", Spec: spec(t, "30 2 * * *")},
		{Plan: "var", Kind: "backup", Spec: spec(t, "@hourly")},
	}, nil)
	h.start()

	var home, hourly []string
	for h.until.Before(time.Date(2026, 3, 31, 12, 0, 0, 0, loc)) {
		at := h.until
		h.set(at)
		for _, r := range h.taken() {
			if r.plan == "home" {
				home = append(home, r.at.Format("01-02 15:04 MST"))
			} else if r.at.Day() == 29 && r.at.Hour() < 5 {
				hourly = append(hourly, r.at.Format("15:04 MST"))
			}
		}
	}
	// 02:30 does not exist on the 29th: no run that day, and never two.
	if got, want := strings.Join(home, ", "), "03-28 02:30 CET, 03-30 02:30 CEST, 03-31 02:30 CEST"; got != want {
		t.Errorf("daily 02:30 fired at %s, want %s", got, want)
	}
	if got, want := strings.Join(hourly, ", "), "00:00 CET, 01:00 CET, 03:00 CEST, 04:00 CEST"; got != want {
		t.Errorf("@hourly fired at %s, want %s", got, want)
	}

	// Woken at the gap itself (02:00 CET is 03:00 CEST): nothing loops.
	if n := len(h.clock.waits); n != 0 {
		t.Errorf("%d waits left over: Run loops", n)
	}
}

// In Europe/Berlin, 2026-10-25 03:00 CEST is followed by 02:00 CET.
func TestFallBack(t *testing.T) {
	t.Parallel()
	loc := berlin(t)
	h := newHarness(t, time.Date(2026, 10, 24, 12, 0, 0, 0, loc), scheduler.WithLocation(loc))
	h.s.Set([]scheduler.Entry{{Plan: "home", Kind: "backup", Spec: spec(t, "30 2 * * *")}}, nil)
	h.start()
	first := time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC).In(loc) // 02:30 CEST, the first one
	if !h.until.Equal(first) {
		t.Fatalf("Run waits for %v, want %v", h.until, first)
	}
	h.set(first)
	h.expect(run{"home", "backup", scheduler.TriggerSchedule, first})
	h.set(first.Add(time.Hour)) // 02:30 CET
	h.expect()
	if want := time.Date(2026, 10, 26, 2, 30, 0, 0, loc); !h.until.Equal(want) {
		t.Errorf("after the first 02:30, Run waits for %v, want %v", h.until, want)
	}
}

func TestClockSetBack(t *testing.T) {
	t.Parallel()
	h := utc(t)
	h.s.Set([]scheduler.Entry{{Plan: "home", Kind: "backup", Spec: spec(t, "0 3 * * *")}}, nil)
	h.start()
	fired := time.Date(2026, 11, 19, 3, 0, 0, 0, time.UTC)
	h.set(fired)
	h.expect(run{"home", "backup", scheduler.TriggerSchedule, fired})

	// Ten minutes back: 03:00 comes again but already ran.
	h.setBack(fired.Add(-10 * time.Minute))
	if want := fired.AddDate(0, 0, 1); !h.until.Equal(want) {
		t.Errorf("set back 10 min: Run waits for %v, want %v", h.until, want)
	}
	h.set(fired)
	h.expect()

	// Two days back: the next 03:00 is the 18th's, earlier than the 20th's.
	h.setBack(start.AddDate(0, 0, -1))
	want := time.Date(2026, 11, 18, 3, 0, 0, 0, time.UTC)
	if got := h.s.Next("home", "backup"); !got.Equal(want) || !h.until.Equal(want) {
		t.Errorf("set back 2 days: Next = %v, Run waits for %v, want %v", got, h.until, want)
	}
	h.set(want)
	h.expect(run{"home", "backup", scheduler.TriggerSchedule, want})
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	s := scheduler.New(nil, func(string, string, string) error { return nil }, nil)
	s.Set([]scheduler.Entry{{Plan: "home", Kind: "backup", Spec: spec(t, "@hourly")}}, nil)
	next := s.Next("home", "backup")
	if next.Location() != time.Local {
		t.Errorf("Next is in %v, want time.Local", next.Location())
	}
	if d := time.Until(next); d <= 0 || d > time.Hour {
		t.Errorf("Next = %v, %v from now; want within the hour", next, d)
	}
}

// WithMoved hears of every pass that moved a next firing (a firing, one
// skipped because the plan is busy, the clock set back), after the move,
// and of no other pass: whoever shows the next run learns of it at once.
func TestMovedIsToldWhenTheNextRunMoves(t *testing.T) {
	t.Parallel()
	var h *harness
	var mu sync.Mutex
	var told []time.Time // Next as the function saw it
	h = newHarness(t, start, scheduler.WithLocation(time.UTC), scheduler.WithMoved(func() {
		mu.Lock()
		defer mu.Unlock()
		told = append(told, h.s.Next("home", "backup"))
	}))
	expect := func(what string, want ...time.Time) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if fmt.Sprint(told) != fmt.Sprint(want) {
			t.Errorf("%s: told %v, want %v", what, told, want)
		}
		told = nil
	}
	h.s.Set([]scheduler.Entry{{Plan: "home", Kind: "backup", Spec: spec(t, "0 3 * * *"), CatchUp: true}}, lastRunAt(start.AddDate(0, 0, -2)))
	h.start()
	h.expect(run{"home", "backup", scheduler.TriggerCatchUp, start})
	expect("a catch-up, which moves nothing")

	first := time.Date(2026, 11, 19, 3, 0, 0, 0, time.UTC)
	h.set(first.Add(-time.Hour))
	expect("an hour before the firing")
	h.set(first)
	h.expect(run{"home", "backup", scheduler.TriggerSchedule, first})
	expect("a firing", first.AddDate(0, 0, 1))

	h.mu.Lock()
	h.busy["home"] = errBusy
	h.mu.Unlock()
	h.set(first.AddDate(0, 0, 1))
	h.expect()
	expect("a firing skipped", first.AddDate(0, 0, 2))

	h.setBack(first.Add(-2 * time.Hour))
	expect("the clock set back before the last firing", first)
}

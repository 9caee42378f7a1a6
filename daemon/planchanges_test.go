package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/internal/testutil"
)

// plansTold counts the daemon's PlansChanged.
type plansTold chan struct{}

func (p plansTold) PlansChanged() {
	select {
	case p <- struct{}{}:
	default:
	}
}

// The daemon tells its listeners of every change of its plans that no job
// tells of, when it happens and with no poll: time making a plan overdue
// (a wait on the daemon's clock for that moment), a scheduled run moving
// NextRun, a reload by SIGHUP or by Reload. Plans shows the new state when
// the listener hears of it.
func TestPlansChangedWithoutPolling(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yaml")
	writeConfig := func(plans ...string) {
		t.Helper()
		text := fmt.Sprintf("repositories:\n  r:\n    url: %s\n    password_file: %s\nplans:\n", filepath.Join(dir, "repo"), filepath.Join(dir, "pw"))
		for _, p := range plans {
			text += fmt.Sprintf("  %s:\n    subvolumes: [%s]\n    repository: r\n    schedule: \"0 3 * * *\"\n    catch_up: false\n", p, filepath.Join(dir, "vol-"+p))
		}
		text += fmt.Sprintf("settings:\n  state_dir: %s\n  cache_dir: %s\n", filepath.Join(dir, "state"), filepath.Join(dir, "cache"))
		testutil.WriteFile(t, config, text)
	}
	writeConfig("home")
	// A Monday, 02:00; the last success 47h30m ago: overdue at 02:30, half
	// an hour before the scheduled 03:00.
	start := time.Date(2026, 3, 16, 2, 0, 0, 0, time.Local)
	success := start.Add(-47*time.Hour - 30*time.Minute)
	testutil.WriteFile(t, filepath.Join(dir, "state", queue.StateFile), fmt.Sprintf(`{"version": 1, "jobs": [], "last_run": {},
 "plans": {"home": {"last_backup": %q, "last_result": "done", "last_success": %q}}}`, success.Format(time.RFC3339Nano), success.Format(time.RFC3339Nano)))

	clock := testutil.NewFakeClock(start)
	signals := make(chan os.Signal, 1)
	d, err := New(context.Background(), Options{ConfigPath: config, Logger: slog.New(slog.DiscardHandler), Notify: func(string) error { return nil },
		Clock: clock, Signals: signals})
	if err != nil {
		t.Fatal(err)
	}
	told := make(plansTold, 1)
	d.Subscribe(told)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	plan := func(name string) PlanInfo {
		t.Helper()
		for _, p := range d.Plans() {
			if p.Name == name {
				return p
			}
		}
		t.Fatalf("no plan %s in %+v", name, d.Plans())
		return PlanInfo{}
	}
	// waitTold waits for a PlansChanged after which cond holds, and says
	// how long it took.
	waitTold := func(what string, cond func() bool) {
		t.Helper()
		began := time.Now()
		for deadline := time.After(10 * time.Second); ; {
			select {
			case <-told:
				if cond() {
					t.Logf("%s: told after %v", what, time.Since(began))
					return
				}
			case <-deadline:
				t.Fatalf("%s: not told within 10 s", what)
			}
		}
	}
	waitFor := func(instant time.Time) {
		t.Helper()
		for deadline := time.After(10 * time.Second); ; {
			select {
			case w := <-clock.Waits:
				if w.Equal(instant) {
					return
				}
			case <-deadline:
				t.Fatalf("nobody waits for %v", instant)
			}
		}
	}

	// The health watcher waits for 02:30 itself, not for a tick.
	waitFor(start.Add(30 * time.Minute))
	if p := plan("home"); p.Health != contract.HealthOK || p.HealthReason != "last backup succeeded" || !p.NextRun.Equal(start.Add(time.Hour)) {
		t.Errorf("at the start: %s (%s), next run %v", p.Health, p.HealthReason, p.NextRun)
	}
	clock.Set(start.Add(30 * time.Minute))
	waitTold("02:30, home overdue", func() bool { return plan("home").Health == contract.HealthOverdue })
	if p := plan("home"); p.HealthReason != "overdue: no successful backup for over 2d (scheduled every 24h)" {
		t.Errorf("overdue: %q", p.HealthReason)
	}

	// 03:00: the scheduled backup runs (and fails: vol-home is no
	// subvolume), NextRun moves to tomorrow, and the failure is the health.
	clock.Set(start.Add(time.Hour))
	tomorrow := start.Add(25 * time.Hour)
	waitTold("03:00, NextRun moved", func() bool { return plan("home").NextRun.Equal(tomorrow) })
	deadline := time.Now().Add(10 * time.Second)
	for plan("home").Health != contract.HealthFailed {
		if time.Now().After(deadline) {
			t.Fatalf("the scheduled backup did not fail within 10 s: %+v", plan("home"))
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A reload by SIGHUP, then by Reload, with a new plan each time.
	writeConfig("home", "new")
	signals <- syscall.SIGHUP
	waitTold("SIGHUP", func() bool { return len(d.Plans()) == 2 })
	if p := plan("new"); p.Health != contract.HealthNever || p.HealthReason != "no backup yet" {
		t.Errorf("a new plan: %s (%s)", p.Health, p.HealthReason)
	}
	writeConfig("home", "new", "third")
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	waitTold("Reload", func() bool { return len(d.Plans()) == 3 })
}

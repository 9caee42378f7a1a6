package api

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/internal/testutil"
)

// writePlanStatus writes the queue's state file with each plan's last
// backup as given, before the daemon starts.
func writePlanStatus(t *testing.T, dir string, plans map[string]queue.PlanStatus) {
	t.Helper()
	text := `{"version": 1, "jobs": [], "last_run": {}, "plans": {`
	first := true
	for name, st := range plans {
		if !first {
			text += ","
		}
		first = false
		text += fmt.Sprintf(`%q: {"last_result": %q, "last_error": %q`, name, st.LastResult, st.LastError)
		if !st.LastBackup.IsZero() {
			text += fmt.Sprintf(`, "last_backup": %q`, st.LastBackup.Format(time.RFC3339Nano))
		}
		if !st.LastSuccess.IsZero() {
			text += fmt.Sprintf(`, "last_success": %q`, st.LastSuccess.Format(time.RFC3339Nano))
		}
		text += "}"
	}
	testutil.WriteFile(t, filepath.Join(dir, "state", queue.StateFile), text+"}}")
}

// Health and HealthReason over the bus, as the daemon decides them: a
// plan that never ran, one backed up an hour ago, one whose last backup
// failed, one whose last success is three days old on a daily schedule.
func TestPlanHealthOverTheBus(t *testing.T) {
	e := &apiEnv{dir: t.TempDir()}
	now := time.Now()
	writePlanStatus(t, e.dir, map[string]queue.PlanStatus{
		"ok":      {LastBackup: now.Add(-time.Hour), LastResult: queue.ResultDone, LastSuccess: now.Add(-time.Hour)},
		"failed":  {LastBackup: now.Add(-time.Hour), LastResult: queue.ResultFailed, LastError: "restic: wrong password\n(check password_file)", LastSuccess: now.Add(-25 * time.Hour)},
		"overdue": {LastBackup: now.Add(-72 * time.Hour), LastResult: queue.ResultDone, LastSuccess: now.Add(-72 * time.Hour)},
	})
	newAPIEnvWith(t, e, permissive{}, "never", "ok", "failed", "overdue")
	for _, c := range []struct {
		plan   string
		health contract.Health
		reason string
	}{
		{"never", contract.HealthNever, "no backup yet"},
		{"ok", contract.HealthOK, "last backup succeeded"},
		{"failed", contract.HealthFailed, "last backup failed: restic: wrong password (check password_file)"},
		{"overdue", contract.HealthOverdue, "overdue: no successful backup for over 2d (scheduled every 24h)"},
	} {
		var props map[string]dbus.Variant
		if err := e.client.Object(contract.BusName, contract.PlanPath(c.plan)).Call(contract.PropertiesInterface+".GetAll", 0, contract.PlanInterface).Store(&props); err != nil {
			t.Fatal(err)
		}
		if p := contract.PlanOf(props); p.Health != c.health || p.HealthReason != c.reason {
			t.Errorf("plan %s: Health %q, HealthReason %q; want %q, %q", c.plan, p.Health, p.HealthReason, c.health, c.reason)
		}
	}
}

// newRunningAPIEnv runs a daemon as `subvault daemon` does (Run, which
// publishes it through Serve on a private bus) on a clock the test sets,
// with signals the test sends. It returns once the daemon owns its name.
func newRunningAPIEnv(t *testing.T, e *apiEnv, clock *testutil.FakeClock, plans ...string) chan<- os.Signal {
	t.Helper()
	e.bus = testutil.NewBus(t)
	e.config = filepath.Join(e.dir, "config.yaml")
	e.writeConfig(t, plans...)
	serverConn := connectRetrying(t, e.bus.Address)
	t.Cleanup(func() { serverConn.Close() })
	signals := make(chan os.Signal, 1)
	served := make(chan struct{})
	var err error
	e.d, err = daemon.New(context.Background(), daemon.Options{
		ConfigPath: e.config, Version: "1.2.3-test", Logger: slog.New(slog.DiscardHandler),
		Notify: func(string) error { return nil }, Clock: clock, Signals: signals,
		Serve: func(d *daemon.Daemon) error {
			defer close(served)
			e.s = NewServer(serverConn, d, permissive{}, slog.New(slog.DiscardHandler))
			if err := e.s.Export(); err != nil {
				return err
			}
			return RequestName(serverConn)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		e.s.Close()
	})
	select {
	case <-served:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	e.client = connectRetrying(t, e.bus.Address)
	t.Cleanup(func() { e.client.Close() })
	e.obj = e.client.Object(contract.BusName, contract.ManagerPath)
	return signals
}

// The plan objects follow the daemon at once, with no poll: a plan that
// time makes overdue, the next run after a scheduled run, a plan added by
// a configuration reloaded on SIGHUP (the InterfacesAdded signal's delay
// is logged; the server polled every 10 s before the daemon told it).
func TestPlanObjectsFollowTheDaemonAtOnce(t *testing.T) {
	e := &apiEnv{dir: t.TempDir()}
	// A Monday, 02:00; the last success 47h30m ago: overdue at 02:30, half
	// an hour before the scheduled 03:00.
	start := time.Date(2026, 3, 16, 2, 0, 0, 0, time.Local)
	success := start.Add(-47*time.Hour - 30*time.Minute)
	writePlanStatus(t, e.dir, map[string]queue.PlanStatus{"home": {LastBackup: success, LastResult: queue.ResultDone, LastSuccess: success}})
	// No last run of the schedule is known: nothing is caught up at start.
	clock := testutil.NewFakeClock(start)
	signals := newRunningAPIEnv(t, e, clock, "home")
	sigs := make(chan *dbus.Signal, 1000)
	e.client.Signal(sigs)
	if err := e.client.AddMatchSignal(dbus.WithMatchSender(contract.BusName)); err != nil {
		t.Fatal(err)
	}
	home := contract.PlanPath("home")
	// planChange waits for a PropertiesChanged of plan home that names
	// property, and returns its value and how long it took.
	planChange := func(what, property string) (dbus.Variant, time.Duration) {
		t.Helper()
		began := time.Now()
		for deadline := time.After(10 * time.Second); ; {
			select {
			case s := <-sigs:
				if s.Path != home || s.Name != contract.PropertiesInterface+".PropertiesChanged" {
					continue
				}
				if v, ok := s.Body[1].(map[string]dbus.Variant)[property]; ok {
					took := time.Since(began)
					t.Logf("%s: PropertiesChanged with %s after %v", what, property, took)
					return v, took
				}
			case <-deadline:
				t.Fatalf("%s: no PropertiesChanged of %s within 10 s", what, property)
			}
		}
	}
	health, err := e.client.Object(contract.BusName, home).GetProperty(contract.PlanInterface + ".Health")
	if err != nil || health.Value() != "ok" {
		t.Fatalf("Health at 02:00: %v %v", health, err)
	}

	clock.Set(start.Add(30 * time.Minute))
	if v, _ := planChange("02:30", "Health"); v.Value() != "overdue" {
		t.Errorf("Health at 02:30: %v, want overdue", v)
	}

	clock.Set(start.Add(time.Hour))
	if v, _ := planChange("03:00, a scheduled run", "NextRun"); v.Value() != contract.Micros(start.Add(25*time.Hour)) {
		t.Errorf("NextRun after the 03:00 run: %v, want %d", v, contract.Micros(start.Add(25*time.Hour)))
	}

	e.writeConfig(t, "home", "new")
	began := time.Now()
	signals <- syscall.SIGHUP
	for deadline := time.After(10 * time.Second); ; {
		select {
		case s := <-sigs:
			if s.Name != contract.ObjectManagerInterface+".InterfacesAdded" || s.Body[0] != contract.PlanPath("new") {
				continue
			}
			took := time.Since(began)
			t.Logf("SIGHUP with a new plan: InterfacesAdded after %v", took)
			// Fails only well past what a signal takes, but before the
			// 10 s poll that showed it before.
			if took > 5*time.Second {
				t.Errorf("InterfacesAdded %v after SIGHUP", took)
			}
			return
		case <-deadline:
			t.Fatal("no InterfacesAdded for the new plan within 10 s of SIGHUP")
		}
	}
}

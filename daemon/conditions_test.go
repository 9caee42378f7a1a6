package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/internal/testutil"
)

// fakeConditions is a Conditions the test sets (api.WatchConditions is
// tested against the real bus services' mocks in api).
type fakeConditions struct {
	mu    sync.Mutex
	state ConditionState
	fns   []func()
}

func (f *fakeConditions) State() ConditionState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state
}

func (f *fakeConditions) OnChange(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fns = append(f.fns, fn)
}

func (f *fakeConditions) set(st ConditionState) {
	f.mu.Lock()
	f.state = st
	fns := append([]func(){}, f.fns...)
	f.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

func TestBackoff(t *testing.T) {
	var got []string
	for attempts := 1; attempts <= 8; attempts++ {
		got = append(got, backoff(attempts).String())
	}
	if want := "[1m0s 2m0s 4m0s 8m0s 16m0s 30m0s 30m0s 30m0s]"; fmt.Sprint(got) != want {
		t.Errorf("backoff: %v, want %s", got, want)
	}
}

// The daemon's side of postponed jobs, with its clock and its conditions
// faked and restic real:
//
//   - a scheduled check of a repository restic cannot reach (an sftp
//     server on a closed loopback port: both restic versions give up at
//     once) is postponed and retried after 1 minute, then 2, then 4, with
//     nothing on the bus to say whether the network is up; the history
//     keeps one postponed check;
//   - when the network is known to be down, the retry waits for it
//     instead of its time, and runs when it comes back;
//   - a plan whose scheduled backup waits on battery still becomes
//     overdue when the wait outlasts its schedule, and says both.
func TestPostponedRetries(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		dir := t.TempDir()
		password := filepath.Join(dir, "password")
		testutil.WriteSecret(t, password, "secret\n")
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close() //nolint:gosec // only to learn a free port
		config := filepath.Join(dir, "config.yaml")
		testutil.WriteFile(t, config, fmt.Sprintf(`repositories:
  nas:
    url: sftp://root@127.0.0.1:%[1]d/%[2]s/nas
    password_file: %[3]s
plans:
  remote:
    subvolumes: [%[2]s/remote]
    repository: nas
    check_schedule: "0 3 * * *"
    prune_schedule: ""
  home:
    subvolumes: [%[2]s/home]
    repository: nas
    schedule: "0 3 * * *"
    on_battery: skip
    prune_schedule: ""
    check_schedule: ""
settings:
  state_dir: %[2]s/state
  cache_dir: %[2]s/cache
  restic: %[4]s
`, port, dir, password, bin))
		// 02:59; home's last success 47 h ago: overdue at 03:59.
		start := time.Date(2026, 3, 16, 2, 59, 0, 0, time.Local)
		success := start.Add(-47 * time.Hour)
		testutil.WriteFile(t, filepath.Join(dir, "state", queue.StateFile), fmt.Sprintf(`{"version": 1, "jobs": [], "last_run": {},
 "plans": {"home": {"last_backup": %q, "last_result": "done", "last_success": %q}}}`, success.Format(time.RFC3339Nano), success.Format(time.RFC3339Nano)))

		clock := testutil.NewFakeClock(start)
		conditions := &fakeConditions{state: ConditionState{OnBattery: true}}
		d, err := New(context.Background(), Options{ConfigPath: config, Logger: slog.New(slog.DiscardHandler), Notify: func(string) error { return nil },
			Clock: clock, Conditions: conditions, Signals: make(chan os.Signal)})
		if err != nil {
			t.Fatal(err)
		}
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
			for _, p := range d.Plans() {
				if p.Name == name {
					return p
				}
			}
			t.Fatalf("no plan %s", name)
			return PlanInfo{}
		}
		checks := func() []queue.Job {
			var out []queue.Job
			for _, j := range d.Queue().Jobs() {
				if j.Plan == "remote" && j.Kind == queue.KindCheck {
					out = append(out, j)
				}
			}
			return out
		}
		eventually := func(what string, cond func() bool) {
			t.Helper()
			for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%s: not within 30 s; checks %+v, remote %+v", what, checks(), plan("remote"))
				}
			}
		}
		waitFor := func(instant time.Time) {
			t.Helper()
			for deadline := time.After(30 * time.Second); ; {
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
		// postponedAt waits for a check after job after, postponed, with
		// the retry it is given, and returns its id.
		postponedAt := func(after uint32, retry time.Time) uint32 {
			t.Helper()
			eventually(fmt.Sprintf("a check after job %d postponed, retry at %s", after, retry.Format("15:04")), func() bool {
				cs := checks()
				return len(cs) > 0 && cs[0].ID > after && cs[0].Result == queue.ResultPostponed && plan("remote").RetryAt.Equal(retry)
			})
			return checks()[0].ID
		}

		at := start.Add
		waitFor(at(time.Minute))
		clock.Set(at(time.Minute)) // 03:00
		id := postponedAt(0, at(2*time.Minute))
		if p := plan("remote"); !strings.HasPrefix(p.Waiting, "check: waiting for the network: ") || !strings.Contains(p.Waiting, "unreachable") || !strings.HasSuffix(p.HealthReason, "; waiting for the network (check)") {
			t.Errorf("remote: %s (%s), waiting %q", p.Health, p.HealthReason, p.Waiting)
		}
		eventually("home postponed on battery", func() bool { return strings.HasPrefix(plan("home").Waiting, "on battery") })
		if p := plan("home"); p.Health != contract.HealthOK || p.HealthReason != "last backup succeeded; waiting: on battery" {
			t.Errorf("home at 03:00: %s (%s)", p.Health, p.HealthReason)
		}

		clock.Set(at(2 * time.Minute)) // 03:01: retry 2, then 2 minutes
		id = postponedAt(id, at(4*time.Minute))
		clock.Set(at(4 * time.Minute)) // 03:03: retry 3, then 4 minutes
		id = postponedAt(id, at(8*time.Minute))
		if cs := checks(); len(cs) != 1 || cs[0].Trigger != queue.TriggerCatchUp {
			t.Errorf("the history keeps %d checks of remote, the last triggered by %q; want 1, catch-up", len(cs), cs[0].Trigger)
		}

		// The network is known to be down: 03:07 passes with no retry;
		// when it is back, the check runs at once.
		conditions.set(ConditionState{OnBattery: true, Network: NetworkOffline})
		clock.Set(at(9 * time.Minute))
		eventually("remote waits for the network", func() bool { return plan("remote").RetryAt.IsZero() })
		if cs := checks(); cs[0].ID != id {
			t.Errorf("a check was retried while the network was down: job %d", cs[0].ID)
		}
		conditions.set(ConditionState{OnBattery: true, Network: NetworkOnline})
		postponedAt(id, at(9*time.Minute+8*time.Minute))

		// 03:59: home overdue, still waiting on battery.
		clock.Set(at(time.Hour))
		eventually("home overdue while waiting", func() bool { return plan("home").Health == contract.HealthOverdue })
		if p := plan("home"); p.HealthReason != "overdue: no successful backup for over 2d (scheduled every 24h); waiting: on battery" {
			t.Errorf("home overdue: %q", p.HealthReason)
		}
	})
}

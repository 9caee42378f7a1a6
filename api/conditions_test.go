package api

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/journal/journaltest"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/internal/testutil"
)

// NetworkManager's and systemd-networkd's words, as the daemon reads them.
func TestNetworkStates(t *testing.T) {
	for _, c := range []struct {
		state, connectivity uint32
		want                daemon.NetworkState
	}{
		{0, 0, daemon.NetworkUnknown},
		{70, 4, daemon.NetworkOnline},
		{70, 0, daemon.NetworkOnline},  // connectivity checks off
		{70, 1, daemon.NetworkOffline}, // the worse of the two
		{70, 2, daemon.NetworkLocal},   // a captive portal
		{60, 4, daemon.NetworkLocal},
		{50, 3, daemon.NetworkLocal},
		{40, 0, daemon.NetworkOffline},
		{20, 1, daemon.NetworkOffline},
		{10, 0, daemon.NetworkOffline}, // asleep
		{0, 4, daemon.NetworkOnline},
	} {
		if got := NetworkManagerNetwork(c.state, c.connectivity); got != c.want {
			t.Errorf("NetworkManager State %d, Connectivity %d: %s, want %s", c.state, c.connectivity, got, c.want)
		}
	}
	for _, c := range []struct {
		online, operational string
		want                daemon.NetworkState
	}{
		{"online", "routable", daemon.NetworkOnline},
		{"partial", "degraded", daemon.NetworkLocal},
		{"offline", "routable", daemon.NetworkOffline},
		{"", "routable", daemon.NetworkOnline},
		{"", "no-carrier", daemon.NetworkOffline},
		{"", "carrier", daemon.NetworkLocal},
		{"", "", daemon.NetworkUnknown},
	} {
		if got := NetworkdNetwork(c.online, c.operational); got != c.want {
			t.Errorf("networkd OnlineState %q, OperationalState %q: %s, want %s", c.online, c.operational, got, c.want)
		}
	}
	for v, want := range map[uint32]bool{0: false, 1: true, 2: false, 3: true, 4: false} {
		if Metered(v) != want {
			t.Errorf("NetworkManager Metered %d: metered %v, want %v", v, !want, want)
		}
	}
}

// mock is a python-dbusmock server on a private bus that stands for the
// system bus.
type mock struct {
	// output is what the mock logs: each call it answers.
	output *testutil.SyncBuffer
	bus    *testutil.Bus
	conn   *dbus.Conn
	name   string
	path   dbus.ObjectPath
}

// startMock starts `python3 -m dbusmock` with args on bus (as the system
// bus), stopped by PID when the test ends, and waits until it owns name.
func startMock(t *testing.T, bus *testutil.Bus, name string, path dbus.ObjectPath, args ...string) *mock {
	t.Helper()
	// Debian's python3, which python3-dbusmock is installed for (not
	// whichever python3 comes first in $PATH).
	const python = "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import dbusmock").CombinedOutput(); err != nil {
		testutil.SkipOrFail(t, "python3-dbusmock (apt-get install python3-dbusmock; .ci/deps test installs it): "+strings.TrimSpace(string(out)))
	}
	cmd := exec.Command(python, append([]string{"-m", "dbusmock", "--system"}, args...)...)
	cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+bus.Address)
	output, exited := testutil.StartProcess(t, "dbusmock "+name, cmd)
	conn := connectRetrying(t, bus.Address)
	t.Cleanup(func() { conn.Close() })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var has bool
		if err := conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, name).Store(&has); err == nil && has {
			break
		}
		select {
		case <-exited:
			t.Fatalf("dbusmock %s exited: %s", name, output.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dbusmock did not own %s within 20 s: %s", name, output.String())
		}
	}
	return &mock{output: output, bus: bus, conn: conn, name: name, path: path}
}

// set sets a property of the mock's object as the service would: the
// mock sends PropertiesChanged.
func (m *mock) set(t *testing.T, iface, prop string, value any) {
	t.Helper()
	if err := m.conn.Object(m.name, m.path).Call(propertiesIface+".Set", 0, iface, prop, dbus.MakeVariant(value)).Err; err != nil {
		t.Fatalf("%s: set %s.%s = %v: %v", m.name, iface, prop, value, err)
	}
}

// add adds a property the mock's template lacks.
func (m *mock) add(t *testing.T, iface, prop string, value any) {
	t.Helper()
	if err := m.conn.Object(m.name, m.path).Call("org.freedesktop.DBus.Mock.AddProperty", 0, iface, prop, dbus.MakeVariant(value)).Err; err != nil {
		t.Fatalf("%s: add %s.%s: %v", m.name, iface, prop, err)
	}
}

// eventually waits up to 30 s for cond, and says how long it took.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	began := time.Now()
	for deadline := began.Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30 s", what)
		}
	}
	t.Logf("%s: after %v", what, time.Since(began).Round(time.Millisecond))
}

// The conditions as UPower and NetworkManager (python-dbusmock's
// templates) and systemd-networkd (a plain dbusmock object) say them, and
// every change told as it happens, with no polling.
func TestConditionsFollowTheBus(t *testing.T) {
	bus := testutil.NewBus(t)
	upower := startMock(t, bus, upowerName, upowerPath, "--template", "upower", "-p", `{"OnBattery": true}`)
	nm := startMock(t, bus, nmName, nmPath, "--template", "networkmanager")
	nm.add(t, nmInterface, "Metered", uint32(4))

	conn := connectRetrying(t, bus.Address)
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := WatchConditions(ctx, conn, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	told := make(chan struct{}, 16)
	c.OnChange(func() { told <- struct{}{} })
	want := func(what string, st daemon.ConditionState) {
		t.Helper()
		eventually(t, what, func() bool { return c.State() == st })
	}
	want("at the start", daemon.ConditionState{OnBattery: true, Network: daemon.NetworkOnline})

	upower.set(t, upowerInterface, "OnBattery", false)
	want("on AC", daemon.ConditionState{Network: daemon.NetworkOnline})
	nm.set(t, nmInterface, "Metered", uint32(3))
	want("metered (guess-yes)", daemon.ConditionState{Metered: true, Network: daemon.NetworkOnline})
	nm.set(t, nmInterface, "Connectivity", uint32(1))
	want("connectivity none", daemon.ConditionState{Metered: true, Network: daemon.NetworkOffline})
	nm.set(t, nmInterface, "Connectivity", uint32(4))
	nm.set(t, nmInterface, "Metered", uint32(2))
	want("back", daemon.ConditionState{Network: daemon.NetworkOnline})
	if len(told) == 0 {
		t.Error("nobody was told of the changes")
	}

	// NetworkManager goes; systemd-networkd is on the bus instead.
	networkd := startMock(t, bus, networkdName, networkdPath, networkdName, string(networkdPath), networkdIface)
	networkd.add(t, networkdIface, "OnlineState", "offline")
	networkd.add(t, networkdIface, "OperationalState", "no-carrier")
	stopOwner(t, nm)
	want("NetworkManager gone, networkd offline", daemon.ConditionState{Network: daemon.NetworkOffline})
	networkd.set(t, networkdIface, "OnlineState", "online")
	want("networkd online", daemon.ConditionState{Network: daemon.NetworkOnline})
	stopOwner(t, upower)
	stopOwner(t, networkd)
	want("nothing on the bus", daemon.ConditionState{})
}

// stopOwner stops the process that owns m's name (the cleanup then finds
// it gone).
func stopOwner(t *testing.T, m *mock) {
	t.Helper()
	var pid uint32
	if err := m.conn.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixProcessID", 0, m.name).Store(&pid); err != nil {
		t.Fatal(err)
	}
	if p, err := os.FindProcess(int(pid)); err == nil {
		_ = p.Signal(os.Interrupt)
	}
	eventually(t, m.name+" gone", func() bool {
		var has bool
		_ = m.conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, m.name).Store(&has)
		return !has
	})
}

// A laptop, as a user lives it, with the daemon's conditions from UPower
// and NetworkManager (python-dbusmock) on a private system bus, real
// btrfs and real restic:
//
//   - on battery, a plan with on_battery: skip does not back up at its
//     scheduled time: its job ends postponed, status says why, and the
//     backup runs as soon as the machine is on AC power;
//   - on a metered connection the same for metered: skip;
//   - a backup asked for by hand runs on battery anyway;
//   - with the network down (NetworkManager's connectivity none, and the
//     repository an sftp server on a closed loopback port, which both
//     restic versions give up on at once), the scheduled backup is
//     postponed, "waiting for the network"; its retry timer does not run
//     it while the network is known to be down; when connectivity is full
//     again it runs, and is done;
//   - meanwhile another plan's scheduled backup runs at its time: nothing
//     waits behind a postponed job;
//   - the same unreachable repository fails a backup asked for by hand.
func TestLaptopConditions(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		fs := testutil.NewBtrfs(t, 256, "laptop", "phone", "remote", "healthy")
		for _, sv := range []string{"laptop", "phone", "remote", "healthy"} {
			testutil.WriteFile(t, fs.Path(sv, "file"), sv+"\n")
		}
		bus := testutil.NewBus(t)
		upower := startMock(t, bus, upowerName, upowerPath, "--template", "upower", "-p", `{"OnBattery": true}`)
		nm := startMock(t, bus, nmName, nmPath, "--template", "networkmanager")
		nm.add(t, nmInterface, "Metered", uint32(2))
		nm.set(t, nmInterface, "Connectivity", uint32(1))

		dir := t.TempDir()
		password := filepath.Join(dir, "password")
		testutil.WriteSecret(t, password, "secret\n")
		unreachable := fmt.Sprintf("sftp://root@127.0.0.1:%d/%s", testutil.FreePort(t), filepath.Join(dir, "nas"))
		config := filepath.Join(dir, "config.yaml")
		writeConfig := func(remoteURL string) {
			testutil.WriteFile(t, config, fmt.Sprintf(`repositories:
  local:
    url: %[1]s/repo
    password_file: %[2]s
    init: true
  nas:
    url: %[3]s
    password_file: %[2]s
    init: true
plans:
  laptop:
    subvolumes: [%[4]s]
    repository: local
    schedule: "0 3 * * *"
    on_battery: skip
  phone:
    subvolumes: [%[5]s]
    repository: local
    schedule: "10 3 * * *"
    metered: skip
  remote:
    subvolumes: [%[6]s]
    repository: nas
    schedule: "0 3 * * *"
    hooks:
      on_failure: [["/bin/sh", "-c", 'echo "$SUBVAULT_RESULT" >> %[1]s/on_failure']]
  healthy:
    subvolumes: [%[7]s]
    repository: local
    schedule: "5 3 * * *"
    on_battery: run
settings:
  state_dir: %[1]s/state
  cache_dir: %[1]s/cache
  restic: %[8]s
  max_concurrent_jobs: 1
`, dir, password, remoteURL, fs.Path("laptop"), fs.Path("phone"), fs.Path("remote"), fs.Path("healthy"), bin))
		}
		writeConfig(unreachable)

		system := connectRetrying(t, bus.Address)
		t.Cleanup(func() { system.Close() })
		ctx, cancel := context.WithCancel(context.Background())
		conditions, err := WatchConditions(ctx, system, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Date(2026, 3, 16, 2, 59, 0, 0, time.Local)
		clock := testutil.NewFakeClock(start)
		log := journaltest.NewRecorder()
		t.Cleanup(func() {
			if t.Failed() {
				for _, e := range log.Entries() {
					t.Logf("daemon: %s %s %v", e.Level, e.Msg, e.Fields)
				}
			}
		})
		// The daemon serves on the same bus, as it does on a real system.
		serverConn := connectRetrying(t, bus.Address)
		t.Cleanup(func() { serverConn.Close() })
		d, err := daemon.New(ctx, daemon.Options{ConfigPath: config, Logger: slog.New(log), Notify: func(string) error { return nil },
			Clock: clock, Conditions: conditions, Signals: make(chan os.Signal), Serve: Serve(serverConn, permissive{}, slog.New(slog.DiscardHandler))})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})

		plan := func(name string) daemon.PlanInfo {
			for _, p := range d.Plans() {
				if p.Name == name {
					return p
				}
			}
			t.Fatalf("no plan %s", name)
			return daemon.PlanInfo{}
		}
		// jobs are the plan's jobs, newest first.
		jobs := func(name string) []queue.Job {
			var out []queue.Job
			for _, j := range d.Queue().Jobs() {
				if j.Plan == name && j.Kind == queue.KindBackup {
					out = append(out, j)
				}
			}
			return out
		}
		last := func(name string) queue.Job {
			if js := jobs(name); len(js) > 0 {
				return js[0]
			}
			return queue.Job{}
		}
		finished := func(name string, result queue.Result) func() bool {
			return func() bool { j := last(name); return j.State == queue.StateFinished && j.Result == result }
		}

		// 03:00, on battery, the network down.
		eventually(t, "the conditions read", func() bool {
			st := conditions.State()
			return st.OnBattery && st.Network == daemon.NetworkOffline
		})
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
		waitFor(start.Add(time.Minute)) // the scheduler, for 03:00
		clock.Set(start.Add(time.Minute))
		eventually(t, "laptop postponed on battery", finished("laptop", queue.ResultPostponed))
		eventually(t, "remote postponed for the network", finished("remote", queue.ResultPostponed))
		if j := last("laptop"); !strings.HasPrefix(j.Error, "on battery (on_battery: skip)") || !j.StartedAt.IsZero() && j.ArchiveID != "" {
			t.Errorf("laptop's postponed job: %q (archive %q)", j.Error, j.ArchiveID)
		}
		if p := plan("laptop"); !strings.HasPrefix(p.Waiting, "on battery") || !strings.HasSuffix(p.HealthReason, "; waiting: on battery") ||
			p.Health != contract.HealthNever || !p.RetryAt.IsZero() || p.LastResult != "" {
			t.Errorf("laptop on battery: %s (%s), waiting %q, retry at %v, last result %q", p.Health, p.HealthReason, p.Waiting, p.RetryAt, p.LastResult)
		}
		// What subvault status reads: the Plan object's properties.
		onBus := func(name string) contract.Plan {
			var props map[string]dbus.Variant
			if err := system.Object(contract.BusName, contract.PlanPath(name)).Call(propertiesIface+".GetAll", 0, contract.PlanInterface).Store(&props); err != nil {
				t.Fatal(err)
			}
			return contract.PlanOf(props)
		}
		eventually(t, "laptop's Waiting on the bus", func() bool { return strings.HasPrefix(onBus("laptop").Waiting, "on battery (on_battery: skip)") })
		if p := onBus("laptop"); !strings.HasSuffix(p.HealthReason, "; waiting: on battery") {
			t.Errorf("laptop on the bus: %s (%s)", p.Health, p.HealthReason)
		}
		eventually(t, "remote's Waiting and RetryAt on the bus", func() bool {
			p := onBus("remote")
			return strings.HasPrefix(p.Waiting, "waiting for the network: ") && p.RetryAt.Equal(start.Add(2*time.Minute))
		})
		onFailure := func() string {
			b, err := os.ReadFile(filepath.Join(dir, "on_failure"))
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			return string(b)
		}
		if ran := onFailure(); ran != "" {
			t.Errorf("a postponed backup ran on_failure: %q", ran)
		}
		if j := last("remote"); !strings.HasPrefix(j.Error, "waiting for the network: repository ") || !strings.Contains(j.Error, "unreachable") {
			t.Errorf("remote's postponed job: %q", j.Error)
		}
		p := plan("remote")
		if !strings.HasPrefix(p.Waiting, "waiting for the network") || p.HealthReason != "no backup yet; waiting for the network" ||
			!p.RetryAt.Equal(start.Add(2*time.Minute)) {
			t.Errorf("remote: %s (%s), waiting %q, retry at %v (want %v)", p.Health, p.HealthReason, p.Waiting, p.RetryAt, start.Add(2*time.Minute))
		}

		// 03:05: the healthy plan backs up at its time, and the retry's
		// time (03:01) passed with the network still down: no retry, the
		// remote plan waits for the network.
		clock.Set(start.Add(6 * time.Minute))
		eventually(t, "healthy's scheduled backup done", finished("healthy", queue.ResultDone))
		eventually(t, "remote waits for the network, not a time", func() bool { return plan("remote").RetryAt.IsZero() })
		if n := len(jobs("remote")); n != 1 || last("remote").Result != queue.ResultPostponed {
			t.Errorf("remote retried while the network was down: %d jobs, last %s", n, last("remote").Result)
		}

		// On AC power: laptop backs up at once.
		upower.set(t, upowerInterface, "OnBattery", false)
		eventually(t, "laptop backed up on AC", finished("laptop", queue.ResultDone))
		if j := last("laptop"); j.Trigger != queue.TriggerCatchUp {
			t.Errorf("laptop's backup on AC was triggered by %q, want %q", j.Trigger, queue.TriggerCatchUp)
		}
		if p := plan("laptop"); p.Waiting != "" || p.Health != contract.HealthOK {
			t.Errorf("laptop after its backup: %s (%s), waiting %q", p.Health, p.HealthReason, p.Waiting)
		}
		eventually(t, "laptop's Waiting gone from the bus", func() bool { p := onBus("laptop"); return p.Waiting == "" && p.LastResult == "done" })
		// The history keeps the postponed job and the backup.
		if js := jobs("laptop"); len(js) != 2 || js[1].Result != queue.ResultPostponed {
			t.Errorf("laptop's jobs: %+v", js)
		}

		// On battery again, a backup asked for by hand runs.
		upower.set(t, upowerInterface, "OnBattery", true)
		eventually(t, "on battery again", func() bool { return conditions.State().OnBattery })
		if _, err := d.Start(daemon.JobRequest{Kind: queue.KindBackup, Plan: "laptop", Trigger: queue.Trigger(contract.CallerTrigger(0)), Caller: 0}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "a manual backup on battery done", func() bool { return len(jobs("laptop")) == 3 && finished("laptop", queue.ResultDone)() })

		// 03:10, metered: phone postponed; no longer metered: backed up.
		nm.set(t, nmInterface, "Metered", uint32(1))
		eventually(t, "metered", func() bool { return conditions.State().Metered })
		clock.Set(start.Add(11 * time.Minute))
		eventually(t, "phone postponed on a metered connection", finished("phone", queue.ResultPostponed))
		if p := plan("phone"); !strings.HasPrefix(p.Waiting, "metered connection (metered: skip)") || !strings.HasSuffix(p.HealthReason, "; waiting: metered connection") {
			t.Errorf("phone, metered: %s (%s), waiting %q", p.Health, p.HealthReason, p.Waiting)
		}
		nm.set(t, nmInterface, "Metered", uint32(4))
		eventually(t, "phone backed up when no longer metered", finished("phone", queue.ResultDone))

		// The server is back (its url now a reachable one), but nothing
		// says the network is: remote still waits. Then NetworkManager says
		// full connectivity, and remote backs up at once.
		writeConfig(filepath.Join(dir, "nas"))
		if err := d.Reload(); err != nil {
			t.Fatal(err)
		}
		if n := len(jobs("remote")); n != 1 {
			t.Errorf("remote retried by a reload: %d jobs", n)
		}
		nm.set(t, nmInterface, "Connectivity", uint32(4))
		eventually(t, "remote backed up when the network came back", finished("remote", queue.ResultDone))
		if p := plan("remote"); p.Waiting != "" || p.Health != contract.HealthOK || !p.RetryAt.IsZero() {
			t.Errorf("remote after its backup: %s (%s), waiting %q", p.Health, p.HealthReason, p.Waiting)
		}

		// A backup asked for by hand of an unreachable repository fails:
		// its caller is there to see why.
		writeConfig(unreachable)
		if err := d.Reload(); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Start(daemon.JobRequest{Kind: queue.KindBackup, Plan: "remote", Trigger: queue.Trigger(contract.CallerTrigger(0)), Caller: 0}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "a manual backup of an unreachable repository failed", finished("remote", queue.ResultFailed))
		if p := plan("remote"); p.Waiting != "" || p.Health != contract.HealthFailed || !strings.Contains(p.HealthReason, "unreachable") {
			t.Errorf("remote after a manual backup failed: %s (%s), waiting %q", p.Health, p.HealthReason, p.Waiting)
		}
		if ran := onFailure(); ran != "failed\n" {
			t.Errorf("on_failure after the postponed, the done and the failed backup ran with %q; want once, failed", ran)
		}

		// The journal says why each was postponed, and when it was retried.
		postponed, retried := log.Events(journal.EventJobPostponed), log.Events(journal.EventJobRetried)
		if len(postponed) != 3 || len(retried) != 3 {
			t.Errorf("the journal has %d job-postponed and %d job-retried entries, want 3 and 3", len(postponed), len(retried))
		}
		for _, e := range postponed {
			e.HasCatalogFields(t, journal.EventJobPostponed)
			t.Logf("journal: %s: %s %s: %s", e.Msg, e.Fields["SUBVAULT_PLAN"], e.Fields["SUBVAULT_RESULT"], e.Fields["SUBVAULT_ERR"])
		}
		for _, e := range retried {
			e.HasCatalogFields(t, journal.EventJobRetried)
			t.Logf("journal: %s (%s)", e.Msg, e.Fields["SUBVAULT_PLAN"])
		}
	})
}

// Another user on the system bus sends the daemon's connection signals
// that claim the machine went on battery, onto a metered connection and
// offline, directly (a match rule does not stop a unicast signal), and a
// flood of them. The daemon believes only the services: its conditions
// stay what UPower and NetworkManager say, and a real change after the
// flood is still seen.
func TestHostileConditionSignals(t *testing.T) {
	testutil.RequireNobody(t)
	testutil.RequireCommand(t, "busctl", "systemd")
	bus := testutil.NewBus(t)
	upower := startMock(t, bus, upowerName, upowerPath, "--template", "upower")
	nm := startMock(t, bus, nmName, nmPath, "--template", "networkmanager")
	nm.add(t, nmInterface, "Metered", uint32(2))

	conn := connectRetrying(t, bus.Address)
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := WatchConditions(ctx, conn, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	honest := daemon.ConditionState{Network: daemon.NetworkOnline}
	eventually(t, "the conditions read", func() bool { return c.State() == honest })

	daemonName := conn.Names()[0]
	forge := func(path, iface, member, signature string, args ...string) {
		t.Helper()
		argv := append([]string{"--address=" + bus.Address, "--destination=" + daemonName, "emit", path, iface, member, signature}, args...)
		if out, err := testutil.AsNobody("busctl", argv...).CombinedOutput(); err != nil {
			t.Fatalf("busctl %v as nobody: %v: %s", argv, err, out)
		}
	}
	began := time.Now()
	for range 20 {
		forge(upowerPath, propertiesIface, "PropertiesChanged", "sa{sv}as", upowerInterface, "1", "OnBattery", "b", "true", "0")
		forge(nmPath, propertiesIface, "PropertiesChanged", "sa{sv}as", nmInterface, "2", "Metered", "u", "1", "Connectivity", "u", "1", "0")
		forge(nmPath, nmInterface, "StateChanged", "u", "20")
		forge("/org/freedesktop/DBus", "org.freedesktop.DBus", "NameOwnerChanged", "sss", upowerName, ":1.1", "")
	}
	t.Logf("80 forged signals sent in %v", time.Since(began).Round(time.Millisecond))
	// A real change after them: once it shows, the forged ones have been
	// handled too (one connection, in order).
	upower.set(t, upowerInterface, "OnBattery", true)
	eventually(t, "the real change", func() bool { return c.State().OnBattery })
	if st := c.State(); st != (daemon.ConditionState{OnBattery: true, Network: daemon.NetworkOnline}) {
		t.Errorf("after the forged signals: %+v, want on battery (the real change) and nothing else", st)
	}
	// They did arrive: each made the daemon read UPower again (busctl
	// sends them one at a time; a faster flood is coalesced into one read
	// at a time).
	reads := strings.Count(upower.output.String(), "GetAll /org/freedesktop/UPower")
	t.Logf("UPower's properties read %d times for 80 forged signals and one real change", reads)
	if reads < 3 {
		t.Errorf("UPower read %d times: the forged signals did not reach the daemon's connection, the test proves nothing", reads)
	}
}

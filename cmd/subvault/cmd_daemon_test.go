package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/internal/testutil"
)

// notifySocket is a NOTIFY_SOCKET served by the test, as systemd serves it.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []string
	conn *net.UnixConn
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n.conn = conn
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, strings.Split(string(buf[:k]), "\n")...)
			n.mu.Unlock()
		}
	}()
	return n
}

func (n *notifySocket) messages() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// waitFor waits until a message matching pred has arrived (after the first
// `from` messages) and returns its index.
func (n *notifySocket) waitFor(t *testing.T, from int, limit time.Duration, what string, pred func(string) bool) int {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		msgs := n.messages()
		for i := from; i < len(msgs); i++ {
			if pred(msgs[i]) {
				return i
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no sd_notify message %s within %v; got %q", what, limit, n.messages())
	return 0
}

type daemonEnv struct {
	*runEnv
	bus    *testutil.Bus
	notify *notifySocket
	state  string
}

// newDaemonEnv is a loop-device btrfs with a subvolume home of files MiB,
// a repository, a private bus, a NOTIFY_SOCKET, and a configuration whose
// daily backup of home was last run two days ago, so that the daemon
// catches it up as soon as it starts.
func newDaemonEnv(t *testing.T, files int) *daemonEnv {
	t.Helper()
	testutil.RequireRoot(t)
	e := &daemonEnv{runEnv: newRunEnv(t, 1024), bus: testutil.NewBus(t), notify: newNotifySocket(t)}
	e.state = filepath.Dir(e.config)
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, e.config, strings.Replace(string(cfg), "    repository: r\n", "    repository: r\n    schedule: \"0 3 * * *\"\n    catch_up: true\n", 1))
	buf := make([]byte, 1<<20)
	for i := range files {
		if _, err := rand.Read(buf); err != nil {
			t.Fatal(err)
		}
		testutil.WriteFile(t, e.fs.Path("home", fmt.Sprintf("d%d", i%10), fmt.Sprintf("f%d", i)), string(buf))
	}
	lastRun, _ := json.Marshal(map[string]any{"version": 1, "jobs": []any{}, "plans": map[string]any{},
		"last_run": map[string]time.Time{"home/backup": time.Now().Add(-48 * time.Hour)}})
	testutil.WriteFile(t, filepath.Join(e.state, queue.StateFile), string(lastRun))
	return e
}

// start runs `subvault daemon` as its own process.
func (e *daemonEnv) start(t *testing.T, extraEnv ...string) (*exec.Cmd, *testutil.SyncBuffer) {
	t.Helper()
	return e.startArgs(t, nil, extraEnv...)
}

// startArgs is start with args, more arguments of subvault daemon.
func (e *daemonEnv) startArgs(t *testing.T, args []string, extraEnv ...string) (*exec.Cmd, *testutil.SyncBuffer) {
	t.Helper()
	cmd := subvaultCmd(append([]string{"daemon", "--config", e.config, "--bus", e.bus.Address}, args...)...)
	cmd.Env = append(cmd.Env, append([]string{"NOTIFY_SOCKET=" + e.notify.path}, extraEnv...)...)
	log := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, log
}

func (e *daemonEnv) jobs(t *testing.T) []queue.Job {
	t.Helper()
	var s struct{ Jobs []queue.Job }
	data, err := os.ReadFile(filepath.Join(e.state, queue.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	return s.Jobs
}

func (e *daemonEnv) noSnapshotsNoLocks(t *testing.T) {
	t.Helper()
	if left, _ := btrfs.ListSnapshots(e.fs.Path("home", ".subvault-snapshots")); len(left) != 0 {
		t.Errorf("snapshots left: %v", left)
	}
	if locks := strings.TrimSpace(e.resticOut(t, "list", "locks", "--no-lock")); locks != "" {
		t.Errorf("restic locks left: %s", locks)
	}
}

func TestDaemonReadyStatusWatchdogAndCatchUp(t *testing.T) {
	e := newDaemonEnv(t, 20)
	cmd, log := e.start(t, "WATCHDOG_USEC=300000")

	ready := e.notify.waitFor(t, 0, 30*time.Second, "READY=1", func(m string) bool { return m == "READY=1" })
	conn, err := dbus.Connect(e.bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var owned bool
	if err := conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, "org.subvault.Subvault1").Store(&owned); err != nil || !owned {
		t.Fatalf("READY=1 before org.subvault.Subvault1 is owned (%v)", err)
	}
	// The catch-up backup runs, and STATUS follows it to idle.
	backing := e.notify.waitFor(t, ready, 60*time.Second, "STATUS=backing up home", func(m string) bool { return strings.HasPrefix(m, "STATUS=backing up home") })
	// Then idle, with the next scheduled run (the weekly prune may come
	// before tomorrow's 03:00 backup).
	e.notify.waitFor(t, backing, 60*time.Second, "STATUS=idle · next: ...", func(m string) bool { return strings.HasPrefix(m, "STATUS=idle · next: ") })
	watchdogs := 0
	for _, m := range e.notify.messages() {
		if m == "WATCHDOG=1" {
			watchdogs++
		}
	}
	if watchdogs < 2 {
		t.Errorf("%d WATCHDOG=1 pings with WATCHDOG_USEC=300000", watchdogs)
	}
	jobs := e.jobs(t)
	if len(jobs) != 1 || jobs[0].Trigger != "catch-up" || jobs[0].Result != queue.ResultDone || jobs[0].ArchiveID == "" {
		t.Fatalf("jobs after the catch-up: %+v\nlog:\n%s", jobs, log)
	}

	start := len(e.notify.messages())
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("daemon exit after SIGTERM: %v\n%s", err, log)
	}
	e.notify.waitFor(t, start, 5*time.Second, "STOPPING=1", func(m string) bool { return m == "STOPPING=1" })
}

func TestDaemonSIGTERMMidBackupCleansUp(t *testing.T) {
	e := newDaemonEnv(t, 600)
	cmd, log := e.start(t)
	resticPID := waitFor(t, 60*time.Second, func() int { return testutil.ProcessBelow(cmd.Process.Pid, "restic", "backup") })
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit: %v\n%s", err, log)
	}
	took := time.Since(start)
	t.Logf("daemon stopped %v after SIGTERM (state %v); log %d bytes:\n%s", took, cmd.ProcessState, len(log.String()), log.String())
	if took > 10*time.Second {
		t.Errorf("the daemon took %v to stop mid-backup, want under 10 s", took)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", resticPID)); err == nil {
		t.Errorf("restic (pid %d) still runs after the daemon stopped", resticPID)
	}
	e.noSnapshotsNoLocks(t)
	jobs := e.jobs(t)
	if len(jobs) != 1 || jobs[0].Result != queue.ResultFailed || jobs[0].Error != queue.InterruptedError {
		t.Errorf("job after SIGTERM: %+v", jobs)
	}
}

func TestDaemonKilledMidBackupRecoversAtStart(t *testing.T) {
	e := newDaemonEnv(t, 600)
	cmd, _ := e.start(t)
	resticPID := waitFor(t, 60*time.Second, func() int { return testutil.ProcessBelow(cmd.Process.Pid, "restic", "backup") })
	time.Sleep(300 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitFor(t, 60*time.Second, func() int {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", resticPID)); os.IsNotExist(err) {
			return 1
		}
		return 0
	})
	if left, _ := btrfs.ListSnapshots(e.fs.Path("home", ".subvault-snapshots")); len(left) != 1 {
		t.Fatalf("after kill -9, %d snapshots (want the 1 the crash left)", len(left))
	}

	from := len(e.notify.messages())
	cmd2, log2 := e.start(t)
	e.notify.waitFor(t, from, 30*time.Second, "READY=1", func(m string) bool { return m == "READY=1" })
	e.noSnapshotsNoLocks(t)
	jobs := e.jobs(t)
	if len(jobs) != 1 || jobs[0].Result != queue.ResultFailed || jobs[0].Error != queue.InterruptedError {
		t.Errorf("the killed job after restart: %+v\n%s", jobs, log2)
	}
	if !strings.Contains(log2.String(), "leftover") {
		t.Errorf("the leftover's removal is not logged:\n%s", log2)
	}
	_ = cmd2.Process.Signal(syscall.SIGTERM)
	_ = cmd2.Wait()

	var out, errOut bytes.Buffer
	if code := run([]string{"run", "backup", "home", "--config", e.config}, &out, &errOut); code != exitOK {
		t.Fatalf("the next backup: exit %d\n%s", code, errOut.String())
	}
	e.resticOut(t, "check")
}

func TestDaemonSIGHUPKeepsConfigWhenNewOneIsBroken(t *testing.T) {
	e := newDaemonEnv(t, 1)
	cmd, log := e.start(t)
	e.notify.waitFor(t, 0, 30*time.Second, "READY=1", func(m string) bool { return m == "READY=1" })
	good, _ := os.ReadFile(e.config)
	testutil.WriteFile(t, e.config, string(good)+"bogus_key: 1\n")
	from := len(e.notify.messages())
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e.notify.waitFor(t, from, 10*time.Second, "RELOADING=1", func(m string) bool { return m == "RELOADING=1" })
	e.notify.waitFor(t, from, 10*time.Second, "READY=1 after the reload", func(m string) bool { return m == "READY=1" })
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(log.String(), "configuration refused") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	line := strings.Count(string(good), "\n") + 1
	for _, want := range []string{"event=config-refused", fmt.Sprintf("%s:%d: bogus_key", e.config, line)} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the log lacks %q:\n%s", want, log)
		}
	}
	if cmd.ProcessState != nil {
		t.Fatal("the daemon exited on a broken configuration")
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the daemon is gone: %v", err)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
}

// docs/security.md, attack 2: a daemon that loses its bus connection says why and
// exits non-zero, so that systemd restarts it (Restart=on-failure), rather
// than running on unreachable while it feeds the watchdog.
func TestDaemonExitsWhenItLosesTheBus(t *testing.T) {
	e := newAPIEnv(t, 1)
	cmd, log := e.start(t)
	e.notify.waitFor(t, 0, 30*time.Second, "READY=1", func(m string) bool { return m == "READY=1" })
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()

	pid := testutil.ProcessBelow(os.Getpid(), "dbus-daemon", "--config-file="+filepath.Join(e.bus.Dir, "bus.conf"))
	if pid == 0 {
		t.Fatal("cannot find the private dbus-daemon")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("the daemon still runs 20 s after its bus went away; its log:\n%s", log.String())
	}
	code := cmd.ProcessState.ExitCode()
	t.Logf("the daemon exited %d, %v after the bus went away; its log ends:\n%s", code, time.Since(killed).Round(time.Millisecond), tail(log.String(), 6))
	if code != exitFailure {
		t.Errorf("exit %d, want %d (so that systemd restarts it)", code, exitFailure)
	}
	if !strings.Contains(log.String(), "lost its connection to the bus") {
		t.Errorf("the log does not say why the daemon stopped:\n%s", log.String())
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

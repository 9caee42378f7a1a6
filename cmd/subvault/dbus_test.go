package main

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api"
	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/internal/testutil"
)

// busPolicy is the bus policy file the package installs in
// /usr/share/dbus-1/system.d.
const busPolicy = "../../packaging/org.subvault.Subvault1.conf"

// apiEnv is the real daemon as its own process on a private bus with the
// system bus's policy and ours (testutil.NewSystemBus), a
// loop-device btrfs with a subvolume home and a restic repository; the
// plan keeps its last 5 snapshots, so that there are some to clone and
// delete.
type apiEnv struct {
	*daemonEnv
	signals *signalLog
	called  map[string]bool // Manager methods called through busctl or dbus-send
}

func newAPIEnv(t *testing.T, files int) *apiEnv {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "busctl", "systemd")
	testutil.RequireCommand(t, "dbus-send", "dbus-bin")
	// The bus mirrors the system bus: its own policy (deny by default) plus
	// ours, so that only what packaging/ allows reaches the daemon.
	bus := testutil.NewSystemBus(t, busPolicy)
	e := &apiEnv{daemonEnv: &daemonEnv{runEnv: newRunEnv(t, 1024), bus: bus, notify: newNotifySocket(t)}, called: map[string]bool{}}
	e.state = filepath.Dir(e.config)
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, e.config, strings.Replace(string(cfg), "    repository: r\n", "    repository: r\n    schedule: \"0 3 * * *\"\n    keep_snapshots:\n      last: 5\n", 1))
	e.addFiles(t, "a", files)
	// A file name that is not UTF-8: restic reports it, and no reply or
	// signal may break on it.
	testutil.WriteFile(t, e.fs.Path("home", "d0", "bad-\xff-name"), "x")
	return e
}

func (e *apiEnv) addFiles(t *testing.T, prefix string, n int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for i := range n {
		if _, err := rand.Read(buf); err != nil {
			t.Fatal(err)
		}
		testutil.WriteFile(t, e.fs.Path("home", fmt.Sprintf("d%d", i%10), fmt.Sprintf("%s%d", prefix, i)), string(buf))
	}
}

// startDaemon starts the daemon and waits for READY=1, with a signal log
// subscribed before.
func (e *apiEnv) startDaemon(t *testing.T) {
	t.Helper()
	e.startDaemonLogged(t)
}

// startDaemonLogged is startDaemon that also hands back the daemon's
// process and log; args are more arguments of subvault daemon.
func (e *apiEnv) startDaemonLogged(t *testing.T, args ...string) (*exec.Cmd, *testutil.SyncBuffer) {
	t.Helper()
	// dbus-daemon makes its socket a moment before it listens on it.
	var conn *dbus.Conn
	waitFor(t, 5*time.Second, func() int {
		var err error
		if conn, err = dbus.Connect(e.bus.Address); err != nil {
			return 0
		}
		return 1
	})
	t.Cleanup(func() { conn.Close() })
	e.signals = newSignalLog(t, conn)
	from := len(e.notify.messages())
	cmd, log := e.startArgs(t, args)
	t.Cleanup(func() {
		if strings.Contains(log.String(), "DATA RACE") { // go test -race: the daemon is this binary
			t.Error("the race detector found a race in the daemon")
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", log.String())
		}
	})
	e.notify.waitFor(t, from, 30*time.Second, "READY=1", func(m string) bool { return m == "READY=1" })
	return cmd, log
}

// busctl runs busctl on the test bus and returns its output and error.
func (e *apiEnv) busctl(args ...string) (string, error) {
	cmd := exec.Command("busctl", append([]string{"--address=" + e.bus.Address}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// call calls a Manager method through busctl (JSON output) and stores the
// reply's first value in out (nil: ignore it), or all its values when out
// is a *[]json.RawMessage.
func (e *apiEnv) call(t *testing.T, out any, method, signature string, args ...string) {
	t.Helper()
	e.called[method] = true
	argv := []string{"--json=short", "call", contract.BusName, string(contract.ManagerPath), contract.ManagerInterface, method}
	if signature != "" {
		argv = append(argv, signature)
	}
	text, err := e.busctl(append(argv, args...)...)
	if err != nil {
		t.Fatalf("busctl call %s %s %v: %v: %s", method, signature, args, err, text)
	}
	if out == nil {
		return
	}
	var reply struct {
		Data []json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(text), &reply); err != nil {
		t.Fatalf("busctl %s: %v: %s", method, err, text)
	}
	if all, ok := out.(*[]json.RawMessage); ok {
		*all = reply.Data
		return
	}
	if len(reply.Data) != 1 {
		t.Fatalf("busctl %s: %d values: %s", method, len(reply.Data), text)
	}
	if err := json.Unmarshal(reply.Data[0], out); err != nil {
		t.Fatalf("busctl %s data: %v: %s", method, err, reply.Data[0])
	}
}

// start calls a Start method through busctl and returns the job's id.
func (e *apiEnv) startJob(t *testing.T, method, signature string, args ...string) uint32 {
	t.Helper()
	var reply []json.RawMessage
	e.call(t, &reply, method, signature, args...)
	var id uint32
	var path string
	if len(reply) != 2 || json.Unmarshal(reply[0], &id) != nil || json.Unmarshal(reply[1], &path) != nil || path != string(contract.JobPath(id)) {
		t.Fatalf("%s replied %s", method, reply)
	}
	return id
}

// send calls a Manager method through dbus-send and returns the error
// name ("" on success) and the output.
func (e *apiEnv) send(method string, args ...string) (string, string) {
	e.called[method] = true
	return dbusSend(exec.Command("dbus-send", e.sendArgs(method, args...)...))
}

// sendAsNobody calls a Manager method through dbus-send as uid 65534 (busctl
// hides the name of an AccessDenied error) and returns the error name ("" on
// success) and the output.
func (e *apiEnv) sendAsNobody(method string, args ...string) (string, string) {
	return dbusSend(testutil.AsNobody("dbus-send", e.sendArgs(method, args...)...))
}

func (e *apiEnv) sendArgs(method string, args ...string) []string {
	return append([]string{"--bus=" + e.bus.Address, "--print-reply", "--dest=" + contract.BusName,
		string(contract.ManagerPath), contract.ManagerInterface + "." + method}, args...)
}

// dbusSend runs a dbus-send command and returns the error name ("" on
// success) and the output.
func dbusSend(cmd *exec.Cmd) (string, string) {
	out, err := cmd.CombinedOutput()
	if err == nil {
		return "", string(out)
	}
	// "Error org.subvault.Subvault1.Error.InvalidArgument: message"
	fields := strings.Fields(string(out))
	if len(fields) >= 2 && fields[0] == "Error" {
		return strings.TrimSuffix(fields[1], ":"), string(out)
	}
	return "(dbus-send: " + err.Error() + ")", string(out)
}

func (e *apiEnv) jobCount(t *testing.T) int {
	t.Helper()
	var jobs [][]any
	e.call(t, &jobs, "ListJobs", "")
	return len(jobs)
}

// signalLog keeps every signal from the daemon with its arrival time.
type signalLog struct {
	mu   sync.Mutex
	list []timedSignal
}

type timedSignal struct {
	*dbus.Signal
	at time.Time
}

func newSignalLog(t *testing.T, conn *dbus.Conn) *signalLog {
	t.Helper()
	raw := make(chan *dbus.Signal, 4096)
	conn.Signal(raw)
	if err := conn.AddMatchSignal(dbus.WithMatchSender(contract.BusName)); err != nil {
		t.Fatal(err)
	}
	l := &signalLog{}
	go func() {
		for s := range raw {
			l.mu.Lock()
			l.list = append(l.list, timedSignal{s, time.Now()})
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *signalLog) all() []timedSignal {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]timedSignal(nil), l.list...)
}

// waitRemoved waits for JobRemoved of job id and returns its result.
func (l *signalLog) waitRemoved(t *testing.T, id uint32, limit time.Duration) string {
	t.Helper()
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, s := range l.all() {
			if s.Name == contract.ManagerInterface+".JobRemoved" && s.Body[0] == id {
				return s.Body[4].(string)
			}
		}
	}
	t.Fatalf("no JobRemoved for job %d within %v", id, limit)
	return ""
}

// progress returns the times and values of the job's PropertiesChanged
// signals, and the number of them.
func (l *signalLog) progress(id uint32) (times []time.Time, values []float64, n int) {
	for _, s := range l.all() {
		if s.Path != contract.JobPath(id) || s.Name != "org.freedesktop.DBus.Properties.PropertiesChanged" {
			continue
		}
		n++
		times = append(times, s.at)
		if v, ok := s.Body[1].(map[string]dbus.Variant)["Progress"]; ok {
			values = append(values, v.Value().(float64))
		}
	}
	return times, values, n
}

// TestDBusAPIWithBusctl drives the real daemon through busctl and
// dbus-send only: a backup followed by its signals, the archive listed, a
// snapshot cloned and deleted, a restore, a queued and a running job
// canceled, prune, check, reload; then every Manager method has been
// called by an external client.
func TestDBusAPIWithBusctl(t *testing.T) {
	e := newAPIEnv(t, 300)
	e.startDaemon(t)

	out, err := e.busctl("introspect", contract.BusName, string(contract.ManagerPath))
	if err != nil {
		t.Fatalf("busctl introspect: %v: %s", err, out)
	}
	for _, iface := range []string{contract.ManagerInterface, contract.ObjectManagerInterface, "org.freedesktop.DBus.Properties",
		"org.freedesktop.DBus.Introspectable", "org.freedesktop.DBus.Peer", ".StartBackup", ".JobRemoved", ".RunningJobs"} {
		if !strings.Contains(out, iface) {
			t.Errorf("busctl introspect lacks %s:\n%s", iface, out)
		}
	}

	// The plan's next run shows once the scheduler runs (after the name is
	// taken), as µs since the epoch.
	waitFor(t, 15*time.Second, func() int {
		out, _ := e.busctl("get-property", contract.BusName, string(contract.PlanPath("home")), contract.PlanInterface, "NextRun")
		var us int64
		if _, err := fmt.Sscanf(out, "t %d", &us); err == nil && us > 0 {
			next := time.UnixMicro(us)
			if next.Before(time.Now()) || next.After(time.Now().Add(25*time.Hour)) || next.Local().Hour() != 3 {
				t.Fatalf("NextRun %v for a plan scheduled at 03:00", next)
			}
			return 1
		}
		return 0
	})

	// A backup: its object, its rising progress, its end.
	id := e.startJob(t, "StartBackup", "s", "home")
	out, err = e.busctl("--json=short", "call", contract.BusName, string(contract.ManagerPath), contract.ObjectManagerInterface, "GetManagedObjects")
	if err != nil || !strings.Contains(out, fmt.Sprintf(`"%s"`, contract.JobPath(id))) || !strings.Contains(out, string(contract.PlanPath("home"))) {
		t.Errorf("GetManagedObjects lacks job %d or plan home: %v\n%s", id, err, out)
	}
	if out, err := e.busctl("get-property", contract.BusName, string(contract.JobPath(id)), contract.JobInterface, "Kind", "Trigger"); err != nil || out != "s \"backup\"\ns \"dbus:0\"\n" {
		t.Errorf("get-property Kind Trigger: %v %q", err, out)
	}
	if result := e.signals.waitRemoved(t, id, 3*time.Minute); result != "done" {
		t.Fatalf("backup job %d: %s", id, result)
	}
	times, values, n := e.signals.progress(id)
	t.Logf("backup: %d PropertiesChanged over %v, %d with Progress: %.2f", n, times[len(times)-1].Sub(times[0]), len(values), values)
	if most := testutil.MaxInOneSecond(times); most > 4 {
		t.Errorf("%d PropertiesChanged of one job within a second; at most 4", most)
	}
	if len(values) < 3 || values[len(values)-1] != 1 {
		t.Errorf("Progress did not rise to 1 through PropertiesChanged: %v", values)
	}
	if !slices.IsSorted(values) {
		t.Errorf("Progress went down: %v", values)
	}
	for _, want := range []string{"State", "Result", "FinishedAt", "ArchiveId", "Summary"} {
		found := false
		for _, s := range e.signals.all() {
			if s.Path == contract.JobPath(id) && strings.HasSuffix(s.Name, "PropertiesChanged") {
				_, ok := s.Body[1].(map[string]dbus.Variant)[want]
				found = found || ok
			}
		}
		if !found {
			out, err := e.busctl("get-property", contract.BusName, string(contract.JobPath(id)), contract.JobInterface, want)
			t.Errorf("no PropertiesChanged carried %s (now: %v %s)", want, err, out)
		}
	}

	if out, err := e.busctl("tree", contract.BusName); err != nil || !strings.Contains(out, string(contract.JobPath(id))) || !strings.Contains(out, string(contract.PlanPath("home"))) {
		t.Errorf("busctl tree: %v\n%s", err, out)
	}

	var archives [][]any
	e.call(t, &archives, "ListArchives", "s", "home")
	if len(archives) != 1 || !strings.Contains(fmt.Sprint(archives[0]), e.fs.Path("home")) || strings.Contains(fmt.Sprint(archives), "subvault-snapshots") {
		t.Errorf("ListArchives after the backup: %v (want one archive of %s)", archives, e.fs.Path("home"))
	}
	// Nothing changed since the backup: Diff of the archive and the live
	// subvolume is an empty list.
	var changes [][]string
	e.call(t, &changes, "Diff", "sss", "home", "latest", "live")
	if len(changes) != 0 {
		t.Errorf("Diff latest live right after the backup: %v", changes)
	}
	// DiffTo: neither busctl (252) nor dbus-send passes a descriptor, so
	// through subvault diff (a pipe): no difference. A descriptor of
	// /dev/null, a device, is refused.
	e.called["DiffTo"] = true
	if code, out, errOut := e.cli(t, "diff", "home", "latest", "live"); code != exitOK || !strings.HasPrefix(out, "no differences") {
		t.Errorf("subvault diff (DiffTo) latest live: exit %d\n%s%s", code, out, errOut)
	}
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fdConn, err := dbus.Connect(e.bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer fdConn.Close()
	var count uint64
	err = fdConn.Object(contract.BusName, contract.ManagerPath).Call(contract.ManagerInterface+".DiffTo", 0, "home", "latest", "live",
		dbus.UnixFD(devNull.Fd()), map[string]dbus.Variant{}).Store(&count)
	devNull.Close()
	var derr dbus.Error
	if !errors.As(err, &derr) || derr.Name != contract.ErrorInvalidArgument || !strings.Contains(derr.Error(), "character device") {
		t.Errorf("DiffTo into /dev/null: %v", err)
	}
	// The finished backup works on no file.
	var files []string
	e.call(t, &files, "GetJobFiles", "u", fmt.Sprint(id))
	if len(files) != 0 {
		t.Errorf("GetJobFiles of a finished job: %v", files)
	}

	// Snapshots: listed, cloned, deleted.
	var snapshots [][]any
	e.call(t, &snapshots, "ListSnapshots", "s", "home")
	if len(snapshots) != 1 {
		t.Fatalf("ListSnapshots: %v", snapshots)
	}
	name := snapshots[0][0].(string)
	clone := e.fs.Path("inspect")
	var clonePath string
	e.call(t, &clonePath, "CloneSnapshot", "sss", "home", name, clone)
	if _, err := os.Stat(filepath.Join(clone, "d0", "a0")); clonePath != clone || err != nil {
		t.Errorf("CloneSnapshot made %q: %v", clonePath, err)
	}
	// Wrong arguments, each refused with its error name, nothing done.
	jobs := e.jobCount(t)
	for _, c := range []struct {
		method string
		args   []string
		want   string
	}{
		{"StartBackup", []string{"string:../x"}, contract.ErrorInvalidArgument},
		{"StartBackup", []string{"string:a/b"}, contract.ErrorInvalidArgument},
		{"StartBackup", []string{"string:"}, contract.ErrorInvalidArgument},
		{"StartBackup", []string{"int32:7"}, contract.ErrorInvalidArgument},
		{"StartBackup", []string{"string:nosuch"}, contract.ErrorNoSuchPlan},
		{"StartCheck", []string{"string:" + strings.Repeat("x", 65536)}, contract.ErrorInvalidArgument},
		{"CancelJob", []string{"uint32:999999"}, contract.ErrorNoSuchJob},
		{"GetJobFiles", []string{"uint32:999999"}, contract.ErrorNoSuchJob},
		{"CancelJob", []string{fmt.Sprintf("uint32:%d", id)}, contract.ErrorNoSuchJob}, // finished
		{"DeleteSnapshot", []string{"string:home", "string:subvault@other@20260101T000000Z@1@home"}, contract.ErrorNoSuchSnapshot},
		{"DeleteSnapshot", []string{"string:home", "string:" + filepath.Join(e.fs.Path("home"), ".subvault-snapshots", name)}, contract.ErrorInvalidArgument},
		{"CloneSnapshot", []string{"string:home", "string:" + name, "string:relative/clone"}, contract.ErrorInvalidArgument},
		{"CloneSnapshot", []string{"string:home", "string:" + name, "string:" + e.fs.Mount + "/x/../y"}, contract.ErrorInvalidArgument},
		{"CloneSnapshot", []string{"string:home", "string:" + name, "string:" + clone}, contract.ErrorInvalidArgument}, // exists
		{"ListArchives", []string{"string:nosuch"}, contract.ErrorNoSuchPlan},
		{"Diff", []string{"string:home", "string:live", "string:live"}, contract.ErrorInvalidArgument},
		{"Diff", []string{"string:home", "string:latest", "string:../x"}, contract.ErrorInvalidArgument},
		{"Diff", []string{"string:home", "string:deadbeef", "string:live"}, contract.ErrorNoSuchArchive},
		{"Diff", []string{"string:home", "string:latest", "string:subvault@other@20260101T000000Z@1@home"}, contract.ErrorNoSuchSnapshot},
	} {
		got, out := e.send(c.method, c.args...)
		if got != c.want {
			t.Errorf("%s %.60v: %s, want %s\n%.300s", c.method, c.args, got, c.want, out)
		}
	}
	// An include list and a relative restore target, through busctl.
	if out, err := e.busctl("call", contract.BusName, string(contract.ManagerPath), contract.ManagerInterface, "StartRestore", "sssas", "home", "latest", "restore/here", "0"); err == nil || !strings.Contains(out, "relative") {
		t.Errorf("relative restore target: %v %s", err, out)
	}
	nonEmpty := t.TempDir()
	testutil.WriteFile(t, filepath.Join(nonEmpty, "x"), "x")
	if out, err := e.busctl("call", contract.BusName, string(contract.ManagerPath), contract.ManagerInterface, "StartRestore", "sssas", "home", "latest", nonEmpty, "0"); err == nil || !strings.Contains(out, "not empty") {
		t.Errorf("non-empty restore target: %v %s", err, out)
	}
	// NUL cannot even be sent; the daemon is untouched.
	conn, err := dbus.Connect(e.bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if call := conn.Object(contract.BusName, contract.ManagerPath).Call(contract.ManagerInterface+".StartRestore", 0, "home", "latest", "/tmp/a\x00b", []string{}); call.Err == nil {
		t.Error("a NUL byte in a target was accepted")
	}
	if now := e.jobCount(t); now != jobs {
		t.Errorf("wrong arguments made jobs: %d, then %d", jobs, now)
	}
	if _, err := os.Stat(filepath.Join(e.fs.Path("home"), ".subvault-snapshots", name)); err != nil {
		// Where the daemon keeps them is its business; the listing says.
		e.call(t, &snapshots, "ListSnapshots", "s", "home")
		if len(snapshots) != 1 {
			t.Errorf("a refused DeleteSnapshot deleted: %v", snapshots)
		}
	}

	e.call(t, nil, "DeleteSnapshot", "ss", "home", name)
	e.call(t, &snapshots, "ListSnapshots", "s", "home")
	if len(snapshots) != 0 {
		t.Errorf("after DeleteSnapshot: %v", snapshots)
	}

	// A restore, with an include list.
	target := filepath.Join(t.TempDir(), "restore")
	rid := e.startJob(t, "StartRestore", "sssas", "home", "latest", target, "1", e.fs.Path("home", "d1"))
	if result := e.signals.waitRemoved(t, rid, 3*time.Minute); result != "done" {
		t.Fatalf("restore job %d: %s", rid, result)
	}
	var restored []string
	_ = filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			restored = append(restored, strings.TrimPrefix(p, target))
		}
		return nil
	})
	if len(restored) != 30 || !strings.HasPrefix(restored[0], e.fs.Path("home", "d1")+"/") {
		t.Errorf("restored %d files (want the 30 of d1): %.3v", len(restored), restored)
	}

	// The same archive into a new subvolume, read back: StartRestoreWith.
	svTarget := e.fs.Path("restored")
	sid := e.startJob(t, "StartRestoreWith", "sssasa{sv}", "home", "latest", svTarget, "0", "2", "subvolume", "b", "true", "verify", "b", "true")
	if result := e.signals.waitRemoved(t, sid, 3*time.Minute); result != "done" {
		t.Fatalf("restore job %d into a subvolume: %s", sid, result)
	}
	if ok, err := btrfs.IsSubvolume(svTarget); !ok || err != nil {
		t.Errorf("StartRestoreWith subvolume: %s is no subvolume (%v)", svTarget, err)
	}
	if _, err := os.Stat(filepath.Join(svTarget, "d1", "a1")); err != nil {
		t.Errorf("StartRestoreWith subvolume: %v", err)
	}

	// An archive id the repository does not have: queued, then failed,
	// with a cause.
	mid := e.startJob(t, "StartRestore", "sssas", "home", "deadbeef", filepath.Join(t.TempDir(), "none"), "0")
	if result := e.signals.waitRemoved(t, mid, time.Minute); result != "failed" {
		t.Errorf("restore of a missing archive: %s", result)
	}
	if out, err := e.busctl("get-property", contract.BusName, string(contract.JobPath(mid)), contract.JobInterface, "Error"); err != nil || len(out) < 20 {
		t.Errorf("restore of a missing archive: Error %v %q", err, out)
	} else {
		t.Logf("restore of a missing archive: %s", strings.TrimSpace(out))
	}

	// A running backup and a check queued behind it (a check never runs
	// beside another job on its repository): cancel the check with
	// CancelJob, the backup with its object's Cancel.
	e.addFiles(t, "b", 200)
	bid := e.startJob(t, "StartBackup", "s", "home")
	cid := e.startJob(t, "StartCheck", "s", "home")
	if again := e.startJob(t, "StartBackup", "s", "home"); again != bid {
		t.Errorf("a second StartBackup made job %d beside %d", again, bid)
	}
	var queued []string
	if out, err := e.busctl("--json=short", "get-property", contract.BusName, string(contract.ManagerPath), contract.ManagerInterface, "QueuedJobs"); err != nil || !strings.Contains(out, string(contract.JobPath(cid))) {
		t.Errorf("QueuedJobs lacks the check: %v %s %v", err, out, queued)
	}
	e.call(t, nil, "CancelJob", "u", fmt.Sprint(cid))
	if result := e.signals.waitRemoved(t, cid, 30*time.Second); result != "canceled" {
		t.Errorf("the canceled check ended %s", result)
	}
	waitFor(t, 60*time.Second, func() int {
		out, _ := e.busctl("get-property", contract.BusName, string(contract.JobPath(bid)), contract.JobInterface, "State")
		if strings.Contains(out, "running") {
			return 1
		}
		return 0
	})
	if out, err := e.busctl("call", contract.BusName, string(contract.JobPath(bid)), contract.JobInterface, "Cancel"); err != nil {
		t.Errorf("Job.Cancel: %v %s", err, out)
	}
	if result := e.signals.waitRemoved(t, bid, time.Minute); result != "canceled" {
		t.Errorf("the canceled backup ended %s", result)
	}

	// Maintenance, reload, lists.
	pid := e.startJob(t, "StartPrune", "s", "home")
	if result := e.signals.waitRemoved(t, pid, 3*time.Minute); result != "done" {
		t.Errorf("prune: %s", result)
	}
	kid := e.startJob(t, "StartCheck", "s", "home")
	if result := e.signals.waitRemoved(t, kid, 3*time.Minute); result != "done" {
		t.Errorf("check: %s", result)
	}
	// A plan without copy_to has nothing to copy to (copies themselves:
	// TestCopyToThroughTheDaemon).
	if name, out := e.send("StartCopy", "string:home"); name != contract.ErrorInvalidArgument || !strings.Contains(out, "no copy_to") {
		t.Errorf("StartCopy of a plan without copy_to: %s %s", name, out)
	}
	e.call(t, nil, "Reload", "")
	var plans [][]string
	e.call(t, &plans, "ListPlans", "")
	if len(plans) != 1 || plans[0][0] != "home" || plans[0][1] != string(contract.PlanPath("home")) {
		t.Errorf("ListPlans: %v", plans)
	}
	var list [][]any
	e.call(t, &list, "ListJobs", "")
	if len(list) != 8 || list[0][0] != float64(kid) || list[0][3] != "finished" {
		t.Errorf("ListJobs: %v", list)
	}
	if out, err := e.busctl("get-property", contract.BusName, string(contract.PlanPath("home")), contract.PlanInterface, "LastResult"); err != nil || out != "s \"canceled\"\n" {
		t.Errorf("plan LastResult after the canceled backup: %v %q", err, out)
	}
	if out, err := e.busctl("get-property", contract.BusName, string(contract.ManagerPath), contract.ManagerInterface, "State"); err != nil || out != "s \"idle\"\n" {
		t.Errorf("State: %v %q", err, out)
	}

	// Rollback through busctl, with its a{sv}: a relative subvolume is
	// refused (rollbacks themselves: TestRollbackThroughTheCLI).
	e.called["Rollback"] = true
	if out, err := e.busctl("call", contract.BusName, string(contract.ManagerPath), contract.ManagerInterface, "Rollback", "sssa{sv}",
		"home", "subvault@home@20260101T000000Z@1@home", "relative", "1", "dry_run", "b", "true"); err == nil || !strings.Contains(out, "relative") {
		t.Errorf("Rollback of a relative subvolume: %v %s", err, out)
	}

	// The onsite calls (sends themselves: send_daemon_test.go): no target
	// is configured, and the plan has no send_to.
	var targets []any
	e.call(t, &targets, "ListTargets", "")
	if len(targets) != 0 {
		t.Errorf("ListTargets without targets: %v", targets)
	}
	e.called["StartSend"] = true
	if out, err := e.busctl("call", contract.BusName, string(contract.ManagerPath), contract.ManagerInterface, "StartSend", "ss", "home", ""); err == nil || !strings.Contains(out, "no send_to") {
		t.Errorf("StartSend of a plan without send_to: %v %s", err, out)
	}
	e.call(t, nil, "TargetAppeared", "s", "0f6c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b")

	for _, m := range api.Introspection()[contract.ManagerInterface].Methods {
		if !e.called[m.Name] {
			t.Errorf("%s was not called through busctl or dbus-send", m.Name)
		}
	}
}

// A second daemon on the bus: it exits, saying the name is taken, and the
// first goes on serving.
func TestDBusSecondDaemonRefused(t *testing.T) {
	e := newAPIEnv(t, 1)
	e.startDaemon(t)
	second := filepath.Join(t.TempDir(), "config.yaml")
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, second, strings.Replace(string(cfg), "state_dir: "+e.state, "state_dir: "+filepath.Dir(second), 1))
	cmd := subvaultCmd("daemon", "--config", second, "--bus", e.bus.Address)
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); err == nil || code != exitFailure {
		t.Errorf("second daemon: exit %d (%v)", code, err)
	}
	if !strings.Contains(string(out), "another process owns the bus name org.subvault.Subvault1") {
		t.Errorf("second daemon says:\n%s", out)
	}
	var plans [][]string
	e.call(t, &plans, "ListPlans", "")
	if len(plans) != 1 {
		t.Errorf("the first daemon after the second tried: %v", plans)
	}
}

// The daemon as wired by `subvault daemon` (the polkit Authorizer, with no
// polkit on this bus): an unprivileged caller reads, and is refused
// everything else with AccessDenied, and nothing happens.
func TestDBusUnprivilegedCallerReadsOnly(t *testing.T) {
	testutil.RequireNobody(t)
	e := newAPIEnv(t, 1)
	e.startDaemon(t)
	nobody := func(args ...string) (string, error) {
		out, err := testutil.AsNobody("busctl", append([]string{"--address=" + e.bus.Address}, args...)...).CombinedOutput()
		return string(out), err
	}
	manager := []string{contract.BusName, string(contract.ManagerPath), contract.ManagerInterface}
	for _, read := range [][]string{
		append(append([]string{"call"}, manager...), "ListPlans"),
		append(append([]string{"call"}, manager...), "ListJobs"),
		append(append([]string{"call"}, manager...), "ListSnapshots", "s", "home"),
		append(append([]string{"call"}, manager...), "ListTargets"),
		{"call", contract.BusName, string(contract.ManagerPath), contract.ObjectManagerInterface, "GetManagedObjects"},
		append(append([]string{"get-property"}, manager...), "State"),
		{"introspect", contract.BusName, string(contract.PlanPath("home"))},
	} {
		if out, err := nobody(read...); err != nil {
			t.Errorf("as nobody, %v: %v: %s", read[:min(len(read), 5)], err, out)
		}
	}
	target := filepath.Join(t.TempDir(), "r")
	for _, act := range [][]string{
		{"StartBackup", "s", "home"},
		{"StartCheck", "s", "home"},
		{"StartCopy", "s", "home"},
		{"StartSend", "ss", "home", ""},
		{"TargetAppeared", "s", "0f6c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"},
		{"StartPrune", "s", "home"},
		{"ListArchives", "s", "home"},
		{"Diff", "sss", "home", "latest", "live"},
		{"StartRestore", "sssas", "home", "latest", target, "0"},
		{"DeleteSnapshot", "ss", "home", "subvault@home@20260101T000000Z@1@home"},
		{"CloneSnapshot", "sss", "home", "subvault@home@20260101T000000Z@1@home", target},
		{"Reload"},
	} {
		out, err := nobody(append(append([]string{"--allow-interactive-authorization=no", "call"}, manager...), act...)...)
		if err == nil || !strings.Contains(out, "Access denied") { // sd-bus shows AccessDenied as EACCES
			t.Errorf("as nobody, %s: %v: %s", act[0], err, out)
		}
	}
	// busctl shows only the message; dbus-send shows the error's name.
	out, _ := testutil.AsNobody("dbus-send", "--bus="+e.bus.Address, "--print-reply", "--dest="+contract.BusName,
		string(contract.ManagerPath), contract.ManagerInterface+".StartBackup", "string:home").CombinedOutput()
	if !strings.HasPrefix(string(out), "Error "+contract.ErrorAccessDenied+": ") {
		t.Errorf("as nobody, StartBackup through dbus-send: %s", out)
	}
	t.Logf("the refusal: %s", out)
	if n := e.jobCount(t); n != 0 {
		t.Errorf("refused calls made %d jobs", n)
	}
	if _, err := os.Stat(target); err == nil {
		t.Error("a refused call made its target")
	}
}

// The bus policy of packaging/ lets only root own the name: uid 65534 is
// refused by the bus itself, whether the name is free or taken.
func nobodyCannotOwnName(t *testing.T, bus *testutil.Bus) {
	t.Helper()
	got, out := dbusSend(testutil.AsNobody("dbus-send", "--bus="+bus.Address, "--print-reply", "--dest=org.freedesktop.DBus",
		"/org/freedesktop/DBus", "org.freedesktop.DBus.RequestName", "string:"+contract.BusName, "uint32:4"))
	if got != contract.ErrorAccessDenied || !strings.Contains(out, "not allowed to own") {
		t.Errorf("as nobody, RequestName %s: %s\n%s", contract.BusName, got, out)
	}
}

// A uid in a plan's allow_users (65534) may back up that plan and list its
// archives, and nothing more: prune, snapshot deletion, restore, clone,
// a diff (it names files), reload and a backup of another plan are refused by the daemon (not by
// the bus) with AccessDenied, and nothing is queued or touched. Nor can it
// take the bus name.
func TestDBusAllowedUserBacksUpItsPlanOnly(t *testing.T) {
	testutil.RequireNobody(t)
	e := newAPIEnv(t, 1)
	testutil.Run(t, "btrfs", "subvolume", "create", e.fs.Path("other"))
	testutil.WriteFile(t, e.fs.Path("other", "f"), "other")
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	withPlans := strings.Replace(string(cfg), "      last: 5\n", "      last: 5\n    allow_users: [65534]\n", 1)
	withPlans = strings.Replace(withPlans, "settings:\n", fmt.Sprintf("  other:\n    subvolumes: [%s]\n    repository: r\nsettings:\n", e.fs.Path("other")), 1)
	if !strings.Contains(withPlans, "allow_users") || !strings.Contains(withPlans, "  other:") {
		t.Fatalf("cannot edit the configuration:\n%s", cfg)
	}
	testutil.WriteFile(t, e.config, withPlans)

	// The name is free: still uid 65534 cannot take it.
	waitFor(t, 5*time.Second, func() int {
		conn, err := dbus.Connect(e.bus.Address)
		if err != nil {
			return 0
		}
		_ = conn.Close()
		return 1
	})
	nobodyCannotOwnName(t, e.bus)
	e.startDaemon(t)
	nobodyCannotOwnName(t, e.bus)

	// The backup of its plan: a job path, and the backup completes.
	got, out := e.sendAsNobody("StartBackup", "string:home")
	m := regexp.MustCompile(`(?m)^\s*uint32 (\d+)\s+object path "([^"]+)"\s*$`).FindStringSubmatch(out)
	var id uint32
	var path string
	if m != nil {
		n, _ := strconv.ParseUint(m[1], 10, 32)
		id, path = uint32(n), m[2]
	}
	if got != "" || m == nil || path != string(contract.JobPath(id)) {
		t.Fatalf("as nobody, StartBackup home: %s\n%s", got, out)
	}
	if result := e.signals.waitRemoved(t, id, 3*time.Minute); result != "done" {
		t.Fatalf("nobody's backup job %d: %s", id, result)
	}
	if out, err := e.busctl("get-property", contract.BusName, path, contract.JobInterface, "Trigger"); err != nil || out != "s \"dbus:65534\"\n" {
		t.Errorf("Trigger of nobody's backup: %v %q", err, out)
	}
	if got, out := e.sendAsNobody("ListArchives", "string:home"); got != "" || !strings.Contains(out, e.fs.Path("home")) {
		t.Errorf("as nobody, ListArchives home: %s\n%s", got, out)
	}

	// What there is now; the refused calls must leave it so.
	var snapshots [][]any
	e.call(t, &snapshots, "ListSnapshots", "s", "home")
	if len(snapshots) != 1 {
		t.Fatalf("ListSnapshots after the backup: %v", snapshots)
	}
	name := snapshots[0][0].(string)
	var jobsBefore, archivesBefore [][]any
	e.call(t, &jobsBefore, "ListJobs", "")
	e.call(t, &archivesBefore, "ListArchives", "s", "home")
	// A configuration with a third plan waits on disk: a Reload would load it.
	third := strings.Replace(withPlans, "settings:\n", fmt.Sprintf("  third:\n    subvolumes: [%s]\n    repository: r\nsettings:\n", e.fs.Path("other")), 1)
	testutil.WriteFile(t, e.config, third)
	restoreTarget := filepath.Join(t.TempDir(), "restore")
	cloneTarget := e.fs.Path("clone")

	for _, c := range []struct {
		method string
		args   []string
	}{
		{"StartBackup", []string{"string:other"}},
		{"StartCheck", []string{"string:other"}},
		{"StartCopy", []string{"string:other"}},
		{"ListArchives", []string{"string:other"}},
		{"Diff", []string{"string:other", "string:latest", "string:live"}},
		// It names files: the restore authorization, not allow_users.
		{"Diff", []string{"string:home", "string:latest", "string:live"}},
		{"GetJobFiles", []string{fmt.Sprintf("uint32:%d", id)}},
		{"StartPrune", []string{"string:home"}},
		{"DeleteSnapshot", []string{"string:home", "string:" + name}},
		{"StartRestore", []string{"string:home", "string:latest", "string:" + restoreTarget, "array:string:" + e.fs.Path("home", "d0")}},
		{"CloneSnapshot", []string{"string:home", "string:" + name, "string:" + cloneTarget}},
		{"Reload", nil},
	} {
		got, out := e.sendAsNobody(c.method, c.args...)
		// The daemon refuses, saying why; the bus's own refusal would be
		// "Rejected send message".
		if got != contract.ErrorAccessDenied || !strings.Contains(out, "not authorized") || !strings.Contains(out, "uid 65534") {
			t.Errorf("as nobody, %s %v: %s, want %s from the daemon\n%s", c.method, c.args, got, contract.ErrorAccessDenied, out)
		}
	}

	var jobsAfter, archivesAfter, plans [][]any
	e.call(t, &jobsAfter, "ListJobs", "")
	if fmt.Sprint(jobsAfter) != fmt.Sprint(jobsBefore) {
		t.Errorf("refused calls changed the jobs:\n%v\n%v", jobsBefore, jobsAfter)
	}
	e.call(t, &snapshots, "ListSnapshots", "s", "home")
	if len(snapshots) != 1 || snapshots[0][0] != name {
		t.Errorf("snapshots after a refused DeleteSnapshot: %v", snapshots)
	}
	e.call(t, &archivesAfter, "ListArchives", "s", "home")
	if fmt.Sprint(archivesAfter) != fmt.Sprint(archivesBefore) {
		t.Errorf("refused calls changed the archives:\n%v\n%v", archivesBefore, archivesAfter)
	}
	for _, p := range []string{restoreTarget, cloneTarget} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a refused call made %s: %v", p, err)
		}
	}
	e.call(t, &plans, "ListPlans", "")
	if len(plans) != 2 {
		t.Errorf("plans after a refused Reload: %v", plans)
	}
	// Root's Reload does load it: the refusal was the only thing in the way.
	e.call(t, nil, "Reload", "")
	e.call(t, &plans, "ListPlans", "")
	if len(plans) != 3 {
		t.Errorf("plans after root's Reload: %v", plans)
	}
}

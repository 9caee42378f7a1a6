package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/internal/testutil"
)

// sendEnv is the daemon as its own process on a private bus with the
// system bus's policy, its plan home (keep_snapshots last 5) sending to
// one target, and a second btrfs for the target: mounted (a path
// target), or an image whose loop device the test attaches and detaches
// (a UUID target).
type sendEnv struct {
	*apiEnv
	daemon *exec.Cmd
	log    *testutil.SyncBuffer
	// target is the path target's filesystem; image, uuid and device
	// the UUID target's (device "" while detached).
	target *testutil.BtrfsFS
	image  string
	uuid   string
	device string
}

const sendTestUUID = "5e1d0000-1600-4d00-8000-00000000d15c"

// newSendEnv makes the env; byUUID picks a UUID target whose disk is
// absent (not attached) at first, otherwise a path target on a mounted
// btrfs. files MiB of random data are in home.
func newSendEnv(t *testing.T, bin string, files int, byUUID bool) *sendEnv {
	t.Helper()
	e := newSendEnvWith(t, bin, files, byUUID, "")
	e.startAgain(t)
	return e
}

// newSendEnvWith is newSendEnv with more lines in plan home's block, and
// without the daemon started.
func newSendEnvWith(t *testing.T, bin string, files int, byUUID bool, planLines string) *sendEnv {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireRestic(t, bin)
	testutil.RequireCommand(t, "busctl", "systemd")
	bus := testutil.NewSystemBus(t, busPolicy)
	run := newRunEnvWith(t, bin, 1024)
	e := &sendEnv{apiEnv: &apiEnv{daemonEnv: &daemonEnv{runEnv: run, bus: bus, notify: newNotifySocket(t), state: filepath.Dir(run.config)},
		called: map[string]bool{}}}
	var target string
	if byUUID {
		dir := t.TempDir()
		e.image, e.uuid = filepath.Join(dir, "disk.img"), sendTestUUID
		f, err := os.Create(e.image)
		if err == nil {
			err = f.Truncate(1 << 30)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		testutil.Run(t, "mkfs.btrfs", "-q", "-U", e.uuid, e.image)
		t.Cleanup(func() { e.detach(t) })
		target = "  disk:\n    uuid: " + e.uuid + "\n"
	} else {
		e.target = testutil.NewBtrfs(t, 1024)
		if err := os.Mkdir(e.target.Path("subvault"), 0o755); err != nil {
			t.Fatal(err)
		}
		target = "  usb:\n    path: " + e.target.Path("subvault") + "\n"
	}
	cfg, err := os.ReadFile(run.config)
	if err != nil {
		t.Fatal(err)
	}
	name := "usb"
	if byUUID {
		name = "disk"
	}
	text := strings.Replace(string(cfg), "    repository: r\n",
		"    repository: r\n    keep_snapshots:\n      last: 5\n    send_to: ["+name+"]\n"+planLines, 1)
	testutil.WriteFile(t, run.config, text+"targets:\n"+target)
	e.addFiles(t, "f", files)
	return e
}

// startAgain starts the daemon and waits for READY=1.
func (e *sendEnv) startAgain(t *testing.T) {
	t.Helper()
	e.daemon, e.log = e.startDaemonLogged(t)
}

// attach attaches the UUID target's image to a loop device: the disk is
// plugged in.
func (e *sendEnv) attach(t *testing.T) {
	t.Helper()
	e.device = strings.TrimSpace(testutil.Run(t, "losetup", "--find", "--show", e.image))
	t.Logf("disk %s attached as %s", e.uuid, e.device)
}

// detach detaches the UUID target's loop device, if attached.
func (e *sendEnv) detach(t *testing.T) {
	t.Helper()
	if e.device == "" {
		return
	}
	if out, err := exec.Command("losetup", "-d", e.device).CombinedOutput(); err != nil {
		t.Errorf("losetup -d %s: %v: %s", e.device, err, out)
	}
	e.device = ""
}

// mountDisk mounts the attached UUID target's filesystem at a temporary
// directory, as a person does to reach its copies (unmounted at
// cleanup), and returns the directory.
func (e *sendEnv) mountDisk(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	testutil.Run(t, "mount", e.device, dir)
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// sends are the state file's send jobs, oldest first.
func (e *sendEnv) sends(t *testing.T) []queue.Job {
	t.Helper()
	var out []queue.Job
	if _, err := os.Stat(filepath.Join(e.state, queue.StateFile)); os.IsNotExist(err) {
		return nil // no job yet
	}
	for _, j := range e.jobs(t) {
		if j.Kind == queue.KindSend {
			out = append(out, j)
		}
	}
	return out
}

// lastSend is the id of the state file's newest send job, 0 when none.
func (e *sendEnv) lastSend(t *testing.T) uint32 {
	t.Helper()
	var id uint32
	for _, j := range e.sends(t) {
		id = max(id, j.ID)
	}
	return id
}

// waitSend waits until a send job newer than job after has finished, and
// returns it.
func (e *sendEnv) waitSend(t *testing.T, after uint32, limit time.Duration) queue.Job {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		for _, j := range e.sends(t) {
			if j.ID > after && j.State == queue.StateFinished {
				return j
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no send job after job %d finished within %v: %+v", after, limit, e.sends(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// newestSnapshot is home's newest snapshot.
func (e *sendEnv) newestSnapshot(t *testing.T) btrfs.Snapshot {
	t.Helper()
	all, err := btrfs.ListSnapshots(e.fs.Path("home", ".subvault-snapshots"))
	if err != nil || len(all) == 0 {
		t.Fatalf("home's snapshots: %v, %v", all, err)
	}
	newest := all[0]
	for _, s := range all {
		if s.Time.After(newest.Time) || s.Time.Equal(newest.Time) && s.JobID > newest.JobID {
			newest = s
		}
	}
	return newest
}

// checkCopy checks that dir/home/<snapshot's name> is a read-only
// subvolume received from snap, with snap's tree.
func checkCopy(t *testing.T, dir string, snap btrfs.Snapshot) {
	t.Helper()
	path := filepath.Join(dir, "home", snap.Name())
	sv, err := btrfs.Info(path)
	if err != nil {
		t.Fatalf("the copy %s: %v", path, err)
	}
	src, err := btrfs.Info(snap.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !sv.ReadOnly || sv.ReceivedUUID != src.UUID {
		t.Errorf("the copy %s: read-only %v, received_uuid %q, want read-only from %s", path, sv.ReadOnly, sv.ReceivedUUID, src.UUID)
	}
	if d := treeDiffs(t, snap.Path, path); len(d) > 0 {
		t.Errorf("the copy differs from its snapshot:\n%s", strings.Join(d, "\n"))
	}
}

// treeDiffs is testutil.CompareTrees without the plan's own snapshot
// directory: in a snapshot of home its earlier snapshots are empty
// directories (nested subvolumes), which btrfs send leaves out.
func treeDiffs(t *testing.T, a, b string) []string {
	t.Helper()
	var out []string
	for _, d := range testutil.CompareTrees(t, a, b) {
		if !strings.HasPrefix(d, ".subvault-snapshots/") {
			out = append(out, d)
		}
	}
	return out
}

// noLeftovers checks that dir/home holds no receiving directory.
func noLeftovers(t *testing.T, dir string) {
	t.Helper()
	left, _ := filepath.Glob(filepath.Join(dir, "home", ".subvault-receiving-*"))
	if len(left) > 0 {
		t.Errorf("half copies left on the target: %v", left)
	}
}

// A backup of a plan with send_to queues a send to its target, asked for
// by the backup's caller; it ends done and the target holds a read-only
// copy received from the new snapshot, with its tree. The plan's health
// stays the backup's.
func TestSendFollowsBackupToPathTarget(t *testing.T) {
	bin := testutil.Restic(t)
	e := newSendEnv(t, bin, 20, false)
	e.mustCLI(t, "backup", "home", "--wait")
	j := e.waitSend(t, 0, 120*time.Second)
	if j.Result != queue.ResultDone || j.SendTarget != "usb" {
		t.Fatalf("the send: %s to %q (%s)", j.Result, j.SendTarget, j.Error)
	}
	snap := e.newestSnapshot(t)
	checkCopy(t, e.target.Path("subvault"), snap)
	noLeftovers(t, e.target.Path("subvault"))
	t.Logf("the send's summary: %v", j.Summary)
	if full, _ := j.Summary["full"].(bool); !full {
		t.Errorf("the first send's summary says full %v: %v", j.Summary["full"], j.Summary)
	}

	// The copy as a snapshot: clone (on the target's filesystem) and diff.
	spec := "usb:" + snap.Name()
	clone := e.target.Path("clone")
	e.mustCLI(t, "clone", "home", spec, clone)
	if d := treeDiffs(t, snap.Path, clone); len(d) > 0 {
		t.Errorf("the clone of the copy differs from the snapshot:\n%s", strings.Join(d, "\n"))
	}
	if sv, err := btrfs.Info(clone); err != nil || sv.ReadOnly {
		t.Errorf("the clone: %+v, %v; want a writable subvolume", sv, err)
	}
	testutil.Run(t, "btrfs", "subvolume", "delete", clone)
	if code, _, errOut := e.cli(t, "clone", "home", spec, e.fs.Path("elsewhere")); code == exitOK || !strings.Contains(errOut, "not on the filesystem of target usb") {
		t.Errorf("a clone of the copy onto another filesystem: exit %d, %s", code, errOut)
	}
	if code, _, errOut := e.cli(t, "clone", "home", spec, e.target.Path("subvault", "x")); code == exitOK || !strings.Contains(errOut, "subvault keeps its copies in") {
		t.Errorf("a clone into the copies' directory: exit %d, %s", code, errOut)
	}
	if code, out, errOut := e.cli(t, "diff", "home", "latest", spec); code != exitOK {
		t.Errorf("subvault diff home latest %s: exit %d (want 0: no difference)\n%s%s", spec, code, out, errOut)
	}
	for _, want := range []string{"home", "usb"} {
		if out := e.mustCLI(t, "status"); !strings.Contains(out, want) {
			t.Errorf("subvault status lacks %q:\n%s", want, out)
		}
	}

	// One file changed: the next send is incremental and small.
	testutil.WriteFile(t, e.fs.Path("home", "changed"), "one more file\n")
	before := e.lastSend(t)
	e.mustCLI(t, "backup", "home", "--wait")
	j = e.waitSend(t, before, 120*time.Second)
	if j.Result != queue.ResultDone {
		t.Fatalf("the second send: %s (%s)", j.Result, j.Error)
	}
	checkCopy(t, e.target.Path("subvault"), e.newestSnapshot(t))
	if full, _ := j.Summary["full"].(bool); full {
		t.Errorf("the second send was full: %v", j.Summary)
	}
	t.Logf("the incremental send's summary: %v", j.Summary)
}

// A UUID target whose disk is absent: the backup's send ends skipped, not
// failed, and the plan stays ok (its last backup done). Plugged in (the
// loop device attached), the due send starts by itself (the device
// watch, trigger device) and ends done with the copy on the disk.
func TestSendToAbsentDiskSkippedThenStartsWhenPluggedIn(t *testing.T) {
	bin := testutil.Restic(t)
	e := newSendEnv(t, bin, 10, true)
	e.mustCLI(t, "backup", "home", "--wait")
	j := e.waitSend(t, 0, 60*time.Second)
	if j.Result != queue.ResultSkipped || !strings.Contains(j.Error, "absent") {
		t.Fatalf("the send to the absent disk: %s (%s), want skipped saying it is absent", j.Result, j.Error)
	}
	t.Logf("skipped: %s", j.Error)
	if n := strings.Count(e.log.String(), "event="+journal.EventSendSkipped); n != 1 {
		t.Errorf("%d send-skipped entries, want 1", n)
	}
	if out := e.mustCLI(t, "status"); !regexp.MustCompile(`(?m)^home .* done .* ok$`).MatchString(out) {
		t.Errorf("subvault status after a skipped send, want home's last backup done and its health ok:\n%s", out)
	}
	code, out, _ := e.cli(t, "jobs")
	if code != exitOK || !strings.Contains(out, "skipped") {
		t.Errorf("subvault jobs (exit %d) does not show the skipped send:\n%s", code, out)
	}

	start := time.Now()
	before := e.lastSend(t)
	e.attach(t)
	j = e.waitSend(t, before, 90*time.Second)
	t.Logf("the send started by itself and ended %v after the disk was attached", time.Since(start).Round(100*time.Millisecond))
	if j.Result != queue.ResultDone || j.Trigger != queue.TriggerDevice {
		t.Fatalf("the send after the disk appeared: %s, trigger %s (%s)", j.Result, j.Trigger, j.Error)
	}
	if mounts := testutil.HostMounts(t); strings.Contains(mounts, e.device) {
		t.Errorf("the daemon left the disk mounted in the host:\n%s", mounts)
	}
	snap := e.newestSnapshot(t)
	// Not mounted on the system: a clone of its copy says to mount it.
	code, _, errOut := e.cli(t, "clone", "home", "disk:"+snap.Name(), filepath.Join(t.TempDir(), "clone"))
	if code == exitOK || !strings.Contains(errOut, "mount the disk") || !strings.Contains(errOut, e.uuid) {
		t.Errorf("a clone of a copy on the unmounted disk: exit %d, %s", code, errOut)
	}
	// Mounted in the host (read-write, as docs/recovery.md says): the
	// copy is cloned there and run in a container, and diffed.
	dir := e.mountDisk(t)
	checkCopy(t, filepath.Join(dir, "subvault"), snap)
	noLeftovers(t, filepath.Join(dir, "subvault"))
	clone := filepath.Join(dir, "old-home")
	out = e.mustCLI(t, "clone", "home", "disk:"+snap.Name(), clone, "--nspawn")
	if !strings.Contains(out, "systemd-nspawn") || !strings.Contains(out, "--bind="+clone+":"+e.fs.Path("home")) {
		t.Errorf("subvault clone --nspawn of the disk's copy:\n%s", out)
	}
	if d := treeDiffs(t, snap.Path, clone); len(d) > 0 {
		t.Errorf("the clone of the disk's copy differs from the snapshot:\n%s", strings.Join(d, "\n"))
	}
	testutil.Run(t, "btrfs", "subvolume", "delete", clone)
	if code, out, errOut := e.cli(t, "diff", "home", "latest", "disk:"+snap.Name()); code != exitOK {
		t.Errorf("subvault diff home latest disk:%s: exit %d (want 0: no difference)\n%s%s", snap.Name(), code, out, errOut)
	}
}

// The daemon killed (SIGKILL) while btrfs receive writes a copy leaves a
// half copy under its temporary name; the next start removes it (logged
// send-leftover-removed), and the next send is good.
func TestDaemonKilledMidReceiveLeavesNoHalfCopy(t *testing.T) {
	bin := testutil.Restic(t)
	e := newSendEnv(t, bin, 300, false)
	target := e.target.Path("subvault")
	// Not --wait: the send follows the backup at once, and is watched
	// from the start.
	e.mustCLI(t, "backup", "home")
	// The daemon is stopped (SIGSTOP) as soon as the receive has written
	// 1 MiB, so that it is killed mid-receive however fast the disk (the
	// stream comes from the daemon's own ioctl): then the receive finds
	// its stream broken and ends.
	var half string
	deadline := time.Now().Add(120 * time.Second)
	for {
		if left, _ := filepath.Glob(filepath.Join(target, "home", ".subvault-receiving-*")); len(left) == 1 && stagedBytes(left[0]) >= 1<<20 {
			half = left[0]
			if err := e.daemon.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no receive writing into %s within 120 s", target)
		}
		time.Sleep(time.Millisecond)
	}
	receivePID := testutil.ProcessBelow(e.daemon.Process.Pid, "btrfs", "receive")
	if receivePID == 0 {
		t.Fatalf("the daemon stopped with %s there, but no btrfs receive below it", half)
	}
	if err := e.daemon.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = e.daemon.Wait()
	waitFor(t, 60*time.Second, func() int {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", receivePID)); os.IsNotExist(err) {
			return 1
		}
		return 0
	})
	t.Logf("killed with %d MiB in %s", stagedBytes(half)>>20, half)
	if _, err := os.Lstat(half); err != nil {
		t.Fatalf("after kill -9, the half copy: %v", err)
	}
	copies, _ := filepath.Glob(filepath.Join(target, "home", "subvault@*"))
	if len(copies) != 0 {
		t.Fatalf("a copy is in place after kill -9 mid-receive: %v", copies)
	}

	e.startAgain(t)
	waitFor(t, 30*time.Second, func() int {
		if _, err := os.Lstat(half); os.IsNotExist(err) {
			return 1
		}
		return 0
	})
	if n := strings.Count(e.log.String(), "event="+journal.EventSendLeftoverRemoved); n < 1 {
		t.Errorf("%d send-leftover-removed entries, want the half copy's", n)
	}
	if _, err := os.Stat(half); !os.IsNotExist(err) {
		t.Errorf("the half copy survived the start: %v", err)
	}
	before := e.lastSend(t)
	e.mustCLI(t, "backup", "home", "--wait")
	j := e.waitSend(t, before, 180*time.Second)
	if j.Result != queue.ResultDone {
		t.Fatalf("the send after the restart: %s (%s)", j.Result, j.Error)
	}
	checkCopy(t, target, e.newestSnapshot(t))
	noLeftovers(t, target)
}

func init() {
	// send-flood ADDRESS PLAN UUID N: as this user, N StartSend of PLAN,
	// N TargetAppeared of UUID, and N ListTargets, 8 at a time; prints
	// per method "METHOD ok N" and "METHOD error NAME N", and the slowest
	// ListTargets as "slowest DURATION".
	testutil.RegisterHostile("send-flood", func(args []string) error {
		if len(args) != 4 {
			return errors.New("usage: send-flood ADDRESS PLAN UUID N")
		}
		n, _ := strconv.Atoi(args[3])
		conn, err := dbus.Connect(args[0])
		if err != nil {
			return err
		}
		defer conn.Close()
		mgr := conn.Object(contract.BusName, contract.ManagerPath)
		var mu sync.Mutex
		counts := map[string]int{}
		var slowest time.Duration
		count := func(method string, err error) {
			mu.Lock()
			defer mu.Unlock()
			var derr dbus.Error
			switch {
			case err == nil:
				counts[method+" ok"]++
			case errors.As(err, &derr):
				counts[method+" error "+derr.Name]++
			default:
				counts[method+" error "+err.Error()]++
			}
		}
		sem := make(chan struct{}, 8)
		var wg sync.WaitGroup
		for range n {
			for _, m := range []string{"StartSend", "TargetAppeared", "ListTargets"} {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					start := time.Now()
					var call *dbus.Call
					switch m {
					case "StartSend":
						call = mgr.Call(contract.ManagerInterface+".StartSend", 0, args[1], "")
					case "TargetAppeared":
						call = mgr.Call(contract.ManagerInterface+".TargetAppeared", 0, args[2])
					default:
						call = mgr.Call(contract.ManagerInterface+".ListTargets", 0)
						mu.Lock()
						slowest = max(slowest, time.Since(start))
						mu.Unlock()
					}
					count(m, call.Err)
				})
			}
		}
		wg.Wait()
		for k, v := range counts {
			fmt.Printf("%s %d\n", k, v)
		}
		fmt.Printf("slowest %s\n", slowest)
		return nil
	})
}

// uid 65534 floods the onsite calls: every StartSend is refused (the
// plan does not allow it) and every TargetAppeared too (root's alone),
// so no send job is made and no disk looked for; its ListTargets are
// answered (anyone may list) within the bound of a call, and the daemon
// answers root at once afterwards.
func TestHostileFloodsOnsiteCalls(t *testing.T) {
	testutil.RequireNobody(t)
	bin := testutil.Restic(t)
	e := newSendEnv(t, bin, 1, true)
	// The disk is there, not mounted: listing its copies mounts it in a
	// private namespace, which the flood must not make the daemon do at
	// its pace.
	e.attach(t)
	out, err := testutil.RunHostile(t, 3*time.Minute, "send-flood", e.bus.Address, "home", e.uuid, "100")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("uid 65534 flooded the onsite calls:\n%s", out)
	for _, want := range []string{"StartSend error " + contract.ErrorAccessDenied + " 100", "TargetAppeared error " + contract.ErrorAccessDenied + " 100"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("the flood's answers lack %q", want)
		}
	}
	m := regexp.MustCompile(`(?m)^ListTargets ok (\d+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Errorf("no ListTargets answered")
	}
	if s := regexp.MustCompile(`slowest (\S+)`).FindStringSubmatch(out); s != nil {
		if d, err := time.ParseDuration(s[1]); err != nil || d > 30*time.Second {
			t.Errorf("the slowest ListTargets took %s", s[1])
		}
	}
	if sends := e.sends(t); len(sends) != 0 {
		t.Errorf("the refused flood made send jobs: %+v", sends)
	}
	start := time.Now()
	var plans [][]any
	e.call(t, &plans, "ListPlans", "")
	if took := time.Since(start); len(plans) != 1 || took > 5*time.Second {
		t.Errorf("root's ListPlans after the flood: %d plans in %v", len(plans), took)
	}
	if n := strings.Count(e.log.String(), "a filesystem no target sends to appeared") + strings.Count(e.log.String(), "msg=\"target appeared"); n > 1 {
		t.Errorf("the disk appeared %d times to the daemon (the device watch's once at most; the refused calls never)", n)
	}
	if mounts := testutil.HostMounts(t); strings.Contains(mounts, e.device) {
		t.Errorf("the disk is mounted in the host:\n%s", mounts)
	}
}

// A plan with send_schedule: a backup is followed by no send; the
// schedule's run (here its catch-up at the daemon's start, the last one
// two days ago) queues one per target, which sends the newest snapshot
// (made by a foreground backup, which queues nothing).
func TestSendScheduleQueuesSendsNotTheBackup(t *testing.T) {
	bin := testutil.Restic(t)
	e := newSendEnvWith(t, bin, 5, false, "    send_schedule: \"0 3 * * *\"\n    catch_up: true\n")
	if code, out, errOut := runCmd(t, subvaultCmd("run", "backup", "home", "--config", e.config)); code != exitOK {
		t.Fatalf("subvault run backup: exit %d\n%s%s", code, out, errOut)
	}
	snap := e.newestSnapshot(t)
	lastRun, _ := json.Marshal(map[string]any{"version": 1, "jobs": []any{}, "plans": map[string]any{},
		"last_run": map[string]time.Time{"home/send": time.Now().Add(-48 * time.Hour)}})
	testutil.WriteFile(t, filepath.Join(e.state, queue.StateFile), string(lastRun))
	e.startAgain(t)
	j := e.waitSend(t, 0, 120*time.Second)
	if j.Result != queue.ResultDone || j.Trigger != queue.TriggerCatchUp || j.SendTarget != "usb" {
		t.Fatalf("the schedule's send: %s, trigger %s, target %q (%s)", j.Result, j.Trigger, j.SendTarget, j.Error)
	}
	checkCopy(t, e.target.Path("subvault"), snap)
	before := e.lastSend(t)
	e.mustCLI(t, "backup", "home", "--wait")
	if after := e.lastSend(t); after != before {
		t.Errorf("a backup of a plan with send_schedule queued send job %d", after)
	}
}

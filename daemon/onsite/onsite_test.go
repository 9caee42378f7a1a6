package onsite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/journal/journaltest"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/internal/testutil"
)

// env is a source btrfs with the plan's subvolumes and a target btrfs.
type env struct {
	src, dst *testutil.BtrfsFS
	cfg      *config.Config
	plan     *config.Plan
	log      *journaltest.Recorder
	job      uint32
	clock    time.Time
}

func newEnv(t *testing.T, srcMiB, dstMiB int, subvolumes ...string) *env {
	t.Helper()
	testutil.RequireCommand(t, "btrfs", "btrfs-progs")
	e := &env{src: testutil.NewBtrfs(t, srcMiB, subvolumes...), dst: testutil.NewBtrfs(t, dstMiB),
		log: journaltest.NewRecorder(), job: 100, clock: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := os.Mkdir(e.dst.Path("subvault"), 0o755); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, sv := range subvolumes {
		paths = append(paths, e.src.Path(sv))
	}
	e.plan = &config.Plan{Name: "p", Subvolumes: paths, SendTo: []string{"usb"},
		KeepSnapshots: config.KeepSnapshots{Last: 2}, TargetRetention: config.KeepSnapshots{Last: 10}}
	e.cfg = &config.Config{
		Plans:    map[string]*config.Plan{"p": e.plan},
		Targets:  map[string]*config.Target{"usb": {Name: "usb", Path: e.dst.Path("subvault")}},
		Settings: config.Settings{StateDir: t.TempDir()},
	}
	return e
}

// snapshot takes the plan's snapshots as a backup does (one time, one job
// id, every subvolume) and applies keep_snapshots.
func (e *env) snapshot(t *testing.T) []btrfs.Snapshot {
	t.Helper()
	e.job++
	e.clock = e.clock.Add(time.Hour)
	var out []btrfs.Snapshot
	for _, sv := range e.plan.Subvolumes {
		s := btrfs.Snapshot{Plan: e.plan.Name, Time: e.clock, JobID: e.job, Subvolume: sv}
		f, err := planstore.TakeSnapshot(e.plan, sv, &s)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		out = append(out, s)
	}
	if _, err := planstore.ApplyKeepSnapshots(e.cfg, e.plan, slog.New(e.log), e.clock, time.UTC, nil); err != nil {
		t.Fatal(err)
	}
	return out
}

func (e *env) options() Options {
	e.job++
	return Options{Config: e.cfg, Plan: e.plan, Target: "usb", JobID: e.job, Log: slog.New(e.log),
		Now: func() time.Time { return e.clock }}
}

func (e *env) send(t *testing.T) Result {
	t.Helper()
	res, err := Send(context.Background(), e.options())
	if err != nil {
		t.Fatalf("send: %v\nlog: %+v", err, e.log.Entries())
	}
	return res
}

// copyPath is where the copy of s is on the target.
func (e *env) copyPath(s btrfs.Snapshot) string {
	return e.dst.Path("subvault", e.plan.Name, s.Name())
}

// checkCopies fails unless each snapshot's copy is on the target, a
// complete one (read-only, received from it) with the same files.
func (e *env) checkCopies(t *testing.T, snaps []btrfs.Snapshot) {
	t.Helper()
	for _, s := range snaps {
		src, err := btrfs.Info(s.Path)
		if err != nil {
			t.Fatal(err)
		}
		c, err := btrfs.Info(e.copyPath(s))
		if err != nil {
			t.Fatalf("no copy of %s: %v", s.Name(), err)
		}
		if !c.ReadOnly || c.ReceivedUUID != src.UUID {
			t.Errorf("copy %+v of %s (UUID %s) is not a complete copy", c, s.Name(), src.UUID)
		}
		var diffs []string
		for _, d := range testutil.CompareTrees(t, s.Path, e.copyPath(s)) {
			// Nested subvolumes (the older snapshots in the snapshot
			// directory) show as empty directories in a snapshot, and
			// btrfs send leaves them out, as it leaves out every nested
			// subvolume.
			if !strings.HasPrefix(d, planstore.DefaultSnapshotDirName+"/") {
				diffs = append(diffs, d)
			}
		}
		if len(diffs) > 0 {
			t.Errorf("the copy of %s differs from the snapshot: %v", s.Name(), diffs)
		}
	}
}

// leftovers lists what is on the target that is not a complete copy.
func (e *env) leftovers(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(e.dst.Path("subvault", e.plan.Name))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range entries {
		if strings.HasPrefix(d.Name(), receivePrefix) {
			out = append(out, d.Name())
			continue
		}
		info, err := btrfs.Info(e.dst.Path("subvault", e.plan.Name, d.Name()))
		if err != nil || !info.ReadOnly || info.ReceivedUUID == "" {
			out = append(out, d.Name())
		}
	}
	return out
}

// The first send of a plan of two subvolumes is full and says why; the
// next one, after one changed file, is incremental, moves a few KiB, and
// each copy has the snapshot's files.
func TestSendFullThenIncremental(t *testing.T) {
	e := newEnv(t, 600, 600, "home", "srv")
	buf := make([]byte, 32<<20)
	for i := range buf {
		buf[i] = byte(i * 7 % 251)
	}
	testutil.WriteFile(t, e.src.Path("home", "big"), string(buf))
	testutil.WriteFile(t, e.src.Path("home", "docs", "a.txt"), "a")
	testutil.WriteFile(t, e.src.Path("srv", "db"), "db")
	first := e.snapshot(t)
	var progress []uint64
	o := e.options()
	o.Progress = func(n uint64) { progress = append(progress, n) }
	res, err := Send(context.Background(), o)
	if err != nil {
		t.Fatalf("send: %v\n%+v", err, e.log.Entries())
	}
	if len(res.Sent) != 2 || res.UpToDate || res.Where != e.dst.Path("subvault") {
		t.Fatalf("first send: %+v", res)
	}
	for _, s := range res.Sent {
		if s.Parent != "" || !strings.Contains(s.FullReason, "first send") {
			t.Errorf("first send of %s: parent %q, full reason %q", s.Subvolume, s.Parent, s.FullReason)
		}
	}
	if len(progress) == 0 || progress[len(progress)-1] != res.Sent[0].Bytes+res.Sent[1].Bytes {
		t.Errorf("progress %v, want it to end at %d", progress, res.Sent[0].Bytes+res.Sent[1].Bytes)
	}
	e.checkCopies(t, first)
	if n := len(e.log.Events(journal.EventSendFull)); n != 2 {
		t.Errorf("%d send-full entries, want 2", n)
	}

	testutil.WriteFile(t, e.src.Path("home", "docs", "a.txt"), "a changed")
	second := e.snapshot(t)
	res = e.send(t)
	if len(res.Sent) != 2 {
		t.Fatalf("second send: %+v", res)
	}
	for i, s := range res.Sent {
		if s.Parent != first[i].Name() || s.FullReason != "" {
			t.Errorf("second send of %s: parent %q, full reason %q; want parent %s", s.Subvolume, s.Parent, s.FullReason, first[i].Name())
		}
	}
	home := res.Sent[0]
	t.Logf("stream bytes: full send of home %s, incremental after one changed file %d", first0Bytes(e), home.Bytes)
	if home.Bytes > 64<<10 {
		t.Errorf("incremental send after one changed file moved %d bytes, want a few KiB", home.Bytes)
	}
	e.checkCopies(t, second)
	if l := e.leftovers(t); len(l) > 0 {
		t.Errorf("leftovers on the target: %v", l)
	}
	done := e.log.Events(journal.EventSendDone)
	if len(done) != 4 {
		t.Errorf("%d send-done entries, want 4", len(done))
	}

	// Nothing new: up to date, nothing sent.
	if res := e.send(t); !res.UpToDate || len(res.Sent) != 0 {
		t.Errorf("a send with nothing new: %+v", res)
	}
}

func first0Bytes(e *env) string {
	for _, en := range e.log.Events(journal.EventSendDone) {
		return en.Fields["SUBVAULT_BYTES"]
	}
	return "?"
}

func mountDst(t *testing.T, e *env) {
	t.Helper()
	testutil.Run(t, "mount", e.dst.Device, e.dst.Mount)
}

func umountDst(t *testing.T, e *env) {
	t.Helper()
	testutil.Run(t, "umount", e.dst.Mount)
}

// The target away (its filesystem unmounted) for 10 backups with
// keep_snapshots {last: 2}: each send is absent (ErrAbsent), the pinned
// parent survives keep_snapshots, and the send once it is back is
// incremental from it. A pin older than target_pin_for is dropped (logged)
// and the next send is full and says why.
func TestTargetAwayPinnedParent(t *testing.T) {
	e := newEnv(t, 400, 400, "home")
	testutil.WriteFile(t, e.src.Path("home", "a"), strings.Repeat("x", 4<<20))
	first := e.snapshot(t)
	e.send(t)
	umountDst(t, e)
	// The mount point's directory is on the source's filesystem here: a
	// target found there is taken for absent, never filled.
	e.cfg.Targets["usb"].Path = e.src.Path("subvault")
	if err := os.Mkdir(e.src.Path("subvault"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Send(context.Background(), e.options()); !errors.Is(err, ErrAbsent) || !strings.Contains(err.Error(), "filesystem of subvolume") {
		t.Errorf("send to a target on the source's filesystem: %v, want ErrAbsent", err)
	}
	e.cfg.Targets["usb"].Path = e.dst.Path("subvault")
	for i := range 10 {
		testutil.WriteFile(t, e.src.Path("home", "n"), strings.Repeat("y", i))
		e.snapshot(t)
		_, err := Send(context.Background(), e.options())
		if !errors.Is(err, ErrAbsent) {
			t.Fatalf("send to an unmounted target: %v, want ErrAbsent", err)
		}
	}
	snaps, err := planstore.Snapshots(e.plan)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range snaps {
		names = append(names, s.Name())
	}
	if len(snaps) != 3 || !strings.Contains(strings.Join(names, " "), first[0].Name()) {
		t.Fatalf("local snapshots after 10 backups with keep_snapshots {last: 2}: %v; want the 2 newest and the pinned %s", names, first[0].Name())
	}
	mountDst(t, e)
	res := e.send(t)
	if len(res.Sent) != 1 || res.Sent[0].Parent != first[0].Name() {
		t.Fatalf("send after the target came back: %+v, want incremental from %s", res, first[0].Name())
	}
	t.Logf("incremental send after 10 backups away: %d bytes", res.Sent[0].Bytes)
	newest := snaps[len(snaps)-1]
	e.checkCopies(t, []btrfs.Snapshot{newest})

	// The pin moved to the newest copy: the old parent goes at the next
	// keep_snapshots.
	e.snapshot(t)
	snaps, _ = planstore.Snapshots(e.plan)
	for _, s := range snaps {
		if s.Name() == first[0].Name() {
			t.Errorf("the old pinned parent %s is still kept after the pin moved", s.Name())
		}
	}

	// Away for longer than target_pin_for: the pin is dropped, logged, and
	// the next send is full.
	e.plan.TargetPinFor = 48 * time.Hour
	umountDst(t, e)
	for range 3 {
		e.clock = e.clock.Add(24 * time.Hour)
		e.snapshot(t)
	}
	// (journaltest's Only also checks the catalog section, part C's.)
	if d := e.log.Events(journal.EventSendPinDropped); len(d) != 1 || d[0].Fields["SUBVAULT_TARGET"] != "usb" {
		t.Errorf("send-pin-dropped entries: %+v, want one for target usb", d)
	}
	mountDst(t, e)
	res = e.send(t)
	if len(res.Sent) != 1 || res.Sent[0].Parent != "" || !strings.Contains(res.Sent[0].FullReason, "pin") {
		t.Errorf("send after the pin was dropped: %+v, want a full send that says the pin was dropped", res)
	}
}

// A UUID target: absent when no disk has its filesystem UUID (ErrAbsent,
// nothing mounted), found and mounted only in the job's namespace when it
// is there (the host's mounts unchanged).
func TestUUIDTarget(t *testing.T) {
	e := newEnv(t, 300, 300, "home")
	uuid, err := btrfs.FilesystemUUID(e.dst.Device)
	if err != nil {
		t.Fatal(err)
	}
	e.cfg.Targets["usb"] = &config.Target{Name: "usb", UUID: uuid, Subdir: "subvault"}
	dev := ""
	findDevice = func(u string) (string, error) {
		if u != uuid {
			t.Errorf("looked for %s, want %s", u, uuid)
		}
		return dev, nil
	}
	t.Cleanup(func() { findDevice = btrfs.FindDevice })
	testutil.WriteFile(t, e.src.Path("home", "a"), "a")
	snaps := e.snapshot(t)
	before := testutil.HostMounts(t)
	if _, err := Send(context.Background(), e.options()); !errors.Is(err, ErrAbsent) {
		t.Fatalf("send to an absent UUID target: %v, want ErrAbsent", err)
	}
	st, err := Status(context.Background(), e.cfg, "usb", []string{"p"})
	if err != nil || st.Present || st.Err == "" {
		t.Errorf("status of an absent target: %+v, %v", st, err)
	}
	dev = e.dst.Device
	res := e.send(t)
	if res.Where != e.dst.Device || len(res.Sent) != 1 {
		t.Errorf("send to a UUID target: %+v", res)
	}
	if after := testutil.HostMounts(t); after != before {
		t.Errorf("the host's mounts changed:\nbefore %s\nafter %s", before, after)
	}
	e.checkCopies(t, snaps)
	st, err = Status(context.Background(), e.cfg, "usb", []string{"p"})
	if err != nil || !st.Present || len(st.Copies["p"]) != 1 || st.Copies["p"][0].Path != e.copyPath(snaps[0]) {
		t.Errorf("status: %+v, %v", st, err)
	}
	if dir, err := HostDir(e.cfg, "usb"); err != nil || dir != e.dst.Path("subvault") {
		t.Errorf("HostDir: %q, %v; want %s", dir, err, e.dst.Path("subvault"))
	}
	umountDst(t, e)
	if dir, err := HostDir(e.cfg, "usb"); err != nil || dir != "" {
		t.Errorf("HostDir of a target not mounted in the host: %q, %v", dir, err)
	}
	// Not mounted in the host: mounted in the job's namespace only.
	testutil.WriteFile(t, e.src.Path("home", "b"), "b")
	e.snapshot(t)
	before = testutil.HostMounts(t)
	res = e.send(t)
	if len(res.Sent) != 1 || res.Sent[0].Parent == "" {
		t.Errorf("incremental send to an unmounted UUID target: %+v", res)
	}
	if after := testutil.HostMounts(t); after != before {
		t.Errorf("the host's mounts changed:\nbefore %s\nafter %s", before, after)
	}
	mountDst(t, e)
}

// target_retention keeps exactly what it says, never the newest copy;
// a subvolume without a subvault name in the target is never touched.
func TestTargetRetention(t *testing.T) {
	e := newEnv(t, 300, 300, "home")
	e.plan.TargetRetention = config.KeepSnapshots{Last: 2}
	e.plan.KeepSnapshots = config.KeepSnapshots{Last: 5}
	var all []btrfs.Snapshot
	for i := range 5 {
		testutil.WriteFile(t, e.src.Path("home", "f"), strings.Repeat("z", i+1))
		all = append(all, e.snapshot(t)...)
		if i == 0 {
			e.send(t)
			testutil.Run(t, "btrfs", "subvolume", "create", e.dst.Path("subvault", "p", "mine"))
			testutil.Run(t, "btrfs", "subvolume", "create", e.dst.Path("subvault", "p", receivePrefix+"x"))
			continue
		}
		e.send(t)
	}
	entries, err := os.ReadDir(e.dst.Path("subvault", "p"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range entries {
		got = append(got, d.Name())
	}
	want := []string{receivePrefix + "x", "mine", all[3].Name(), all[4].Name()}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("on the target: %v\nwant %v", got, want)
	}
	if n := len(e.log.Events(journal.EventTargetCopyDeleted)); n != 3 {
		t.Errorf("%d target-copy-deleted entries, want 3", n)
	}
	if err := RemoveLeftovers(context.Background(), e.cfg, slog.New(e.log)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"mine", receivePrefix + "x"} {
		if _, err := os.Stat(e.dst.Path("subvault", "p", n)); err != nil {
			t.Errorf("%s, not subvault's, was touched: %v", n, err)
		}
	}
}

// fill writes n MiB of data that does not compress into path.
func fill(t *testing.T, path string, mib int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	x := uint64(88172645463325252)
	for range mib {
		for i := 0; i < len(buf); i += 8 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			for j := range 8 {
				buf[i+j] = byte(x >> (8 * j))
			}
		}
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
}

// A send stopped mid-receive (the job canceled, the target unmounted
// under it) leaves no half copy once the next send or RemoveLeftovers
// ran, and the next send is good.
func TestInterruptedReceive(t *testing.T) {
	e := newEnv(t, 400, 400, "home")
	fill(t, e.src.Path("home", "big"), 64)
	snaps := e.snapshot(t)

	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		o := e.options()
		o.Progress = func(uint64) { cancel() }
		_, err := Send(ctx, o)
		if err == nil || !errors.Is(err, context.Canceled) {
			t.Fatalf("send canceled mid-receive: %v", err)
		}
		if l := e.leftovers(t); len(l) > 0 {
			t.Errorf("a canceled send left %v", l)
		}
	})

	t.Run("unmounted", func(t *testing.T) {
		o := e.options()
		once := false
		o.Progress = func(uint64) {
			if !once {
				once = true
				testutil.Run(t, "umount", "-l", e.dst.Mount)
			}
		}
		_, err := Send(context.Background(), o)
		t.Logf("send whose target was unmounted mid-receive: %v", err)
		mountDst(t, e)
		if err := RemoveLeftovers(context.Background(), e.cfg, slog.New(e.log)); err != nil {
			t.Fatal(err)
		}
		if l := e.leftovers(t); len(l) > 0 {
			t.Errorf("after RemoveLeftovers: %v", l)
		}
	})

	res := e.send(t)
	t.Logf("the send after: %+v", res.Sent)
	e.checkCopies(t, snaps)
}

// ENOSPC on the target: one clear line that says the target is full, and
// nothing left there.
func TestTargetFull(t *testing.T) {
	e := newEnv(t, 600, 114, "home")
	fill(t, e.src.Path("home", "big"), 200)
	e.snapshot(t)
	_, err := Send(context.Background(), e.options())
	if err == nil || !strings.Contains(err.Error(), "target usb is full") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("send to a full target: %v, want one line saying target usb is full", err)
	}
	t.Logf("error: %v", err)
	if l := e.leftovers(t); len(l) > 0 {
		t.Errorf("a send that ran out of space left %v", l)
	}
}

// receiving reports whether a btrfs receive process is running.
func receiving() bool {
	entries, _ := os.ReadDir("/proc")
	for _, d := range entries {
		raw, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err == nil && strings.HasPrefix(string(raw), "btrfs\x00receive\x00") {
			return true
		}
	}
	return false
}

// The daemon killed in the middle of a receive leaves a half copy under
// the temporary name only; RemoveLeftovers (the daemon's start) removes
// it, logged, and the next send is good.
func TestDaemonKilledMidReceive(t *testing.T) {
	e := newEnv(t, 400, 400, "home")
	fill(t, e.src.Path("home", "big"), 64)
	snaps := e.snapshot(t)
	job, _ := json.Marshal(childJob{StateDir: e.cfg.Settings.StateDir, TargetPath: e.dst.Path("subvault"), Subvolumes: e.plan.Subvolumes, JobID: 7})
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(job))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make([]byte, len("receiving\n"))
	if _, err := io.ReadFull(out, line); err != nil || string(line) != "receiving\n" {
		t.Fatalf("the child did not start receiving: %q, %v: %s", line, err, stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	for deadline := time.Now().Add(30 * time.Second); receiving(); {
		if time.Now().After(deadline) {
			t.Fatal("btrfs receive still runs 30 s after the daemon was killed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	left := e.leftovers(t)
	if strings.Join(left, " ") != receivePrefix+"7" {
		t.Fatalf("after the kill the target has %v, want only the half copy %s7", left, receivePrefix)
	}
	if _, err := os.Stat(e.copyPath(snaps[0])); err == nil {
		t.Fatal("the half copy is under the snapshot's name")
	}
	if err := RemoveLeftovers(context.Background(), e.cfg, slog.New(e.log)); err != nil {
		t.Fatal(err)
	}
	if l := e.leftovers(t); len(l) > 0 {
		t.Errorf("after RemoveLeftovers: %v", l)
	}
	if d := e.log.Events(journal.EventSendLeftoverRemoved); len(d) != 1 || !strings.HasSuffix(d[0].Fields["SUBVAULT_PATH"], receivePrefix+"7") {
		t.Errorf("send-leftover-removed entries: %+v", d)
	}
	e.send(t)
	e.checkCopies(t, snaps)
}

// A receive that dies (as on a disk pulled: killed here) fails the send
// with its cause and leaves nothing.
func TestReceiveDies(t *testing.T) {
	e := newEnv(t, 400, 400, "home")
	fill(t, e.src.Path("home", "big"), 64)
	snaps := e.snapshot(t)
	o := e.options()
	o.Progress = func(n uint64) {
		t.Logf("progress %d", n)
		pid, _, err := testutil.WaitCommandLine(10*time.Second, "btrfs", "receive")
		if err != nil {
			t.Error(err)
			return
		}
		syscall.Kill(pid, syscall.SIGKILL)
		o.Progress = nil
	}
	_, err := Send(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "btrfs receive") {
		t.Fatalf("send whose receive was killed: %v", err)
	}
	t.Logf("error: %v", err)
	if l := e.leftovers(t); len(l) > 0 {
		t.Errorf("left %v", l)
	}
	e.send(t)
	e.checkCopies(t, snaps)
}

// snapshotTree lists what is below dir (names and types), to show that
// nothing there changed.
func snapshotTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v\n", p, d.Type())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// A target directory others may write, a link planted there by uid 65534
// in the plan's place, a plan directory another user owns, and a link
// in the plan's place that only root could have made: each is refused, not
// taken for an absent target, and nothing outside the target is touched.
func TestHostileTarget(t *testing.T) {
	e := newEnv(t, 300, 300, "home")
	e.dst.Share(t)
	testutil.WriteFile(t, e.src.Path("home", "a"), "a")
	e.snapshot(t)
	// The victim: a place of root's with a subvault-named subvolume and a
	// receiving leftover's name.
	victim := e.dst.Path("victim")
	if err := os.Mkdir(victim, 0o700); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "btrfs", "subvolume", "create", filepath.Join(victim, receivePrefix+"1"))
	testutil.Run(t, "btrfs", "subvolume", "create", filepath.Join(victim, "subvault@p@20250101T000000Z@1@home"))
	before := snapshotTree(t, victim)
	root := e.dst.Path("subvault")
	check := func(what, want string) {
		t.Helper()
		_, err := Send(context.Background(), e.options())
		if err == nil || errors.Is(err, ErrAbsent) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a refusal that says %q", what, err, want)
		}
		if err := RemoveLeftovers(context.Background(), e.cfg, slog.New(e.log)); err == nil {
			t.Errorf("%s: RemoveLeftovers did not refuse", what)
		}
		if after := snapshotTree(t, victim); after != before {
			t.Errorf("%s: outside the target changed:\n%s\nwas\n%s", what, after, before)
		}
	}

	if err := os.Chmod(root, 0o777); err != nil {
		t.Fatal(err)
	}
	if out, err := testutil.RunHostile(t, 10*time.Second, "plant-link", victim, filepath.Join(root, "p")); err != nil {
		t.Fatalf("uid 65534 could not plant its link: %v: %s", err, out)
	}
	check("a target directory others may write", "writable by no one else")

	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	check("a link in the plan's place", "not a directory")

	if err := os.Remove(filepath.Join(root, "p")); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "btrfs", "subvolume", "create", filepath.Join(root, "p"))
	if err := os.Chown(filepath.Join(root, "p"), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	check("a plan directory owned by uid 65534", "owned by uid 65534")

	if err := os.Chown(filepath.Join(root, "p"), 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "p"), 0o777); err != nil {
		t.Fatal(err)
	}
	check("a plan directory others may enter", "mode 0777")
}

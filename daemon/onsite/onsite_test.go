package onsite

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
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

var _ = errors.Is
var _ = filepath.Join

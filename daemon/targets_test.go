package daemon

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/onsite"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/internal/testutil"
)

// A target whose disk does not answer holds ListTargets for at most
// targetStatusWait, and says so in its Error; the other target answers.
// Calls that come while it is looked at wait for that look (one look per
// target, however many callers), and once it ends its copies are known
// to the plans without looking again, and answer calls for 10 s.
func TestTargetsBoundedOneLookPerTarget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := &config.Config{
			Targets: map[string]*config.Target{"slow": {Name: "slow", UUID: "5e1d0000-1600-4d00-8000-00000000d15c"}, "usb": {Name: "usb", Path: "/mnt/usb"}},
			Plans:   map[string]*config.Plan{"home": {Name: "home", SendTo: []string{"slow", "usb"}}},
		}
		d := &Daemon{cfg: cfg, log: slog.New(slog.DiscardHandler), targets: newTargetState()}
		release := make(chan struct{})
		var looks atomic.Int32
		newest := time.Date(2026, 12, 3, 3, 0, 0, 0, time.UTC)
		d.targets.status = func(ctx context.Context, _ *config.Config, target string, _ []string) (onsite.TargetStatus, error) {
			if target == "slow" {
				looks.Add(1)
				<-release
			}
			return onsite.TargetStatus{Name: target, Present: true, Where: "/mnt/" + target, Copies: map[string][]onsite.Copy{
				"home": {{Snapshot: btrfs.Snapshot{Plan: "home", Time: newest}, ReadOnly: true}},
			}}, nil
		}
		start := time.Now()
		done := make(chan []TargetInfo, 8)
		for range 8 {
			go func() { done <- d.Targets(context.Background()) }()
		}
		for range 8 {
			infos := <-done
			if len(infos) != 2 || infos[0].Name != "slow" || infos[1].Name != "usb" {
				t.Fatalf("targets %+v", infos)
			}
			if slow := infos[0]; slow.Present || !strings.Contains(slow.Error, "did not answer within 4s") {
				t.Errorf("the slow target: present %v, error %q", slow.Present, slow.Error)
			}
			if usb := infos[1]; !usb.Present || usb.Error != "" || len(usb.Plans) != 1 || !usb.Plans[0].Newest.Equal(newest) || usb.Plans[0].Copies != 1 {
				t.Errorf("usb: %+v", usb)
			}
		}
		if took := time.Since(start); took != targetStatusWait {
			t.Errorf("the calls took %v, want %v", took, targetStatusWait)
		}
		if n := looks.Load(); n != 1 {
			t.Errorf("%d looks at the slow target for 8 calls, want one at a time", n)
		}
		close(release)
		synctest.Wait()
		for _, pt := range d.planTargets(cfg.Plans["home"]) {
			if !pt.Present || !pt.Newest.Equal(newest) {
				t.Errorf("plan home's target %+v after the looks ended", pt)
			}
		}
		// What the look found answers calls for targetStatusFresh; then
		// the target is looked at again.
		if infos := d.Targets(context.Background()); !infos[0].Present || looks.Load() != 1 {
			t.Errorf("a call at once: %+v, %d looks at slow; want present from the last look", infos[0], looks.Load())
		}
		time.Sleep(targetStatusFresh)
		d.Targets(context.Background())
		if n := looks.Load(); n != 2 {
			t.Errorf("%d looks at slow after %v, want 2", n, targetStatusFresh)
		}
	})
}

// subvault snapshots says kept for the snapshots keep_snapshots keeps for
// the plan's sends, whatever its own policy (here none): a target's
// pinned parent and the newest snapshot; not for a pin of a target no
// longer in send_to.
func TestSnapshotsKeptForSends(t *testing.T) {
	fs := testutil.NewBtrfs(t, 256, "home")
	state := t.TempDir()
	plan := &config.Plan{Name: "home", Subvolumes: []string{fs.Path("home")}, SendTo: []string{"usb"}, TargetPinFor: 24 * time.Hour}
	cfg := &config.Config{Plans: map[string]*config.Plan{"home": plan}, Settings: config.Settings{StateDir: state}}
	now := time.Now().UTC().Truncate(time.Second)
	var names []string
	for i := range 4 {
		s := btrfs.Snapshot{Plan: "home", Time: now.Add(time.Duration(i-4) * time.Hour), JobID: uint32(i + 1), Subvolume: fs.Path("home")}
		f, err := planstore.TakeSnapshot(plan, fs.Path("home"), &s)
		if err != nil {
			t.Fatal(err)
		}
		f.Close() //nolint:gosec // a directory
		names = append(names, s.Name())
	}
	if err := planstore.SetSendPins(cfg, "home", "usb", []planstore.SendPin{{Target: "usb", Subvolume: fs.Path("home"), Snapshot: names[1], Since: now.Add(-time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if err := planstore.SetSendPins(cfg, "home", "gone", []planstore.SendPin{{Target: "gone", Subvolume: fs.Path("home"), Snapshot: names[0], Since: now.Add(-time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	q, err := queue.New(queue.Config{}, nil, t.TempDir(), slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{cfg: cfg, queue: q, log: slog.New(slog.DiscardHandler)}
	got, err := d.Snapshots("home")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{names[0]: false, names[1]: true, names[2]: false, names[3]: true}
	if len(got) != 4 {
		t.Fatalf("snapshots %+v", got)
	}
	for _, s := range got {
		if s.Kept != want[s.Name] {
			t.Errorf("%s: kept %v, want %v", s.Name, s.Kept, want[s.Name])
		}
	}
}

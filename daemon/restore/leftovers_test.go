package restore

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/internal/testutil"
)

// logTo is a logger into buf, as text.
func logTo(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, nil))
}

// removals counts the restore-leftover-removed entries in a log.
func removals(log string) int {
	return strings.Count(log, journal.EventKey+"="+journal.EventRestoreLeftoverRemoved)
}

func wantNote(t *testing.T, note string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(note, w) {
			t.Errorf("the note lacks %q:\n%s", w, note)
		}
	}
}

// What an in-place restore killed mid-way left: the staging directories it
// recorded go (restic's partial tree, read-only directories too), the
// subvolumes keep their content, and the note says for each whether it is
// unchanged, restored or part restored, and names the pinned undo
// snapshot (the top directory's times aside). A record from before the daemon kept one still finds the
// staging directory by its name in the plan's subvolumes; a recorded path
// not named as this job's staging directory is left alone.
func TestInterruptedInPlaceRemovesStagingOnly(t *testing.T) {
	testutil.RequireRoot(t)
	fs := testutil.NewBtrfs(t, 256, "home", "srv")
	home, srv := fs.Path("home"), fs.Path("srv")
	plan := &config.Plan{Name: "p", Subvolumes: []string{home, srv}, SnapshotDir: fs.Path("snapshots")}
	testutil.WriteFile(t, filepath.Join(home, "live"), "live home\n")
	testutil.WriteFile(t, filepath.Join(srv, "live"), "live srv\n")
	if err := os.MkdirAll(plan.SnapshotDir, 0o700); err != nil {
		t.Fatal(err)
	}
	undo := btrfs.Snapshot{Plan: "p", Time: time.Now().UTC().Truncate(time.Second), JobID: 7, Subvolume: home, Pinned: true}
	undo.Path = filepath.Join(plan.SnapshotDir, undo.Name())
	if err := btrfs.SnapshotReadOnly(home, undo.Path); err != nil {
		t.Fatal(err)
	}
	stage := func(dir string, id uint32) string {
		s := filepath.Join(dir, stageName(id))
		testutil.WriteFile(t, filepath.Join(s, dir[1:], "restored"), "from the archive\n")
		testutil.WriteFile(t, filepath.Join(s, dir[1:], "ro", "f"), "in a read-only directory\n")
		if err := os.Chmod(filepath.Join(s, dir[1:], "ro"), 0o500); err != nil {
			t.Fatal(err)
		}
		return s
	}
	// The top directory's times change (the staging directory was made and
	// removed in it); the rest must not.
	state := func(dir string) map[string]string {
		s := testutil.TreeState(t, dir)
		delete(s, ".")
		return s
	}
	homeState, srvState := state(home), state(srv)

	t.Run("recorded", func(t *testing.T) {
		var buf bytes.Buffer
		in := Interrupted{ID: 7, Plan: plan, Target: InPlaceTarget, Mode: InPlace, Logger: logTo(&buf), Made: Made{
			Staging: []string{stage(home, 7), stage(srv, 7)}, Merging: []string{home}, Merged: []string{home},
		}}
		note := in.CleanUp()
		for _, s := range in.Made.Staging {
			if _, err := os.Lstat(s); !os.IsNotExist(err) {
				t.Errorf("%s is left: %v", s, err)
			}
		}
		if d := testutil.DiffStates(homeState, state(home)); len(d) > 0 {
			t.Errorf("home changed:\n%s", strings.Join(d, "\n"))
		}
		if d := testutil.DiffStates(srvState, state(srv)); len(d) > 0 {
			t.Errorf("srv changed:\n%s", strings.Join(d, "\n"))
		}
		wantNote(t, note, home+" was restored", srv+" is unchanged: the restored files had not been moved in",
			"staging directory "+in.Made.Staging[0]+" was removed", "staging directory "+in.Made.Staging[1]+" was removed",
			"kept in snapshot "+undo.Name()+" (subvault snapshots p); to put it back: subvault rollback p '"+undo.Name()+"' "+home)
		wantNote(t, (Interrupted{ID: 7, Plan: plan, Mode: InPlace, Made: Made{Staging: []string{filepath.Join(srv, stageName(7))}}}).CleanUp(),
			srv+" is unchanged", "kept in snapshot "+undo.Name()+" (subvault snapshots p); nothing was moved in, so nothing needs undoing")
		if n := removals(buf.String()); n != 2 {
			t.Errorf("%d removals logged, want 2:\n%s", n, buf.String())
		}
		if _, err := os.Lstat(undo.Path); err != nil {
			t.Errorf("the undo snapshot: %v", err)
		}
	})

	t.Run("part restored", func(t *testing.T) {
		var buf bytes.Buffer
		in := Interrupted{ID: 8, Plan: plan, Target: InPlaceTarget, Mode: InPlace, Logger: logTo(&buf), Made: Made{
			Staging: []string{stage(home, 8)}, Merging: []string{home},
		}}
		wantNote(t, in.CleanUp(), home+" is part restored", "roll back to the undo snapshot", "was removed")
		if _, err := os.Lstat(in.Made.Staging[0]); !os.IsNotExist(err) {
			t.Errorf("the staging directory is left: %v", err)
		}
	})

	t.Run("no record", func(t *testing.T) {
		var buf bytes.Buffer
		s := stage(srv, 9)
		other := stage(home, 10) // another job's
		in := Interrupted{ID: 9, Plan: plan, Target: InPlaceTarget, Mode: InPlace, Logger: logTo(&buf)}
		wantNote(t, in.CleanUp(), srv+" may be part restored", "staging directory "+s+" was removed")
		if _, err := os.Lstat(s); !os.IsNotExist(err) {
			t.Errorf("the staging directory is left: %v", err)
		}
		if _, err := os.Lstat(other); err != nil {
			t.Errorf("another job's staging directory: %v", err)
		}
		// Nothing staged, nothing found.
		in = Interrupted{ID: 11, Plan: plan, Target: InPlaceTarget, Mode: InPlace, Logger: logTo(&buf)}
		wantNote(t, in.CleanUp(), "nothing had been restored in place yet")
	})

	t.Run("not a staging name", func(t *testing.T) {
		var buf bytes.Buffer
		keep := filepath.Join(home, "keep")
		testutil.WriteFile(t, filepath.Join(keep, "f"), "mine\n")
		in := Interrupted{ID: 12, Plan: plan, Target: InPlaceTarget, Mode: InPlace, Logger: logTo(&buf), Made: Made{Staging: []string{keep}}}
		wantNote(t, in.CleanUp(), keep+" is left alone")
		if _, err := os.Lstat(filepath.Join(keep, "f")); err != nil {
			t.Errorf("%s: %v", keep, err)
		}
		if removals(buf.String()) != 0 {
			t.Errorf("a removal logged:\n%s", buf.String())
		}
	})
}

// A restore into a new subvolume: the subvolume at the target is deleted
// only when its UUID is the recorded one; another subvolume there, or one
// whose UUID was never recorded, is left alone with the reason in the note
// and the log. A directory restore's target is never touched.
func TestInterruptedSubvolumeDeletedOnlyOnUUIDMatch(t *testing.T) {
	testutil.RequireRoot(t)
	fs := testutil.NewBtrfs(t, 256, "home")
	plan := &config.Plan{Name: "p", Subvolumes: []string{fs.Path("home")}}
	target := fs.Path("restored")
	create := func() btrfs.Subvolume {
		t.Helper()
		sv, err := btrfs.CreateSubvolume(target)
		if err != nil {
			t.Fatal(err)
		}
		testutil.WriteFile(t, filepath.Join(target, stageName(3), "f"), "partial\n")
		return sv
	}

	var buf bytes.Buffer
	sv := create()
	in := Interrupted{ID: 3, Plan: plan, Target: target, Mode: IntoSubvolume, Logger: logTo(&buf), Made: Made{
		SubvolumeUUID: sv.UUID, Staging: []string{filepath.Join(target, stageName(3))},
	}}
	wantNote(t, in.CleanUp(), "the half-restored subvolume "+target+" was deleted")
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Errorf("the subvolume is left: %v", err)
	}
	if n := removals(buf.String()); n != 1 {
		t.Errorf("%d removals logged, want 1:\n%s", n, buf.String())
	}
	wantNote(t, in.CleanUp(), "nothing is left at "+target)

	buf.Reset()
	other := create()
	wantNote(t, in.CleanUp(), target+" is left alone", "it is subvolume "+other.UUID+", not "+sv.UUID)
	in.Made.SubvolumeUUID = ""
	wantNote(t, in.CleanUp(), target+" is left alone: the restore died before it recorded the UUID")
	if _, err := os.Lstat(filepath.Join(target, stageName(3), "f")); err != nil {
		t.Errorf("another subvolume's content: %v", err)
	}
	if n := removals(buf.String()); n != 0 || !strings.Contains(buf.String(), "left alone") {
		t.Errorf("%d removals logged, want 0 and why it was left:\n%s", n, buf.String())
	}

	in = Interrupted{ID: 4, Plan: plan, Target: target, Mode: IntoDirectory, Logger: logTo(&buf)}
	wantNote(t, in.CleanUp(), "the restore into "+target+" is incomplete")
	if _, err := os.Lstat(filepath.Join(target, stageName(3), "f")); err != nil {
		t.Errorf("a directory restore's target: %v", err)
	}
}

package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/journal/journaltest"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/internal/testutil"
)

// The arguments Rollback refuses before a rollback is made, changing
// nothing and logging no rollback-failed: a subvolume of another plan (an
// invalid argument), another plan's snapshot, a path that is not clean.
// daemon/rollback's TestRollbackRefusals has what the rollback itself
// refuses.
func TestRollbackArgumentsRefused(t *testing.T) {
	fs := testutil.NewBtrfs(t, 256, "vol", "other")
	vol, other := fs.Path("vol"), fs.Path("other")
	testutil.WriteFile(t, filepath.Join(vol, "f"), "now\n")
	dir := t.TempDir()
	password := filepath.Join(dir, "password")
	testutil.WriteSecret(t, password, "secret\n")
	config := filepath.Join(dir, "config.yaml")
	testutil.WriteFile(t, config, fmt.Sprintf(`repositories:
  r:
    url: %s
    password_file: %s
plans:
  p:
    subvolumes: [%s]
    repository: r
  o:
    subvolumes: [%s]
    repository: r
settings:
  state_dir: %s
  cache_dir: %s
`, filepath.Join(dir, "repo"), password, vol, other, filepath.Join(dir, "state"), filepath.Join(dir, "cache")))
	log := journaltest.NewRecorder()
	d, err := New(context.Background(), Options{ConfigPath: config, Logger: slog.New(log)})
	if err != nil {
		t.Fatal(err)
	}
	snapshot := func(plan, sv string, id uint32) btrfs.Snapshot {
		t.Helper()
		s := btrfs.Snapshot{Plan: plan, Time: time.Now().UTC().Truncate(time.Second), JobID: id, Subvolume: sv}
		s.Path = filepath.Join(sv, planstore.DefaultSnapshotDirName, s.Name())
		if err := os.MkdirAll(filepath.Dir(s.Path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := btrfs.SnapshotReadOnly(sv, s.Path); err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := snapshot("p", vol, 101)
	otherSnap := snapshot("o", other, 102)
	before := testutil.TreeState(t, vol)

	check := func(what string, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want an error with %q", what, err, want)
		}
		if d := testutil.DiffStates(before, testutil.TreeState(t, vol)); len(d) > 0 {
			t.Fatalf("%s changed %s: %v", what, vol, d)
		}
	}
	_, err = d.Rollback(RollbackRequest{Plan: "p", Snapshot: good.Name(), Subvolume: other})
	check("a subvolume of another plan", err, "is not a subvolume of plan p")
	if !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("not ErrInvalidArgument: %v", err)
	}
	_, err = d.Rollback(RollbackRequest{Plan: "p", Snapshot: otherSnap.Name(), Subvolume: vol})
	check("another plan's snapshot", err, "is not a snapshot name of plan p")
	_, err = d.Rollback(RollbackRequest{Plan: "p", Snapshot: good.Name(), Subvolume: vol + "/"})
	check("an unclean path", err, "clean")
	if failed := log.Events(journal.EventRollbackFailed); len(failed) != 0 {
		t.Errorf("%d rollback-failed entries for wrong arguments, want none: %+v", len(failed), failed)
	}
}

package backup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/internal/testutil"
)

func init() {
	// swap-snapshot SUBVOLUME TARGET MODE: in a subvolume it owns, make
	// (premade) or take over (takeover: rename the daemon's away and make
	// its own) the snapshot directory, then swap the first snapshot that
	// appears in it for a symbolic link to TARGET.
	testutil.RegisterHostile("swap-snapshot", func(args []string) error {
		sv, target, mode := args[0], args[1], args[2]
		dir := filepath.Join(sv, planstore.DefaultSnapshotDirName)
		switch mode {
		case "premade":
			if err := os.Mkdir(dir, 0o777); err != nil {
				return err
			}
			if err := os.Chmod(dir, 0o777); err != nil {
				return err
			}
		case "takeover":
			if _, err := testutil.WaitCreated(sv, func(n string) bool { return n == planstore.DefaultSnapshotDirName }, 60*time.Second); err != nil {
				return err
			}
			if err := os.Rename(dir, dir+".daemon"); err != nil {
				return err
			}
			if err := os.Mkdir(dir, 0o777); err != nil {
				return err
			}
			fmt.Println("took over", dir)
		}
		name, err := testutil.WaitCreated(dir, func(n string) bool { return strings.HasPrefix(n, "subvault@") }, 60*time.Second)
		if err != nil {
			return err
		}
		snap := filepath.Join(dir, name)
		if err := os.Rename(snap, snap+".moved"); err != nil {
			return err
		}
		if err := os.Symlink(target, snap); err != nil {
			return err
		}
		fmt.Println("swapped", name, "for a link to", target)
		return nil
	})
}

// A user who owns a plan's subvolume tries to have root back up a
// root-only directory into the plan's archive by swapping the backup's
// snapshot for a link to it: with a snapshot directory of its own made
// before the first backup (refused: the daemon makes that directory
// itself, root's and 0700), and by renaming the daemon's directory away
// and putting its own in its place (the snapshot is taken and mounted
// through descriptors, so the archive holds the subvolume).
func TestHostileSnapshotDirectory(t *testing.T) {
	for _, mode := range []string{"premade", "takeover"} {
		t.Run(mode, func(t *testing.T) {
			testutil.RequireNobody(t)
			bin := testutil.Restic(t)
			// A hook between the snapshot and the backup (a database
			// resumed, say) holds the window open for the attacker.
			e := newEnv(t, bin, 256, []string{"home"}, "    hooks:\n      after_snapshot: [[\"/bin/sleep\", \"1\"]]")
			e.fs.Share(t)
			home := e.fs.Path("home")
			testutil.WriteFile(t, filepath.Join(home, "mine.txt"), "the user's own file")
			if err := os.Chown(home, testutil.NobodyUID, testutil.NobodyGID); err != nil {
				t.Fatal(err)
			}
			secret := e.fs.Path("root-only")
			testutil.WriteFile(t, filepath.Join(secret, "shadow"), "root's secret")
			if err := os.Chmod(secret, 0o700); err != nil {
				t.Fatal(err)
			}

			attacker := testutil.StartHostile(t, "swap-snapshot", home, secret, mode)
			if mode == "premade" {
				waitFor(t, 10*time.Second, func() bool {
					_, err := os.Stat(filepath.Join(home, planstore.DefaultSnapshotDirName))
					return err == nil
				})
			}
			res, err := e.job(1).Run(t.Context())
			attacker.Stop()
			t.Logf("backup: %s, archive %q, err: %v\nattacker: %s", res.Result, res.ArchiveID, err, attacker.Output.String())

			for _, a := range e.archives(t) {
				ls := e.resticCmd(t, "ls", a.ID)
				if strings.Contains(ls, "shadow") {
					t.Fatalf("archive %s holds the root-only directory's file:\n%s", a.ShortID, ls)
				}
			}
			switch mode {
			case "premade":
				if err == nil || !strings.Contains(err.Error(), "owned by uid 65534") || res.ArchiveID != "" {
					t.Errorf("a snapshot directory another user made was used: result %s, err %v", res.Result, err)
				}
			case "takeover":
				if res.ArchiveID == "" {
					t.Fatalf("no archive: %v", err)
				}
				if ls := e.resticCmd(t, "ls", res.ArchiveID); !strings.Contains(ls, filepath.Join(home, "mine.txt")) {
					t.Errorf("the archive lacks the subvolume's own file:\n%s", ls)
				}
				if err != nil && !strings.Contains(err.Error(), "owned by uid 65534") {
					t.Errorf("the backup failed for another reason than the directory it found: %v", err)
				}
			}
			if data, err := os.ReadFile(filepath.Join(secret, "shadow")); err != nil || string(data) != "root's secret" {
				t.Errorf("the root-only file changed: %q, %v", data, err)
			}
		})
	}
}

func waitFor(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal(errors.New("timed out waiting"))
}

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/internal/testutil"
)

func init() {
	// plant-restore HOW WATCH FILE VICTIM: the attacker of
	// TestHostileRestoreWritesNothingOutsideTarget. It waits for a restore
	// into WATCH (restic's argv naming it, or the daemon's staging
	// directory or new target appearing there), then plants, at the
	// archive path FILE below where restic writes, a symbolic link to
	// VICTIM: the file itself (HOW "file-link") or its directory
	// ("dir-link"). "new-target" and "subvolume" first rename the
	// daemon's new target WATCH away and make their own; "in-place"
	// renames the daemon's staging directory away and makes its own.
	testutil.RegisterHostile("plant-restore", func(args []string) error {
		how, watch, file, victim := args[0], args[1], args[2], args[3]
		plant := func(base string) error {
			link, target := filepath.Join(base, file), victim
			if how == "dir-link" {
				link, target = filepath.Dir(link), filepath.Dir(victim)
			}
			if err := os.MkdirAll(filepath.Dir(link), 0o777); err != nil {
				return err
			}
			return os.Symlink(target, link)
		}
		fmt.Println("ready")
		switch how {
		case "file-link", "dir-link":
			// The target is the attacker's own empty directory.
			trigger, err := waitRestore(watch, func(name string) bool { return strings.HasPrefix(name, ".subvault-restore-") })
			if err != nil {
				return err
			}
			fmt.Println("saw", trigger)
			return plant(watch)
		case "new-target", "subvolume":
			parent, name := filepath.Dir(watch), filepath.Base(watch)
			if _, err := testutil.WaitCreated(parent, func(n string) bool { return n == name }, time.Minute); err != nil {
				return err
			}
			base := watch
			if how == "subvolume" {
				stage, err := testutil.WaitCreated(watch, func(n string) bool { return strings.HasPrefix(n, ".subvault-restore-") }, time.Minute)
				if err != nil {
					return err
				}
				base = filepath.Join(watch, stage)
			}
			if err := os.Rename(watch, watch+".moved"); err != nil {
				return err
			}
			if err := os.Mkdir(watch, 0o777); err != nil {
				return err
			}
			fmt.Println("replaced", watch)
			return plant(base)
		case "in-place":
			stage, err := testutil.WaitCreated(watch, func(n string) bool { return strings.HasPrefix(n, ".subvault-restore-") }, time.Minute)
			if err != nil {
				return err
			}
			base := filepath.Join(watch, stage)
			if err := os.Rename(base, base+".moved"); err != nil {
				return err
			}
			if err := os.Mkdir(base, 0o777); err != nil {
				return err
			}
			fmt.Println("replaced", base)
			return plant(base)
		}
		return fmt.Errorf("unknown attack %q", how)
	})
}

// waitRestore waits, polling as any user can, until restic's command line
// names dir as its --target (how the attack was first made), or an entry
// match accepts appears in dir; it says which.
func waitRestore(dir string, match func(string) bool) (string, error) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if _, argv, err := testutil.WaitCommandLine(time.Millisecond, "--target\x00"+dir+"\x00"); err == nil {
			return strings.Join(argv, " "), nil
		}
		if entries, err := os.ReadDir(dir); err == nil {
			for _, e := range entries {
				if match(e.Name()) {
					return e.Name(), nil
				}
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return "", errors.New("no restore into " + dir + " seen")
}

// A user races root's restores, as a real uid-65534 process, to have root
// write through links: into an empty directory the user made (a link at a
// file of the archive to a root-only file, or at its directory to a
// root-only directory), into a new target under a directory the user owns
// (the new target renamed away and replaced), into a new subvolume there
// (the same, once the staging directory appears), and in place over a
// subvolume whose top directory the user owns (the staging directory
// renamed away and replaced). Whatever the restore's end, the root-only
// directory and file are as they were: mode, content, entries.
func TestHostileRestoreWritesNothingOutsideTarget(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		testutil.RequireNobody(t)
		e := newRestoreEnv(t, bin, 300)
		e.fs.Share(t)
		home := e.fs.Path("home")
		file := filepath.Join(home, "sub", "hello.txt")
		testutil.WriteFile(t, file, "the archive's bytes\n")
		e.mustCLI(t, "backup", "home", "--wait")

		victimDir := e.fs.Path("root-only")
		victim := filepath.Join(victimDir, "important.conf")
		testutil.WriteFile(t, victim, "root's configuration\n")
		if err := os.Chmod(victim, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(victimDir, 0o700); err != nil {
			t.Fatal(err)
		}
		before := testutil.TreeState(t, victimDir)

		mine := func(name string) string {
			p := e.fs.Path(name)
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(p, testutil.NobodyUID, testutil.NobodyGID); err != nil {
				t.Fatal(err)
			}
			return p
		}
		attack := func(how, watch string, restore ...string) {
			attacker := testutil.StartHostile(t, "plant-restore", how, watch, file, victim)
			waitFor(t, 10*time.Second, func() int { return strings.Count(attacker.Output.String(), "ready") })
			code, out, errOut := e.cli(t, append([]string{"restore", "home", "latest"}, append(restore, "--wait")...)...)
			attacker.Stop()
			t.Logf("%s: restore exit %d\n%s%s\nattacker: %s", how, code, out, errOut, attacker.Output.String())
			if diffs := testutil.DiffStates(before, testutil.TreeState(t, victimDir)); len(diffs) > 0 {
				t.Errorf("%s: the restore wrote outside its target, into root's directory:\n%s", how, strings.Join(diffs, "\n"))
			}
			if data, err := os.ReadFile(victim); err != nil || string(data) != "root's configuration\n" {
				t.Errorf("%s: root's file holds %q (%v)", how, data, err)
			}
		}

		d1, d2 := mine("d1"), mine("d2")
		attack("file-link", d1, d1)
		attack("dir-link", d2, d2)
		parent := mine("p1")
		attack("new-target", filepath.Join(parent, "new"), filepath.Join(parent, "new"))
		parent = mine("p2")
		attack("subvolume", filepath.Join(parent, "sv"), filepath.Join(parent, "sv"), "--subvolume")
		if err := os.Chown(home, testutil.NobodyUID, testutil.NobodyGID); err != nil {
			t.Fatal(err)
		}
		attack("in-place", home, "--in-place")

		// A target whose path goes through a link the user made is
		// refused before anything is queued.
		d3 := mine("d3")
		if err := os.Symlink(victimDir, filepath.Join(d3, "link")); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{filepath.Join(d3, "link", "new")}, {filepath.Join(d3, "link", "sv"), "--subvolume"}} {
			code, out, errOut := e.cli(t, append([]string{"restore", "home", "latest"}, args...)...)
			if code != exitUsage || out != "" || !strings.Contains(errOut, "symbolic link") {
				t.Errorf("restore into %v: exit %d, %q %q; want %d and the symbolic link named", args, code, out, errOut, exitUsage)
			}
		}
		if diffs := testutil.DiffStates(before, testutil.TreeState(t, victimDir)); len(diffs) > 0 {
			t.Errorf("a refused restore wrote into root's directory:\n%s", strings.Join(diffs, "\n"))
		}
	})
}

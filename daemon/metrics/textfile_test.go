package metrics

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.HostileMain()
	os.Exit(m.Run())
}

func init() {
	// plant DIR TARGET NAME...: a symbolic link to TARGET at each NAME in
	// DIR.
	testutil.RegisterHostile("metrics-plant", func(args []string) error {
		for _, name := range args[2:] {
			if err := os.Symlink(args[1], filepath.Join(args[0], name)); err != nil {
				return err
			}
		}
		return nil
	})
	// swap DIR TARGET SECONDS: for SECONDS, again and again, replace
	// DIR/subvault.prom with a link to TARGET (by rename over it and by
	// removing it first) and put links at every temporary name it sees;
	// prints what it managed.
	testutil.RegisterHostile("metrics-swap", func(args []string) error {
		dir, target := args[0], args[1]
		var secs int
		fmt.Sscan(args[2], &secs)
		end := time.Now().Add(time.Duration(secs) * time.Second)
		swapped, removed, planted := 0, 0, 0
		for i := 0; time.Now().Before(end); i++ {
			link := filepath.Join(dir, fmt.Sprintf("link%d", i))
			if os.Symlink(target, link) == nil {
				if os.Rename(link, filepath.Join(dir, TextfileName)) == nil {
					swapped++
				} else {
					os.Remove(link)
				}
			}
			if os.Remove(filepath.Join(dir, TextfileName)) == nil {
				removed++
			}
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), tempPrefix) {
					if os.Remove(filepath.Join(dir, e.Name())) == nil || os.Symlink(target, filepath.Join(dir, e.Name())) == nil {
						planted++
					}
				}
			}
		}
		fmt.Printf("swapped %d removed %d planted/removed temporary %d\n", swapped, removed, planted)
		return nil
	})
}

// alternating returns a registry whose metrics alternate in number (1 or
// 800 plans) at each gather, and the two expositions.
func alternating(t *testing.T) (prometheus.Gatherer, []string) {
	t.Helper()
	var n atomic.Int64
	snap := func() Snapshot {
		s := fixedSnapshot()
		if n.Add(1)%2 == 0 {
			for i := range 800 {
				s.Plans = append(s.Plans, Plan{Name: fmt.Sprintf("p%04d", i), LastDuration: -1, Archives: -1, Snapshots: i})
			}
		}
		return s
	}
	svc := NewService(snap, nil)
	var want []string
	for range 2 {
		dir := t.TempDir()
		if err := WriteTextfile(dir, svc.TextfileGatherer()); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(dir, TextfileName))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, string(data))
	}
	if len(want[0]) == len(want[1]) {
		t.Fatal("the two expositions have the same length")
	}
	return svc.TextfileGatherer(), want
}

// TestTextfileAtomic: readers that read subvault.prom while it is
// rewritten again and again always read one whole exposition, never a
// part of one, and no temporary file is left.
func TestTextfileAtomic(t *testing.T) {
	t.Parallel()
	g, want := alternating(t)
	dir := t.TempDir()
	if err := WriteTextfile(dir, g); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var reads, bad atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				data, err := os.ReadFile(filepath.Join(dir, TextfileName))
				reads.Add(1)
				if err != nil || (string(data) != want[0] && string(data) != want[1]) {
					if bad.Add(1) == 1 {
						t.Errorf("a reader read %d bytes (%v), not one whole exposition (%d or %d bytes)", len(data), err, len(want[0]), len(want[1]))
					}
				}
			}
		})
	}
	writes := 150
	for range writes {
		if err := WriteTextfile(dir, g); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d writes, %d reads, %d partial", writes, reads.Load(), bad.Load())
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("the directory holds %d entries, want subvault.prom alone", len(entries))
	}
}

// hostileDir is a directory of root's with mode (chmod'ed, so that the
// sticky bit stays), in a tree nobody can reach, and a victim file of
// root's outside it that a followed link would overwrite.
func hostileDir(t *testing.T, mode uint32) (dir, victim string) {
	t.Helper()
	testutil.RequireRoot(t)
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir = filepath.Join(base, "textfile")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	victim = filepath.Join(base, "victim")
	testutil.WriteFile(t, victim, "root's file\n")
	return dir, victim
}

func checkVictim(t *testing.T, victim string) {
	t.Helper()
	data, err := os.ReadFile(victim)
	if err != nil || string(data) != "root's file\n" {
		t.Errorf("the victim file holds %q (%v): a link was followed", data, err)
	}
}

func checkTextfile(t *testing.T, dir string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, TextfileName), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != 0 {
		t.Errorf("subvault.prom is mode %o, uid %d; want a regular file of root's", st.Mode, st.Uid)
	}
	data, err := os.ReadFile(filepath.Join(dir, TextfileName))
	if err != nil || string(data) != wantExposition {
		t.Errorf("subvault.prom holds %d bytes (%v), not the exposition", len(data), err)
	}
}

// TestHostileTextfileLinks: in a textfile directory all may write with
// the sticky bit (as /tmp), links uid 65534 planted at subvault.prom and
// at the name of the next temporary file are not followed: subvault.prom
// becomes root's regular file, the victim the links point to is
// untouched, and the planted temporary name is skipped.
func TestHostileTextfileLinks(t *testing.T) {
	dir, victim := hostileDir(t, 0o1777)
	planted := tempPrefix + "planted"
	if out, err := testutil.RunHostile(t, 10*time.Second, "metrics-plant", dir, victim, TextfileName, planted); err != nil {
		t.Fatalf("plant: %v: %s", err, out)
	}
	names := []string{planted}
	orig := tempName
	tempName = func() string {
		if len(names) > 0 {
			n := names[0]
			names = names[1:]
			return n
		}
		return orig()
	}
	t.Cleanup(func() { tempName = orig })
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(fixedSnapshot))
	if err := WriteTextfile(dir, reg); err != nil {
		t.Fatal(err)
	}
	checkVictim(t, victim)
	checkTextfile(t, dir)
	if fi, err := os.Lstat(filepath.Join(dir, planted)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the planted temporary name: %v %v; want the hostile link, left as it was", fi, err)
	}
	// At the next start the link of another user's is not removed as a
	// leftover (nor followed).
	if err := RemoveTemporary(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, planted)); err != nil {
		t.Errorf("another user's entry was removed: %v", err)
	}
	checkVictim(t, victim)
}

// TestHostileTextfileSwaps: while the daemon rewrites subvault.prom a
// hundred times, uid 65534 tries again and again to swap it for a link,
// remove it, and remove or replace the temporary files: the sticky bit
// keeps root's entries, the victim is untouched, every write succeeds
// and subvault.prom ends root's, whole.
func TestHostileTextfileSwaps(t *testing.T) {
	dir, victim := hostileDir(t, 0o1777)
	h := testutil.StartHostile(t, "metrics-swap", dir, victim, "3")
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(fixedSnapshot))
	writes := 0
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); writes++ {
		if err := WriteTextfile(dir, reg); err != nil {
			t.Errorf("write %d: %v", writes, err)
		}
		checkVictim(t, victim)
	}
	if err := h.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writes; the hostile process: %s", writes, strings.TrimSpace(h.Output.String()))
	checkVictim(t, victim)
	checkTextfile(t, dir)
}

// TestTextfileRefusals: a directory others may write without the sticky
// bit, one that does not exist, and one reached through another user's
// link are refused with what to do; nothing is written.
func TestTextfileRefusals(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(fixedSnapshot))
	t.Run("others may write", func(t *testing.T) {
		dir, _ := hostileDir(t, 0o777)
		err := WriteTextfile(dir, reg)
		if err == nil || !strings.Contains(err.Error(), "may be written by other users (mode 0777)") || !strings.Contains(err.Error(), "chmod go-w "+dir) {
			t.Errorf("WriteTextfile = %v", err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("%d entries written", len(entries))
		}
	})
	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(t.TempDir(), "none")
		err := WriteTextfile(dir, reg)
		if err == nil || !strings.Contains(err.Error(), "the textfile directory "+dir+" does not exist: create it") {
			t.Errorf("WriteTextfile = %v", err)
		}
	})
	t.Run("another user's link", func(t *testing.T) {
		dir, victim := hostileDir(t, 0o1777)
		user := filepath.Join(dir, "user")
		if err := os.Mkdir(user, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(user, testutil.NobodyUID, testutil.NobodyGID); err != nil {
			t.Fatal(err)
		}
		if out, err := testutil.RunHostile(t, 10*time.Second, "metrics-plant", user, filepath.Dir(victim), "link"); err != nil {
			t.Fatalf("plant: %v: %s", err, out)
		}
		err := WriteTextfile(filepath.Join(user, "link"), reg)
		if err == nil || !strings.Contains(err.Error(), "another user could have made it") {
			t.Errorf("WriteTextfile = %v", err)
		}
		if _, err := os.Lstat(filepath.Join(filepath.Dir(victim), TextfileName)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("written through the link: %v", err)
		}
	})
}

// TestRemoveTemporary: at start, the daemon's own leftover temporary
// files go; another user's entries with the same prefix, links, and
// other files stay.
func TestRemoveTemporary(t *testing.T) {
	dir, victim := hostileDir(t, 0o1777)
	testutil.WriteFile(t, filepath.Join(dir, tempPrefix+"0001"), "half")
	testutil.WriteFile(t, filepath.Join(dir, "other.prom"), "x 1\n")
	testutil.WriteFile(t, filepath.Join(dir, tempPrefix+"users"), "theirs")
	if err := os.Chown(filepath.Join(dir, tempPrefix+"users"), testutil.NobodyUID, testutil.NobodyGID); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, tempPrefix+"link")); err != nil {
		t.Fatal(err)
	}
	if err := RemoveTemporary(dir); err != nil {
		t.Fatal(err)
	}
	var left []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if want := []string{tempPrefix + "link", tempPrefix + "users", "other.prom"}; strings.Join(left, " ") != strings.Join(want, " ") {
		t.Errorf("left %q, want %q", left, want)
	}
	checkVictim(t, victim)
}

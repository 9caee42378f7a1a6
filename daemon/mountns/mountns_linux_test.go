package mountns

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/internal/testutil"
)

// The host's views of the mount table that a backup's namespace must never
// change: PID 1's, this process's (its main thread's) and the test
// goroutine's thread's.
var hostViews = []string{"/proc/1/mountinfo", "/proc/self/mountinfo", "/proc/thread-self/mountinfo"}

// readViews reads each view. Others on this machine run their own loop-device
// tests at the same time, so mounts below the temporary directory that are not
// ours are left out; everything else, ours included, must match line for line.
func readViews(t *testing.T, ours string, paths ...string) map[string]string {
	t.Helper()
	views := map[string]string{}
	tmp := filepath.Clean(os.TempDir())
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var kept []string
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if m := parseLine(line); m != nil {
				if mp := m.Mountpoint; under(mp, tmp) && mp != ours && !under(mp, ours) {
					continue
				}
			}
			kept = append(kept, line)
		}
		views[p] = strings.Join(kept, "\n")
	}
	return views
}

// sameViews reports each view that differs from before.
func sameViews(t *testing.T, when string, before, now map[string]string) {
	t.Helper()
	for p, was := range now {
		if before[p] != was {
			t.Errorf("%s: %s changed:\n--- before\n%s\n--- now\n%s", when, p, before[p], was)
		}
	}
}

// hostNS names the mount namespace every thread must be in outside Run.
func hostNS(t *testing.T) string {
	t.Helper()
	if ns, err := os.Readlink("/proc/1/ns/mnt"); err == nil {
		return ns
	}
	// PID 1 may be beyond ptrace's reach even for root (as in this
	// sandbox); the main thread, locked in init, never leaves the host's.
	ns, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// namespacedThreads lists this process's threads whose mount namespace is
// not the host's.
func namespacedThreads(t *testing.T, host string) []string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, task := range tasks {
		ns, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/mnt")
		if err != nil {
			continue // the thread has just exited
		}
		if ns != host {
			out = append(out, task.Name()+":"+ns)
		}
	}
	return out
}

// noNamespacedThreads waits a little for the threads of finished Runs to
// exit, then fails if any thread is still outside the host's namespace, and
// checks every thread's own mount table against the host's.
func noNamespacedThreads(t *testing.T, ours string, before map[string]string) {
	t.Helper()
	host := hostNS(t)
	deadline := time.Now().Add(5 * time.Second)
	var left []string
	for {
		left = namespacedThreads(t, host)
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("%d threads still in another mount namespace after Run returned: %v", len(left), left)
	}
	tasks, _ := os.ReadDir("/proc/self/task")
	var paths []string
	for _, task := range tasks {
		p := "/proc/self/task/" + task.Name() + "/mountinfo"
		if _, err := os.Stat(p); err == nil {
			paths = append(paths, p)
		}
	}
	want := before["/proc/self/mountinfo"]
	for p, got := range readViewsLenient(t, ours, paths) {
		if got != want {
			t.Errorf("%s differs from the host's mount table:\n%s", p, got)
		}
	}
}

// readViewsLenient is readViews for threads that may exit while being read.
func readViewsLenient(t *testing.T, ours string, paths []string) map[string]string {
	t.Helper()
	var present []string
	for _, p := range paths {
		if _, err := os.ReadFile(p); err == nil {
			present = append(present, p)
		}
	}
	return readViews(t, ours, present...)
}

// snapshot takes a read-only snapshot of subvolume src at dst.
func snapshot(t *testing.T, src, dst string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "btrfs", "subvolume", "snapshot", "-r", src, dst)
	return dst
}

// devIno is how stat -c %d:%i prints a file's identity.
func devIno(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// child runs a program (from fn: in the namespace) and returns its trimmed
// combined output.
func child(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// mountTmpfs mounts a tmpfs at dir on the host until the test ends.
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			_ = unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
}

// parseLine parses one line of mountinfo, or returns nil.
func parseLine(line string) *mountinfo.Info {
	m, err := mountinfo.GetMountsFromReader(strings.NewReader(line), nil)
	if err != nil || len(m) != 1 {
		return nil
	}
	return m[0]
}

func mountinfoHas(info, root, mountPoint, opt string) bool {
	for _, line := range strings.Split(info, "\n") {
		m := parseLine(line)
		if m != nil && m.Root == root && m.Mountpoint == mountPoint && strings.Contains(","+m.Options+",", ","+opt+",") {
			return true
		}
	}
	return false
}

func TestRunShowsSnapshotOnlyInside(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "home")
	home := fs.Path("home")
	testutil.WriteFile(t, fs.Path("home", "file"), "old")
	snap := snapshot(t, home, fs.Path(".subvault-snapshots", "home-1"))
	testutil.WriteFile(t, fs.Path("home", "file"), "new")
	snapID := devIno(t, snap)
	before := readViews(t, fs.Mount, hostViews...)

	ran := false
	err := Run(context.Background(), Options{Binds: []Bind{{Source: snap, Target: home}}}, func() error {
		ran = true
		if out, err := child("cat", filepath.Join(home, "file")); err != nil || out != "old" {
			t.Errorf("inside, a child reads %q (%v) from %s/file, want the snapshot's %q", out, err, home, "old")
		}
		if out, err := child("stat", "-c", "%d:%i", home); err != nil || out != snapID {
			t.Errorf("inside, %s is %s (%v), want the snapshot's %s", home, out, err, snapID)
		}
		mountinfo, err := child("cat", "/proc/self/mountinfo")
		if err != nil || !mountinfoHas(mountinfo, "/.subvault-snapshots/home-1", home, "ro") {
			t.Errorf("inside, a child's mountinfo shows no read-only snapshot over %s (%v):\n%s", home, err, mountinfo)
		}
		err = os.WriteFile(filepath.Join(home, "written-inside"), []byte("x"), 0o644)
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("writing below %s inside: got %v, want EROFS", home, err)
		}
		if out, err := child("sh", "-c", "echo x > "+filepath.Join(home, "file")); err == nil || !strings.Contains(out, "Read-only file system") {
			t.Errorf("a child writing below %s inside: %v: %s; want a read-only file system", home, err, out)
		}

		// During: the host's views, read from here and by a process the
		// namespace's thread did not start, have not changed.
		sameViews(t, "during Run, read from fn", before, readViews(t, fs.Mount, hostViews[:2]...))
		if own := readViews(t, fs.Mount, "/proc/thread-self/mountinfo")["/proc/thread-self/mountinfo"]; own == before["/proc/thread-self/mountinfo"] {
			t.Error("fn's own thread shows the host's mount table, not the namespace's")
		}
		outside := make(chan [2]string)
		go func() {
			mi, _ := exec.Command("cat", "/proc/self/mountinfo").Output()
			f, _ := exec.Command("cat", filepath.Join(home, "file")).Output()
			outside <- [2]string{string(mi), string(f)}
		}()
		got := <-outside
		if filtered := filterLines(t, fs.Mount, got[0]); filtered != before["/proc/self/mountinfo"] {
			t.Errorf("during Run, a process started outside fn's goroutine sees mounts changed:\n%s", filtered)
		}
		if got[1] != "new" {
			t.Errorf("during Run, outside fn %s/file reads %q, want %q", home, got[1], "new")
		}
		return nil
	})
	if err != nil || !ran {
		t.Fatalf("Run: %v (fn ran: %v)", err, ran)
	}
	sameViews(t, "after Run", before, readViews(t, fs.Mount, hostViews...))
	if b, _ := os.ReadFile(filepath.Join(home, "file")); string(b) != "new" {
		t.Errorf("after Run, %s/file reads %q on the host, want %q", home, b, "new")
	}
	if _, err := os.Stat(filepath.Join(home, "written-inside")); !os.IsNotExist(err) {
		t.Errorf("a file written inside reached the host: %v", err)
	}
	noNamespacedThreads(t, fs.Mount, before)
}

// filterLines applies readViews's filter to a mount table read elsewhere.
func filterLines(t *testing.T, ours, table string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(f, []byte(table), 0o644); err != nil {
		t.Fatal(err)
	}
	return readViews(t, ours, f)[f]
}

func TestRunNestedSubvolumes(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "srv", "srv/db")
	srv, db := fs.Path("srv"), fs.Path("srv", "db")
	testutil.WriteFile(t, filepath.Join(srv, "a"), "srv-old")
	testutil.WriteFile(t, filepath.Join(db, "b"), "db-old")
	// Both snapshots live below /srv: once the srv snapshot covers /srv,
	// the db snapshot's path no longer leads to it.
	srvSnap := snapshot(t, srv, filepath.Join(srv, ".subvault-snapshots", "srv-1"))
	dbSnap := snapshot(t, db, filepath.Join(srv, ".subvault-snapshots", "db-1"))
	testutil.WriteFile(t, filepath.Join(srv, "a"), "srv-new")
	testutil.WriteFile(t, filepath.Join(db, "b"), "db-new")
	before := readViews(t, fs.Mount, hostViews...)

	// Deepest first on purpose: Run orders them.
	binds := []Bind{{Source: dbSnap, Target: db}, {Source: srvSnap, Target: srv}}
	ids := map[string]string{}
	for _, b := range binds {
		ids[b.Source] = devIno(t, b.Source)
	}
	err := Run(context.Background(), Options{Binds: binds}, func() error {
		if out, err := child("cat", filepath.Join(srv, "a"), filepath.Join(db, "b")); err != nil || out != "srv-olddb-old" {
			t.Errorf("inside, a child reads %q (%v), want both snapshots' old contents", out, err)
		}
		for _, b := range binds {
			if out, err := child("stat", "-c", "%d:%i", b.Target); err != nil || out != ids[b.Source] {
				t.Errorf("inside, %s is %s (%v), want snapshot %s", b.Target, out, err, b.Source)
			}
		}
		if out, err := child("test", "-e", dbSnap); err == nil {
			t.Errorf("inside, %s resolves (%s) although the srv snapshot covers it", dbSnap, out)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	sameViews(t, "after Run", before, readViews(t, fs.Mount, hostViews...))
	noNamespacedThreads(t, fs.Mount, before)
}

func TestRunBindsHostMountsBackAndKeepsHostPaths(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "srv")
	srv := fs.Path("srv")
	for _, d := range []string{"tmp", "cache"} {
		if err := os.Mkdir(filepath.Join(srv, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WriteFile(t, filepath.Join(srv, "cache", "c"), "cache-old")
	snap := snapshot(t, srv, fs.Path(".subvault-snapshots", "srv-1"))
	testutil.WriteFile(t, filepath.Join(srv, "cache", "c"), "cache-new")
	// Host mounts below the target, as /proc, /dev and /tmp are below /:
	// one with a mount below it, and one whose mount point came after the
	// snapshot and so is not in it.
	mountTmpfs(t, filepath.Join(srv, "tmp"))
	mountTmpfs(t, filepath.Join(srv, "tmp", "inner"))
	mountTmpfs(t, filepath.Join(srv, "late"))
	testutil.WriteFile(t, filepath.Join(srv, "tmp", "f"), "on-tmpfs")
	before := readViews(t, fs.Mount, hostViews...)

	var skipped []string
	opts := Options{
		Binds:    []Bind{{Source: snap, Target: srv}},
		KeepHost: []string{filepath.Join(srv, "cache")},
		Skipped: func(mountpoint string, err error) {
			skipped = append(skipped, mountpoint+": "+err.Error())
		},
	}
	err := Run(context.Background(), opts, func() error {
		if out, err := child("cat", filepath.Join(srv, "tmp", "f")); err != nil || out != "on-tmpfs" {
			t.Errorf("inside, the tmpfs below the target reads %q (%v)", out, err)
		}
		if out, err := child("sh", "-c", "echo w > "+filepath.Join(srv, "tmp", "w")); err != nil {
			t.Errorf("inside, the tmpfs below the target is not writable: %v: %s", err, out)
		}
		if a, b := devIno(t, filepath.Join(srv, "tmp")), devIno(t, filepath.Join(srv, "tmp", "inner")); strings.Split(a, ":")[0] == strings.Split(b, ":")[0] {
			t.Errorf("inside, the tmpfs nested below %s/tmp is missing (%s vs %s)", srv, a, b)
		}
		if out, err := child("cat", filepath.Join(srv, "cache", "c")); err != nil || out != "cache-new" {
			t.Errorf("inside, the kept host path reads %q (%v), want the host's %q", out, err, "cache-new")
		}
		if out, err := child("sh", "-c", "echo w > "+filepath.Join(srv, "cache", "w")); err != nil {
			t.Errorf("inside, the kept host path is not writable: %v: %s", err, out)
		}
		if out, err := child("sh", "-c", "echo w > "+filepath.Join(srv, "x")); err == nil || !strings.Contains(out, "Read-only") {
			t.Errorf("inside, the snapshot itself is writable: %v: %s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, f := range []string{filepath.Join(srv, "tmp", "w"), filepath.Join(srv, "cache", "w")} {
		if b, err := os.ReadFile(f); err != nil || string(b) != "w\n" {
			t.Errorf("on the host, %s written inside reads %q (%v)", f, b, err)
		}
	}
	wantSkip := filepath.Join(srv, "late") + ": its mount point is not in the snapshot over " + srv + ": no such file or directory"
	if len(skipped) != 1 || skipped[0] != wantSkip {
		t.Errorf("skipped host mounts: %q, want [%q]", skipped, wantSkip)
	}
	sameViews(t, "after Run", before, readViews(t, fs.Mount, hostViews...))
	noNamespacedThreads(t, fs.Mount, before)
}

// The real /: every host mount must come back (a child needs /proc, /dev,
// /tmp), the snapshot must show through lookups from the root, and a snapshot
// below / must still be found. The host's own / stands in for a snapshot of it.
func TestRunOverRoot(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "home")
	home := fs.Path("home")
	testutil.WriteFile(t, filepath.Join(home, "file"), "old")
	snap := snapshot(t, home, fs.Path(".subvault-snapshots", "home-1"))
	testutil.WriteFile(t, filepath.Join(home, "file"), "new")
	keep, err := os.MkdirTemp("", "subvault-mountns-keep-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(keep) })
	canary := fmt.Sprintf("/subvault-mountns-test-%d", os.Getpid())
	t.Cleanup(func() { os.Remove(canary) })
	before := readViews(t, fs.Mount, hostViews...)

	var skipped []string
	opts := Options{
		Binds:    []Bind{{Source: snap, Target: home}, {Source: "/", Target: "/"}},
		KeepHost: []string{keep},
		Skipped:  func(mp string, err error) { skipped = append(skipped, mp+": "+err.Error()) },
	}
	err = Run(context.Background(), opts, func() error {
		mountinfo, err := child("cat", "/proc/self/mountinfo")
		if err != nil || !mountinfoHas(mountinfo, "/", "/", "ro") {
			t.Errorf("inside, no read-only mount over / (%v):\n%s", err, mountinfo)
		}
		if out, err := child("sh", "-c", "test -c /dev/null && test -d /proc/self && cat "+filepath.Join(home, "file")); err != nil || out != "old" {
			t.Errorf("inside, /dev, /proc or the snapshot below / is missing: %v: %s", err, out)
		}
		if out, err := child("touch", canary); err == nil || !strings.Contains(out, "Read-only") {
			t.Errorf("inside, / is writable: %v: %s", err, out)
		}
		if out, err := child("sh", "-c", "echo w > "+filepath.Join(keep, "w")); err != nil {
			t.Errorf("inside, the kept host path %s is not writable: %v: %s", keep, err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(skipped) > 0 {
		t.Errorf("host mounts left out although / is its own snapshot: %q", skipped)
	}
	if _, err := os.ReadFile(filepath.Join(keep, "w")); err != nil {
		t.Errorf("on the host, the file written inside the kept path: %v", err)
	}
	sameViews(t, "after Run", before, readViews(t, fs.Mount, hostViews...))
	noNamespacedThreads(t, fs.Mount, before)
}

func TestRunManyTimesLeavesNothingBehind(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "home")
	home := fs.Path("home")
	testutil.WriteFile(t, filepath.Join(home, "file"), "old")
	snap := snapshot(t, home, fs.Path(".subvault-snapshots", "home-1"))
	testutil.WriteFile(t, filepath.Join(home, "file"), "new")
	opts := Options{Binds: []Bind{{Source: snap, Target: home}}}
	before := readViews(t, fs.Mount, hostViews...)

	// Setup time is from the call to fn's start, so it includes the new
	// thread, unshare, the mounts and the check.
	once := func() (time.Duration, error) {
		start := time.Now()
		var setup time.Duration
		err := Run(context.Background(), opts, func() error {
			setup = time.Since(start)
			out, err := child("cat", filepath.Join(home, "file"))
			if err != nil || out != "old" {
				return fmt.Errorf("inside, read %q (%w)", out, err)
			}
			return nil
		})
		return setup, err
	}
	const sequential, concurrent, each = 50, 4, 10
	var setups []time.Duration
	for i := 0; i < sequential; i++ {
		d, err := once()
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		setups = append(setups, d)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for g := 0; g < concurrent; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				d, err := once()
				mu.Lock()
				setups = append(setups, d)
				mu.Unlock()
				if err != nil {
					t.Errorf("concurrent run: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	slices.Sort(setups)
	t.Logf("%d runs: setup median %v, p90 %v, max %v", len(setups), setups[len(setups)/2], setups[len(setups)*9/10], setups[len(setups)-1])

	sameViews(t, "after many runs", before, readViews(t, fs.Mount, hostViews...))
	noNamespacedThreads(t, fs.Mount, before)
	if b, _ := os.ReadFile(filepath.Join(home, "file")); string(b) != "new" {
		t.Errorf("on the host, %s/file reads %q", home, b)
	}
}

func TestRunSetupErrors(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "home")
	home := fs.Path("home")
	snap := snapshot(t, home, fs.Path(".subvault-snapshots", "home-1"))
	testutil.WriteFile(t, filepath.Join(home, "after-snapshot", "x"), "x")
	testutil.WriteFile(t, fs.Path("a-file"), "x")
	missing := fs.Path(".subvault-snapshots", "gone")
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	before := readViews(t, fs.Mount, hostViews...)

	tests := []struct {
		name  string
		ctx   context.Context
		opts  Options
		want  string
		errno error
	}{{
		name:  "missing snapshot",
		opts:  Options{Binds: []Bind{{Source: missing, Target: home}}},
		want:  "cannot mount snapshot " + missing + " over " + home + " in the backup's namespace: no such file or directory",
		errno: unix.ENOENT,
	}, {
		name:  "missing target",
		opts:  Options{Binds: []Bind{{Source: snap, Target: fs.Path("nowhere")}}},
		want:  "cannot mount snapshot " + snap + " over " + fs.Path("nowhere") + " in the backup's namespace: target: no such file or directory",
		errno: unix.ENOENT,
	}, {
		name:  "snapshot is a file",
		opts:  Options{Binds: []Bind{{Source: fs.Path("a-file"), Target: home}}},
		want:  "cannot mount snapshot " + fs.Path("a-file") + " over " + home + " in the backup's namespace: not a directory",
		errno: unix.ENOTDIR,
	}, {
		name:  "keep-host path missing on the host",
		opts:  Options{Binds: []Bind{{Source: snap, Target: home}}, KeepHost: []string{filepath.Join(home, "cache")}},
		want:  "cannot keep " + filepath.Join(home, "cache") + " as on the host in the backup's namespace: no such file or directory",
		errno: unix.ENOENT,
	}, {
		name: "keep-host path missing in the snapshot",
		opts: Options{Binds: []Bind{{Source: snap, Target: home}}, KeepHost: []string{filepath.Join(home, "after-snapshot")}},
		want: "cannot keep " + filepath.Join(home, "after-snapshot") + " as on the host in the backup's namespace (below the snapshot over " +
			home + "): no such file or directory",
		errno: unix.ENOENT,
	}, {
		name:  "done before setup",
		ctx:   canceled,
		opts:  Options{Binds: []Bind{{Source: snap, Target: home}}},
		want:  "context canceled",
		errno: context.Canceled,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := tt.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			ran := false
			err := Run(ctx, tt.opts, func() error { ran = true; return nil })
			if err == nil || err.Error() != tt.want || !errors.Is(err, tt.errno) {
				t.Errorf("got %v\nwant %s (is %v)", err, tt.want, tt.errno)
			}
			if ran {
				t.Error("fn ran after a failed setup")
			}
			sameViews(t, "after a failed Run", before, readViews(t, fs.Mount, hostViews...))
		})
	}
	noNamespacedThreads(t, fs.Mount, before)
}

func TestRunReturnsFnErrorsAndPanics(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "home")
	home := fs.Path("home")
	snap := snapshot(t, home, fs.Path(".subvault-snapshots", "home-1"))
	opts := Options{Binds: []Bind{{Source: snap, Target: home}}}
	before := readViews(t, fs.Mount, hostViews...)

	failed := errors.New("restic exited 3")
	if err := Run(context.Background(), opts, func() error { return failed }); !errors.Is(err, failed) || err.Error() != failed.Error() {
		t.Errorf("fn's error: got %v, want it unchanged", err)
	}
	err := Run(context.Background(), opts, func() error { panic("restic wrapper bug") })
	if err == nil || !strings.HasPrefix(err.Error(), "panic in the backup's namespace: restic wrapper bug\n") || !strings.Contains(err.Error(), "mountns_linux_test.go") {
		t.Errorf("fn's panic: got %v", err)
	}
	err = Run(context.Background(), opts, func() error { runtime.Goexit(); return nil })
	if err == nil || !strings.Contains(err.Error(), "runtime.Goexit") {
		t.Errorf("fn's Goexit: got %v", err)
	}
	sameViews(t, "after fn failed", before, readViews(t, fs.Mount, hostViews...))
	noNamespacedThreads(t, fs.Mount, before)
}

// Without CAP_SYS_ADMIN, Run says what it needs. The test binary runs itself
// as nobody.
func TestRunNeedsRoot(t *testing.T) {
	if os.Getenv("SUBVAULT_MOUNTNS_AS_NOBODY") == "1" {
		err := Run(context.Background(), Options{Binds: []Bind{{Source: "/", Target: "/"}}}, func() error { return nil })
		fmt.Printf("RESULT: %v\n", err)
		return
	}
	testutil.RequireRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "subvault-mountns-exe-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	copied := filepath.Join(dir, "mountns.test")
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copied, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(copied, "-test.run=^TestRunNeedsRoot$", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SUBVAULT_MOUNTNS_AS_NOBODY=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	want := "RESULT: cannot make the backup's mount namespace: needs root (CAP_SYS_ADMIN): operation not permitted"
	if err != nil || !strings.Contains(string(out), want) {
		t.Errorf("as nobody: %v\n%s\nwant %q", err, out, want)
	}
}

// The namespace is a slave of the host's: a filesystem the host unmounts
// while a backup runs goes away inside too, instead of being kept alive.
func TestRunFollowsHostUnmounts(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "home")
	home := fs.Path("home")
	snap := snapshot(t, home, fs.Path(".subvault-snapshots", "home-1"))
	// Only mounts in a shared peer group propagate at all.
	if err := unix.Mount("", fs.Mount, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	elsewhere := fs.Path("elsewhere")
	mountTmpfs(t, elsewhere)
	before := readViews(t, fs.Mount, hostViews...)

	err := Run(context.Background(), Options{Binds: []Bind{{Source: snap, Target: home}}}, func() error {
		if mi, _ := child("cat", "/proc/self/mountinfo"); !strings.Contains(mi, " "+elsewhere+" ") {
			return fmt.Errorf("inside, %s is not mounted to begin with:\n%s", elsewhere, mi)
		}
		// The host unmounts from a thread outside the namespace.
		done := make(chan error)
		go func() { done <- unix.Unmount(elsewhere, 0) }()
		if err := <-done; err != nil {
			return fmt.Errorf("host unmount of %s while a namespace holds it: %w", elsewhere, err)
		}
		if mi, _ := child("cat", "/proc/self/mountinfo"); strings.Contains(mi, " "+elsewhere+" ") {
			t.Errorf("inside, %s is still mounted after the host unmounted it", elsewhere)
		}
		// Remount it for the test's cleanup, again from outside.
		go func() { done <- unix.Mount("tmpfs", elsewhere, "tmpfs", 0, "size=4m") }()
		return <-done
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	after := readViews(t, fs.Mount, hostViews...)
	for _, p := range hostViews {
		// The tmpfs came back as a new mount with a new id: compare the rest.
		if strings.Count(after[p], "\n") != strings.Count(before[p], "\n") {
			t.Errorf("after Run, %s has a different number of mounts:\n%s", p, after[p])
		}
	}
	noNamespacedThreads(t, fs.Mount, after)
}

const mainUnlockedEnv = "SUBVAULT_MOUNTNS_MAIN_UNLOCKED"

// A program whose main thread is not locked must not have a namespace land
// on it: /proc/self would show that namespace's mounts for good. The test
// binary runs itself with the main thread unlocked and checks the main
// thread's namespace after many Runs.
func TestRunKeepsOffAnUnlockedMainThread(t *testing.T) {
	if os.Getenv(mainUnlockedEnv) == "1" {
		dir := t.TempDir()
		src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
		for _, d := range []string{src, dst} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		mainNS, _ := os.Readlink("/proc/self/ns/mnt")
		before := readViews(t, dir, "/proc/self/mountinfo")
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 50; i++ {
					if err := Run(context.Background(), Options{Binds: []Bind{{Source: src, Target: dst}}}, func() error { return nil }); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		time.Sleep(10 * time.Millisecond)
		if ns, _ := os.Readlink("/proc/self/ns/mnt"); ns != mainNS {
			t.Errorf("the main thread is in mount namespace %s, not %s", ns, mainNS)
		}
		sameViews(t, "after Runs with the main thread unlocked", before, readViews(t, dir, "/proc/self/mountinfo"))
		return
	}
	testutil.RequireRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestRunKeepsOffAnUnlockedMainThread$", "-test.count=1")
	cmd.Env = append(os.Environ(), mainUnlockedEnv+"=1", "GOMAXPROCS=2")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("with the main thread unlocked: %v\n%s", err, out)
	}
}

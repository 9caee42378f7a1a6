package reset

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/internal/testutil"
)

// machine is a loop btrfs with the subvolume @ that a test treats as a
// root: mounted with subvol=@ at Root (the running system) until unmount.
type machine struct {
	fs      *testutil.BtrfsFS
	Root    string // where @ is mounted while "running"
	cfg     *config.Config
	sub     *config.ResetSubvolume
	mounted bool
}

func newMachine(t *testing.T, sizeMiB int, persist ...string) *machine {
	t.Helper()
	fs := testutil.NewBtrfs(t, sizeMiB, "@")
	m := &machine{fs: fs, Root: filepath.Join(filepath.Dir(fs.Mount), "root")}
	if err := os.Mkdir(m.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	m.mount(t)
	t.Cleanup(func() {
		if m.mounted {
			_ = unix.Unmount(m.Root, 0)
		}
	})
	var abs []string
	for _, p := range persist {
		abs = append(abs, filepath.Join(m.Root, p))
	}
	m.sub = &config.ResetSubvolume{Path: m.Root, Clean: "latest", Persist: abs, Keep: config.KeepSnapshots{Last: 2}}
	m.cfg = &config.Config{Reset: &config.Reset{Subvolumes: []*config.ResetSubvolume{m.sub}}}
	m.cfg.Settings.StateDir = filepath.Join(m.Root, "var/lib/subvault")
	return m
}

func (m *machine) mount(t *testing.T) {
	t.Helper()
	testutil.Run(t, "mount", "-o", "subvol=@", m.fs.Device, m.Root)
	m.mounted = true
}

func (m *machine) unmount(t *testing.T) {
	t.Helper()
	if err := unix.Unmount(m.Root, 0); err != nil {
		t.Fatal(err)
	}
	m.mounted = false
}

// boot runs the reset as the initrd would: the root unmounted, the kernel
// command line naming the device; then the root is mounted again.
func (m *machine) boot(t *testing.T, now time.Time, extra ...string) (Record, error) {
	t.Helper()
	m.unmount(t)
	defer m.mount(t)
	cmdline := strings.Join(append([]string{"root=" + m.fs.Device, "rootflags=subvol=@"}, extra...), " ")
	return Run(context.Background(), m.cfg, RunOptions{Cmdline: cmdline, Now: func() time.Time { return now }})
}

// live is @ seen through the top-level mount of the test filesystem.
func (m *machine) live(rel ...string) string { return m.fs.Path(append([]string{"@"}, rel...)...) }

func (m *machine) states(t *testing.T) []btrfs.Snapshot {
	t.Helper()
	snaps, err := btrfs.ListSnapshots(m.fs.Path(resetDirName))
	if err != nil {
		t.Fatal(err)
	}
	return snaps
}

// copyTree copies a tree with cp -a (a reference the test compares with).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	testutil.Run(t, "cp", "-a", "--reflink=never", src, dst)
}

// t0 is a boot's time, after the clean snapshot's (Init's, now).
var t0 = time.Now().UTC().Add(24 * time.Hour).Truncate(time.Hour)

func stamp(t time.Time) string { return t.Format("20060102T150405Z") }

func TestResetKeepsExactlyThePersistedPaths(t *testing.T) {
	m := newMachine(t, 1024, "etc/machine-id", "var/lib/keep", "home/me/.ssh")
	w := func(rel, content string) { testutil.WriteFile(t, filepath.Join(m.Root, rel), content) }
	w("etc/machine-id", "clean-id\n")
	w("etc/os-release", "clean system\n")
	w("usr/bin/tool", "v1\n")
	snap, err := Init(context.Background(), m.cfg, m.Root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !snap.Pinned || snap.Plan != config.ResetPlan || snap.Subvolume != m.Root {
		t.Fatalf("Init made %+v", snap)
	}
	// The boot's changes: persisted ones and others.
	w("etc/machine-id", "machine-1\n")
	testutil.MakeRichTree(t, filepath.Join(m.Root, "var/lib/keep"), 3<<20)
	// home/ and home/me are not in the clean snapshot.
	w("home/me/.ssh/authorized_keys", "ssh-ed25519 AAAA me\n")
	if err := os.Chmod(filepath.Join(m.Root, "home/me/.ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(m.Root, "home/me"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	w("marker", "thrown away\n")
	w("usr/bin/tool", "changed\n")
	w("etc/os-release", "tampered\n")
	// A hard link between two persisted paths stays one.
	if err := os.Link(filepath.Join(m.Root, "etc/machine-id"), filepath.Join(m.Root, "var/lib/keep/machine-id-link")); err != nil {
		t.Fatal(err)
	}
	// A file capability (cap_net_raw, effective): chown drops it, so it
	// must be set after the owner.
	capFile := filepath.Join(m.Root, "var/lib/keep/ping")
	w("var/lib/keep/ping", "#!/bin/true\n")
	if err := os.Chown(capFile, 1234, 1234); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(capFile, "security.capability", []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0); err != nil {
		t.Fatal(err)
	}
	want := t.TempDir()
	for _, p := range []string{"etc/machine-id", "var/lib/keep", "home/me/.ssh"} {
		if err := os.MkdirAll(filepath.Join(want, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		copyTree(t, filepath.Join(m.Root, p), filepath.Join(want, p))
	}
	before := time.Now()
	rec, err := m.boot(t, t0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reset took %v: %+v", time.Since(before), rec.Results)
	if len(rec.Results) != 1 || rec.Results[0].Result != ResultDone {
		t.Fatalf("record %+v", rec)
	}
	r := rec.Results[0]
	if r.Persisted < 20 || r.Bytes < 3<<20 || r.State != "subvault@reset@"+stamp(t0)+"@0@"+escaped(m.Root) {
		t.Errorf("result %+v: want the rich tree's files and 3 MiB copied, and the state's name", r)
	}
	for _, p := range []string{"var/lib/keep", "home/me/.ssh"} {
		if d := testutil.CompareTrees(t, filepath.Join(want, p), filepath.Join(m.Root, p)); len(d) > 0 {
			t.Errorf("%s after the reset differs from before it:\n%s", p, strings.Join(d, "\n"))
		}
	}
	var a, b unix.Stat_t
	if err := unix.Lstat(filepath.Join(m.Root, "etc/machine-id"), &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(m.Root, "var/lib/keep/machine-id-link"), &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("the hard link between etc/machine-id and var/lib/keep/machine-id-link was not kept (inodes %d, %d)", a.Ino, b.Ino)
	}
	for rel, content := range map[string]string{"etc/machine-id": "machine-1\n", "etc/os-release": "clean system\n", "usr/bin/tool": "v1\n"} {
		if got, err := os.ReadFile(filepath.Join(m.Root, rel)); err != nil || string(got) != content {
			t.Errorf("%s after the reset: %q, %v; want %q", rel, got, err, content)
		}
	}
	if _, err := os.Lstat(filepath.Join(m.Root, "marker")); !os.IsNotExist(err) {
		t.Errorf("marker survived the reset: %v", err)
	}
	// home/me was made with the previous state's owner.
	if err := unix.Lstat(filepath.Join(m.Root, "home/me"), &a); err != nil || a.Uid != 1000 {
		t.Errorf("home/me: uid %d, %v; want 1000 (the previous state's)", a.Uid, err)
	}
	// The previous state is a read-only snapshot with the marker.
	states := m.states(t)
	if len(states) != 2 || !states[0].Pinned || states[1].Name() != r.State {
		t.Fatalf("snapshots in .subvault-reset: %v", states)
	}
	if got, err := os.ReadFile(filepath.Join(m.fs.Path(resetDirName), r.State, "marker")); err != nil || string(got) != "thrown away\n" {
		t.Errorf("the previous state has no marker: %q, %v", got, err)
	}
	listed, err := States(context.Background(), m.cfg)
	if err != nil || len(listed) != 2 || !listed[0].Pinned || listed[1].Name() != r.State {
		t.Errorf("States: %v, %v", listed, err)
	}
	got, err := ReadRecord(m.cfg)
	if err != nil || len(got.Results) != 1 || got.Results[0] != r || !got.Time.Equal(t0) {
		t.Errorf("ReadRecord: %+v, %v; want %+v", got, err, rec)
	}
	// Nothing else of ours is left at the top level.
	names, _ := os.ReadDir(m.fs.Mount)
	if len(names) != 2 {
		t.Errorf("top level holds %v, want @ and %s", names, resetDirName)
	}
}

func TestResetKeepDeletesOldStates(t *testing.T) {
	m := newMachine(t, 512, "etc/machine-id")
	testutil.WriteFile(t, filepath.Join(m.Root, "etc/machine-id"), "id\n")
	if _, err := Init(context.Background(), m.cfg, m.Root, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		testutil.WriteFile(t, filepath.Join(m.Root, "boot"), "boot\n")
		if _, err := m.boot(t, t0.Add(time.Duration(i)*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	for _, s := range m.states(t) {
		names = append(names, s.Name())
	}
	esc := escaped(m.Root)
	want := []string{"subvault@reset@" + stamp(t0.Add(2*time.Hour)) + "@0@" + esc, "subvault@reset@" + stamp(t0.Add(3*time.Hour)) + "@0@" + esc}
	if len(names) != 3 || !strings.HasPrefix(names[0], "subvault-pinned@reset@") || !slices.Equal(names[1:], want) {
		t.Errorf("after 4 resets with keep last 2: %v, want the clean one and %v", names, want)
	}
}

// Two subvolumes, / and /home (as @ and @home): each reset from its own
// clean snapshot, the record in the root's state directory.
func TestResetTwoSubvolumes(t *testing.T) {
	m := newMachine(t, 512, "etc/machine-id")
	testutil.Run(t, "btrfs", "subvolume", "create", m.fs.Path("@home"))
	home := filepath.Join(m.Root, "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "mount", "-o", "subvol=@home", m.fs.Device, home)
	homeMounted := true
	t.Cleanup(func() {
		if homeMounted {
			_ = unix.Unmount(home, 0)
		}
	})
	homeSub := &config.ResetSubvolume{Path: home, Persist: []string{filepath.Join(home, "me/.ssh")}}
	m.cfg.Reset.Subvolumes = append(m.cfg.Reset.Subvolumes, homeSub)
	testutil.WriteFile(t, filepath.Join(m.Root, "etc/machine-id"), "clean\n")
	testutil.WriteFile(t, filepath.Join(home, "me/.profile"), "clean profile\n")
	for _, p := range []string{m.Root, home} {
		if _, err := Init(context.Background(), m.cfg, p, nil); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WriteFile(t, filepath.Join(home, "me/.ssh/id"), "key\n")
	testutil.WriteFile(t, filepath.Join(home, "me/.profile"), "changed\n")
	testutil.WriteFile(t, filepath.Join(m.Root, "etc/machine-id"), "machine-1\n")
	if err := unix.Unmount(home, 0); err != nil {
		t.Fatal(err)
	}
	homeMounted = false
	rec, err := m.boot(t, t0)
	if err != nil || len(rec.Results) != 2 || rec.Results[0].Result != ResultDone || rec.Results[1].Result != ResultDone {
		t.Fatalf("%+v, %v", rec, err)
	}
	testutil.Run(t, "mount", "-o", "subvol=@home", m.fs.Device, home)
	homeMounted = true
	for p, want := range map[string]string{"home/me/.ssh/id": "key\n", "home/me/.profile": "clean profile\n", "etc/machine-id": "machine-1\n"} {
		if got, err := os.ReadFile(filepath.Join(m.Root, p)); err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", p, got, err, want)
		}
	}
	got, err := ReadRecord(m.cfg)
	if err != nil || len(got.Results) != 2 || got.Results[1].Path != home {
		t.Errorf("ReadRecord: %+v, %v", got, err)
	}
	states, err := States(context.Background(), m.cfg)
	if err != nil || len(states) != 4 {
		t.Errorf("States: %v, %v; want two clean ones and two previous states", states, err)
	}
}

package reset

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/internal/testutil"
)

// prepared is a machine with a clean snapshot and a boot's changes.
func prepared(t *testing.T, sizeMiB int, persist ...string) *machine {
	t.Helper()
	m := newMachine(t, sizeMiB, persist...)
	testutil.WriteFile(t, filepath.Join(m.Root, "etc/machine-id"), "clean\n")
	if _, err := Init(context.Background(), m.cfg, m.Root, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, filepath.Join(m.Root, "etc/machine-id"), "machine-1\n")
	testutil.WriteFile(t, filepath.Join(m.Root, "var/lib/keep/file"), "kept\n")
	testutil.WriteFile(t, filepath.Join(m.Root, "marker"), "boot 1\n")
	return m
}

// reference snapshots @ read-only at the top level, for unchanged.
func (m *machine) reference(t *testing.T) string {
	t.Helper()
	ref := m.fs.Path("reference")
	if err := btrfs.SnapshotReadOnly(m.live(), ref); err != nil {
		t.Fatal(err)
	}
	return ref
}

// unchanged checks that @ is what ref holds, but for the reset's record.
func (m *machine) unchanged(t *testing.T, ref string) {
	t.Helper()
	var diffs []string
	for _, d := range testutil.CompareTrees(t, ref, m.live()) {
		if !strings.HasPrefix(d, "var/lib/subvault") && !strings.HasPrefix(d, "var/lib: mtime") && !strings.HasPrefix(d, "var: mtime") {
			diffs = append(diffs, d)
		}
	}
	if len(diffs) > 0 {
		t.Errorf("the subvolume changed:\n%s", strings.Join(diffs, "\n"))
	}
}

// onlyOurs checks what is at the top level and in .subvault-reset.
func (m *machine) onlyOurs(t *testing.T, top []string, states int) {
	t.Helper()
	entries, err := os.ReadDir(m.fs.Mount)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(top)
	if !slices.Equal(names, top) {
		t.Errorf("top level holds %q, want %q", names, top)
	}
	if got := m.states(t); len(got) != states {
		t.Errorf("%d snapshots in %s (%v), want %d", len(got), resetDirName, got, states)
	}
}

func failedWith(t *testing.T, rec Record, err error, want string) {
	t.Helper()
	if err == nil || len(rec.Results) != 1 || rec.Results[0].Result != ResultFailed || !strings.Contains(rec.Results[0].Reason, want) {
		t.Fatalf("reset: %+v, %v; want failed with %q", rec, err, want)
	}
	t.Logf("reason: %s", rec.Results[0].Reason)
}

func TestResetFailsOnAMissingPersistedPath(t *testing.T) {
	m := prepared(t, 512, "var/lib/keep", "etc/typo")
	ref := m.reference(t)
	rec, err := m.boot(t, t0)
	failedWith(t, rec, err, "persisted path /etc/typo is missing in the previous state")
	m.unchanged(t, ref)
	m.onlyOurs(t, []string{"@", resetDirName, "reference"}, 1)
	got, err := ReadRecord(m.cfg)
	if err != nil || got.Results[0].Result != ResultFailed {
		t.Errorf("the record in the root that boots: %+v, %v", got, err)
	}
}

func TestResetFailsWhenTheFilesystemIsFull(t *testing.T) {
	m := prepared(t, 300, "var/lib/keep")
	// 80 MiB persisted; with plain copies (no shared extents) the new
	// subvolume needs them again, and less than that is free.
	big, err := os.Create(filepath.Join(m.Root, "var/lib/keep/big"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(big, randReader{}, 80<<20); err != nil {
		t.Fatal(err)
	}
	big.Close()
	fill, err := os.Create(filepath.Join(m.Root, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := io.CopyN(fill, randReader{}, 8<<20); err != nil {
			break
		}
	}
	fill.Close()
	testutil.Run(t, "sync")
	var fs unix.Statfs_t
	_ = unix.Statfs(m.Root, &fs)
	t.Logf("free after filling: %d MiB", fs.Bavail*uint64(fs.Bsize)>>20)
	ref := m.reference(t)
	t.Setenv(plainCopyEnv, "1")
	rec, err := m.boot(t, t0)
	failedWith(t, rec, err, "no space left on device")
	m.unchanged(t, ref)
	m.onlyOurs(t, []string{"@", resetDirName, "reference"}, 1)
}

type randReader struct{}

func (randReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i*7919 + len(p))
	}
	return len(p), nil
}

func TestResetFailsWhenANameIsTaken(t *testing.T) {
	t.Run("new", func(t *testing.T) {
		m := prepared(t, 512, "var/lib/keep")
		leftover := m.fs.Path(newPrefix + escaped(m.Root))
		if err := os.Mkdir(leftover, 0o755); err != nil {
			t.Fatal(err)
		}
		ref := m.reference(t)
		rec, err := m.boot(t, t0)
		failedWith(t, rec, err, "is already there")
		m.unchanged(t, ref)
		m.onlyOurs(t, []string{"@", resetDirName, "reference", filepath.Base(leftover)}, 1)
	})
	t.Run("state", func(t *testing.T) {
		m := prepared(t, 512, "var/lib/keep")
		if _, err := m.boot(t, t0); err != nil {
			t.Fatal(err)
		}
		testutil.WriteFile(t, filepath.Join(m.Root, "marker"), "boot 2\n")
		ref := m.reference(t)
		rec, err := m.boot(t, t0) // the clock went back: same name
		failedWith(t, rec, err, "is already there")
		m.unchanged(t, ref)
		m.onlyOurs(t, []string{"@", resetDirName, "reference"}, 2)
	})
}

func TestResetSkips(t *testing.T) {
	m := prepared(t, 512, "var/lib/keep")
	ref := m.reference(t)
	rec, err := m.boot(t, t0, "subvault.reset=0")
	if err != nil || rec.Results[0].Result != ResultSkipped || !strings.Contains(rec.Results[0].Reason, "subvault.reset=0") {
		t.Fatalf("with subvault.reset=0: %+v, %v", rec, err)
	}
	// A swap device holding a hibernation image.
	img := filepath.Join(t.TempDir(), "swap.img")
	header := make([]byte, 1<<20)
	copy(header[os.Getpagesize()-10:], "S1SUSPEND")
	if err := os.WriteFile(img, header, 0o600); err != nil {
		t.Fatal(err)
	}
	loop := strings.TrimSpace(testutil.Run(t, "losetup", "-f", "--show", img))
	t.Cleanup(func() { testutil.Run(t, "losetup", "-d", loop) })
	rec, err = m.boot(t, t0, "resume="+loop)
	if err != nil || rec.Results[0].Result != ResultSkipped || !strings.Contains(rec.Results[0].Reason, "hibernation image") {
		t.Fatalf("resuming: %+v, %v", rec, err)
	}
	// No resume=, but systemd's EFI variable names the swap by UUID.
	disk := t.TempDir()
	if err := os.MkdirAll(filepath.Join(disk, "by-uuid"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(loop, filepath.Join(disk, "by-uuid", "0b6c8a5e-0000-4000-8000-000000000001")); err != nil {
		t.Fatal(err)
	}
	efivar := filepath.Join(disk, "HibernateLocation")
	if err := os.WriteFile(efivar, append([]byte{7, 0, 0, 0}, `{"uuid":"0b6c8a5e-0000-4000-8000-000000000001","offset":0,"kernelVersion":"6.1"}`...), 0o600); err != nil {
		t.Fatal(err)
	}
	oldDisk, oldVar := devDiskDir, hibernateLocation
	devDiskDir, hibernateLocation = disk, efivar
	t.Cleanup(func() { devDiskDir, hibernateLocation = oldDisk, oldVar })
	rec, err = m.boot(t, t0)
	if err != nil || rec.Results[0].Result != ResultSkipped || !strings.Contains(rec.Results[0].Reason, "hibernation image") {
		t.Fatalf("resuming through HibernateLocation: %+v, %v", rec, err)
	}
	hibernateLocation = filepath.Join(disk, "none")
	m.unchanged(t, ref)
	m.onlyOurs(t, []string{"@", resetDirName, "reference"}, 1)
	// A plain swap header: the reset runs.
	copy(header[os.Getpagesize()-10:], "SWAPSPACE2")
	if err := os.WriteFile(img, header, 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "losetup", "-c", loop)
	if rec, err := m.boot(t, t0, "resume="+loop); err != nil || rec.Results[0].Result != ResultDone {
		t.Fatalf("with a plain swap: %+v, %v", rec, err)
	}
}

func TestPrepareNextComesUpInThePreviousState(t *testing.T) {
	m := prepared(t, 512, "var/lib/keep")
	rec, err := m.boot(t, t0)
	if err != nil {
		t.Fatal(err)
	}
	state := rec.Results[0].State
	if _, err := os.Stat(filepath.Join(m.Root, "marker")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("marker after the reset: %v", err)
	}
	if err := PrepareNext(context.Background(), m.cfg, m.Root, state); err != nil {
		t.Fatal(err)
	}
	rec, err = m.boot(t, t0.Add(time.Hour))
	if err != nil || rec.Results[0].Result != ResultDone {
		t.Fatalf("%+v, %v", rec, err)
	}
	if got, err := os.ReadFile(filepath.Join(m.Root, "marker")); err != nil || string(got) != "boot 1\n" {
		t.Errorf("marker after coming up in %s: %q, %v", state, got, err)
	}
	var n next
	if err := readMeta(mustOpen(t, m.fs.Path(resetDirName)), nextFile, &n); err != nil || len(n.Next) != 0 {
		t.Errorf("next.json after the boot: %+v, %v", n, err)
	}
	// The boot after that resets to clean again.
	if _, err := m.boot(t, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(m.Root, "marker")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("marker after the next reset: %v", err)
	}
}

func mustOpen(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestParseCmdline(t *testing.T) {
	b := parseCmdline("BOOT_IMAGE=/vmlinuz-6.1 root=UUID=1234-ab ro rootflags=compress=zstd,subvol=/@,noatime resume=/dev/vda3 resume_offset=34816 quiet subvault.reset=0\n")
	want := bootArgs{root: "UUID=1234-ab", subvol: "/@", resume: "/dev/vda3", resumeOffset: 34816, off: true}
	if b != want {
		t.Errorf("parseCmdline: %+v, want %+v", b, want)
	}
	if b := parseCmdline("root=/dev/sda2 rootflags=subvolid=256 subvault.reset=1"); b.subvolID != "256" || b.off {
		t.Errorf("parseCmdline: %+v", b)
	}
}

package testutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// BtrfsFS is a btrfs filesystem on a loop device, mounted for one test.
type BtrfsFS struct {
	// Mount is the directory the filesystem is mounted on.
	Mount string
	// Device is the loop device, e.g. /dev/loop3.
	Device string
	// Image is the backing file.
	Image string
}

// Path joins elements under the mount point.
func (fs *BtrfsFS) Path(elem ...string) string {
	return filepath.Join(append([]string{fs.Mount}, elem...)...)
}

// NewBtrfs makes a btrfs filesystem of sizeMiB on a loop device, mounts it in
// a temporary directory and creates the named subvolumes (nested paths such
// as "srv/db" are allowed: parents are made first as subvolumes if listed
// before, or as plain directories otherwise). Teardown (unmount, detach the
// loop device, remove the image) is registered with t.Cleanup, so it runs even
// when the test fails. It skips (or fails under CI) without root or
// btrfs-progs, and skips under -short.
func NewBtrfs(t testing.TB, sizeMiB int, subvolumes ...string) *BtrfsFS {
	t.Helper()
	SkipShort(t, "a btrfs filesystem on a loop device")
	RequireRoot(t)
	RequireCommand(t, "mkfs.btrfs", "btrfs-progs")
	RequireCommand(t, "losetup", "mount")
	if sizeMiB < 114 {
		sizeMiB = 114 // mkfs.btrfs refuses smaller images with default profiles
	}

	dir, err := os.MkdirTemp("", "subvault-btrfs-")
	if err != nil {
		t.Fatal(err)
	}
	fs := &BtrfsFS{Image: filepath.Join(dir, "fs.img"), Mount: filepath.Join(dir, "mnt")}
	t.Cleanup(func() { fs.teardown(t, dir) })

	if err := os.Mkdir(fs.Mount, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(fs.Image)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Truncate(int64(sizeMiB) << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	run(t, "mkfs.btrfs", "-q", fs.Image)
	fs.Device = strings.TrimSpace(run(t, "losetup", "--find", "--show", fs.Image))
	run(t, "mount", "-t", "btrfs", fs.Device, fs.Mount)
	for _, sv := range subvolumes {
		p := fs.Path(sv)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		run(t, "btrfs", "subvolume", "create", p)
	}
	return fs
}

// Share lets other users reach the mount point (its temporary directory
// is 0700), so a hostile process can work in what they own below it.
func (fs *BtrfsFS) Share(t testing.TB) {
	t.Helper()
	if err := os.Chmod(filepath.Dir(fs.Mount), 0o755); err != nil {
		t.Fatal(err)
	}
}

func (fs *BtrfsFS) teardown(t testing.TB, dir string) {
	t.Helper()
	if fs.Device != "" {
		if err := unix.Unmount(fs.Mount, 0); err != nil && err != unix.EINVAL {
			// Busy: a test left a process or a nested mount behind. Detach
			// lazily so the loop device can go, and say so.
			t.Errorf("unmount %s: %v (detaching lazily)", fs.Mount, err)
			_ = unix.Unmount(fs.Mount, unix.MNT_DETACH)
		}
		if out, err := exec.Command("losetup", "-d", fs.Device).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", fs.Device, err, out)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Errorf("remove %s: %v", dir, err)
	}
}

// run runs a command and fails the test with its output if it fails.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String()
}

// Run runs a command for a test and returns its stdout; it fails the test with
// the command's stderr if the command fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	return run(t, name, args...)
}

// WriteFile writes content to path, making parent directories, or fails the test.
// A new file is 0644; an existing one keeps its mode.
func WriteFile(t testing.TB, path, content string) {
	t.Helper()
	writeFile(t, path, content, 0o644)
}

// WriteSecret writes a password_file or env_file: as WriteFile, but mode
// 0600 (the daemon refuses a secret that others may read).
func WriteSecret(t testing.TB, path, content string) {
	t.Helper()
	writeFile(t, path, content, 0o600)
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(fmt.Errorf("write %s: %w", path, err))
	}
}

// HostMounts is this process's mount table (/proc/self/mountinfo) without
// the mounts other tests make meanwhile: every mount point below the
// temporary directory is left out but those below one of ours. Tests that
// check that the mount table did not change compare two of these, so that
// a test of another package mounting a loop btrfs at that moment is not
// taken for a change.
func HostMounts(t testing.TB, ours ...string) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Clean(os.TempDir())
	below := func(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	var keep []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && below(f[4], tmp) && !slices.ContainsFunc(ours, func(o string) bool { return below(f[4], o) }) {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}

package mountns

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/internal/testutil"
)

// bindMount binds src onto dst on the host until the test ends, recursively
// if rec, then makes the new mount read-only if ro.
func bindMount(t *testing.T, src, dst string, rec, ro bool) {
	t.Helper()
	flags := uintptr(unix.MS_BIND)
	if rec {
		flags |= unix.MS_REC
	}
	if err := unix.Mount(src, dst, "", flags, ""); err != nil {
		t.Fatalf("bind %s on %s: %v", src, dst, err)
	}
	// Detached, not unmounted: a recursive bind carries mounts of its own.
	t.Cleanup(func() {
		if err := unix.Unmount(dst, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dst, err)
		}
	})
	if ro {
		if err := unix.Mount("", dst, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			t.Fatalf("make %s read-only: %v", dst, err)
		}
	}
}

// The mounts systemd makes in a hardened service's namespace, over a
// subvolume standing for /: the snapshot must show through them. Mounts that
// are not the subvolume's own still come back, as before.
func TestRunLeavesOutSystemdSandboxMounts(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "root", "other")
	root := fs.Path("root")
	privateTmp := filepath.Join(root, "tmp", "systemd-private-0123-subvault.service-AbCd", "tmp")
	for path, content := range map[string]string{
		filepath.Join(root, "usr", "file"):                "usr-snapshot",
		filepath.Join(root, "usr", "lib", "modules", "m"): "modules-snapshot",
		filepath.Join(root, "usr", "local", "file"):       "local-snapshot",
		filepath.Join(root, "etc", "file"):                "etc-snapshot",
		filepath.Join(root, "tmp", "file"):                "tmp-snapshot",
		filepath.Join(root, "var", "hidden", "file"):      "hidden-snapshot",
		filepath.Join(privateTmp, "file"):                 "private-snapshot",
		filepath.Join(root, "mnt", "other", "file"):       "mount-point-snapshot",
		filepath.Join(root, "mnt", "top", "file"):         "mount-point-snapshot",
		filepath.Join(root, "run", "file"):                "run-snapshot",
		fs.Path("other", "file"):                          "other-old",
		fs.Path("top", "file"):                            "top-old",
	} {
		testutil.WriteFile(t, path, content)
	}
	snap := snapshot(t, root, fs.Path(".subvault-snapshots", "root-1"))
	snapID := devIno(t, snap)
	for path, content := range map[string]string{
		filepath.Join(root, "usr", "file"):                "usr-live",
		filepath.Join(root, "usr", "lib", "modules", "m"): "modules-live",
		filepath.Join(root, "etc", "file"):                "etc-live",
		filepath.Join(root, "tmp", "file"):                "tmp-live",
		filepath.Join(privateTmp, "file"):                 "private-live",
		filepath.Join(root, "var", "hidden", "file"):      "hidden-live",
		fs.Path("other", "file"):                          "other-live",
		fs.Path("top", "file"):                            "top-live",
	} {
		testutil.WriteFile(t, path, content)
	}

	// What systemd does, in its order. ProtectSystem=full: /usr (with a
	// filesystem of its own below it) and /etc bound read-only onto
	// themselves, recursively.
	mountTmpfs(t, filepath.Join(root, "usr", "local"))
	testutil.WriteFile(t, filepath.Join(root, "usr", "local", "file"), "local-tmpfs")
	bindMount(t, filepath.Join(root, "usr"), filepath.Join(root, "usr"), true, true)
	bindMount(t, filepath.Join(root, "etc"), filepath.Join(root, "etc"), true, true)
	// PrivateTmp=: another directory of the same subvolume over /tmp.
	bindMount(t, privateTmp, filepath.Join(root, "tmp"), true, false)
	// ProtectKernelModules=: the inaccessible directory PID 1 keeps on the
	// /run tmpfs, over /usr/lib/modules.
	mountTmpfs(t, fs.Path("run"))
	node := fs.Path("run", "systemd", "inaccessible", "dir")
	if err := os.MkdirAll(node, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(node, 0); err != nil {
		t.Fatal(err)
	}
	defer func(was string) { systemdInaccessible = was }(systemdInaccessible)
	systemdInaccessible = filepath.Dir(node)
	bindMount(t, node, filepath.Join(root, "usr", "lib", "modules"), false, true)
	// A mount hidden by a bind of its parent that did not carry it: the
	// path now shows the subvolume's own directory.
	mountTmpfs(t, filepath.Join(root, "var", "hidden"))
	bindMount(t, filepath.Join(root, "var"), filepath.Join(root, "var"), false, false)

	// Mounts that are not the subvolume's own come back as before: another
	// subvolume, the filesystem's top level, a tmpfs of the administrator.
	bindMount(t, fs.Path("other"), filepath.Join(root, "mnt", "other"), false, false)
	if err := os.Mkdir(fs.Path("top"), 0o755); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	bindMount(t, fs.Path("top"), filepath.Join(root, "mnt", "top"), false, false)
	mountTmpfs(t, filepath.Join(root, "run"))
	testutil.WriteFile(t, filepath.Join(root, "run", "file"), "run-tmpfs")
	before := readViews(t, fs.Mount, hostViews...)

	var logged bytes.Buffer
	var skipped []string
	opts := Options{
		Binds:   []Bind{{Source: snap, Target: root}},
		Skipped: func(mp string, err error) { skipped = append(skipped, mp+": "+err.Error()) },
		Logger:  slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	err := Run(context.Background(), opts, func() error {
		for rel, want := range map[string]string{
			"usr/file":          "usr-snapshot",
			"usr/lib/modules/m": "modules-snapshot",
			"etc/file":          "etc-snapshot",
			"tmp/file":          "tmp-snapshot",
			"var/hidden/file":   "hidden-snapshot",
			"usr/local/file":    "local-tmpfs",
			"mnt/other/file":    "other-live",
			"mnt/top/file":      "top-live",
			"run/file":          "run-tmpfs",
		} {
			if out, err := child("cat", filepath.Join(root, rel)); err != nil || out != want {
				t.Errorf("inside, a child reads %q (%v) from %s, want %q", out, err, rel, want)
			}
		}
		// The snapshot itself, not a bind of the live subvolume that
		// happens to hold the same bytes.
		for _, rel := range []string{"usr", "usr/lib/modules", "etc", "tmp"} {
			got, err := child("stat", "-c", "%d", filepath.Join(root, rel))
			if want := strings.Split(snapID, ":")[0]; err != nil || got != want {
				t.Errorf("inside, %s is on device %s (%v), want the snapshot's %s", rel, got, err, want)
			}
		}
		if out, err := child("sh", "-c", "echo w > "+filepath.Join(root, "run", "w")); err != nil {
			t.Errorf("inside, the administrator's tmpfs is not writable: %v: %s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(skipped) > 0 {
		t.Errorf("mounts reported as skipped, not left out by design: %q", skipped)
	}
	// Left out at debug level: each of systemd's mounts, with why.
	for _, want := range []string{
		"mountpoint=" + filepath.Join(root, "usr") + " subvolume=" + root + ` reason="it shows subvolume ` + root + "'s own files, through a bind of /root/usr ",
		"mountpoint=" + filepath.Join(root, "etc") + " ",
		"mountpoint=" + filepath.Join(root, "tmp") + " subvolume=" + root + ` reason="it shows subvolume ` + root +
			"'s own files, through a bind of /root/tmp/systemd-private-0123-subvault.service-AbCd/tmp ",
		"mountpoint=" + filepath.Join(root, "usr", "lib", "modules") + " subvolume=" + root + ` reason="it is systemd's inaccessible node ` + node + " ",
		"mountpoint=" + filepath.Join(root, "var") + " ",
		"mountpoint=" + filepath.Join(root, "var", "hidden") + " subvolume=" + root + ` reason="it shows subvolume ` + root + "'s own files, through a bind of /root/var ",
	} {
		if !strings.Contains(logged.String(), "level=DEBUG msg=\"host mount left out of the backup's namespace\" "+want) {
			t.Errorf("the log has no debug line with %q:\n%s", want, logged.String())
		}
	}
	if n := strings.Count(logged.String(), "left out"); n != 6 {
		t.Errorf("%d mounts left out, want 6:\n%s", n, logged.String())
	}
	if strings.Contains(logged.String(), "level=WARN") {
		t.Errorf("warnings logged:\n%s", logged.String())
	}
	sameViews(t, "after Run", before, readViews(t, fs.Mount, hostViews...))
	noNamespacedThreads(t, fs.Mount, before)
}

// In a container (systemd-nspawn), /run/systemd/inaccessible is a symlink
// to /run/host/inaccessible, so the mounts' root reads /host/inaccessible/...
// Directories and files alike are left out; a look-alike that is not the
// node itself comes back.
func TestRunLeavesOutInaccessibleNodesInAContainer(t *testing.T) {
	fs := testutil.NewBtrfs(t, 128, "data")
	data := fs.Path("data")
	testutil.WriteFile(t, filepath.Join(data, "secret", "file"), "secret-snapshot")
	testutil.WriteFile(t, filepath.Join(data, "secret.conf"), "conf-snapshot")
	testutil.WriteFile(t, filepath.Join(data, "lookalike", "file"), "lookalike-snapshot")
	snap := snapshot(t, data, fs.Path(".subvault-snapshots", "data-1"))

	mountTmpfs(t, fs.Path("run"))
	nodes := fs.Path("run", "host", "inaccessible")
	if err := os.MkdirAll(filepath.Join(nodes, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, filepath.Join(nodes, "reg"), "")
	for _, n := range []string{"dir", "reg"} {
		if err := os.Chmod(filepath.Join(nodes, n), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(fs.Path("run", "systemd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../host/inaccessible", fs.Path("run", "systemd", "inaccessible")); err != nil {
		t.Fatal(err)
	}
	defer func(was string) { systemdInaccessible = was }(systemdInaccessible)
	systemdInaccessible = fs.Path("run", "systemd", "inaccessible")
	bindMount(t, filepath.Join(systemdInaccessible, "dir"), filepath.Join(data, "secret"), false, true)
	bindMount(t, filepath.Join(systemdInaccessible, "reg"), filepath.Join(data, "secret.conf"), false, true)
	lookalike := fs.Path("run", "lookalike", "inaccessible", "dir")
	testutil.WriteFile(t, filepath.Join(lookalike, "file"), "lookalike-tmpfs")
	bindMount(t, lookalike, filepath.Join(data, "lookalike"), false, false)

	var logged bytes.Buffer
	opts := Options{
		Binds:  []Bind{{Source: snap, Target: data}},
		Logger: slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	err := Run(context.Background(), opts, func() error {
		for rel, want := range map[string]string{
			"secret/file":    "secret-snapshot",
			"secret.conf":    "conf-snapshot",
			"lookalike/file": "lookalike-tmpfs",
		} {
			if out, err := child("cat", filepath.Join(data, rel)); err != nil || out != want {
				t.Errorf("inside, a child reads %q (%v) from %s, want %q", out, err, rel, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, want := range []string{
		"mountpoint=" + filepath.Join(data, "secret") + " subvolume=" + data + ` reason="it is systemd's inaccessible node ` + filepath.Join(systemdInaccessible, "dir") + " ",
		"mountpoint=" + filepath.Join(data, "secret.conf") + " subvolume=" + data + ` reason="it is systemd's inaccessible node ` + filepath.Join(systemdInaccessible, "reg") + " ",
	} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("the log has no debug line with %q:\n%s", want, logged.String())
		}
	}
	if n := strings.Count(logged.String(), "left out"); n != 2 {
		t.Errorf("%d mounts left out, want 2:\n%s", n, logged.String())
	}
}

func TestIsInaccessibleRoot(t *testing.T) {
	for root, want := range map[string]bool{
		"/systemd/inaccessible/dir":     true,
		"/systemd/inaccessible/reg":     true,
		"/run/systemd/inaccessible/chr": true,
		"/host/inaccessible/dir":        true,
		"/systemd/inaccessible":         false,
		"/systemd/inaccessible/other":   false,
		"/inaccessible/dir":             true,
		"/srv/inaccessible-x/dir":       false,
		"/srv/dir":                      false,
		"/":                             false,
	} {
		if got := isInaccessibleRoot(root); got != want {
			t.Errorf("isInaccessibleRoot(%q) = %v, want %v", root, got, want)
		}
	}
}

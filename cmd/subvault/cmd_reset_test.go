package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/daemon/reset"
	"github.com/subvault/subvault/internal/testutil"
)

// subvault reset init, diff and run, as a person and the initrd use them:
// the clean snapshot, what the next boot throws away, the reset itself.
func TestResetThroughTheCLI(t *testing.T) {
	fs := testutil.NewBtrfs(t, 512, "@")
	root := filepath.Join(filepath.Dir(fs.Mount), "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	mount := func() { testutil.Run(t, "mount", "-o", "subvol=@", fs.Device, root) }
	mount()
	t.Cleanup(func() { _ = unix.Unmount(root, 0) })
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	testutil.WriteFile(t, cfgPath, fmt.Sprintf(`settings:
  state_dir: %[1]s/var/lib/subvault
reset:
  subvolumes:
    - path: %[1]s
      persist: [%[1]s/var/lib/keep]
      keep: {last: 2}
`, root))
	testutil.WriteFile(t, filepath.Join(root, "etc/os-release"), "clean\n")

	code, out, errOut := runCLI(t, "reset", "init", root, "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "clean snapshot of "+root+": subvault-pinned@reset@") {
		t.Fatalf("reset init: %d\n%s%s", code, out, errOut)
	}
	testutil.WriteFile(t, filepath.Join(root, "var/lib/keep/file"), "kept\n")
	testutil.WriteFile(t, filepath.Join(root, "marker"), "this boot only\n")

	code, out, errOut = runCLI(t, "reset", "diff", root, "--json", "--config", cfgPath)
	var changes []reset.Change
	if code != 0 || json.Unmarshal([]byte(out), &changes) != nil {
		t.Fatalf("reset diff --json: %d\n%s%s", code, out, errOut)
	}
	want := reset.Change{Path: filepath.Join(root, "marker"), Kind: "added", Type: "file", Size: 15}
	if len(changes) != 1 || changes[0] != want {
		t.Errorf("reset diff --json: %+v, want [%+v] (the persisted file and the state directory left out)", changes, want)
	}
	code, out, _ = runCLI(t, "reset", "diff", root, "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "added    file         15 B  "+filepath.Join(root, "marker")) {
		t.Errorf("reset diff: %d\n%s", code, out)
	}

	if err := unix.Unmount(root, 0); err != nil {
		t.Fatal(err)
	}
	cmdline := filepath.Join(dir, "cmdline")
	testutil.WriteFile(t, cmdline, "BOOT_IMAGE=/vmlinuz root="+fs.Device+" ro rootflags=subvol=@ quiet\n")
	code, out, errOut = runCLI(t, "reset", "run", "--cmdline", cmdline, "--config", cfgPath)
	mount()
	if code != 0 || !strings.Contains(out, "subvault reset: "+root+": done (previous state subvault@reset@") {
		t.Fatalf("reset run: %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(root, "marker")); !os.IsNotExist(err) {
		t.Errorf("marker after the reset: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(root, "var/lib/keep/file")); err != nil || string(got) != "kept\n" {
		t.Errorf("persisted file after the reset: %q, %v", got, err)
	}

	// A second run with subvault.reset=0: skipped, exit 0, said why.
	if err := unix.Unmount(root, 0); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, cmdline, "root="+fs.Device+" rootflags=subvol=@ subvault.reset=0\n")
	code, out, _ = runCLI(t, "reset", "run", "--cmdline", cmdline, "--config", cfgPath)
	mount()
	if code != 0 || !strings.Contains(out, ": skipped: subvault.reset=0 is on the kernel command line") {
		t.Errorf("reset run with subvault.reset=0: %d\n%s", code, out)
	}
}

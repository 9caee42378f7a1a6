package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/shell"
	"github.com/subvault/subvault/internal/testutil"
)

// subvault clone gives a writable tree that holds what the snapshot holds;
// writing into it leaves the snapshot as it was. --nspawn prints the
// container's command.
func TestCloneThroughTheCLI(t *testing.T) {
	e := newAPIEnv(t, 5)
	home := e.fs.Path("home")
	richFiles(t, home)
	snap := e.takeSnapshot(t, 1)
	e.startDaemon(t)
	snapState := testutil.TreeState(t, snap.Path)

	clone := e.fs.Path("old-home")
	code, out, errOut := e.cli(t, "clone", "home", snap.Name(), clone, "--nspawn")
	if code != exitOK {
		t.Fatalf("clone: exit %d: %s", code, errOut)
	}
	t.Logf("clone --nspawn:\n%s%s", out, errOut)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	wantCmd := fmt.Sprintf("systemd-nspawn --directory=/ --volatile=yes --bind-ro=/etc --bind=%s:%s --machine=old-home --private-network --boot", clone, home)
	if len(lines) != 2 || lines[0] != clone || lines[1] != wantCmd {
		t.Errorf("clone --nspawn printed\n%s\nwant\n%s\n%s", out, clone, wantCmd)
	}
	if !strings.Contains(errOut, "btrfs subvolume delete "+clone) {
		t.Errorf("no word on removing the clone: %s", errOut)
	}
	sameState(t, "the clone differs from the snapshot", snapState, testutil.TreeState(t, clone))
	if info, err := btrfs.Info(clone); err != nil || info.ReadOnly {
		t.Fatalf("the clone: %+v, %v; want a writable subvolume", info, err)
	}

	// Writing into the clone: the snapshot does not change.
	testutil.WriteFile(t, filepath.Join(clone, "etc", "app.conf"), "version=2, written in the clone\n")
	testutil.WriteFile(t, filepath.Join(clone, "new-in-clone"), "x")
	if err := os.Remove(filepath.Join(clone, "d0", "a0")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(clone, "conf-hardlink"), "user.origin", []byte("changed"), 0); err != nil {
		t.Fatal(err)
	}
	if d := testutil.DiffStates(snapState, testutil.TreeState(t, clone)); len(d) < 4 {
		t.Errorf("the writes into the clone did not show: %v", d)
	}
	sameState(t, "writing into the clone changed the snapshot", snapState, testutil.TreeState(t, snap.Path))

	// --run runs the command in this process's place: a stand-in
	// systemd-nspawn on PATH records its arguments.
	bin := t.TempDir()
	record := filepath.Join(bin, "argv")
	testutil.WriteFile(t, filepath.Join(bin, "systemd-nspawn"), "#!/bin/sh\nprintf '%s\\n' \"$@\" > "+record+"\necho container ran\n")
	if err := os.Chmod(filepath.Join(bin, "systemd-nspawn"), 0o755); err != nil {
		t.Fatal(err)
	}
	second := e.fs.Path("second")
	cmd := subvaultCmd("clone", "home", snap.Name(), second, "--run", "--machine", "rescue", "--bus", e.bus.Address)
	cmd.Env = append(cmd.Env, "PATH="+bin+":"+os.Getenv("PATH")) // the last PATH wins
	code, out, errOut = runCmd(t, cmd)
	argv, _ := os.ReadFile(record)
	wantArgv := fmt.Sprintf("--directory=/\n--volatile=yes\n--bind-ro=/etc\n--bind=%s:%s\n--machine=rescue\n--private-network\n--boot\n", second, home)
	if code != exitOK || string(argv) != wantArgv || !strings.HasSuffix(out, "container ran\n") {
		t.Errorf("clone --run: exit %d, the container got\n%s\nwant\n%s\nstdout %q, stderr %q", code, argv, wantArgv, out, errOut)
	}

	code, _, errOut = e.cli(t, "clone", "home", snap.Name(), e.fs.Path("third"), "--nspawn", "--machine", "a b")
	if code != exitUsage || !strings.Contains(errOut, "machine name") {
		t.Errorf("a bad machine name: exit %d, %s", code, errOut)
	}
}

func TestNspawnCommand(t *testing.T) {
	tree := func(files ...string) string {
		dir := t.TempDir()
		for _, f := range files {
			testutil.WriteFile(t, filepath.Join(dir, f), "")
		}
		return dir
	}
	debian := tree("usr/lib/systemd/systemd", "etc/os-release")
	if err := os.Symlink("/lib/systemd/systemd", filepath.Join(debian, "init")); err != nil {
		t.Fatal(err)
	}
	oldInit := tree("sbin/init")
	nixos := tree("nix/var/nix/profiles/system/init")
	data := tree("nextcloud/data/ann/notes.md")
	for _, c := range []struct {
		target, subvolume string
		want              string
	}{
		{debian, "/", "systemd-nspawn --directory=" + debian + " --machine=m --private-network --boot"},
		{oldInit, "/srv/root", "systemd-nspawn --directory=" + oldInit + " --machine=m --private-network --boot"},
		{nixos, "/", "systemd-nspawn --directory=" + nixos + " --machine=m --private-network /nix/var/nix/profiles/system/init"},
		{data, "/var/lib/nextcloud", "systemd-nspawn --directory=/ --volatile=yes --bind-ro=/etc --bind=" + data + ":/var/lib/nextcloud --machine=m --private-network --boot"},
		{data, "/", "systemd-nspawn --directory=" + data + " --machine=m --private-network --boot"},
	} {
		argv, kind := nspawnCommand(c.target, c.subvolume, "m")
		if got := shell.Join(argv); got != c.want {
			t.Errorf("nspawnCommand(%s, %s) = %s (%s)\nwant %s", c.target, c.subvolume, got, kind, c.want)
		}
	}
	for in, want := range map[string]string{"old-home": "old-home", "home 2026.01": "home-2026-01", "---": "subvault-clone", strings.Repeat("x", 70): strings.Repeat("x", 64)} {
		if got := machineName(in); got != want {
			t.Errorf("machineName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := shell.Join([]string{"a b", "it's", "--bind=/x:/y"}); got != `'a b' 'it'\''s' --bind=/x:/y` {
		t.Errorf("shellJoin = %s", got)
	}
}

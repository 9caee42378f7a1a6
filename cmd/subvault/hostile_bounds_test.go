package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/internal/testutil"
)

// docs/security.md, attack 3, as a local user (uid 65534, in the plan's
// allow_users) did it: a named pipe or a link to a device as a directory's
// exclude_if_present marker hung every live Diff. boundsEnv is attack 4's
// too (hostile_readcalls_test.go).

func init() {
	// plant-markers DIR: in DIR (the user's own directory in the plan's
	// subvolume), directories whose .nobackup marker is a named pipe, a
	// link to /dev/zero and a link to a named pipe elsewhere, each with a
	// file the marker keeps out of the backup, and a plain directory.
	testutil.RegisterHostile("plant-markers", func(args []string) error {
		dir := args[0]
		for _, sub := range []string{"pipe", "devlink", "pipelink", "elsewhere", "plain"} {
			if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
				return err
			}
		}
		for _, p := range []string{"pipe/.nobackup", "elsewhere/fifo"} {
			if err := unix.Mkfifo(filepath.Join(dir, p), 0o644); err != nil {
				return fmt.Errorf("mkfifo %s: %w", p, err)
			}
		}
		if err := os.Symlink("/dev/zero", filepath.Join(dir, "devlink", ".nobackup")); err != nil {
			return err
		}
		if err := os.Symlink(filepath.Join(dir, "elsewhere", "fifo"), filepath.Join(dir, "pipelink", ".nobackup")); err != nil {
			return err
		}
		for _, sub := range []string{"pipe", "devlink", "pipelink", "plain"} {
			if err := os.WriteFile(filepath.Join(dir, sub, "before"), []byte(sub), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	// add-files DIR NAME SUB...: a file NAME in each DIR/SUB.
	testutil.RegisterHostile("add-files", func(args []string) error {
		for _, sub := range args[2:] {
			if err := os.WriteFile(filepath.Join(args[0], sub, args[1]), []byte("after"), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
}

// boundsEnv is the daemon on a private system bus with nobody (uid 65534)
// in plan home's allow_users and exclude_if_present [".nobackup"], and
// restic replaced by a wrapper that logs each run and then runs the real
// restic: with the flag file slow present, without its cache and at 1 KiB/s
// of downloads (a slow repository), so that its processes last long enough
// to be counted.
type boundsEnv struct {
	*apiEnv
	realRestic string
	runs       string // the wrapper's log: repository and arguments of each run
	slow       string
}

func newBoundsEnv(t *testing.T, files int, extraPlans ...string) *boundsEnv {
	t.Helper()
	testutil.RequireNobody(t)
	e := &boundsEnv{apiEnv: newAPIEnv(t, files)}
	e.realRestic = e.restic
	e.runs = filepath.Join(e.state, "restic-runs.log")
	e.slow = filepath.Join(e.state, "slow")
	wrapper := filepath.Join(e.state, "restic-wrapper")
	testutil.WriteFile(t, wrapper, fmt.Sprintf(`#!/bin/sh
printf '%%s %%s\n' "$RESTIC_REPOSITORY" "$*" >> %[1]s
if [ -e %[2]s ]; then exec %[3]s --no-cache --limit-download 1 "$@"; fi
exec %[3]s "$@"
`, e.runs, e.slow, e.realRestic))
	if err := os.Chmod(wrapper, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(cfg), "      last: 5\n",
		"      last: 5\n    allow_users: [65534]\n    backup:\n      exclude_if_present: [\".nobackup\"]\n", 1)
	edited = strings.Replace(edited, "  restic: "+e.realRestic+"\n", "  restic: "+wrapper+"\n", 1)
	// Further plans of the same subvolume, each with a repository of its
	// own: caches apart, so that one caller can want several restic runs
	// at once.
	for _, name := range extraPlans {
		repo, password := testutil.NewResticRepo(t, e.realRestic)
		edited = strings.Replace(edited, "plans:\n", fmt.Sprintf("  %s:\n    url: %s\n    password_file: %s\nplans:\n", name, repo, password), 1)
		edited = strings.Replace(edited, "settings:\n", fmt.Sprintf("  %s:\n    subvolumes: [%s]\n    repository: %s\n    allow_users: [65534]\nsettings:\n", name, e.fs.Path("home"), name), 1)
	}
	if !strings.Contains(edited, "allow_users") || !strings.Contains(edited, wrapper) {
		t.Fatalf("cannot edit the configuration:\n%s", cfg)
	}
	testutil.WriteFile(t, e.config, edited)
	// The btrfs is mounted in a directory of mode 700; nobody must reach
	// the subvolume, as a user reaches /home.
	if err := os.Chmod(filepath.Dir(e.fs.Mount), 0o755); err != nil {
		t.Fatal(err)
	}
	return e
}

// daemonPid asks the bus which process owns the daemon's name.
func (e *boundsEnv) daemonPid(t *testing.T, conn *dbus.Conn) int {
	t.Helper()
	var pid uint32
	if err := conn.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixProcessID", 0, contract.BusName).Store(&pid); err != nil {
		t.Fatal(err)
	}
	return int(pid)
}

// diffRows calls Diff over conn as root and returns its rows as "kind path"
// lines, or the error when there is no answer within limit.
func diffRows(conn *dbus.Conn, limit time.Duration, plan, a, b string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var rows []contract.Change
	if err := conn.Object(contract.BusName, contract.ManagerPath).CallWithContext(ctx, contract.ManagerInterface+".Diff", 0, plan, a, b).Store(&rows); err != nil {
		return "", err
	}
	var lines []string
	for _, r := range rows {
		lines = append(lines, string(r.Kind)+" "+r.Path)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n"), nil
}

// threadsIn lists the daemon's threads that sleep in one of the kernel
// functions named.
func threadsIn(pid int, wchans ...string) int {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	n := 0
	for _, task := range tasks {
		w, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/wchan", pid, task.Name()))
		if err != nil {
			continue
		}
		for _, want := range wchans {
			if string(w) == want {
				n++
			}
		}
	}
	return n
}

func (e *boundsEnv) busConn(t *testing.T) *dbus.Conn {
	t.Helper()
	conn, err := dbus.Connect(e.bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Attack 3. A user's directory in the subvolume holds directories whose
// .nobackup marker is a named pipe, a link to /dev/zero or a link to a
// named pipe elsewhere (the user made them, as uid 65534). restic's
// backup counts any entry of that name as the marker (it only lstats it),
// so those directories are left out, and so must Diff leave them out
// without opening the markers: root's Diff of the newest archive with the
// live subvolume answers, right after the backup with no difference, and
// after the user adds a file to each directory with only the plain
// directory's; no thread of the daemon waits on a pipe.
func TestHostileNamedPipeMarkerLiveDiff(t *testing.T) {
	e := newBoundsEnv(t, 1)
	home := e.fs.Path("home")
	mine := filepath.Join(home, "nobody")
	if err := os.Mkdir(mine, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(mine, testutil.NobodyUID, testutil.NobodyGID); err != nil {
		t.Fatal(err)
	}
	if out, err := testutil.RunHostile(t, 30*time.Second, "plant-markers", mine); err != nil {
		t.Fatalf("plant the markers: %v\n%s", err, out)
	}
	e.startDaemon(t)
	conn := e.busConn(t)
	pid := e.daemonPid(t, conn)
	if code, out, errOut := e.cli(t, "backup", "home", "--wait"); code != exitOK {
		t.Fatalf("backup: exit %d\n%s%s", code, out, errOut)
	}

	// Several at once, as the 41: each must answer.
	const diffs = 4
	type answer struct {
		rows string
		err  error
		took time.Duration
	}
	answers := make(chan answer, diffs)
	for range diffs {
		go func() {
			start := time.Now()
			rows, err := diffRows(conn, 90*time.Second, "home", "latest", "live")
			answers <- answer{rows, err, time.Since(start)}
		}()
	}
	for range diffs {
		a := <-answers
		if a.err != nil {
			t.Errorf("Diff home latest live with pipe and device markers: no answer: %v (daemon threads waiting on a pipe: %d)",
				a.err, threadsIn(pid, "wait_for_partner", "pipe_wait", "pipe_read", "pipe_write"))
			continue
		}
		t.Logf("Diff home latest live answered in %v", a.took.Round(time.Millisecond))
		if a.rows != "" {
			t.Errorf("Diff home latest live right after the backup:\n%s\nwant no difference", a.rows)
		}
	}
	if t.Failed() {
		return
	}

	if out, err := testutil.RunHostile(t, 30*time.Second, "add-files", mine, "after", "pipe", "devlink", "pipelink", "plain"); err != nil {
		t.Fatalf("add files: %v\n%s", err, out)
	}
	rows, err := diffRows(conn, 90*time.Second, "home", "latest", "live")
	want := "added " + filepath.Join(mine, "plain", "after") + "\nmetadata " + filepath.Join(mine, "plain") + "/"
	if err != nil || rows != want {
		t.Errorf("Diff home latest live after a file was added to each directory: %v\n%s\nwant\n%s", err, rows, want)
	}
	if n := threadsIn(pid, "wait_for_partner", "pipe_wait", "pipe_read", "pipe_write"); n != 0 {
		t.Errorf("%d threads of the daemon wait on a pipe", n)
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); strings.HasPrefix(target, mine) || target == "/dev/zero" {
			t.Errorf("the daemon holds %s open", target)
		}
	}
}

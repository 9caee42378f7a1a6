package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/reset"
	"github.com/subvault/subvault/internal/testutil"
)

func init() {
	testutil.RegisterHostile("reset-calls", hostileResetCalls)
}

// resetMachine is a loop btrfs whose subvolume @ stands for a machine's
// root: mounted with subvol=@ at root while "running", with a reset of it
// configured (persisting the state directory and keep/) and its clean
// snapshot taken.
type resetMachine struct {
	fs      *testutil.BtrfsFS
	root    string
	cfg     *config.Config
	mounted bool
}

func newResetMachine(t *testing.T, e *apiEnv) *resetMachine {
	t.Helper()
	testutil.RequireRoot(t)
	fs := testutil.NewBtrfs(t, 256, "@")
	m := &resetMachine{fs: fs, root: filepath.Join(filepath.Dir(fs.Mount), "root")}
	if err := os.Mkdir(m.root, 0o755); err != nil {
		t.Fatal(err)
	}
	m.mount(t)
	t.Cleanup(func() {
		if m.mounted {
			_ = unix.Unmount(m.root, 0)
		}
	})
	e.dir = t.TempDir()
	e.stateDir = filepath.Join(m.root, "var/lib/subvault")
	e.extra = fmt.Sprintf("reset:\n  subvolumes:\n    - path: %s\n      persist: [%s, %s]\n", m.root, e.stateDir, filepath.Join(m.root, "keep"))
	e.config = filepath.Join(e.dir, "config.yaml")
	e.writeConfig(t, "home")
	testutil.WriteFile(t, filepath.Join(m.root, "keep", "file"), "kept\n")
	if err := os.MkdirAll(e.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	var err error
	if m.cfg, err = config.Load(e.config); err != nil {
		t.Fatal(err)
	}
	if _, err := reset.Init(context.Background(), m.cfg, m.root, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *resetMachine) mount(t *testing.T) {
	t.Helper()
	testutil.Run(t, "mount", "-o", "subvol=@", m.fs.Device, m.root)
	m.mounted = true
}

// boot runs the reset as the initrd does: the root not mounted, the kernel
// command line naming its device; then mounts it again.
func (m *resetMachine) boot(t *testing.T, now time.Time) reset.Record {
	t.Helper()
	if err := unix.Unmount(m.root, 0); err != nil {
		t.Fatal(err)
	}
	m.mounted = false
	rec, err := reset.Run(context.Background(), m.cfg, reset.RunOptions{Cmdline: "root=" + m.fs.Device + " rootflags=subvol=@",
		Now: func() time.Time { return now }, Log: slog.New(slog.DiscardHandler)})
	m.mount(t)
	if err != nil {
		t.Fatalf("reset: %v (%+v)", err, rec)
	}
	if len(rec.Results) != 1 || rec.Results[0].Result != reset.ResultDone {
		t.Fatalf("reset: %+v, want done", rec)
	}
	return rec
}

// After a boot that reset the root, the daemon shows it: LastReset says
// when, done and the previous state; ListSnapshots("reset") lists the
// clean snapshot and that state; Rollback of plan reset to the state makes
// the next boot come up in it (the marker the reset threw away is back),
// and is refused for a subvolume the reset does not manage or a name that
// is not a reset snapshot of it.
func TestResetOverTheBus(t *testing.T) {
	e := &apiEnv{}
	m := newResetMachine(t, e)
	testutil.WriteFile(t, filepath.Join(m.root, "marker"), "the last boot wrote this\n")
	boot1 := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	rec := m.boot(t, boot1)
	if _, err := os.Lstat(filepath.Join(m.root, "marker")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after the reset, the marker: %v; want it gone", err)
	}
	state := rec.Results[0].State

	newAPIEnvWith(t, e, nil, "home")
	v, err := e.obj.GetProperty(contract.ManagerInterface + ".LastReset")
	if err != nil {
		t.Fatal(err)
	}
	if v.Signature().String() != "a{sv}" {
		t.Fatalf("LastReset has type %s, want a{sv}", v.Signature())
	}
	var mgr contract.Manager
	mgr.Apply(map[string]dbus.Variant{"LastReset": v})
	want := contract.LastReset{Time: time.Unix(rec.Time.Unix(), 0), Path: m.root, Result: "done", State: state}
	if got := mgr.LastReset; got == nil || !got.Time.Equal(want.Time) || got.Path != want.Path || got.Result != want.Result || got.State != want.State || got.Reason != "" {
		t.Fatalf("LastReset = %+v, want %+v", got, want)
	}

	var snaps []contract.SnapshotEntry
	if err := e.obj.Call(contract.ManagerInterface+".ListSnapshots", 0, "reset").Store(&snaps); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range snaps {
		names = append(names, s.Name)
		if !s.Kept {
			t.Errorf("%s is not kept; the clean snapshot and the one previous state (keep last 5) are", s.Name)
		}
	}
	if len(snaps) != 2 || !slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, "subvault-pinned@reset@") }) || !slices.Contains(names, state) {
		t.Fatalf("ListSnapshots(reset) = %q, want the clean snapshot and %s", names, state)
	}

	// A clone of the state the reset left holds what it threw away.
	clone := filepath.Join(m.root, "clone")
	var cloned string
	if err := e.obj.Call(contract.ManagerInterface+".CloneSnapshot", 0, "reset", state, clone).Store(&cloned); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(clone, "marker")); err != nil || string(got) != "the last boot wrote this\n" || cloned != clone {
		t.Errorf("CloneSnapshot(reset, %s) = %q; its marker: %q, %v", state, cloned, got, err)
	}
	testutil.Run(t, "btrfs", "subvolume", "delete", clone)

	refused := []struct {
		snapshot, subvolume, errName string
	}{
		{state, "/srv/not-reset", contract.ErrorInvalidArgument},
		{"subvault@reset@20260101T000000Z@0@home", m.root, contract.ErrorNoSuchSnapshot},
	}
	for _, r := range refused {
		err := e.obj.Call(contract.ManagerInterface+".Rollback", 0, "reset", r.snapshot, r.subvolume, map[string]dbus.Variant{}).Err
		if dbusErrorName(err) != r.errName {
			t.Errorf("Rollback(reset, %s, %s) = %v, want %s", r.snapshot, r.subvolume, err, r.errName)
		}
	}
	var kept, msg string
	if err := e.obj.Call(contract.ManagerInterface+".Rollback", 0, "reset", state, m.root, map[string]dbus.Variant{"dry_run": dbus.MakeVariant(true)}).Store(&kept, &msg); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(msg, "Would prepare: The next boot comes up in "+state) {
		t.Errorf("dry run message: %q", msg)
	}
	if err := e.obj.Call(contract.ManagerInterface+".Rollback", 0, "reset", state, m.root, map[string]dbus.Variant{}).Store(&kept, &msg); err != nil {
		t.Fatal(err)
	}
	t.Logf("rollback reset: %s", msg)
	if !strings.HasPrefix(msg, "The next boot comes up in "+state) || kept != "" {
		t.Errorf("Rollback(reset) = %q, %q; want no kept and the next boot's state", kept, msg)
	}
	m.boot(t, boot1.Add(30*time.Minute))
	if got, err := os.ReadFile(filepath.Join(m.root, "marker")); err != nil || string(got) != "the last boot wrote this\n" {
		t.Errorf("after the rollback and a boot, the marker: %q, %v; want it back", got, err)
	}
	if got, err := os.ReadFile(filepath.Join(m.root, "keep", "file")); err != nil || string(got) != "kept\n" {
		t.Errorf("after the rollback and a boot, keep/file: %q, %v", got, err)
	}
}

// hostileResetCalls calls what a user might try on the reset and prints
// each answer as "METHOD: ok" or "METHOD: ERROR-NAME: message".
// Arguments: bus address, the reset's path, a state, a clone target.
func hostileResetCalls(args []string) error {
	if len(args) != 4 {
		return errors.New("want: address path state clone-target")
	}
	conn, err := dbus.Connect(args[0])
	if err != nil {
		return err
	}
	defer conn.Close()
	obj := conn.Object(contract.BusName, contract.ManagerPath)
	for _, c := range []struct {
		method string
		args   []any
	}{
		{"ListSnapshots", []any{"reset"}},
		{"Rollback", []any{"reset", args[2], args[1], map[string]dbus.Variant{}}},
		{"Rollback", []any{"reset", args[2], args[1], map[string]dbus.Variant{"dry_run": dbus.MakeVariant(true)}}},
		{"CloneSnapshot", []any{"reset", args[2], args[3]}},
	} {
		call := obj.Call(contract.ManagerInterface+"."+c.method, 0, c.args...)
		var derr dbus.Error
		switch {
		case call.Err == nil:
			fmt.Printf("%s: ok %v\n", c.method, call.Body)
		case errors.As(call.Err, &derr):
			fmt.Printf("%s: %s: %v\n", c.method, derr.Name, derr.Body)
		default:
			fmt.Printf("%s: %v\n", c.method, call.Err)
		}
	}
	// A flood: 8 callers at once, 25 calls each.
	var mu sync.Mutex
	answered, refused, slowest := 0, map[string]int{}, time.Duration(0)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 25 {
				start := time.Now()
				err := obj.Call(contract.ManagerInterface+".ListSnapshots", 0, "reset").Err
				took := time.Since(start)
				mu.Lock()
				slowest = max(slowest, took)
				var derr dbus.Error
				switch {
				case err == nil:
					answered++
				case errors.As(err, &derr):
					refused[derr.Name]++
				default:
					refused[err.Error()]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	fmt.Printf("flood: %d answered, refused %v, slowest %v\n", answered, refused, slowest.Round(time.Millisecond))
	return nil
}

// A user (uid 65534, a real process on the bus) may list the reset's
// snapshots (names and times, as for any plan) and nothing more: a
// rollback of the reset, even a dry run, is refused saying only root may
// decide what the next boot runs, a clone needs the restore authorization,
// and nothing changes: no next.json at the top level, no clone.
func TestHostileResetCalls(t *testing.T) {
	testutil.RequireNobody(t)
	e := &apiEnv{}
	m := newResetMachine(t, e)
	rec := m.boot(t, time.Now().UTC().Truncate(time.Second).Add(-time.Hour))
	newAPIEnvWith(t, e, nil, "home") // root alone is authorized, as without polkit
	clone := filepath.Join(m.root, "clone")
	mountsBefore := readFile(t, "/proc/self/mountinfo")
	out, err := testutil.RunHostile(t, time.Minute, "reset-calls", e.bus.Address, m.root, rec.Results[0].State, clone)
	if err != nil {
		t.Fatalf("hostile process: %v\n%s", err, out)
	}
	t.Logf("as uid 65534:\n%s", out)
	for _, want := range []string{
		"ListSnapshots: ok [[[subvault",
		" [subvault-pinned@reset@",
		"Rollback: " + contract.ErrorAccessDenied + ": [not authorized to roll back \"" + m.root + "\" to a reset snapshot: you are uid 65534",
		"CloneSnapshot: " + contract.ErrorAccessDenied + ": ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("as uid 65534, want %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Rollback: ok") || strings.Contains(out, "CloneSnapshot: ok") {
		t.Errorf("uid 65534 rolled back or cloned:\n%s", out)
	}
	if _, err := os.Lstat(m.fs.Path(".subvault-reset", "next.json")); err == nil {
		t.Errorf("a refused rollback left next.json: the next boot would come up in the state")
	}
	if _, err := os.Lstat(clone); err == nil {
		t.Errorf("a refused clone made %s", clone)
	}
	// The flood was answered or refused by the read calls' bounds, and
	// root is answered after it.
	if !regexp.MustCompile(`flood: \d+ answered, refused map\[(` + regexp.QuoteMeta(contract.ErrorLimitsExceeded) + `:\d+)?\], slowest`).MatchString(out) {
		t.Errorf("the flood got other answers than snapshots or %s:\n%s", contract.ErrorLimitsExceeded, out)
	}
	start := time.Now()
	if err := e.obj.Call(contract.ManagerInterface+".ListSnapshots", 0, "reset").Err; err != nil {
		t.Errorf("root's ListSnapshots(reset) after the flood: %v", err)
	}
	t.Logf("root's ListSnapshots(reset) after the flood: %v", time.Since(start).Round(time.Millisecond))
	// Listing mounted the top level where only the daemon saw it, and
	// left nothing mounted.
	if after := readFile(t, "/proc/self/mountinfo"); after != mountsBefore {
		t.Errorf("the mount table changed:\nbefore:\n%s\nafter:\n%s", mountsBefore, after)
	}
}

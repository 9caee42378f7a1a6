package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/internal/testutil"
)

// The hostile processes of the D-Bus security tests: uid 65534 doing what
// any local user can to the daemon's bus and the files it backs up.
func init() {
	// bigtree DIR DEPTH FILES: below DIR, a chain of DEPTH directories with
	// 250-byte names, and in its last one FILES empty files with 255-byte
	// names: paths near PATH_MAX, so that a few thousand of them make a
	// listing of tens of MiB. It works relative to each directory, as no
	// system call takes a path that long whole.
	testutil.RegisterHostile("bigtree", func(args []string) error {
		if len(args) != 3 {
			return errors.New("usage: bigtree DIR DEPTH FILES")
		}
		depth, _ := strconv.Atoi(args[1])
		files, _ := strconv.Atoi(args[2])
		dir, err := unix.Open(args[0], unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", args[0], err)
		}
		for i := range depth {
			name := fmt.Sprintf("d%03d-%s", i, strings.Repeat("x", 245))
			if err := unix.Mkdirat(dir, name, 0o755); err != nil {
				return fmt.Errorf("mkdir level %d: %w", i, err)
			}
			next, err := unix.Openat(dir, name, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
			if err != nil {
				return err
			}
			_ = unix.Close(dir)
			dir = next
		}
		for i := range files {
			name := fmt.Sprintf("f%06d-%s", i, strings.Repeat("y", 247))
			fd, err := unix.Openat(dir, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err != nil {
				return fmt.Errorf("create file %d: %w", i, err)
			}
			_ = unix.Close(fd)
		}
		fmt.Printf("made %d files %d directories deep\n", files, depth)
		return nil
	})

	// diff ADDRESS PLAN A B reply|fd: Diff (reply) or DiffTo (fd, through
	// a pipe) as this user; prints "row KIND PATH" per change, then
	// "rows N", or "error NAME: MESSAGE".
	testutil.RegisterHostile("diff", func(args []string) error {
		if len(args) != 5 {
			return errors.New("usage: diff ADDRESS PLAN A B reply|fd")
		}
		conn, err := dbus.Connect(args[0])
		if err != nil {
			return err
		}
		defer conn.Close()
		mgr := conn.Object(contract.BusName, contract.ManagerPath)
		var rows []string
		switch args[4] {
		case "reply":
			var changes []struct{ Kind, Path string }
			err = mgr.Call(contract.ManagerInterface+".Diff", 0, args[1], args[2], args[3]).Store(&changes)
			for _, c := range changes {
				rows = append(rows, c.Kind+" "+c.Path)
			}
		case "fd":
			r, w, perr := os.Pipe()
			if perr != nil {
				return perr
			}
			read := make(chan []byte)
			var readErr error
			go func() {
				var b bytes.Buffer
				_, readErr = b.ReadFrom(r)
				read <- b.Bytes()
			}()
			call := mgr.Go(contract.ManagerInterface+".DiffTo", 0, nil, args[1], args[2], args[3], dbus.UnixFD(w.Fd()), map[string]dbus.Variant{})
			_ = w.Close()
			<-call.Done
			err = call.Err
			// The daemon closes its end when it is done; one that keeps it
			// (a leaked descriptor) is reported rather than waited for.
			_ = r.SetReadDeadline(time.Now().Add(10 * time.Second))
			data := <-read
			if readErr != nil {
				fmt.Printf("pipe: %v\n", readErr)
			}
			for _, rec := range bytes.Split(data, []byte{0}) {
				if len(rec) > 0 {
					rows = append(rows, strings.Replace(string(rec), "\t", " ", 1))
				}
			}
		}
		for _, row := range rows {
			fmt.Printf("row %s\n", row)
		}
		fmt.Printf("rows %d\n", len(rows))
		var derr dbus.Error
		if errors.As(err, &derr) {
			fmt.Printf("error %s: %v\n", derr.Name, derr.Error())
		} else if err != nil {
			fmt.Printf("error %v\n", err)
		}
		return nil
	})

	// stray-fd ADDRESS: calls that bring a descriptor (a pipe's write end)
	// to methods that take none, then waits up to 10 s for the pipe to end:
	// "closed" when the daemon closed its copies, "kept" when it holds them
	// (as many as any user cares to send).
	testutil.RegisterHostile("stray-fd", func(args []string) error {
		conn, err := dbus.Connect(args[0])
		if err != nil {
			return err
		}
		defer conn.Close()
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		mgr := conn.Object(contract.BusName, contract.ManagerPath)
		for _, c := range []struct {
			method string
			args   []any
		}{
			{contract.ManagerInterface + ".ListPlans", []any{dbus.UnixFD(w.Fd())}},
			{contract.ManagerInterface + ".ListSnapshots", []any{"home", dbus.UnixFD(w.Fd())}},
			{contract.ManagerInterface + ".ListPlans", []any{dbus.MakeVariant(dbus.UnixFD(w.Fd()))}},
			{"org.freedesktop.DBus.Properties.Get", []any{contract.ManagerInterface, "State", []dbus.UnixFD{dbus.UnixFD(w.Fd())}}},
		} {
			err := mgr.Call(c.method, 0, c.args...).Err
			fmt.Printf("%s: %v\n", c.method, err)
		}
		_ = w.Close()
		_ = r.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := r.Read(make([]byte, 1)); errors.Is(err, io.EOF) {
			fmt.Println("closed")
		} else {
			fmt.Printf("kept (%v)\n", err)
		}
		return nil
	})

	// snoop ADDRESS JOBPATH SECONDS: what a job shows any user of the
	// files it works on. It follows the job's PropertiesChanged signals and
	// reads its CurrentFiles with Get every 50 ms until the job ends (or
	// SECONDS pass), then prints "get N: NAMES" and "signal N: NAMES", the
	// distinct file names each way showed.
	testutil.RegisterHostile("snoop", func(args []string) error {
		if len(args) != 3 {
			return errors.New("usage: snoop ADDRESS JOBPATH SECONDS")
		}
		seconds, _ := strconv.Atoi(args[2])
		conn, err := dbus.Connect(args[0])
		if err != nil {
			return err
		}
		defer conn.Close()
		path := dbus.ObjectPath(args[1])
		signals := make(chan *dbus.Signal, 1024)
		conn.Signal(signals)
		if err := conn.AddMatchSignal(dbus.WithMatchSender(contract.BusName), dbus.WithMatchObjectPath(path)); err != nil {
			return err
		}
		if err := conn.AddMatchSignal(dbus.WithMatchSender(contract.BusName), dbus.WithMatchMember("JobRemoved")); err != nil {
			return err
		}
		byGet, bySignal := map[string]bool{}, map[string]bool{}
		gets, signalCount := 0, 0
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(time.Duration(seconds) * time.Second)
	loop:
		for {
			select {
			case <-deadline:
				break loop
			case s := <-signals:
				if s.Name == contract.ManagerInterface+".JobRemoved" && len(s.Body) > 1 && s.Body[1] == path {
					break loop
				}
				if s.Name == "org.freedesktop.DBus.Properties.PropertiesChanged" && len(s.Body) > 1 {
					signalCount++
					changed, _ := s.Body[1].(map[string]dbus.Variant)
					if v, ok := changed["CurrentFiles"]; ok {
						names, _ := v.Value().([]string)
						for _, n := range names {
							bySignal[n] = true
						}
					}
				}
			case <-tick.C:
				v, err := conn.Object(contract.BusName, path).GetProperty(contract.JobInterface + ".CurrentFiles")
				if err != nil {
					continue
				}
				gets++
				names, _ := v.Value().([]string)
				for _, n := range names {
					byGet[n] = true
				}
			}
		}
		fmt.Printf("get: %d names in %d reads, e.g. %s\n", len(byGet), gets, someNames(byGet))
		fmt.Printf("signal: %d names in %d signals, e.g. %s\n", len(bySignal), signalCount, someNames(bySignal))
		return nil
	})
}

// someNames is the first three names of m, in order.
func someNames(m map[string]bool) string {
	names := slices.Sorted(maps.Keys(m))
	return strings.Join(names[:min(3, len(names))], " ")
}

// hostileRows is the "row ..." lines a hostile diff printed.
func hostileRows(out string) []string {
	var rows []string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if row, ok := strings.CutPrefix(sc.Text(), "row "); ok {
			rows = append(rows, row)
		}
	}
	return rows
}

// openToNobody makes the directories above the test's btrfs mount
// traversable, so that uid 65534 reaches a directory of its own in it.
func openToNobody(t interface{ Fatal(...any) }, mount string) {
	if err := os.Chmod(filepath.Dir(mount), 0o755); err != nil {
		t.Fatal(err)
	}
}

// Found with docs/security.md's attack 2 (DiffTo takes a descriptor): godbus hands
// the descriptors a message brings to the method, and no method but DiffTo
// takes one, so each sent with any other call stayed open in the daemon
// (the pipe's reader never saw its end): any user could fill the daemon's
// descriptor table. Worse, godbus panics in its reading goroutine on an
// array of descriptors ("ah" with one attached): a Properties.Get with
// one killed the daemon. Now every descriptor but DiffTo's is closed before
// godbus sees the message, a call that brought one is answered
// UnknownMethod, and the daemon stays up.
func TestHostileDescriptorsAreNotKept(t *testing.T) {
	testutil.RequireNobody(t)
	e := newAPIEnv(t, 1)
	e.startDaemon(t)
	out, err := testutil.RunHostile(t, time.Minute, "stray-fd", e.bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("uid 65534 sent a pipe's write end with calls that take none:\n%s", out)
	if !strings.Contains(out, "\nclosed\n") {
		t.Errorf("the daemon kept descriptors it was sent:\n%s", out)
	}
	var plans [][]any
	e.call(t, &plans, "ListPlans", "")
	if len(plans) != 1 {
		t.Errorf("ListPlans after: %v", plans)
	}
}

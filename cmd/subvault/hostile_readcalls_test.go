package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/internal/testutil"
)

// docs/security.md, attack 4: floods of read calls (ListArchives, Diff) each ran
// restic, without bound, and restic went on after the caller had left.

func init() {
	// list-archives-flood ADDRESS CONNS INFLIGHT TOTAL PLAN...: TOTAL
	// ListArchives calls over CONNS connections, INFLIGHT at a time on
	// each, spread over the plans; it prints how many were answered and
	// the errors seen, and gives up on what is unanswered after 3 minutes.
	testutil.RegisterHostile("list-archives-flood", func(args []string) error {
		conns, _ := strconv.Atoi(args[1])
		inflight, _ := strconv.Atoi(args[2])
		total, _ := strconv.Atoi(args[3])
		plans := args[4:]
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		var next, ok atomic.Int64
		var mu sync.Mutex
		errs := map[string]int{}
		var wg sync.WaitGroup
		for range conns {
			conn, err := dbus.Connect(args[0])
			if err != nil {
				return err
			}
			defer conn.Close()
			obj := conn.Object(contract.BusName, contract.ManagerPath)
			for range inflight {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						n := next.Add(1)
						if n > int64(total) || ctx.Err() != nil {
							return
						}
						var list [][]any
						err := obj.CallWithContext(ctx, contract.ManagerInterface+".ListArchives", 0, plans[int(n)%len(plans)]).Store(&list)
						if err != nil {
							mu.Lock()
							errs[truncated(err.Error())]++
							mu.Unlock()
							continue
						}
						ok.Add(1)
					}
				}()
			}
		}
		wg.Wait()
		fmt.Printf("answered %d of %d\n", ok.Load(), total)
		for e, n := range errs {
			fmt.Printf("error x%d: %s\n", n, e)
		}
		return nil
	})
}

// truncated is s cut to 160 bytes, so that the flood's errors group.
func truncated(s string) string {
	if len(s) > 160 {
		return s[:160]
	}
	return s
}

// resticChildren is the restic processes the daemon runs now: its
// children whose program is the real restic (the wrapper execs it).
func (e *boundsEnv) resticChildren(daemon int) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) < 2 || fields[1] != strconv.Itoa(daemon) {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", ent.Name(), "exe")); err == nil && exe == e.realRestic {
			pids = append(pids, pid)
		}
	}
	return pids
}

// watchRestic counts the daemon's restic processes every 10 ms until stop
// is called, which returns the most seen at once.
func (e *boundsEnv) watchRestic(daemon int) (stop func() int) {
	done := make(chan struct{})
	result := make(chan int)
	go func() {
		most := 0
		for {
			most = max(most, len(e.resticChildren(daemon)))
			select {
			case <-done:
				result <- most
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return func() int { close(done); return <-result }
}

// runsOf counts the wrapper's logged runs of restic command op.
func (e *boundsEnv) runsOf(t *testing.T, op string) int {
	t.Helper()
	f, err := os.Open(e.runs)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		for _, w := range strings.Fields(sc.Text())[1:] {
			if !strings.HasPrefix(w, "-") {
				if w == op {
					n++
				}
				break
			}
		}
	}
	return n
}

// floodReport runs list-archives-flood as uid 65534 and returns what it
// printed; the number answered is checked by the caller.
func (e *boundsEnv) flood(t *testing.T, conns, inflight, total int, plans ...string) (answered int, report string) {
	t.Helper()
	args := append([]string{e.bus.Address, strconv.Itoa(conns), strconv.Itoa(inflight), strconv.Itoa(total)}, plans...)
	out, err := testutil.RunHostile(t, 4*time.Minute, "list-archives-flood", args...)
	if err != nil {
		t.Fatalf("the flood: %v\n%s", err, out)
	}
	if _, err := fmt.Sscanf(out, "answered %d", &answered); err != nil {
		t.Fatalf("the flood said: %s", out)
	}
	return answered, strings.TrimSpace(out)
}

// Attack 4. As uid 65534 in allow_users: 1000 ListArchives calls in a row
// run restic snapshots once; 200 calls, 40 at a time over 8 connections,
// spread over four plans with a repository each, never have more than 2
// restic processes running (2 per caller), and each is answered; a backup
// that ends makes the next ListArchives run restic again and show the new
// archive.
func TestHostileListArchivesFloodIsBounded(t *testing.T) {
	e := newBoundsEnv(t, 1, "extra1", "extra2", "extra3")
	e.startDaemon(t)
	conn := e.busConn(t)
	pid := e.daemonPid(t, conn)
	if code, out, errOut := e.cli(t, "backup", "home", "--wait"); code != exitOK {
		t.Fatalf("backup: exit %d\n%s%s", code, out, errOut)
	}

	before := e.runsOf(t, "snapshots")
	start := time.Now()
	stop := e.watchRestic(pid)
	answered, report := e.flood(t, 1, 1, 1000, "home")
	most := stop()
	runs := e.runsOf(t, "snapshots") - before
	t.Logf("1000 ListArchives in a row: %s; took %v, restic snapshots ran %d times, at most %d restic at once",
		report, time.Since(start).Round(time.Millisecond), runs, most)
	if answered != 1000 || runs != 1 {
		t.Errorf("1000 ListArchives in a row: %d answered, restic snapshots ran %d times; want 1000 answered, 1 run\n%s", answered, runs, report)
	}

	before = e.runsOf(t, "snapshots")
	start = time.Now()
	stop = e.watchRestic(pid)
	answered, report = e.flood(t, 8, 5, 200, "home", "extra1", "extra2", "extra3")
	most = stop()
	runs = e.runsOf(t, "snapshots") - before
	t.Logf("200 ListArchives, 40 at a time over 4 plans: %s; took %v, restic snapshots ran %d times, at most %d restic at once",
		report, time.Since(start).Round(time.Millisecond), runs, most)
	if most > 2 {
		t.Errorf("one caller's flood had %d restic processes running at once; want at most 2", most)
	}
	if answered != 200 || runs > 3 {
		t.Errorf("200 ListArchives over 4 plans (home's list cached): %d answered, restic snapshots ran %d times; want 200 answered, at most 3 runs\n%s", answered, runs, report)
	}

	// A backup that ends changes the repository's archives: the next call
	// runs restic again and shows the new one.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	if code, out, errOut := e.cli(t, "backup", "home", "--wait"); code != exitOK {
		t.Fatalf("second backup: exit %d\n%s%s", code, out, errOut)
	}
	before = e.runsOf(t, "snapshots")
	got, out := e.sendAsNobody("ListArchives", "string:home")
	runs = e.runsOf(t, "snapshots") - before
	if got != "" || strings.Count(out, "struct {") != 2 || runs != 1 {
		t.Errorf("ListArchives after a second backup: %s, restic snapshots ran %d times (want 2 archives, 1 run)\n%s", got, runs, out)
	}
}

// Attack 4. Ten Diff calls of a large archive with the live subvolume over a
// slow repository, then the caller leaves the bus: at most 2 restic
// processes ran for them at once (2 per caller, 4 more waiting, the rest
// refused at once with LimitsExceeded), and once the caller has gone its
// restic processes end within seconds, and no other starts.
func TestHostileCallerLeavingEndsItsRestic(t *testing.T) {
	e := newBoundsEnv(t, 1)
	for i := range 2000 {
		testutil.WriteFile(t, e.fs.Path("home", "many", fmt.Sprintf("d%d", i%20), fmt.Sprintf("f%d", i)), "x")
	}
	e.startDaemon(t)
	conn := e.busConn(t)
	pid := e.daemonPid(t, conn)
	if code, out, errOut := e.cli(t, "backup", "home", "--wait"); code != exitOK {
		t.Fatalf("backup: exit %d\n%s%s", code, out, errOut)
	}
	testutil.WriteFile(t, e.slow, "")

	caller, err := dbus.Connect(e.bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	const diffs = 10
	replies := make(chan *dbus.Call, diffs)
	stop := e.watchRestic(pid)
	for range diffs {
		caller.Object(contract.BusName, contract.ManagerPath).Go(contract.ManagerInterface+".Diff", 0, replies, "home", "latest", "live")
	}
	// restic ls of the archive is slow here: wait until it runs.
	waitFor(t, time.Minute, func() int {
		for _, p := range e.resticChildren(pid) {
			if argv, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p)); strings.Contains(string(argv), "\x00ls\x00") {
				return 1
			}
		}
		return 0
	})
	time.Sleep(2 * time.Second)
	most := stop()
	t.Logf("%d Diff calls in flight: at most %d restic processes at once", diffs, most)
	if most > 2 {
		t.Errorf("one caller's %d Diff calls had %d restic processes running at once; want at most 2", diffs, most)
	}

	// Two run and four wait; the rest are refused at once, saying why.
	refused := 0
	for len(replies) > 0 {
		c := <-replies
		var derr dbus.Error
		if errors.As(c.Err, &derr) && derr.Name == contract.ErrorLimitsExceeded && strings.Contains(derr.Error(), "uid 0 already has 2") {
			refused++
		} else {
			t.Errorf("a Diff call answered while the others ran: %v", c.Err)
		}
	}
	t.Logf("%d of the calls were refused at once (LimitsExceeded): more than the caller may have waiting", refused)
	if refused < diffs-2-4 {
		t.Errorf("%d calls refused at once, want %d", refused, diffs-2-4)
	}
	running := len(e.resticChildren(pid))
	if err := caller.Close(); err != nil {
		t.Fatal(err)
	}
	left := time.Now()
	t.Logf("the caller leaves the bus with %d restic processes running for it", running)
	var gone time.Duration
	for time.Since(left) < time.Minute {
		if len(e.resticChildren(pid)) == 0 {
			gone = time.Since(left)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if gone == 0 {
		t.Fatalf("a minute after the caller left the bus, the daemon still runs restic: %v", e.resticChildren(pid))
	}
	t.Logf("the caller's restic processes ended %v after it left the bus", gone.Round(time.Millisecond))
	if gone > 30*time.Second {
		t.Errorf("the caller's restic processes ended only %v after it left", gone)
	}
	time.Sleep(3 * time.Second)
	if n := len(e.resticChildren(pid)); n != 0 {
		t.Errorf("%d restic processes started after the caller had left", n)
	}
	// The daemon goes on serving.
	if err := os.Remove(e.slow); err != nil {
		t.Fatal(err)
	}
	var archives [][]any
	e.call(t, &archives, "ListArchives", "s", "home")
	if len(archives) != 1 {
		t.Errorf("ListArchives after the caller left: %v", archives)
	}
}

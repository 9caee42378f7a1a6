package main

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/internal/testutil"
)

// docs/security.md, attack 10: a flood of refused calls floods the log.

func init() {
	testutil.RegisterHostile("auth-refusal-flood", hostileRefusalFlood)
}

// hostileRefusalFlood makes calls the daemon refuses as fast as it
// answers them, 64 in flight. Arguments: bus address, calls, method, its
// one string argument.
func hostileRefusalFlood(args []string) error {
	if len(args) != 4 {
		return errors.New("want: address calls method arg")
	}
	calls, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	conn, err := dbus.Connect(args[0])
	if err != nil {
		return err
	}
	defer conn.Close()
	manager := conn.Object(contract.BusName, contract.ManagerPath)
	var mu sync.Mutex
	answers := map[string]int{}
	start := time.Now()
	window := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for range calls {
		window <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-window }()
			name := "ok"
			if err := manager.Call(contract.ManagerInterface+"."+args[2], 0, args[3]).Err; err != nil {
				name = err.Error()
				var derr dbus.Error
				if errors.As(err, &derr) {
					name = derr.Name
				}
			}
			mu.Lock()
			answers[name]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	fmt.Printf("%d calls of %s in %.2f s: %v\n", calls, args[2], time.Since(start).Seconds(), answers)
	return nil
}

// Attack 10 of docs/security.md: 3000 refused calls wrote 3000 warnings, and
// journald's rate limit then drops what matters. The refusals of one
// caller are logged a few at a time, and the rest counted: the count comes
// when the daemon stops, if its minute has not passed.
func TestHostileRefusalFloodLogged(t *testing.T) {
	testutil.RequireNobody(t)
	e := newAPIEnv(t, 1)
	cmd, log := e.startDaemonLogged(t)
	before := len(strings.Split(log.String(), "\n"))

	const calls = 3000
	out, err := testutil.RunHostile(t, 3*time.Minute, "auth-refusal-flood", e.bus.Address, strconv.Itoa(calls), "StartPrune", "home")
	t.Logf("the user: %s", strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, fmt.Sprintf("map[%s:%d]", contract.ErrorAccessDenied, calls)) {
		t.Fatalf("not every call was refused: %s", out)
	}
	refusals := func() (logged, counted int) {
		for _, l := range strings.Split(log.String(), "\n")[before-1:] {
			if m := moreRefusals.FindStringSubmatch(l); m != nil {
				n, _ := strconv.Atoi(m[1])
				counted += n
			} else if strings.Contains(l, "uid=65534") {
				logged++
			}
		}
		return logged, counted
	}
	logged, _ := refusals()
	t.Logf("%d refused calls: %d daemon log lines about uid 65534", calls, logged)
	if logged > 10 {
		t.Errorf("%d refusals of one caller logged; want a few, the rest counted", logged)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	logged, counted := refusals()
	t.Logf("after its stop: %d refusals logged, %d counted: %q", logged, counted, moreRefusals.FindAllString(log.String(), -1))
	if logged+counted != calls {
		t.Errorf("%d refusals logged and %d counted; want %d in all", logged, counted, calls)
	}
}

var moreRefusals = regexp.MustCompile(`(\d+) more refusals of uid 65534`)

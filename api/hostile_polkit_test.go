package api

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/internal/testutil"
)

func init() {
	testutil.RegisterHostile("auth-polkit-flood", hostilePolkitFlood)
}

// AuthFlood is AuthTest for floods: it answers as AuthTest does but tells
// the test nothing.
func (s authTestService) AuthFlood(sender dbus.Sender, msg dbus.Message, action, plan string) *dbus.Error {
	var p *config.Plan
	if plan != "" {
		p = s.b.plans[plan]
	}
	return s.b.authz.Authorize(sender, msg.Flags&dbus.FlagAllowInteractiveAuthorization != 0, action, p)
}

// hostilePolkitFlood sends calls AuthFlood calls, all at once, and prints
// what was answered within wait; then it leaves the bus, whatever is still
// unanswered. Arguments: bus address, calls, action, plan, wait,
// "interactive" or not (allow interactive authorization).
func hostilePolkitFlood(args []string) error {
	if len(args) != 6 {
		return errors.New("want: address calls action plan wait interactive|plain")
	}
	var flags dbus.Flags
	if args[5] == "interactive" {
		flags = dbus.FlagAllowInteractiveAuthorization
	}
	calls, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	wait, err := time.ParseDuration(args[4])
	if err != nil {
		return err
	}
	conn, err := dbus.Connect(args[0])
	if err != nil {
		return err
	}
	defer conn.Close()
	done := make(chan *dbus.Call, calls)
	for range calls {
		// godbus's Object.Go drops the interactive flag: a message of our own.
		conn.Send(&dbus.Message{Type: dbus.TypeMethodCall, Flags: flags, Headers: map[dbus.HeaderField]dbus.Variant{
			dbus.FieldDestination: dbus.MakeVariant(contract.BusName),
			dbus.FieldPath:        dbus.MakeVariant(contract.ManagerPath),
			dbus.FieldInterface:   dbus.MakeVariant(managerInterface),
			dbus.FieldMember:      dbus.MakeVariant("AuthFlood"),
			dbus.FieldSignature:   dbus.MakeVariant(dbus.SignatureOf(args[2], args[3])),
		}, Body: []any{args[2], args[3]}}, done)
	}
	answers := map[string]int{}
	messages := map[string]bool{}
	deadline := time.After(wait)
	for n := 0; n < calls; n++ {
		select {
		case c := <-done:
			name := "ok"
			var derr dbus.Error
			if errors.As(c.Err, &derr) {
				name = derr.Name
				if len(derr.Body) > 0 {
					messages[fmt.Sprint(derr.Body[0])] = true
				}
			} else if c.Err != nil {
				name = c.Err.Error()
			}
			answers[name]++
		case <-deadline:
			n = calls
		}
	}
	list := slices.Sorted(maps.Keys(messages))
	fmt.Printf("%d calls, answered within %s: %v\n", calls, wait, answers)
	for _, m := range list {
		fmt.Printf("message: %s\n", m)
	}
	return nil
}

// Attack 11 of docs/security.md: 200 interactive calls against a slow polkit filled
// the daemon's 128 pending replies on the bus (dbus-daemon's
// max_replies_per_connection), and every later check failed, for good: the
// checks were never canceled. Each caller has a few checks in flight at
// most, and a check is canceled (CancelCheckAuthorization) when its caller
// leaves the bus or it times out.
func TestHostilePolkitFlood(t *testing.T) {
	testutil.RequireNobody(t)
	requireClients(t)
	// Only a caller leaving ends an interactive check within the test; a
	// plain one times out at once.
	b := newAuthBusTuned(t, func(a *PolkitAuthorizer) {
		a.interactiveTimeout = time.Hour
		a.timeout = 3 * time.Second
	}, &config.Plan{Name: "home"})
	fake := startFakePolkit(t, b.bus.Address)
	fake.answer(polkitResult{IsAuthorized: true})
	fake.holdChecks(contract.ActionRestore) // a slow authority, for restores

	legitimate := func(when string) {
		t.Helper()
		if got, out := b.asNobody(t, false, contract.ActionManage, "home"); got.err != nil {
			t.Errorf("%s: a check polkit answers yes at once was refused: %s (%s)", when, errMessage(got.err), out)
		}
	}

	// The caller leaves with its checks unanswered.
	out, err := testutil.RunHostile(t, time.Minute, "auth-polkit-flood", b.bus.Address, "200", contract.ActionRestore, "home", "1s", "interactive")
	t.Logf("the flood, leaving after a second:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	// The cancellations go out once the checks are over: wait for them
	// (the refusals were answered before).
	released := func() {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if n, _, _ := fake.holding(); n == 0 {
				return
			}
		}
	}
	released()
	now, most, canceled := fake.holding()
	t.Logf("polkit held %d checks at most, %d now; %d canceled", most, now, len(canceled))
	if most > maxChecksPerCaller || len(canceled) < most {
		t.Errorf("polkit held %d checks of one caller at once (at most %d), and %d were canceled", most, maxChecksPerCaller, len(canceled))
	}
	if !strings.Contains(out, fmt.Sprintf("at most %d at a time", maxChecksPerCaller)) {
		t.Errorf("the calls over the limit were not told so:\n%s", out)
	}
	if n := strings.Count(b.log.String(), "uid=65534"); n > RefusalsLogged {
		t.Errorf("%d refusals of the flood logged; want at most %d, the rest counted", n, RefusalsLogged)
	}
	legitimate("after the flood left")

	// The caller waits: each check times out and is canceled.
	fake.holdChecks(contract.ActionRestore)
	out, err = testutil.RunHostile(t, time.Minute, "auth-polkit-flood", b.bus.Address, strconv.Itoa(maxChecksPerCaller), contract.ActionRestore, "home", "30s", "plain")
	t.Logf("checks that time out:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	released()
	now, _, canceled = fake.holding()
	if now != 0 || len(canceled) != maxChecksPerCaller || !strings.Contains(out, "polkit did not answer within 3s") {
		t.Errorf("after %d checks timed out polkit holds %d, and was asked to cancel %d", maxChecksPerCaller, now, len(canceled))
	}
	legitimate("after the checks timed out")
}

package api

import (
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/internal/testutil"
)

const (
	busPolicyFile     = "../packaging/org.subvault.Subvault1.conf"
	polkitActionsFile = "../packaging/org.subvault.policy"
	managerInterface  = contract.BusName + ".Manager"
	polkitd           = "/usr/lib/polkit-1/polkitd"
	polkitdBusPolicy  = "/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf"
)

// testPolkitPolicy lets the test process (root) own polkit's name on the
// private system bus, for the fake authority; polkitd's own file allows only
// the polkitd user.
const testPolkitPolicy = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="org.freedesktop.PolicyKit1"/>
  </policy>
  <policy context="default">
    <allow send_destination="org.freedesktop.PolicyKit1"/>
  </policy>
</busconfig>
`

// authBus is a private bus with the system bus's policy plus ours, and a
// root connection that owns org.subvault.Subvault1 and answers AuthTest by
// asking a PolkitAuthorizer, as the daemon's methods do.
type authBus struct {
	bus     *testutil.Bus
	conn    *dbus.Conn // root, owns contract.BusName
	authz   *PolkitAuthorizer
	log     *testutil.SyncBuffer
	plans   map[string]*config.Plan
	answers chan authAnswer
}

// authAnswer is what the test service saw and answered for one AuthTest.
type authAnswer struct {
	sender      dbus.Sender
	interactive bool
	err         *dbus.Error
}

func newAuthBus(t *testing.T, plans ...*config.Plan) *authBus {
	t.Helper()
	return newAuthBusTuned(t, nil, plans...)
}

// newAuthBusTuned is newAuthBus with tune applied to the authorizer before
// any call can reach it.
func newAuthBusTuned(t *testing.T, tune func(*PolkitAuthorizer), plans ...*config.Plan) *authBus {
	t.Helper()
	testutil.RequireRoot(t)
	polkitPolicy := filepath.Join(t.TempDir(), "test-polkit.conf")
	testutil.WriteFile(t, polkitPolicy, testPolkitPolicy)
	policies := []string{busPolicyFile, polkitPolicy}
	if _, err := os.Stat(polkitdBusPolicy); err == nil {
		policies = append(policies, polkitdBusPolicy) // for the real polkitd
	}
	b := &authBus{
		bus:     testutil.NewSystemBus(t, policies...),
		log:     &testutil.SyncBuffer{},
		plans:   map[string]*config.Plan{},
		answers: make(chan authAnswer, 64),
	}
	for _, p := range plans {
		b.plans[p.Name] = p
	}
	b.conn = dialBus(t, b.bus.Address)
	b.authz = NewAuthorizer(b.conn, slog.New(slog.NewTextHandler(b.log, nil)))
	if tune != nil {
		tune(b.authz)
	}
	if err := b.conn.Export(authTestService{b}, contract.ManagerPath, managerInterface); err != nil {
		t.Fatal(err)
	}
	reply, err := b.conn.RequestName(contract.BusName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("root could not own %s on the private system bus (reply %v): %v", contract.BusName, reply, err)
	}
	return b
}

func dialBus(t *testing.T, address string) *dbus.Conn {
	t.Helper()
	conn, err := dbus.Connect(address)
	if err != nil {
		t.Fatalf("cannot connect to the private system bus: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

type authTestService struct{ b *authBus }

// AuthTest authorizes its caller for action on plan ("" for none), with the
// real sender and the call's interactive flag, as the daemon's methods do.
func (s authTestService) AuthTest(sender dbus.Sender, msg dbus.Message, action, plan string) *dbus.Error {
	var p *config.Plan
	if plan != "" {
		p = s.b.plans[plan]
	}
	interactive := msg.Flags&dbus.FlagAllowInteractiveAuthorization != 0
	err := s.b.authz.Authorize(sender, interactive, action, p)
	s.b.answers <- authAnswer{sender: sender, interactive: interactive, err: err}
	return err
}

func (s authTestService) WhoAmI(sender dbus.Sender) (uint32, *dbus.Error) {
	return s.b.authz.CallerUID(sender)
}

// asNobody calls AuthTest as uid 65534 through an external client and
// returns what the test service answered and what the client printed.
// Without interactive authorization that is dbus-send, which prints the
// error's name and message (busctl shows any AccessDenied as "Access
// denied", hiding the message); with it, busctl, which sets the flag.
func (b *authBus) asNobody(t *testing.T, interactive bool, action, plan string) (authAnswer, string) {
	t.Helper()
	var cmd *exec.Cmd
	if interactive {
		cmd = testutil.AsNobody("busctl", "--address="+b.bus.Address, "--allow-interactive-authorization=yes",
			"--timeout=30", "call", contract.BusName, string(contract.ManagerPath), managerInterface, "AuthTest", "ss", action, plan)
	} else {
		cmd = testutil.AsNobody("dbus-send", "--bus="+b.bus.Address, "--print-reply", "--reply-timeout=30000",
			"--dest="+contract.BusName, string(contract.ManagerPath), managerInterface+".AuthTest", "string:"+action, "string:"+plan)
	}
	out, err := cmd.CombinedOutput()
	var answer authAnswer
	select {
	case answer = <-b.answers:
	case <-time.After(5 * time.Second):
		t.Fatalf("the test service never saw the call; %s said: %v %s", cmd.Args[4], err, out)
	}
	if (err == nil) != (answer.err == nil) {
		t.Fatalf("%s (%v, %s) disagrees with the service's answer %v", cmd.Args[4], err, out, answer.err)
	}
	if !interactive && answer.err != nil {
		if want := "Error " + answer.err.Name + ": " + errMessage(answer.err); !strings.Contains(string(out), want) {
			t.Errorf("dbus-send printed %q; want %q", out, want)
		}
	}
	if answer.interactive != interactive {
		t.Errorf("the service saw interactive=%v; the client asked for %v", answer.interactive, interactive)
	}
	return answer, string(out)
}

// asRoot calls AuthTest over a new root connection.
func (b *authBus) asRoot(t *testing.T, action, plan string) authAnswer {
	t.Helper()
	conn := dialBus(t, b.bus.Address)
	call := conn.Object(contract.BusName, contract.ManagerPath).Call(managerInterface+".AuthTest", 0, action, plan)
	answer := <-b.answers
	if (call.Err == nil) != (answer.err == nil) {
		t.Fatalf("the root client's answer %v disagrees with the service's %v", call.Err, answer.err)
	}
	return answer
}

func requireClients(t *testing.T) {
	t.Helper()
	testutil.RequireCommand(t, "busctl", "systemd")
	testutil.RequireCommand(t, "dbus-send", "dbus-bin")
}

func errName(err *dbus.Error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Name
}

func errMessage(err *dbus.Error) string {
	if err == nil || len(err.Body) == 0 {
		return ""
	}
	s, _ := err.Body[0].(string)
	return s
}

func requireDenied(t *testing.T, got authAnswer, clientOut string, wantIn ...string) {
	t.Helper()
	if errName(got.err) != contract.ErrorAccessDenied {
		t.Fatalf("got %s (%s), want AccessDenied", errName(got.err), errMessage(got.err))
	}
	msg := errMessage(got.err)
	for _, w := range wantIn {
		if !strings.Contains(msg, w) {
			t.Errorf("the message %q does not say %q", msg, w)
		}
	}
	if !got.interactive && !strings.Contains(clientOut, "not authorized to") {
		t.Errorf("the client was not shown the message; it printed %q", clientOut)
	}
}

var allActions = []string{contract.ActionBackup, contract.ActionManage, contract.ActionRestore}

func TestAuthorizeRootPassesEverything(t *testing.T) {
	b := newAuthBus(t, &config.Plan{Name: "home"})
	fake := startFakePolkit(t, b.bus.Address)
	fake.answer(polkitResult{}) // polkit says no to everyone: root must not need it
	for _, action := range allActions {
		for _, plan := range []string{"home", ""} {
			if got := b.asRoot(t, action, plan); got.err != nil {
				t.Errorf("root was refused %s on %q: %s: %s", action, plan, got.err.Name, errMessage(got.err))
			}
		}
	}
	if n := len(fake.seen()); n != 0 {
		t.Errorf("polkit was asked %d times about root; want never", n)
	}
	// An action api made up by mistake is refused, even to root.
	if got := b.asRoot(t, "org.subvault.everything", "home"); errName(got.err) != contract.ErrorAccessDenied {
		t.Errorf("root, unknown action: %s; want AccessDenied", errName(got.err))
	}
	conn := dialBus(t, b.bus.Address)
	var uid uint32
	if err := conn.Object(contract.BusName, contract.ManagerPath).Call(managerInterface+".WhoAmI", 0).Store(&uid); err != nil || uid != 0 {
		t.Errorf("CallerUID of a root client = %d, %v; want 0", uid, err)
	}
}

// Without polkit on the bus only root and the plan's allowed users pass.
func TestAuthorizeFailsClosedWithoutPolkit(t *testing.T) {
	testutil.RequireNobody(t)
	requireClients(t)
	b := newAuthBus(t, &config.Plan{Name: "home"}, &config.Plan{Name: "shared", AllowUsers: []string{"nobody"}})
	for _, action := range allActions {
		for _, interactive := range []bool{false, true} {
			got, out := b.asNobody(t, interactive, action, "home")
			requireDenied(t, got, out, "you are uid 65534", "plan home", "polkit action "+action, "polkit is not running")
		}
	}
	got, out := b.asNobody(t, false, contract.ActionBackup, "home")
	requireDenied(t, got, out, "not authorized to back up plan home: you are uid 65534; add your user to plans.home.allow_users")
	got, out = b.asNobody(t, false, contract.ActionManage, "")
	requireDenied(t, got, out, "not authorized to manage subvault: you are uid 65534; run as root or authenticate as an administrator (polkit action org.subvault.manage)")

	if got, _ := b.asNobody(t, false, contract.ActionBackup, "shared"); got.err != nil {
		t.Errorf("nobody, in shared's allow_users, was refused a backup without polkit: %s", errMessage(got.err))
	}
	for _, action := range []string{contract.ActionManage, contract.ActionRestore} {
		got, out := b.asNobody(t, false, action, "shared")
		requireDenied(t, got, out, "polkit is not running")
	}
	if !strings.Contains(b.log.String(), "fail closed") {
		t.Errorf("the refusals for want of polkit were not logged; the log holds:\n%s", b.log.String())
	}
	if got := b.asRoot(t, contract.ActionRestore, "home"); got.err != nil {
		t.Errorf("root was refused without polkit: %s", errMessage(got.err))
	}
}

func TestAuthorizePlanAllowLists(t *testing.T) {
	testutil.RequireNobody(t)
	requireClients(t)
	b := newAuthBus(t,
		&config.Plan{Name: "by-name", AllowUsers: []string{"root", "nobody"}},
		&config.Plan{Name: "by-uid", AllowUsers: []string{"65534"}},
		&config.Plan{Name: "by-group-name", AllowGroups: []string{"root", "nogroup"}},
		&config.Plan{Name: "by-gid", AllowGroups: []string{"65534"}},
		&config.Plan{Name: "others", AllowUsers: []string{"root", "1000", "no-such-user-here"}, AllowGroups: []string{"0", "no-such-group-here"}},
	)
	fake := startFakePolkit(t, b.bus.Address)
	fake.answer(polkitResult{}) // not authorized
	for _, plan := range []string{"by-name", "by-uid", "by-group-name", "by-gid"} {
		t.Run(plan, func(t *testing.T) {
			if got, out := b.asNobody(t, false, contract.ActionBackup, plan); got.err != nil {
				t.Errorf("uid 65534 was refused a backup of %s: %s (busctl: %s)", plan, errMessage(got.err), out)
			}
			// The allow lists are about backups only.
			for _, action := range []string{contract.ActionManage, contract.ActionRestore} {
				got, out := b.asNobody(t, false, action, plan)
				requireDenied(t, got, out, "polkit action "+action)
			}
		})
	}
	if n := len(fake.seen()); n != 8 {
		t.Errorf("polkit was asked %d times; want 8 (manage and restore only: the allow lists answer backups without it)", n)
	}
	got, out := b.asNobody(t, false, contract.ActionBackup, "others")
	requireDenied(t, got, out, "plans.others.allow_users")
}

// A fake polkit authority tests the protocol handling: the subject, action
// id and flags sent, and what each answer leads to. The real polkitd is
// exercised by the end-to-end test under systemd-nspawn.
func TestAuthorizePolkit(t *testing.T) {
	testutil.RequireNobody(t)
	requireClients(t)
	b := newAuthBusTuned(t, func(a *PolkitAuthorizer) {
		a.timeout = 500 * time.Millisecond
		a.interactiveTimeout = time.Second
		a.refusals.burst = 100 // the log is looked at
	}, &config.Plan{Name: "home"})
	fake := startFakePolkit(t, b.bus.Address)
	seenIDs := map[string]bool{}

	for _, action := range allActions {
		for _, interactive := range []bool{false, true} {
			t.Run(fmt.Sprintf("authorized/%s/interactive=%v", action, interactive), func(t *testing.T) {
				fake.answer(polkitResult{IsAuthorized: true})
				got, out := b.asNobody(t, interactive, action, "home")
				if got.err != nil {
					t.Fatalf("refused although polkit said yes: %s (busctl: %s)", errMessage(got.err), out)
				}
				calls := fake.seen()
				if len(calls) != 1 {
					t.Fatalf("polkit was asked %d times; want once", len(calls))
				}
				c := calls[0]
				name, _ := c.subject.Details["name"].Value().(string)
				if c.subject.Kind != "system-bus-name" || name != string(got.sender) || len(c.subject.Details) != 1 {
					t.Errorf("subject %+v; want system-bus-name with name %s only", c.subject, got.sender)
				}
				if c.action != action {
					t.Errorf("action %q; want %q", c.action, action)
				}
				wantFlags := uint32(0)
				if interactive {
					wantFlags = 1
				}
				if c.flags != wantFlags || got.interactive != interactive {
					t.Errorf("flags %d (service saw interactive=%v); want %d", c.flags, got.interactive, wantFlags)
				}
				if len(c.details) != 0 || !strings.HasPrefix(c.cancellationID, "subvault-") || seenIDs[c.cancellationID] {
					t.Errorf("details %v, cancellation id %q; want none, and a new id (ids so far: %v)", c.details, c.cancellationID, seenIDs)
				}
				seenIDs[c.cancellationID] = true
			})
		}
	}

	t.Run("challenge, not interactive", func(t *testing.T) {
		fake.answer(polkitResult{IsChallenge: true})
		got, _ := b.asNobody(t, false, contract.ActionBackup, "home")
		if errName(got.err) != contract.ErrorInteractiveAuthorizationRequired {
			t.Fatalf("got %s (%s); want InteractiveAuthorizationRequired", errName(got.err), errMessage(got.err))
		}
		if msg := errMessage(got.err); !strings.Contains(msg, "back up plan home") || !strings.Contains(msg, "--allow-interactive-authorization=yes") {
			t.Errorf("the message %q does not say what needs authentication and how to allow it", msg)
		}
	})
	t.Run("challenge, interactive", func(t *testing.T) {
		fake.answer(polkitResult{IsChallenge: true})
		got, out := b.asNobody(t, true, contract.ActionRestore, "home")
		requireDenied(t, got, out, "restore from plan home", "no authentication agent")
	})
	t.Run("not authorized", func(t *testing.T) {
		fake.answer(polkitResult{Details: map[string]string{}})
		got, out := b.asNobody(t, false, contract.ActionManage, "home")
		requireDenied(t, got, out, "not authorized to manage plan home: you are uid 65534; run as root or authenticate as an administrator (polkit action org.subvault.manage)")
	})
	t.Run("dismissed", func(t *testing.T) {
		fake.answer(polkitResult{Details: map[string]string{"polkit.dismissed": "true"}})
		got, out := b.asNobody(t, true, contract.ActionBackup, "home")
		requireDenied(t, got, out, "dismissed")
	})
	t.Run("timeout", func(t *testing.T) {
		for _, interactive := range []bool{false, true} {
			fake.answerAfter(polkitResult{IsAuthorized: true}, 3*time.Second)
			start := time.Now()
			got, out := b.asNobody(t, interactive, contract.ActionBackup, "home")
			requireDenied(t, got, out, "polkit did not answer within", "so only root and the users and groups in plans.home.allow_users/allow_groups can be allowed")
			if d := time.Since(start); d > 2500*time.Millisecond {
				t.Errorf("the refusal took %s; the bound is %s", d, b.authz.interactiveTimeout)
			}
		}
	})
	t.Run("error", func(t *testing.T) {
		fake.fail(dbus.NewError("org.freedesktop.PolicyKit1.Error.Failed", []any{"Action org.subvault.backup is not registered"}))
		got, out := b.asNobody(t, false, contract.ActionBackup, "home")
		requireDenied(t, got, out, "polkit failed", "not registered")
		if !strings.Contains(b.log.String(), "not registered") {
			t.Errorf("the polkit failure was not logged:\n%s", b.log.String())
		}
	})
}

// testPolkitRules make polkitd answer yes and no for uid 65534; backups
// keep the actions file's default, auth_admin (a challenge).
const testPolkitRules = `polkit.addRule(function(action, subject) {
    if (subject.user == "nobody" && action.id == "org.subvault.manage") {
        return polkit.Result.YES;
    }
    if (subject.user == "nobody" && action.id == "org.subvault.restore") {
        return polkit.Result.NO;
    }
});
`

// The real polkitd on the private bus, with our actions file and test
// rules bind-mounted over its directories in a mount namespace of its own
// (the machine's stay untouched): the actions file as polkit parses it, and
// the authorizer against polkit's real answers. Sessions are not modelled
// here (no logind); the end-to-end test under systemd-nspawn has them.
func TestAuthorizeRealPolkitd(t *testing.T) {
	testutil.RequireNobody(t)
	requireClients(t)
	testutil.RequireCommand(t, "unshare", "util-linux")
	testutil.RequireCommand(t, "pkaction", "polkitd")
	if _, err := os.Stat(polkitd); err != nil {
		testutil.SkipOrFail(t, polkitd+" (apt-get install polkitd)")
	}
	b := newAuthBus(t, &config.Plan{Name: "home"})
	startPolkitd(t, b.bus.Address, b.conn)

	pkaction := exec.Command("pkaction", "--verbose")
	pkaction.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DBUS_SYSTEM_BUS_ADDRESS=" + b.bus.Address}
	out, err := pkaction.CombinedOutput()
	if err != nil {
		t.Fatalf("pkaction: %v: %s", err, out)
	}
	for _, want := range []string{
		"org.subvault.backup:", "org.subvault.manage:", "org.subvault.restore:",
		"implicit active:   auth_admin_keep", "implicit any:      auth_admin",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("pkaction does not show %q from our actions file:\n%s", want, out)
		}
	}

	got, _ := b.asNobody(t, false, contract.ActionBackup, "home")
	if errName(got.err) != contract.ErrorInteractiveAuthorizationRequired {
		t.Errorf("backup (auth_admin), not interactive: %s (%s); want InteractiveAuthorizationRequired", errName(got.err), errMessage(got.err))
	}
	got, clientOut := b.asNobody(t, true, contract.ActionBackup, "home")
	requireDenied(t, got, clientOut, "plan home")
	t.Logf("backup, interactive, no authentication agent: %s", errMessage(got.err))
	if got, out := b.asNobody(t, false, contract.ActionManage, "home"); got.err != nil {
		t.Errorf("manage, which a rule allows uid 65534: %s (%s)", errMessage(got.err), out)
	}
	got, clientOut = b.asNobody(t, false, contract.ActionRestore, "home")
	requireDenied(t, got, clientOut, "not authorized to restore from plan home: you are uid 65534")
	if got := b.asRoot(t, contract.ActionRestore, "home"); got.err != nil {
		t.Errorf("root: %s", errMessage(got.err))
	}
}

// startPolkitd runs polkitd on the bus at address until the test ends. It
// starts as root and switches to its own user, as under systemd.
func startPolkitd(t *testing.T, address string, conn *dbus.Conn) {
	t.Helper()
	dir, err := os.MkdirTemp("", "subvault-polkit-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	actions, rules := filepath.Join(dir, "actions"), filepath.Join(dir, "rules.d")
	for _, d := range []string{dir, actions, rules} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	policy, err := os.ReadFile(polkitActionsFile)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, filepath.Join(actions, "org.subvault.policy"), string(policy))
	testutil.WriteFile(t, filepath.Join(rules, "50-subvault-test.rules"), testPolkitRules)

	cmd := exec.Command("unshare", "--mount", "--propagation=private", "sh", "-ec",
		`mount --bind "$1" /usr/share/polkit-1/actions; mount --bind "$2" /etc/polkit-1/rules.d; exec "$3" --no-debug`,
		"sh", actions, rules, polkitd)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DBUS_SYSTEM_BUS_ADDRESS=" + address}
	log, exited := testutil.StartProcess(t, "polkitd", cmd)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var has bool
		if err := conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, polkitBusName).Store(&has); err == nil && has {
			break
		}
		select {
		case <-exited:
			testutil.SkipOrFail(t, "polkitd running on a private bus; it exited: "+log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("polkitd did not take its name within 10 s:\n%s", log.String())
		}
	}
}

// The bus policy, on a bus with the system bus's own policy: only root owns
// the name, and an unprivileged caller reaches the contract's interfaces
// and nothing else.
func TestBusPolicy(t *testing.T) {
	testutil.RequireNobody(t)
	requireClients(t)
	bus := testutil.NewSystemBus(t, busPolicyFile)

	t.Run("nobody cannot own the name", func(t *testing.T) {
		out, err := testutil.AsNobody("dbus-send", "--bus="+bus.Address, "--print-reply", "--dest=org.freedesktop.DBus",
			"/org/freedesktop/DBus", "org.freedesktop.DBus.RequestName", "string:"+contract.BusName, "uint32:4").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "not allowed to own") {
			t.Fatalf("uid 65534 asked for %s: %v, %s; want refused by the bus policy", contract.BusName, err, out)
		}
	})
	// Nor may root own names the policy does not mention: the base policy
	// is the system bus's.
	root := dialBus(t, bus.Address)
	if _, err := root.RequestName("org.subvault.Other", dbus.NameFlagDoNotQueue); err == nil {
		t.Fatal("root owned org.subvault.Other: the private bus does not have the system bus's policy")
	}
	reply, err := root.RequestName(contract.BusName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("root could not own %s: %v %v", contract.BusName, reply, err)
	}

	svc := &policyService{}
	for _, iface := range []string{managerInterface, contract.BusName + ".Job", contract.BusName + ".Plan", contract.BusName + ".Secret"} {
		if err := root.Export(pingService{svc}, contract.ManagerPath, iface); err != nil {
			t.Fatal(err)
		}
	}
	if err := root.Export(introspectService{svc}, contract.ManagerPath, "org.freedesktop.DBus.Introspectable"); err != nil {
		t.Fatal(err)
	}
	if err := root.Export(propertiesService{svc}, contract.ManagerPath, "org.freedesktop.DBus.Properties"); err != nil {
		t.Fatal(err)
	}
	if err := root.Export(objectManagerService{svc}, contract.ManagerPath, "org.freedesktop.DBus.ObjectManager"); err != nil {
		t.Fatal(err)
	}

	dbusSend := func(member string, args ...string) (string, error) {
		argv := append([]string{"--bus=" + bus.Address, "--print-reply", "--dest=" + contract.BusName, string(contract.ManagerPath), member}, args...)
		out, err := testutil.AsNobody("dbus-send", argv...).CombinedOutput()
		return string(out), err
	}
	allowed := []struct{ member, arg string }{
		{managerInterface + ".Ping", ""},
		{contract.BusName + ".Job.Ping", ""},
		{contract.BusName + ".Plan.Ping", ""},
		{"org.freedesktop.DBus.Introspectable.Introspect", ""},
		{"org.freedesktop.DBus.Properties.GetAll", "string:" + managerInterface},
		{"org.freedesktop.DBus.ObjectManager.GetManagedObjects", ""},
		{"org.freedesktop.DBus.Peer.Ping", ""},
	}
	for _, c := range allowed {
		var args []string
		if c.arg != "" {
			args = []string{c.arg}
		}
		if out, err := dbusSend(c.member, args...); err != nil {
			t.Errorf("uid 65534 could not call %s: %v: %s", c.member, err, out)
		}
	}
	if got, want := svc.count(), len(allowed)-1; got != want { // Peer is godbus's own
		t.Errorf("the service answered %d calls; want %d", got, want)
	}

	out, err := dbusSend(contract.BusName + ".Secret.Ping")
	if err == nil || !strings.Contains(out, "org.freedesktop.DBus.Error.AccessDenied") {
		t.Errorf("uid 65534 called an interface the policy does not open: %v: %s; want AccessDenied from the bus", err, out)
	}
	// Root is no exception: the daemon serves only the contract's interfaces.
	if call := dialBus(t, bus.Address).Object(contract.BusName, contract.ManagerPath).Call(contract.BusName+".Secret.Ping", 0); call.Err == nil {
		t.Error("root called an interface the policy does not open")
	}
	if got, want := svc.count(), len(allowed)-1; got != want {
		t.Errorf("the service answered %d calls; want %d (a refused call reached it)", got, want)
	}
}

type policyService struct {
	mu    sync.Mutex
	calls int
}

func (s *policyService) called() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
}

func (s *policyService) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

type pingService struct{ s *policyService }

func (p pingService) Ping() *dbus.Error { p.s.called(); return nil }

type introspectService struct{ s *policyService }

func (p introspectService) Introspect() (string, *dbus.Error) { p.s.called(); return "<node/>", nil }

type propertiesService struct{ s *policyService }

func (p propertiesService) GetAll(string) (map[string]dbus.Variant, *dbus.Error) {
	p.s.called()
	return map[string]dbus.Variant{"Version": dbus.MakeVariant("test")}, nil
}

type objectManagerService struct{ s *policyService }

func (p objectManagerService) GetManagedObjects() (map[dbus.ObjectPath]map[string]map[string]dbus.Variant, *dbus.Error) {
	p.s.called()
	return map[dbus.ObjectPath]map[string]map[string]dbus.Variant{}, nil
}

// fakePolkit owns org.freedesktop.PolicyKit1 on the test bus and answers
// CheckAuthorization as scripted, recording what it was asked.
type fakePolkit struct {
	mu     sync.Mutex
	result polkitResult
	delay  time.Duration
	err    *dbus.Error
	calls  []polkitCall

	// A slow authority: checks of action hold wait, unanswered, until
	// they are canceled or the test ends.
	hold     string
	held     map[string]chan struct{} // by cancellation id
	mostHeld int
	canceled []string // the cancellation ids CancelCheckAuthorization was given
	stop     chan struct{}
}

type polkitCall struct {
	subject        polkitSubject
	action         string
	details        map[string]string
	flags          uint32
	cancellationID string
}

func startFakePolkit(t *testing.T, address string) *fakePolkit {
	t.Helper()
	conn := dialBus(t, address)
	f := &fakePolkit{held: map[string]chan struct{}{}, stop: make(chan struct{})}
	t.Cleanup(func() { close(f.stop) })
	if err := conn.Export(f, polkitPath, polkitInterface); err != nil {
		t.Fatal(err)
	}
	reply, err := conn.RequestName(polkitBusName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("the fake polkit could not own %s: %v %v", polkitBusName, reply, err)
	}
	return f
}

// answer scripts the next answers and forgets the calls seen so far.
func (f *fakePolkit) answer(r polkitResult) { f.answerAfter(r, 0) }

func (f *fakePolkit) answerAfter(r polkitResult, delay time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.result, f.delay, f.err, f.calls = r, delay, nil, nil
}

func (f *fakePolkit) fail(err *dbus.Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.result, f.delay, f.err, f.calls = polkitResult{}, 0, err, nil
}

func (f *fakePolkit) seen() []polkitCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// holdChecks makes the fake a slow authority for action: its checks are
// never answered, only canceled.
func (f *fakePolkit) holdChecks(action string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold, f.mostHeld, f.canceled = action, 0, nil
}

// holding is the number of checks waiting now, the most that ever waited
// at once, and the cancellations seen.
func (f *fakePolkit) holding() (now, most int, canceled []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.held), f.mostHeld, slices.Clone(f.canceled)
}

func (f *fakePolkit) CheckAuthorization(subject polkitSubject, action string, details map[string]string, flags uint32, cancellationID string) (polkitResult, *dbus.Error) {
	f.mu.Lock()
	f.calls = append(f.calls, polkitCall{subject, action, details, flags, cancellationID})
	result, delay, err := f.result, f.delay, f.err
	if action == f.hold {
		canceled := make(chan struct{})
		key := cancellationID
		if key == "" { // cannot be canceled: held all the same
			key = fmt.Sprintf("uncancelable-%d", len(f.calls))
		}
		f.held[key] = canceled
		f.mostHeld = max(f.mostHeld, len(f.held))
		f.mu.Unlock()
		select {
		case <-canceled:
		case <-f.stop:
		}
		f.mu.Lock()
		delete(f.held, key)
		f.mu.Unlock()
		return polkitResult{}, dbus.NewError("org.freedesktop.PolicyKit1.Error.Cancelled", []any{"The authorization check was cancelled"})
	}
	f.mu.Unlock()
	time.Sleep(delay)
	if result.Details == nil {
		result.Details = map[string]string{}
	}
	return result, err
}

// CancelCheckAuthorization ends the held check of cancellationID, as
// polkit does: that check is answered with Cancelled.
func (f *fakePolkit) CancelCheckAuthorization(cancellationID string) *dbus.Error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.canceled = append(f.canceled, cancellationID)
	if ch, ok := f.held[cancellationID]; ok {
		close(ch)
		delete(f.held, cancellationID)
		return nil
	}
	return dbus.NewError("org.freedesktop.PolicyKit1.Error.Failed", []any{"No such cancellation_id " + cancellationID})
}

func TestResolveID(t *testing.T) {
	lookup := func(name string) (string, error) {
		if name == "alice" {
			return "1000", nil
		}
		return "", errors.New("unknown")
	}
	for _, c := range []struct {
		in   string
		want uint32
		ok   bool
	}{
		{"0", 0, true},
		{"65534", 65534, true},
		{"alice", 1000, true},
		{"bob", 0, false},
		{"", 0, false},
		{"4294967296", 0, false},
	} {
		got, ok := resolveID(c.in, lookup)
		if got != c.want || ok != c.ok {
			t.Errorf("resolveID(%q) = %d, %v; want %d, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// The polkit actions file: the three actions with the contract's defaults,
// valid against polkit's DTD where xmllint is installed.
func TestPolkitActionsFile(t *testing.T) {
	raw, err := os.ReadFile(polkitActionsFile)
	if err != nil {
		t.Fatal(err)
	}
	var policy struct {
		Actions []struct {
			ID          string `xml:"id,attr"`
			Description string `xml:"description"`
			Message     string `xml:"message"`
			Any         string `xml:"defaults>allow_any"`
			Inactive    string `xml:"defaults>allow_inactive"`
			Active      string `xml:"defaults>allow_active"`
		} `xml:"action"`
	}
	if err := xml.Unmarshal(raw, &policy); err != nil {
		t.Fatalf("%s: %v", polkitActionsFile, err)
	}
	want := map[string][3]string{
		contract.ActionBackup:  {"auth_admin", "auth_admin", "auth_admin_keep"},
		contract.ActionManage:  {"auth_admin", "auth_admin", "auth_admin_keep"},
		contract.ActionRestore: {"auth_admin", "auth_admin", "auth_admin"},
	}
	if len(policy.Actions) != len(want) {
		t.Errorf("%d actions; want %d", len(policy.Actions), len(want))
	}
	for _, a := range policy.Actions {
		w, ok := want[a.ID]
		if !ok {
			t.Errorf("unexpected action %s", a.ID)
			continue
		}
		if got := [3]string{a.Any, a.Inactive, a.Active}; got != w {
			t.Errorf("%s defaults any/inactive/active = %v; want %v", a.ID, got, w)
		}
		if a.Description == "" || a.Message == "" {
			t.Errorf("%s has no description or message", a.ID)
		}
	}
	t.Run("xmllint", func(t *testing.T) {
		testutil.RequireCommand(t, "xmllint", "libxml2-utils")
		args := []string{"--noout", "--nonet", busPolicyFile}
		if _, err := os.Stat("/usr/share/polkit-1/policyconfig-1.dtd"); err == nil {
			if out, err := exec.Command("xmllint", "--noout", "--nonet", "--dtdvalid", "/usr/share/polkit-1/policyconfig-1.dtd", polkitActionsFile).CombinedOutput(); err != nil {
				t.Errorf("%s is not valid against polkit's DTD: %s", polkitActionsFile, out)
			}
		} else {
			args = append(args, polkitActionsFile)
		}
		if out, err := exec.Command("xmllint", args...).CombinedOutput(); err != nil {
			t.Errorf("xmllint: %s", out)
		}
	})
}

// The bus policy file says exactly the contract's "Bus policy" and no more.
func TestBusPolicyFile(t *testing.T) {
	raw, err := os.ReadFile(busPolicyFile)
	if err != nil {
		t.Fatal(err)
	}
	type rule struct {
		XMLName         xml.Name
		Own             string     `xml:"own,attr"`
		SendDestination string     `xml:"send_destination,attr"`
		SendInterface   string     `xml:"send_interface,attr"`
		Attrs           []xml.Attr `xml:",any,attr"`
	}
	var conf struct {
		Policies []struct {
			User    string `xml:"user,attr"`
			Context string `xml:"context,attr"`
			Rules   []rule `xml:",any"`
		} `xml:"policy"`
	}
	if err := xml.Unmarshal(raw, &conf); err != nil {
		t.Fatalf("%s: %v", busPolicyFile, err)
	}
	var got []string
	for _, p := range conf.Policies {
		for _, r := range p.Rules {
			var attrs []string
			for _, a := range r.Attrs {
				attrs = append(attrs, a.Name.Local+"="+a.Value)
			}
			got = append(got, fmt.Sprintf("%s%s %s own=%s dest=%s iface=%s %v", p.User, p.Context, r.XMLName.Local, r.Own, r.SendDestination, r.SendInterface, attrs))
		}
	}
	want := []string{"root allow own=org.subvault.Subvault1 dest= iface= []"}
	for _, iface := range []string{"org.subvault.Subvault1.Manager", "org.subvault.Subvault1.Job", "org.subvault.Subvault1.Plan",
		"org.freedesktop.DBus.Properties", "org.freedesktop.DBus.Introspectable", "org.freedesktop.DBus.ObjectManager", "org.freedesktop.DBus.Peer"} {
		want = append(want, "default allow own= dest=org.subvault.Subvault1 iface="+iface+" []")
	}
	if !slices.Equal(got, want) {
		t.Errorf("the rules of %s:\n%s\nwant:\n%s", busPolicyFile, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

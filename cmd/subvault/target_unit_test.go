package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/internal/testutil"
)

const (
	targetUnitPath = "../../packaging/subvault-target@.service"
	udevRulePath   = "../../packaging/udev/90-subvault.rules"
	// testFSUUID stands for the filesystem UUID udev names the instance by.
	testFSUUID = "0f6c1a2b-1111-4222-8333-444455556666"
)

// managerStub answers TargetAppeared as the daemon's Manager object would.
type managerStub struct{ got chan string }

func (m managerStub) TargetAppeared(uuid string) *dbus.Error {
	m.got <- uuid
	return nil
}

// The unit's command, run as systemd runs it for a filesystem that appeared
// (with %i its UUID), reaches the daemon's bus name, object and interface
// as api/contract spells them, and TargetAppeared gets the UUID.
func TestTargetUnitCallsDaemon(t *testing.T) {
	busctl := testutil.RequireCommand(t, "busctl", "systemd")
	bus := testutil.NewBus(t)
	conn, err := dbus.Connect(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stub := managerStub{got: make(chan string, 1)}
	if err := conn.Export(stub, contract.ManagerPath, contract.ManagerInterface); err != nil {
		t.Fatal(err)
	}
	if reply, err := conn.RequestName(contract.BusName, dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own %s: %v, %v", contract.BusName, reply, err)
	}

	unit := readKeyFile(t, targetUnitPath)
	line := unit.one(t, "Service", "ExecStart")
	argv := strings.Fields(strings.ReplaceAll(line, "%i", testFSUUID))
	if filepath.Base(argv[0]) != "busctl" {
		t.Fatalf("ExecStart=%s: not busctl", line)
	}
	// What the call names, checked against the contract.
	call := slices.Index(argv, "call")
	if call < 0 || len(argv) < call+7 {
		t.Fatalf("ExecStart=%s: no busctl call DEST PATH INTERFACE METHOD s UUID", line)
	}
	want := []string{contract.BusName, string(contract.ManagerPath), contract.ManagerInterface, "TargetAppeared", "s", testFSUUID}
	if got := argv[call+1 : call+7]; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("ExecStart calls %q, want %q", got, want)
	}
	// Run it for real on the private bus (busctl's own --address, before
	// the verb).
	args := append([]string{"--address=" + bus.Address}, argv[1:]...)
	cmd := exec.Command(busctl, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("busctl %s: %v: %s", strings.Join(args, " "), err, out.String())
	}
	select {
	case got := <-stub.got:
		if got != testFSUUID {
			t.Errorf("TargetAppeared(%q), want %q", got, testFSUUID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("TargetAppeared was not called")
	}
}

// systemd-analyze verify checks the unit as the instance udev starts, and
// the commands it runs exist.
func TestTargetUnitVerify(t *testing.T) {
	analyze := testutil.RequireCommand(t, "systemd-analyze", "systemd")
	testutil.RequireCommand(t, "dbus-daemon", "dbus") // Requires=dbus.socket
	dir := t.TempDir()
	data, err := os.ReadFile(targetUnitPath)
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dir, "subvault-target@"+testFSUUID+".service")
	if err := os.WriteFile(unit, data, 0o644); err != nil { //nolint:gosec // a unit file is world-readable
		t.Fatal(err)
	}
	args := []string{"verify"}
	env := os.Environ()
	if _, err := exec.LookPath("man"); err == nil {
		manDir := filepath.Join(dir, "man")
		for _, page := range unitManPages(t, readKeyFile(t, targetUnitPath)) {
			src, err := filepath.Abs(filepath.Join("../../docs/man", page.name+"."+page.section))
			if err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(manDir, "man"+page.section, filepath.Base(src))
			if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(src, link); err != nil {
				t.Fatal(err)
			}
		}
		env = append(env, "MANPATH="+manDir)
	} else {
		args = append(args, "--man=no")
	}
	cmd := exec.Command(analyze, append(args, unit)...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	t.Logf("%s: %v", strings.Join(cmd.Args, " "), errOrOK(err))
	if err != nil || stderr.Len() > 0 {
		t.Errorf("systemd-analyze verify is not clean (%v):\n%s%s", err, stdout.String(), stderr.String())
	}
}

var udevPairRE = regexp.MustCompile(`^\s*([A-Z_]+)(\{[^}]*\})?\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*$`)

// The udev rule matches btrfs filesystems that appear (added or changed) and wants the unit by the
// filesystem UUID; `udevadm verify` checks its syntax where udev has it
// (systemd 254 and later).
func TestUdevRuleStartsTargetUnit(t *testing.T) {
	data, err := os.ReadFile(udevRulePath)
	if err != nil {
		t.Fatal(err)
	}
	var rules []map[string]string
	for n, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rule := map[string]string{}
		for _, pair := range strings.Split(line, ",") {
			m := udevPairRE.FindStringSubmatch(pair)
			if m == nil {
				t.Fatalf("%s:%d: cannot read %q", udevRulePath, n+1, pair)
			}
			rule[m[1]+m[2]+m[3]] = m[4]
		}
		rules = append(rules, rule)
	}
	if len(rules) != 1 {
		t.Fatalf("%s: %d rules, want 1", udevRulePath, len(rules))
	}
	r := rules[0]
	for k, v := range map[string]string{
		`ACTION==`:             "add|change",
		`SUBSYSTEM==`:          "block",
		`ENV{ID_FS_TYPE}==`:    "btrfs",
		`ENV{ID_FS_UUID}==`:    "?*",
		`TAG+=`:                "systemd",
		`ENV{SYSTEMD_WANTS}+=`: "subvault-target@$env{ID_FS_UUID}.service",
	} {
		if r[k] != v {
			t.Errorf("%s: %s%q, want %q", udevRulePath, k, r[k], v)
		}
	}
	// The unit it wants is the template the package ships.
	unit := strings.Replace(r[`ENV{SYSTEMD_WANTS}+=`], "$env{ID_FS_UUID}", "", 1)
	if _, err := os.Stat(filepath.Join("../../packaging", unit)); err != nil {
		t.Errorf("the rule wants %s, which packaging/ does not have: %v", unit, err)
	}

	udevadm, err := exec.LookPath("udevadm")
	if err != nil {
		t.Log("udevadm is not installed: the rule's syntax is checked by this test only")
		return
	}
	if out, err := exec.Command(udevadm, "verify", "--help").CombinedOutput(); err != nil {
		t.Logf("udevadm has no verify (systemd < 254): %s", strings.TrimSpace(string(out)))
		return
	}
	if out, err := exec.Command(udevadm, "verify", udevRulePath).CombinedOutput(); err != nil {
		t.Errorf("udevadm verify %s: %v\n%s", udevRulePath, err, out)
	}
}

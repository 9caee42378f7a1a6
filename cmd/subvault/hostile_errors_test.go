package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/internal/testutil"
)

// Attack 12 of docs/security.md: every error a caller can provoke has the contract's
// name and a one-line message, Properties' too (busctl printed
// "Input/output error"), and the configuration file's path goes to root
// only.
func TestHostileErrorShapes(t *testing.T) {
	testutil.RequireNobody(t)
	e := newAPIEnv(t, 1)
	e.startDaemonLogged(t)
	properties := "org.freedesktop.DBus.Properties"
	manager := string(contract.ManagerPath)
	for _, asRoot := range []bool{false, true} {
		send := func(path, member string, args ...string) (string, string) {
			argv := append([]string{"--bus=" + e.bus.Address, "--print-reply", "--dest=" + contract.BusName, path, member}, args...)
			if asRoot {
				return dbusSend(exec.Command("dbus-send", argv...))
			}
			return dbusSend(testutil.AsNobody("dbus-send", argv...))
		}
		busctl := func(args ...string) string {
			argv := append([]string{"--address=" + e.bus.Address}, args...)
			cmd := exec.Command("busctl", argv...)
			if !asRoot {
				cmd = testutil.AsNobody("busctl", argv...)
			}
			out, _ := cmd.CombinedOutput()
			return strings.TrimSpace(string(out))
		}
		who := map[bool]string{false: "nobody", true: "root"}[asRoot]
		for _, c := range []struct {
			path, member string
			args         []string
			name, says   string
		}{
			{manager, properties + ".Get", []string{"string:" + contract.ManagerInterface, "string:NoSuch"}, contract.ErrorUnknownProperty, "NoSuch"},
			{manager, properties + ".Get", []string{"string:org.example.NoSuch", "string:Version"}, contract.ErrorUnknownInterface, "org.example.NoSuch"},
			{manager, properties + ".GetAll", []string{"string:org.example.NoSuch"}, contract.ErrorUnknownInterface, "org.example.NoSuch"},
			{manager, properties + ".Set", []string{"string:" + contract.ManagerInterface, "string:Version", "variant:string:6.6.6"}, contract.ErrorPropertyReadOnly, "Version"},
			{manager, properties + ".Set", []string{"string:" + contract.ManagerInterface, "string:NoSuch", "variant:string:x"}, contract.ErrorUnknownProperty, "NoSuch"},
			{string(contract.PlanPath("home")), properties + ".Set", []string{"string:" + contract.PlanInterface, "string:LastResult", "variant:string:done"}, contract.ErrorPropertyReadOnly, "LastResult"},
			{string(contract.JobPath(4242)), properties + ".GetAll", []string{"string:" + contract.JobInterface}, contract.ErrorUnknownObject, "ListJobs"},
			{string(contract.JobPath(4242)), contract.JobInterface + ".Cancel", nil, contract.ErrorUnknownObject, string(contract.JobPath(4242))},
			{string(contract.PlanPath("gone")), properties + ".Get", []string{"string:" + contract.PlanInterface, "string:Name"}, contract.ErrorUnknownObject, "ListPlans"},
			{manager, contract.ManagerInterface + ".NoSuchMethod", nil, "org.freedesktop.DBus.Error.UnknownMethod", "NoSuchMethod"},
			{manager, contract.ManagerInterface + ".StartBackup", []string{"string:home", "string:home"}, "org.freedesktop.DBus.Error.InvalidArgs", "args"},
			{manager, contract.ManagerInterface + ".StartBackup", []string{"string:nosuch"}, contract.ErrorNoSuchPlan, "plans: home"},
			{manager, contract.ManagerInterface + ".ListSnapshots", []string{"string:nosuch"}, contract.ErrorNoSuchPlan, "plans: home"},
		} {
			got, out := send(c.path, c.member, c.args...)
			msg := strings.TrimSpace(strings.TrimPrefix(out, "Error "+got+":"))
			t.Logf("as %s, %s %v: %s: %s", who, c.member, c.args, got, msg)
			if got != c.name || !strings.Contains(msg, c.says) || strings.Contains(msg, "\n") {
				t.Errorf("as %s, %s %v: %s %q; want %s with a one-line message naming %q", who, c.member, c.args, got, msg, c.name, c.says)
			}
			if c.name == contract.ErrorNoSuchPlan && strings.Contains(msg, e.config) != asRoot {
				t.Errorf("as %s, NoSuchPlan names the configuration file %s: %v; want only to root", who, e.config, strings.Contains(msg, e.config))
			}
		}
		// busctl shows the message rather than its errno's words.
		for _, args := range [][]string{
			{"get-property", contract.BusName, manager, contract.ManagerInterface, "NoSuch"},
			{"set-property", contract.BusName, manager, contract.ManagerInterface, "Version", "s", "6.6.6"},
		} {
			out := busctl(args...)
			t.Logf("as %s, busctl %s: %s", who, args[0], out)
			if strings.Contains(out, "Input/output error") || !strings.Contains(out, args[4]) {
				t.Errorf("as %s, busctl %v: %s", who, args, out)
			}
		}
	}
}

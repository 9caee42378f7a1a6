package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/subvault/subvault/api"
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
	manager := string(api.ManagerPath)
	for _, asRoot := range []bool{false, true} {
		send := func(path, member string, args ...string) (string, string) {
			argv := append([]string{"--bus=" + e.bus.Address, "--print-reply", "--dest=" + api.BusName, path, member}, args...)
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
			{manager, properties + ".Get", []string{"string:" + api.ManagerInterface, "string:NoSuch"}, api.ErrorUnknownProperty, "NoSuch"},
			{manager, properties + ".Get", []string{"string:org.example.NoSuch", "string:Version"}, api.ErrorUnknownInterface, "org.example.NoSuch"},
			{manager, properties + ".GetAll", []string{"string:org.example.NoSuch"}, api.ErrorUnknownInterface, "org.example.NoSuch"},
			{manager, properties + ".Set", []string{"string:" + api.ManagerInterface, "string:Version", "variant:string:6.6.6"}, api.ErrorPropertyReadOnly, "Version"},
			{manager, properties + ".Set", []string{"string:" + api.ManagerInterface, "string:NoSuch", "variant:string:x"}, api.ErrorUnknownProperty, "NoSuch"},
			{string(api.PlanPath("home")), properties + ".Set", []string{"string:" + api.PlanInterface, "string:LastResult", "variant:string:done"}, api.ErrorPropertyReadOnly, "LastResult"},
			{string(api.JobPath(4242)), properties + ".GetAll", []string{"string:" + api.JobInterface}, api.ErrorUnknownObject, "ListJobs"},
			{string(api.JobPath(4242)), api.JobInterface + ".Cancel", nil, api.ErrorUnknownObject, string(api.JobPath(4242))},
			{string(api.PlanPath("gone")), properties + ".Get", []string{"string:" + api.PlanInterface, "string:Name"}, api.ErrorUnknownObject, "ListPlans"},
			{manager, api.ManagerInterface + ".NoSuchMethod", nil, "org.freedesktop.DBus.Error.UnknownMethod", "NoSuchMethod"},
			{manager, api.ManagerInterface + ".StartBackup", []string{"string:home", "string:home"}, "org.freedesktop.DBus.Error.InvalidArgs", "args"},
			{manager, api.ManagerInterface + ".StartBackup", []string{"string:nosuch"}, api.ErrorNoSuchPlan, "plans: home"},
			{manager, api.ManagerInterface + ".ListSnapshots", []string{"string:nosuch"}, api.ErrorNoSuchPlan, "plans: home"},
		} {
			got, out := send(c.path, c.member, c.args...)
			msg := strings.TrimSpace(strings.TrimPrefix(out, "Error "+got+":"))
			t.Logf("as %s, %s %v: %s: %s", who, c.member, c.args, got, msg)
			if got != c.name || !strings.Contains(msg, c.says) || strings.Contains(msg, "\n") {
				t.Errorf("as %s, %s %v: %s %q; want %s with a one-line message naming %q", who, c.member, c.args, got, msg, c.name, c.says)
			}
			if c.name == api.ErrorNoSuchPlan && strings.Contains(msg, e.config) != asRoot {
				t.Errorf("as %s, NoSuchPlan names the configuration file %s: %v; want only to root", who, e.config, strings.Contains(msg, e.config))
			}
		}
		// busctl shows the message rather than its errno's words.
		for _, args := range [][]string{
			{"get-property", api.BusName, manager, api.ManagerInterface, "NoSuch"},
			{"set-property", api.BusName, manager, api.ManagerInterface, "Version", "s", "6.6.6"},
		} {
			out := busctl(args...)
			t.Logf("as %s, busctl %s: %s", who, args[0], out)
			if strings.Contains(out, "Input/output error") || !strings.Contains(out, args[4]) {
				t.Errorf("as %s, busctl %v: %s", who, args, out)
			}
		}
	}
}

package testutil

import (
	"bytes"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"testing"
)

// SystemConf is the system bus configuration NewSystemBus starts from.
const SystemConf = "/usr/share/dbus-1/system.conf"

// NobodyUID and NobodyGID are the unprivileged caller of the bus policy and
// authorization tests (Debian's nobody/nogroup).
const (
	NobodyUID = 65534
	NobodyGID = 65534
)

// The edits of the recipe "A private bus with the system bus's own policy"
// (notes/machine-recipes.md): our socket, no fork, pid file, syslog,
// activation helper or service directories, and only the policy files the
// test gives instead of the machine's.
var (
	confListen    = regexp.MustCompile(`<listen>.*</listen>`)
	confDropLines = regexp.MustCompile(`(?m)^.*(<fork/>|<pidfile>|<syslog/>|<servicehelper>|<standard_system_servicedirs/>|<includedir>/etc/dbus-1/system\.d</includedir>).*\n`)
	confIncludes  = regexp.MustCompile(`<includedir>system\.d</includedir>`)
	confUser      = regexp.MustCompile(`(?m)^.*<user>.*</user>.*\n`)
)

// NewSystemBus starts a private dbus-daemon with the system bus's own policy
// (deny by default: nobody owns a name or receives a method call unless a
// policy file allows it) plus policyFiles, copied into its include directory,
// as a package installs them in /usr/share/dbus-1/system.d. Its directory is
// mode 755 so a caller running as another uid (AsNobody) can reach the
// socket. It runs as messagebus, as on a real system, when the test runs as
// root; it is stopped, by PID, when the test ends. It skips under -short.
func NewSystemBus(t testing.TB, policyFiles ...string) *Bus {
	t.Helper()
	SkipShort(t, "a private dbus-daemon with the system bus's policy")
	RequireCommand(t, "dbus-daemon", "dbus")
	system, err := os.ReadFile(SystemConf)
	if err != nil {
		SkipOrFail(t, SystemConf+" (apt-get install dbus): "+err.Error())
	}
	dir, err := os.MkdirTemp("", "subvault-systembus-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "bus.sock")
	included := filepath.Join(dir, "system.d")
	if err := os.Mkdir(included, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range policyFiles {
		policy, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("cannot read the bus policy file for the private system bus: %v", err)
		}
		WriteFile(t, filepath.Join(included, filepath.Base(p)), string(policy))
	}

	conf := confListen.ReplaceAll(system, []byte("<listen>unix:path="+sock+"</listen>"))
	conf = confDropLines.ReplaceAll(conf, nil)
	conf = confIncludes.ReplaceAll(conf, []byte("<includedir>"+included+"</includedir>"))
	// dbus-daemon can only switch to messagebus when it starts as root.
	if _, err := user.Lookup("messagebus"); err != nil || os.Geteuid() != 0 {
		conf = confUser.ReplaceAll(conf, nil)
	}
	if !bytes.Contains(conf, []byte(included)) || !bytes.Contains(conf, []byte(sock)) {
		t.Fatalf("%s does not look as the recipe expects (no <listen> or <includedir>system.d</includedir>); cannot build a private system bus from it", SystemConf)
	}
	confPath := filepath.Join(dir, "bus.conf")
	WriteFile(t, confPath, string(conf))

	// Pdeathsig is cleared by the kernel when dbus-daemon switches to
	// messagebus; the cleanup StartProcess registers is what stops it.
	output, exited := StartProcess(t, "dbus-daemon (private system bus)",
		exec.Command("dbus-daemon", "--config-file="+confPath, "--nofork", "--nopidfile"))
	waitListening(t, "dbus-daemon with the system bus policy", sock, output, exited)
	return &Bus{Address: "unix:path=" + sock, Dir: dir}
}

// AsNobody returns the command name args run as uid and gid 65534 with no
// supplementary groups: the unprivileged caller of the authorization tests.
func AsNobody(name string, args ...string) *exec.Cmd {
	argv := append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", name}, args...)
	cmd := exec.Command("setpriv", argv...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	cmd.Dir = "/"
	return cmd
}

// RequireNobody skips (or fails under CI) unless the test can run commands
// as uid 65534: root, setpriv, and the uid known to the system. It skips
// under -short.
func RequireNobody(t testing.TB) {
	t.Helper()
	SkipShort(t, "root, to run a process as uid 65534")
	RequireRoot(t)
	RequireCommand(t, "setpriv", "util-linux")
	if _, err := user.LookupId("65534"); err != nil {
		SkipOrFail(t, "uid 65534 (nobody) in /etc/passwd")
	}
}

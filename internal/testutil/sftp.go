package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// SFTPServer is a second sshd on a loopback port, for restic's sftp
// backend: key-only login (no password, no keyboard-interactive) as an
// unprivileged user that can do nothing but sftp (ForceCommand
// internal-sftp), with its own config, host key, pid file and authorized
// keys in a temporary directory. Nothing of the host's sshd (/etc/ssh,
// port 22) or of root's ~/.ssh is read or written.
type SFTPServer struct {
	*Server
	// Host and Port are where sshd listens (Host is 127.0.0.1).
	Host string
	Port int
	// User is the account that logs in: nobody (uid 65534), the one
	// unprivileged account every Debian machine has (a test adds no user
	// to /etc/passwd). UID and GID are its ids.
	User     string
	UID, GID int
	// Dir is a directory User owns (mode 0700) where repositories go.
	Dir string
	// KeyFile is the client's private key (ed25519, no passphrase), the one
	// sshd accepts; WrongKeyFile is another key it refuses.
	KeyFile, WrongKeyFile string
	// KnownHostsFile holds the server's host key for [127.0.0.1]:Port;
	// EmptyKnownHostsFile holds nothing (an unknown host key).
	KnownHostsFile, EmptyKnownHostsFile string
	// SSHCommand is the ssh command line restic's `-o sftp.command=` wants,
	// logging in with KeyFile and checking the host key against
	// KnownHostsFile: Command(KeyFile, KnownHostsFile).
	SSHCommand string
}

// NewSFTPServer starts an sshd for restic's sftp backend and stops it when
// the test ends. It needs root (sshd logs users in; its privilege separation
// directory /run/sshd is made on a private tmpfs over /run, in a mount
// namespace of its own, so the host's /run is not touched), openssh-server
// and openssh-client. It skips under -short.
func NewSFTPServer(t testing.TB) *SFTPServer {
	t.Helper()
	SkipShort(t, "root and sshd")
	RequireRoot(t)
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		SkipOrFail(t, "/usr/sbin/sshd: apt-get install openssh-server (or .ci/deps test)")
	}
	RequireCommand(t, "ssh", "openssh-client")
	RequireCommand(t, "ssh-keygen", "openssh-client")
	RequireCommand(t, "unshare", "util-linux")
	u, err := user.Lookup("nobody")
	if err != nil {
		SkipOrFail(t, "the user nobody: "+err.Error())
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	dir := serverDir(t, "sftp")
	if strings.ContainsAny(dir, " \t\"'\\") || strings.HasPrefix(dir, "/run/") {
		t.Fatalf("sftp server: temporary directory %q has quotes or blanks, or is under /run (set TMPDIR elsewhere)", dir)
	}
	s := &SFTPServer{
		Host: "127.0.0.1", Port: FreePort(t), User: u.Username, UID: uid, GID: gid,
		Dir:                 filepath.Join(dir, "data"),
		KeyFile:             filepath.Join(dir, "client_ed25519"),
		WrongKeyFile:        filepath.Join(dir, "wrong_ed25519"),
		KnownHostsFile:      filepath.Join(dir, "known_hosts"),
		EmptyKnownHostsFile: filepath.Join(dir, "known_hosts.empty"),
	}
	hostKey := filepath.Join(dir, "host_ed25519")
	for _, k := range []string{hostKey, s.KeyFile, s.WrongKeyFile} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", filepath.Base(k), "-f", k).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen %s: %v\n%s", k, err, out)
		}
	}
	pub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	WriteFile(t, s.KnownHostsFile, fmt.Sprintf("[%s]:%d %s", s.Host, s.Port, pub))
	WriteFile(t, s.EmptyKnownHostsFile, "")
	clientPub, err := os.ReadFile(s.KeyFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	// Root's file, readable by sshd; the user cannot change it.
	authorized := filepath.Join(dir, "authorized_keys")
	WriteFile(t, authorized, string(clientPub))
	if err := os.Mkdir(s.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(s.Dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "sshd_config")
	// StrictModes no: sshd would refuse authorized_keys under /tmp (mode
	// 1777) whatever its own modes; the file and its directory are root's
	// and not writable by anyone else, which is what StrictModes checks.
	WriteFile(t, conf, fmt.Sprintf(`# subvault test sshd (internal/testutil/sftp.go)
ListenAddress %s:%d
HostKey %s
PidFile %s
AuthorizedKeysFile %s
StrictModes no
AllowUsers %s
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PermitRootLogin no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
PermitTTY no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
AllowStreamLocalForwarding no
PermitTunnel no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
LogLevel VERBOSE
`, s.Host, s.Port, hostKey, filepath.Join(dir, "sshd.pid"), authorized, s.User))
	s.SSHCommand = s.Command(s.KeyFile, s.KnownHostsFile)

	newCmd := func() *exec.Cmd {
		// sshd needs its privilege separation directory /run/sshd (fixed
		// at build time); a private tmpfs over /run in a mount namespace of
		// its own gives it one without touching the host. exec keeps the
		// PID: the process the test signals is sshd itself.
		return exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
			`mount -t tmpfs -o size=1m,mode=0755 subvault-test-sshd /run && mkdir -m 0755 /run/sshd && exec /usr/sbin/sshd -D -e -f "$1"`,
			"sh", conf)
	}
	ready := func() error {
		banner, err := dialProbe(s.Port, true)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(banner, "SSH-2.0-") {
			return fmt.Errorf("port %d answered %q, not an ssh banner", s.Port, banner)
		}
		return nil
	}
	s.Server = startServer(t, "sshd", newCmd, ready)
	return s
}

// Command is an ssh command line for restic's `-o sftp.command=`, logging
// in as User on Port with the private key keyFile and checking the host key
// against knownHosts only (StrictHostKeyChecking=yes, no global file, no
// ~/.ssh/config: -F /dev/null), never prompting (BatchMode). extra are more
// ssh arguments placed before the destination (e.g. "-o",
// "ServerAliveInterval=5"). restic splits it at blanks (paths here have
// none).
func (s *SFTPServer) Command(keyFile, knownHosts string, extra ...string) string {
	args := []string{
		"ssh", "-F", "/dev/null", "-p", strconv.Itoa(s.Port),
		"-i", keyFile, "-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + knownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
	}
	args = append(args, extra...)
	args = append(args, s.User+"@"+s.Host, "-s", "sftp")
	return strings.Join(args, " ")
}

// Repository is restic's sftp repository for a directory name under Dir:
// "sftp:nobody@127.0.0.1:/tmp/.../data/name". This form has no port: the
// connection is the one sftp.command makes (SSHCommand), whose port and
// key decide; restic only uses the path.
func (s *SFTPServer) Repository(name string) string {
	return fmt.Sprintf("sftp:%s@%s:%s", s.User, s.Host, filepath.Join(s.Dir, name))
}

// URL is the same repository in restic's URL form with the port,
// "sftp://nobody@127.0.0.1:PORT//tmp/.../data/name" (absolute path after
// the double slash), which restic 0.14 and 0.18 both parse: without
// sftp.command restic runs `ssh 127.0.0.1 -l nobody -p PORT -s sftp` with
// root's own ssh configuration (key, known hosts), which these tests
// never set up; with sftp.command, the command decides as for Repository.
func (s *SFTPServer) URL(name string) string {
	return fmt.Sprintf("sftp://%s@%s:%d/%s", s.User, s.Host, s.Port, filepath.Join(s.Dir, name))
}

// Options is restic's global option pair for SSHCommand:
// {"-o", "sftp.command=" + SSHCommand}.
func (s *SFTPServer) Options() []string {
	return []string{"-o", "sftp.command=" + s.SSHCommand}
}

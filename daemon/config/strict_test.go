package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.HostileMain()
	os.Exit(m.Run())
}

func init() {
	// load CONFIG: Load as the hostile process's uid, printing the error.
	testutil.RegisterHostile("load", func(args []string) error {
		_, err := Load(args[0])
		return err
	})
}

// strictTree is a directory of root's (0755, so that the user can reach
// it) where a test lays out a configuration and the files it names.
type strictTree struct {
	t   *testing.T
	dir string
}

func newStrictTree(t *testing.T) *strictTree {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &strictTree{t: t, dir: dir}
}

func (s *strictTree) path(name string) string { return filepath.Join(s.dir, name) }

// file writes name (made with its directories, 0755) with mode and owner.
func (s *strictTree) file(name, content string, mode os.FileMode, uid int) string {
	s.t.Helper()
	p := s.path(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		s.t.Fatal(err)
	}
	s.own(name, mode, uid)
	return p
}

// mkdir makes the directory name with mode and owner.
func (s *strictTree) mkdir(name string, mode os.FileMode, uid int) string {
	s.t.Helper()
	if err := os.MkdirAll(s.path(name), 0o755); err != nil {
		s.t.Fatal(err)
	}
	s.own(name, mode, uid)
	return s.path(name)
}

func (s *strictTree) own(name string, mode os.FileMode, uid int) {
	s.t.Helper()
	if err := os.Chown(s.path(name), uid, uid); err != nil {
		s.t.Fatal(err)
	}
	// The mode as the kernel reads it (os.Chmod would drop 0o1000).
	if err := unix.Chmod(s.path(name), uint32(mode)); err != nil {
		s.t.Fatal(err)
	}
}

func (s *strictTree) link(name, target string) string {
	s.t.Helper()
	if err := os.Symlink(target, s.path(name)); err != nil {
		s.t.Fatal(err)
	}
	return s.path(name)
}

const nobody = testutil.NobodyUID

// strictConfig is a configuration naming the files of a tree: the secrets
// and the hook are given, the rest is the test's own extra (plan lines).
func strictConfig(s *strictTree, repoExtra, planExtra string) string {
	return fmt.Sprintf(`repositories:
  r:
    url: %s
%s
plans:
  home:
    subvolumes: [/home]
    repository: r
%s
settings:
  state_dir: %s
  cache_dir: %s
  restic: /usr/bin/env
`, s.path("repo"), repoExtra, planExtra, s.path("state"), s.path("cache"))
}

// sftpConfig is strictConfig for an sftp repository with the given ssh block
// (lines 6 and on).
func sftpConfig(s *strictTree, sshLines string) string {
	return strings.Replace(strictConfig(s, "    password_command: /bin/echo pw\n    ssh:\n"+sshLines, ""),
		"url: "+s.path("repo"), "url: sftp:backup@nas:/srv/restic", 1)
}

// TestStrictFiles: like sshd's StrictModes, Load refuses a configuration,
// hook, password_file, env_file, exclude_file, password_command, restic,
// state or cache directory or local repository that someone other than
// root may change (the file or a directory above it, links followed), and
// a secret others may read; each problem names the file, its key and line,
// and the chmod or chown that fixes it.
func TestStrictFiles(t *testing.T) {
	for _, c := range []struct {
		name string
		// setup lays out the tree and returns the configuration's path.
		setup func(s *strictTree) string
		// want are regular expressions the error must match, after
		// TREE is replaced by the tree's directory; none: accepted.
		want []string
	}{
		{"root's files are accepted", func(s *strictTree) string {
			s.file("pass", "pw\n", 0o600, 0)
			s.file("env", "B2_ACCOUNT_ID=x\n", 0o400, 0)
			s.file("hook", "#!/bin/sh\n", 0o755, 0)
			s.file("exclude", "*.tmp\n", 0o644, 0)
			s.mkdir("repo", 0o700, 0)
			return s.file("config.yaml", strictConfig(s, "    password_file: "+s.path("pass")+"\n    env_file: "+s.path("env"),
				"    backup:\n      exclude_file: "+s.path("exclude")+"\n    hooks:\n      before_snapshot: [\""+s.path("hook")+"\"]"), 0o644, 0)
		}, nil},
		{"files that do not exist yet, where only root could make them", func(s *strictTree) string {
			return s.file("config.yaml", strictConfig(s, "    password_file: "+s.path("etc/none.pass"),
				"    hooks:\n      before_snapshot: [\""+s.path("bin/none")+"\"]"), 0o600, 0)
		}, nil},
		{"a configuration in a sticky directory, root's entry", func(s *strictTree) string {
			s.mkdir("tmp", 0o1777, 0)
			return s.file("tmp/config.yaml", strictConfig(s, "    password_command: /bin/echo pw", ""), 0o644, 0)
		}, nil},
		{"a configuration its group may write", func(s *strictTree) string {
			return s.file("config.yaml", strictConfig(s, "    password_command: /bin/echo pw", ""), 0o664, 0)
		}, []string{`^TREE/config\.yaml: may be written by its group \(mode 0664\); expected a configuration only root can change.* \(fix: chmod go-w TREE/config\.yaml\)$`}},
		{"a configuration of the user's", func(s *strictTree) string {
			return s.file("config.yaml", strictConfig(s, "    password_command: /bin/echo pw", ""), 0o644, nobody)
		}, []string{`^TREE/config\.yaml: owned by uid 65534, who could change it; .*\(fix: chown root: TREE/config\.yaml\)$`}},
		{"a configuration in a directory all may write", func(s *strictTree) string {
			s.mkdir("etc", 0o777, 0)
			return s.file("etc/config.yaml", strictConfig(s, "    password_command: /bin/echo pw", ""), 0o644, 0)
		}, []string{`^TREE/etc/config\.yaml: the directory TREE/etc may be written by its group and others \(mode 0777\), who could replace what is in it; .*\(fix: chmod go-w TREE/etc\)$`}},
		{"a configuration of the user's in a sticky directory", func(s *strictTree) string {
			s.mkdir("tmp", 0o1777, 0)
			return s.file("tmp/config.yaml", strictConfig(s, "    password_command: /bin/echo pw", ""), 0o644, nobody)
		}, []string{`^TREE/tmp/config\.yaml: owned by uid 65534`}},
		{"a link to a configuration in the user's directory", func(s *strictTree) string {
			s.mkdir("user", 0o755, nobody)
			s.file("user/config.yaml", strictConfig(s, "    password_command: /bin/echo pw", ""), 0o644, 0)
			return s.link("config.yaml", "user/config.yaml")
		}, []string{`^TREE/config\.yaml: the directory TREE/user is owned by uid 65534, who could replace what is in it; .*\(fix: chown root: TREE/user, or keep the file in a directory only root can write, such as /etc/subvault\)$`}},
		{"the user's link in a sticky directory", func(s *strictTree) string {
			s.mkdir("tmp", 0o1777, 0)
			s.file("config.yaml", strictConfig(s, "    password_command: /bin/echo pw", ""), 0o644, 0)
			l := s.link("tmp/link.yaml", "../config.yaml")
			if err := os.Lchown(l, nobody, nobody); err != nil {
				s.t.Fatal(err)
			}
			return l
		}, []string{`^TREE/tmp/link\.yaml: belongs to uid 65534, in TREE/tmp, which others may write \(mode 1777\)`}},
		{"a password file its group may read", func(s *strictTree) string {
			s.file("pass", "pw\n", 0o640, 0)
			return s.file("config.yaml", strictConfig(s, "    password_file: "+s.path("pass"), ""), 0o644, 0)
		}, []string{`^TREE/config\.yaml:4: repositories\.r\.password_file: TREE/pass: may be read by its group \(mode 0640\); expected a secret only root can read and change, in directories only root can change \(fix: chmod 600 TREE/pass\)$`}},
		{"a password file the user owns", func(s *strictTree) string {
			s.file("pass", "pw\n", 0o600, nobody)
			return s.file("config.yaml", strictConfig(s, "    password_file: "+s.path("pass"), ""), 0o644, 0)
		}, []string{`^TREE/config\.yaml:4: repositories\.r\.password_file: TREE/pass: owned by uid 65534, who could change it; .*\(fix: chown root: TREE/pass\)$`}},
		{"a password file that any user may create", func(s *strictTree) string {
			s.mkdir("tmp", 0o1777, 0)
			return s.file("config.yaml", strictConfig(s, "    password_file: "+s.path("tmp/pass"), ""), 0o644, 0)
		}, []string{`^TREE/config\.yaml:4: repositories\.r\.password_file: TREE/tmp/pass: does not exist, and any user may create it in TREE/tmp \(mode 1777\); .*\(fix: create TREE/tmp/pass as root, or use a directory only root can write\)$`}},
		{"an env file all may write", func(s *strictTree) string {
			s.file("env", "B2_ACCOUNT_ID=x\n", 0o666, 0)
			return s.file("config.yaml", strictConfig(s, "    password_command: /bin/echo pw\n    env_file: "+s.path("env"), ""), 0o644, 0)
		}, []string{`:5: repositories\.r\.env_file: TREE/env: may be read or written by its group and others \(mode 0666\); .*\(fix: chmod 600 TREE/env\)$`}},
		{"an env file that is a directory", func(s *strictTree) string {
			s.mkdir("env", 0o700, 0)
			return s.file("config.yaml", strictConfig(s, "    password_command: /bin/echo pw\n    env_file: "+s.path("env"), ""), 0o644, 0)
		}, []string{`:5: repositories\.r\.env_file: TREE/env: is a directory, not a regular file; `}},
		{"a hook in the user's directory, and an exclude file all may write", func(s *strictTree) string {
			s.mkdir("user", 0o755, nobody)
			s.file("user/hook", "#!/bin/sh\n", 0o755, nobody)
			s.file("exclude", "*.tmp\n", 0o646, 0)
			return s.file("config.yaml", strictConfig(s, "    password_command: /bin/echo pw",
				"    backup:\n      exclude_file: "+s.path("exclude")+"\n    hooks:\n      on_failure: [[\"/bin/true\"], [\""+s.path("user/hook")+"\", \"x\"]]"), 0o644, 0)
		}, []string{
			`(?m)^TREE/config\.yaml:10: plans\.home\.backup\.exclude_file: TREE/exclude: may be written by others \(mode 0646\); expected a file only root can change, .*\(fix: chmod go-w TREE/exclude\)$`,
			`(?m)^TREE/config\.yaml:12: plans\.home\.hooks\.on_failure\[1\]\[0\]: TREE/user/hook: the directory TREE/user is owned by uid 65534, .*\(fix: chown root: TREE/user, `,
			`(?m)^TREE/config\.yaml:12: plans\.home\.hooks\.on_failure\[1\]\[0\]: TREE/user/hook: owned by uid 65534, who could change it; expected a program only root can change`,
		}},
		{"a password command in the user's directory, quoted", func(s *strictTree) string {
			s.mkdir("user", 0o755, nobody)
			return s.file("config.yaml", strictConfig(s, `    password_command: "'`+s.path("user/my pass")+`' show"`, ""), 0o644, 0)
		}, []string{`:4: repositories\.r\.password_command: TREE/user/my pass: the directory TREE/user is owned by uid 65534`}},
		{"restic, state and cache directories and the repository others may write", func(s *strictTree) string {
			s.mkdir("state", 0o1777, 0)
			s.mkdir("cache", 0o755, nobody)
			s.mkdir("repo", 0o775, 0)
			return s.file("config.yaml", strings.Replace(strictConfig(s, "    password_command: /bin/echo pw", ""),
				"restic: /usr/bin/env", "restic: "+s.file("bin/restic", "#!/bin/sh\n", 0o755, nobody), 1), 0o644, 0)
		}, []string{
			`(?m)^TREE/config\.yaml:3: repositories\.r\.url: TREE/repo: may be written by its group \(mode 0775\); expected a directory only root can write`,
			`(?m)^TREE/config\.yaml:2: repositories\.r\.cache_dir: TREE/cache/r: the directory TREE/cache is owned by uid 65534`,
			`(?m)^TREE/config\.yaml:\d+: settings\.state_dir: TREE/state: may be written by its group and others \(mode 1777\)`,
			`(?m)^TREE/config\.yaml:\d+: settings\.cache_dir: TREE/cache: owned by uid 65534`,
			`(?m)^TREE/config\.yaml:\d+: settings\.restic: TREE/bin/restic: owned by uid 65534`,
		}},
		{"restic found in PATH, behind a directory all may write", func(s *strictTree) string {
			s.mkdir("open", 0o777, 0)
			s.file("bin/restic", "#!/bin/sh\n", 0o755, 0)
			s.t.Setenv("PATH", s.path("open")+":relative:"+s.path("bin")+":"+s.path("later"))
			return s.file("config.yaml", strings.Replace(strictConfig(s, "    password_command: /bin/echo pw", ""),
				"  restic: /usr/bin/env\n", "", 1), 0o644, 0)
		}, []string{`^TREE/config\.yaml: settings\.restic: TREE/open/restic: the directory TREE/open may be written by its group and others \(mode 0777\), who could replace what is in it; expected a program only root can change`}},
		{"root's ssh key, known_hosts and ssh configuration are accepted", func(s *strictTree) string {
			s.file("nas.key", "KEY\n", 0o600, 0)
			s.file("nas.known_hosts", "nas ssh-ed25519 AAAA\n", 0o644, 0)
			s.file("ssh_config", "Host nas\n", 0o644, 0)
			return s.file("config.yaml", sftpConfig(s, "      key: "+s.path("nas.key")+"\n      known_hosts: "+s.path("nas.known_hosts")+
				"\n      config_file: "+s.path("ssh_config")), 0o644, 0)
		}, nil},
		{"an ssh key others may read, a known_hosts its group may write, an ssh configuration of the user's", func(s *strictTree) string {
			s.file("nas.key", "KEY\n", 0o644, 0)
			s.file("nas.known_hosts", "nas ssh-ed25519 AAAA\n", 0o664, 0)
			s.file("ssh_config", "Host nas\n", 0o644, nobody)
			return s.file("config.yaml", sftpConfig(s, "      key: "+s.path("nas.key")+"\n      known_hosts: "+s.path("nas.known_hosts")+
				"\n      config_file: "+s.path("ssh_config")), 0o644, 0)
		}, []string{
			`(?m)^TREE/config\.yaml:6: repositories\.r\.ssh\.key: TREE/nas\.key: may be read by its group and others \(mode 0644\); expected a secret only root can read and change, .*\(fix: chmod 600 TREE/nas\.key\)$`,
			`(?m)^TREE/config\.yaml:7: repositories\.r\.ssh\.known_hosts: TREE/nas\.known_hosts: may be written by its group \(mode 0664\); expected a file only root can change, .*\(fix: chmod go-w TREE/nas\.known_hosts\)$`,
			`(?m)^TREE/config\.yaml:8: repositories\.r\.ssh\.config_file: TREE/ssh_config: owned by uid 65534, who could change it; .*\(fix: chown root: TREE/ssh_config\)$`,
		}},
		{"an ssh command in the user's directory", func(s *strictTree) string {
			s.mkdir("user", 0o755, nobody)
			return s.file("config.yaml", sftpConfig(s, "      command: \""+s.path("user/ssh")+" nas -s sftp\""), 0o644, 0)
		}, []string{`:6: repositories\.r\.ssh\.command: TREE/user/ssh: the directory TREE/user is owned by uid 65534`}},
		{"a textfile directory of another user's, below another user's, and a socket in root's directory are accepted", func(s *strictTree) string {
			s.mkdir("prometheus", 0o755, nobody)
			s.mkdir("prometheus/node-exporter", 0o755, nobody)
			s.mkdir("run", 0o755, 0)
			return s.file("config.yaml", strictConfig(s, "    password_command: /bin/echo pw", "")+
				"  metrics:\n    textfile: "+s.path("prometheus/node-exporter")+"\n    listen: unix:"+s.path("run/metrics.sock")+"\n", 0o644, 0)
		}, nil},
		{"a textfile directory that does not exist yet, and a sticky one", func(s *strictTree) string {
			s.mkdir("tmp", 0o1777, 0)
			return s.file("config.yaml", strictConfig(s, "    password_command: /bin/echo pw", "")+
				"  metrics:\n    textfile: "+s.path("none")+"\n", 0o644, 0) + "\x00" + s.file("config2.yaml", strictConfig(s, "    password_command: /bin/echo pw", "")+
				"  metrics:\n    textfile: "+s.path("tmp")+"\n", 0o644, 0)
		}, nil},
		{"a textfile directory all may write, a file as textfile directory, a socket in the user's directory", func(s *strictTree) string {
			s.mkdir("open", 0o777, 0)
			s.mkdir("user", 0o755, nobody)
			return s.file("config.yaml", strictConfig(s, "    password_command: /bin/echo pw", "")+
				"  metrics:\n    textfile: "+s.path("open")+"\n    listen: unix:"+s.path("user/metrics.sock")+"\n", 0o644, 0) + "\x00" +
				s.file("config2.yaml", strictConfig(s, "    password_command: /bin/echo pw", "")+
					"  metrics:\n    textfile: "+s.file("file.prom", "", 0o644, 0)+"\n", 0o644, 0)
		}, []string{
			`(?m)^TREE/config\.yaml:\d+: settings\.metrics\.textfile: TREE/open: may be written by its group and others \(mode 0777\), who could replace subvault's metrics with their own; expected a directory others may not write, or only with the sticky bit \(chmod \+t\) \(fix: chmod go-w TREE/open \(node_exporter only reads it\), or chmod \+t TREE/open\)$`,
			`(?m)^TREE/config\.yaml:\d+: settings\.metrics\.listen: TREE/user: owned by uid 65534, who could change it; expected a directory only root can write`,
			`(?m)^TREE/config2\.yaml:\d+: settings\.metrics\.textfile: TREE/file\.prom: is a regular file, not a directory`,
		}},
		{"a loop of links", func(s *strictTree) string {
			s.link("a", "b")
			s.link("b", "a")
			return s.file("config.yaml", strictConfig(s, "    password_file: "+s.path("a"), ""), 0o644, 0)
		}, []string{`:4: repositories\.r\.password_file: TREE/a: cannot be checked: open TREE/a: too many levels of symbolic links`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newStrictTree(t)
			// setup may lay out several configurations, their paths
			// separated by NUL: their problems are counted together.
			var all []string
			problems := 0
			for config := range strings.SplitSeq(c.setup(s), "\x00") {
				cfg, err := Load(config)
				t.Logf("Load: %v", err)
				if len(c.want) == 0 {
					if err != nil || cfg == nil {
						t.Errorf("refused: %v", err)
					}
					continue
				}
				var errs *Errors
				if !errors.As(err, &errs) {
					t.Fatalf("Load = %v, want *Errors", err)
				}
				all = append(all, err.Error())
				problems += len(errs.List)
			}
			if len(c.want) == 0 {
				return
			}
			text := strings.Join(all, "\n")
			for _, w := range c.want {
				if re := regexp.MustCompile(strings.ReplaceAll(w, "TREE", regexp.QuoteMeta(s.dir))); !re.MatchString(text) {
					t.Errorf("the error does not match %s:\n%v", re, text)
				}
			}
			if problems != len(c.want) {
				t.Errorf("%d problems, want %d:\n%v", problems, len(c.want), text)
			}
		})
	}
}

// TestStrictTrustsItsOwnUID: a daemon that runs as a user (a trial on the
// session bus) trusts that user's files as it trusts root's, and no other
// user's.
func TestStrictTrustsItsOwnUID(t *testing.T) {
	s := newStrictTree(t)
	s.mkdir("user", 0o755, nobody)
	own := s.file("user/config.yaml", strictConfig(s, "    password_file: "+s.file("user/pass", "pw\n", 0o600, nobody), ""), 0o644, nobody)
	if out, err := testutil.RunHostile(t, time.Minute, "load", own); err != nil {
		t.Errorf("uid 65534 refused its own files: %v: %s", err, out)
	}
	s.mkdir("other", 0o755, 1)
	other := s.file("other/config.yaml", strictConfig(s, "    password_command: /bin/echo pw", ""), 0o644, 1)
	out, err := testutil.RunHostile(t, time.Minute, "load", other)
	if err == nil || !strings.Contains(out, "owned by uid 1, who could change it") {
		t.Errorf("uid 65534 accepted uid 1's configuration: %v: %s", err, out)
	}
	// Root's configuration, which only root may read: the message names it.
	secret := s.file("config.yaml", strictConfig(s, "    password_command: /bin/echo pw", ""), 0o600, 0)
	out, err = testutil.RunHostile(t, time.Minute, "load", secret)
	if want := "cannot read configuration file: open " + secret + ": permission denied"; err == nil || !strings.Contains(out, want) {
		t.Errorf("uid 65534 loading root's 0600 configuration: %v: %s; want %q", err, out, want)
	}
}

func TestFirstWord(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/usr/bin/pass show restic":    "/usr/bin/pass",
		"  pass show":                  "pass",
		`"/opt/my tools/pw" --get`:     "/opt/my tools/pw",
		`'/opt/it"s/pw'`:               `/opt/it"s/pw`,
		`/opt/my\ tools/pw x`:          "/opt/my tools/pw",
		"/bin/pw":                      "/bin/pw",
		`"/a"'/b' c`:                   "/a/b",
		"":                             "",
		"pass\tshow":                   "pass",
		`/usr/bin/env FOO="a b" prog`:  "/usr/bin/env",
		`"/unterminated quote/pw show`: "/unterminated quote/pw show",
	} {
		if got := firstWord(in); got != want {
			t.Errorf("firstWord(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLocalRepository(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]string{
		"/srv/restic":           "/srv/restic",
		"local:/srv/restic/":    "/srv/restic",
		"sftp:u@h:/srv/restic":  "",
		"rest:https://h/":       "",
		"s3:s3.amazonaws.com/b": "",
		"relative/repo":         "",
	} {
		got, ok := localRepository(url)
		if got != want || ok != (want != "") {
			t.Errorf("localRepository(%q) = %q, %v; want %q", url, got, ok, want)
		}
	}
}

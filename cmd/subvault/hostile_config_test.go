package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/subvault/subvault/internal/testutil"
)

func init() {
	// write-file PATH MODE CONTENT: what a user writes into a file it may
	// write (its own, or one left writable to all), with the mode it likes.
	testutil.RegisterHostile("write-file", func(args []string) error {
		mode, err := strconv.ParseUint(args[1], 8, 32)
		if err != nil {
			return err
		}
		// A file of its own gets the mode; another's keeps the one it has.
		_, err = os.Lstat(args[0])
		mine := os.IsNotExist(err)
		if err := os.WriteFile(args[0], []byte(args[2]), os.FileMode(mode)); err != nil {
			return err
		}
		if mine {
			return os.Chmod(args[0], os.FileMode(mode))
		}
		return nil
	})
	// read-file PATH: prints a file the user may read.
	testutil.RegisterHostile("read-file", func(args []string) error {
		data, err := os.ReadFile(args[0])
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(data)
		return err
	})
}

// userDir is a directory of uid 65534 beside root's files, as a user's home
// is.
func userDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(reachableDir(t), "user")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, testutil.NobodyUID, testutil.NobodyGID); err != nil {
		t.Fatal(err)
	}
	return dir
}

// reachableDir is a new directory of root's that other users may enter
// (t.TempDir makes the test's directory 0700).
func reachableDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// hookThatTells is a before_snapshot hook that writes the uid it ran as
// into ranFile.
func hookThatTells(ranFile string) string {
	return fmt.Sprintf("    hooks:\n      before_snapshot: [\"/bin/sh\", \"-c\", \"id -u > %s\"]\n", ranFile)
}

// withPlanLines adds lines to plan home of a configuration.
func withPlanLines(cfg, lines string) string {
	return strings.Replace(cfg, "    repository: r\n", "    repository: r\n"+lines, 1)
}

// TestHostileConfigFilesRefused (docs/security.md, attack 9): files that steer root
// (the configuration, a hook's program, a password_file, an env_file) that
// a user (uid 65534, a real process) wrote, may write, or may read are
// refused by check-config and by run backup, with the file and the chmod or
// chown that fixes it; the user's hook never runs as root.
func TestHostileConfigFilesRefused(t *testing.T) {
	testutil.RequireNobody(t)
	e := newRunEnv(t, 256)
	base, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	hostile := func(t *testing.T, name string, args ...string) string {
		t.Helper()
		out, err := testutil.RunHostile(t, time.Minute, name, args...)
		if err != nil {
			t.Fatalf("the user's %s %v: %v", name, args, err)
		}
		return out
	}
	// refused runs check-config and run backup on config: both must fail
	// and say want (regular expressions), and the hook must not have run.
	refused := func(t *testing.T, config, ranFile string, want ...string) {
		t.Helper()
		code, out, errOut := runCLI(t, "check-config", "--config", config)
		t.Logf("check-config: exit %d\n%s%s", code, out, errOut)
		if code != exitFailure {
			t.Errorf("check-config: exit %d, want %d (refused)", code, exitFailure)
		}
		for _, w := range want {
			if !regexp.MustCompile(w).MatchString(errOut) {
				t.Errorf("check-config's message lacks %s:\n%s", w, errOut)
			}
		}
		if ranFile == "" {
			return
		}
		code, _, errOut = runCLI(t, "run", "backup", "home", "--config", config)
		ran, _ := os.ReadFile(ranFile)
		t.Logf("run backup: exit %d; the user's hook wrote %q\n%s", code, ran, errOut)
		if code != exitFailure || len(ran) > 0 {
			t.Errorf("run backup: exit %d, the hook ran as uid %q; want exit %d and no hook", code, ran, exitFailure)
		}
	}

	t.Run("configuration the user wrote", func(t *testing.T) {
		dir := userDir(t)
		config, ran := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "ran")
		hostile(t, "write-file", config, "666", withPlanLines(string(base), hookThatTells(ran)))
		refused(t, config, ran, regexp.QuoteMeta(dir), `uid 65534`, regexp.QuoteMeta("chown root: "+dir))
	})
	t.Run("root's configuration, writable by all", func(t *testing.T) {
		dir := reachableDir(t)
		config, ran := filepath.Join(dir, "config.yaml"), filepath.Join(userDir(t), "ran")
		testutil.WriteFile(t, config, string(base))
		if err := os.Chmod(config, 0o666); err != nil {
			t.Fatal(err)
		}
		hostile(t, "write-file", config, "666", withPlanLines(string(base), hookThatTells(ran)))
		refused(t, config, ran, regexp.QuoteMeta(config)+`: .*mode 0666`, regexp.QuoteMeta("chmod go-w "+config))
	})
	t.Run("hook program in the user's directory", func(t *testing.T) {
		dir := userDir(t)
		hook, ran := filepath.Join(dir, "hook"), filepath.Join(dir, "ran")
		hostile(t, "write-file", hook, "755", "#!/bin/sh\nid -u > "+ran+"\n")
		config := filepath.Join(t.TempDir(), "config.yaml")
		testutil.WriteFile(t, config, withPlanLines(string(base), "    hooks:\n      before_snapshot: [\""+hook+"\"]\n"))
		refused(t, config, ran, regexp.QuoteMeta(config)+`:\d+: plans\.home\.hooks\.before_snapshot\[0\]: `+regexp.QuoteMeta(hook),
			`uid 65534`, regexp.QuoteMeta("chown root: "+dir))
	})
	t.Run("password file others may read", func(t *testing.T) {
		password := filepath.Join(reachableDir(t), "password")
		secret, _ := os.ReadFile(e.password)
		testutil.WriteFile(t, password, string(secret))
		t.Logf("the user read %q from the password file", hostile(t, "read-file", password))
		config := filepath.Join(t.TempDir(), "config.yaml")
		testutil.WriteFile(t, config, strings.Replace(string(base), e.password, password, 1))
		refused(t, config, "", `:\d+: repositories\.r\.password_file: `+regexp.QuoteMeta(password)+`.*mode 0644`, regexp.QuoteMeta("chmod 600 "+password))
	})
	t.Run("env file others may write", func(t *testing.T) {
		env := filepath.Join(reachableDir(t), "backend.env")
		testutil.WriteFile(t, env, "# no keys yet\n")
		if err := os.Chmod(env, 0o666); err != nil {
			t.Fatal(err)
		}
		hostile(t, "write-file", env, "666", "TMPDIR=/nonexistent\n")
		config := filepath.Join(t.TempDir(), "config.yaml")
		testutil.WriteFile(t, config, strings.Replace(string(base), "    password_file:", "    env_file: "+env+"\n    password_file:", 1))
		refused(t, config, "", `:\d+: repositories\.r\.env_file: `+regexp.QuoteMeta(env)+`.*mode 0666`, regexp.QuoteMeta("chmod 600 "+env))
	})
}

// TestHostileConfigRefusedByTheDaemon (docs/security.md, attack 9): the daemon does
// not start on a configuration whose password_file others may read, and a
// reload that names a hook in a user's directory is refused (the
// configuration in force stays, and a backup runs no hook of the user's).
func TestHostileConfigRefusedByTheDaemon(t *testing.T) {
	testutil.RequireNobody(t)
	e := &daemonEnv{runEnv: newRunEnv(t, 256), bus: testutil.NewBus(t), notify: newNotifySocket(t)}
	e.state = filepath.Dir(e.config)
	base, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}

	if err := os.Chmod(e.password, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd, log := e.start(t)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		t.Logf("the daemon on a password_file of mode 0644: %v\n%s", err, log)
		if err == nil || !strings.Contains(log.String(), e.password) || !strings.Contains(log.String(), "chmod 600 "+e.password) {
			t.Errorf("the daemon's exit (%v) and message do not name the password file and its chmod:\n%s", err, log)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the daemon started on a password_file of mode 0644:\n%s", log)
		_ = cmd.Process.Kill()
		<-exited
	}

	if err := os.Chmod(e.password, 0o600); err != nil {
		t.Fatal(err)
	}
	from := len(e.notify.messages())
	cmd, log = e.start(t)
	e.notify.waitFor(t, from, 30*time.Second, "READY=1", func(m string) bool { return m == "READY=1" })
	dir := userDir(t)
	hook, ran := filepath.Join(dir, "hook"), filepath.Join(dir, "ran")
	if out, err := testutil.RunHostile(t, time.Minute, "write-file", hook, "755", "#!/bin/sh\nid -u > "+ran+"\n"); err != nil {
		t.Fatalf("the user's hook: %v: %s", err, out)
	}
	testutil.WriteFile(t, e.config, withPlanLines(string(base), "    hooks:\n      before_snapshot: [\""+hook+"\"]\n"))
	cli := func(args ...string) (int, string, string) {
		return runCmd(t, subvaultCmd(append(args, "--bus", e.bus.Address)...))
	}
	code, out, errOut := cli("reload")
	t.Logf("reload with the user's hook: exit %d\n%s%s", code, out, errOut)
	if code != exitFailure || !regexp.MustCompile(regexp.QuoteMeta(e.config)+`:\d+: plans\.home\.hooks\.before_snapshot\[0\]: `+regexp.QuoteMeta(hook)).MatchString(errOut) ||
		!strings.Contains(errOut, "chown root: "+dir) {
		t.Errorf("reload: exit %d, want %d with the hook's file, line and the chown that fixes it:\n%s", code, exitFailure, errOut)
	}
	code, out, errOut = cli("backup", "home", "--wait")
	got, _ := os.ReadFile(ran)
	t.Logf("backup after the reload: exit %d, the user's hook wrote %q\n%s%s", code, got, out, errOut)
	if code != exitOK || len(got) > 0 {
		t.Errorf("backup after the refused reload: exit %d, the user's hook ran as uid %q; want exit 0 and no hook", code, got)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	if t.Failed() {
		t.Logf("daemon log:\n%s", log)
	}
}

package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The servers' smoke tests: plain restic, each version, against each
// server: init, a backup, snapshots; and what each server is there to
// refuse. They prove the servers the feature tests use.

// resticRun is one restic command against a repository, with the password
// from a file and the secrets in env, never in argv.
type resticRun struct {
	bin, repo, passwordFile, cacheDir, home string
	env                                     []string // more, e.g. AWS_*
	opts                                    []string // global options, e.g. -o sftp.command=...
}

func newResticRun(t *testing.T, bin, repo string) *resticRun {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	WriteSecret(t, pw, ResticPassword+"\n")
	return &resticRun{bin: bin, repo: repo, passwordFile: pw, cacheDir: filepath.Join(dir, "cache"), home: dir}
}

// run runs restic with args and returns its combined output and error,
// logging how long it took.
func (r *resticRun) run(t *testing.T, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	argv := append(append([]string{}, r.opts...), args...)
	cmd := exec.Command(r.bin, argv...)
	cmd.Env = r.environ()
	out := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("restic %s still running after %s, killed:\n%s", args[0], timeout, out.String())
	}
	t.Logf("restic %s: %s (%v)", args[0], time.Since(start).Round(time.Millisecond), err)
	return out.String(), err
}

// runBounded is run, but a restic still running after limit is killed and
// reported with timedOut instead of failing the test.
func (r *resticRun) runBounded(t *testing.T, limit time.Duration, args ...string) (out string, err error, timedOut bool) {
	t.Helper()
	argv := append(append([]string{}, r.opts...), args...)
	cmd := exec.Command(r.bin, argv...)
	cmd.Env = r.environ()
	buf := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = buf, buf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		<-done
		timedOut = true
	}
	t.Logf("restic %s: %s (%v, killed after the limit: %v)", args[0], time.Since(start).Round(time.Millisecond), err, timedOut)
	return buf.String(), err, timedOut
}

func (r *resticRun) environ() []string {
	return append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + r.home,
		"RESTIC_REPOSITORY=" + r.repo,
		"RESTIC_PASSWORD_FILE=" + r.passwordFile,
		"RESTIC_CACHE_DIR=" + r.cacheDir,
	}, r.env...)
}

func (r *resticRun) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := r.run(t, 2*time.Minute, args...)
	if err != nil {
		t.Fatalf("restic %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// smokeBackup runs init, a backup of a small tree and snapshots, and
// checks the archive is listed.
func smokeBackup(t *testing.T, r *resticRun) {
	t.Helper()
	src := t.TempDir()
	WriteFile(t, filepath.Join(src, "a.txt"), "hello from subvault's server smoke test\n")
	WriteFile(t, filepath.Join(src, "sub", "b.bin"), strings.Repeat("0123456789abcdef", 64<<10))
	r.must(t, "init")
	r.must(t, "backup", "--tag", "smoke", src)
	out := r.must(t, "snapshots", "--json")
	if !strings.Contains(out, `"smoke"`) || !strings.Contains(out, src) {
		t.Fatalf("restic snapshots does not list the archive of %s:\n%s", src, out)
	}
}

func TestSFTPServerSmoke(t *testing.T) {
	s := NewSFTPServer(t)
	ForEachRestic(t, func(t *testing.T, bin string) {
		name := ResticName(bin)
		r := newResticRun(t, bin, s.Repository(name))
		r.opts = s.Options()
		smokeBackup(t, r)
		// The URL form with the port names the same repository.
		u := newResticRun(t, bin, s.URL(name))
		u.opts = s.Options()
		u.passwordFile = r.passwordFile
		if out := u.must(t, "snapshots"); !strings.Contains(out, "1 snapshots") {
			t.Errorf("restic snapshots via %s: want 1 snapshot:\n%s", s.URL(name), out)
		}

		for _, c := range []struct {
			what, key, knownHosts, sshSays string
		}{
			{"the wrong key", s.WrongKeyFile, s.KnownHostsFile, "Permission denied (publickey)"},
			{"an unknown host key", s.KeyFile, s.EmptyKnownHostsFile, "Host key verification failed"},
		} {
			command := s.Command(c.key, c.knownHosts)
			bad := newResticRun(t, bin, s.Repository(name))
			bad.passwordFile = r.passwordFile
			bad.opts = []string{"-o", "sftp.command=" + command}
			out, err := bad.run(t, time.Minute, "snapshots")
			if err == nil {
				t.Errorf("restic with %s succeeded:\n%s", c.what, out)
			}
			// restic passes on ssh's own line only sometimes (it may exit
			// before it has copied ssh's stderr): the line is checked on ssh.
			t.Logf("restic with %s said (ssh's %q in it: %v):\n%s", c.what, c.sshSays, strings.Contains(out, c.sshSays), out)
			ssh := exec.Command("sh", "-c", command+" </dev/null")
			sshOut, err := ssh.CombinedOutput()
			if err == nil || !strings.Contains(string(sshOut), c.sshSays) {
				t.Errorf("%s with %s: want a failure saying %q, got %v:\n%s", command, c.what, c.sshSays, err, sshOut)
			}
		}
	})
}

func TestRESTServerSmoke(t *testing.T) {
	plain := NewRESTServer(t, RESTOptions{})
	auth := NewRESTServer(t, RESTOptions{Auth: true})
	appendOnly := NewRESTServer(t, RESTOptions{AppendOnly: true})
	ForEachRestic(t, func(t *testing.T, bin string) {
		name := ResticName(bin)
		t.Run("plain", func(t *testing.T) {
			smokeBackup(t, newResticRun(t, bin, plain.Repository(name)))
			missing := newResticRun(t, bin, plain.Repository(name+"-never-made"))
			out, err := missing.run(t, 3*time.Minute, "snapshots")
			if err == nil {
				t.Errorf("restic snapshots of a repository never made succeeded:\n%s", out)
			}
			t.Logf("restic on a missing repository (404) said:\n%s", out)
		})
		t.Run("auth", func(t *testing.T) {
			r := newResticRun(t, bin, auth.RepositoryWithCredentials(name))
			smokeBackup(t, r)
			for _, repo := range []string{auth.Repository(name), auth.RepositoryAs(name, auth.User, "wrong-password")} {
				bad := newResticRun(t, bin, repo)
				bad.passwordFile = r.passwordFile
				out, err := bad.run(t, 3*time.Minute, "snapshots")
				if err == nil {
					t.Errorf("restic snapshots with wrong credentials succeeded:\n%s", out)
				}
				t.Logf("restic with wrong credentials said:\n%s", out)
			}
		})
		t.Run("append-only", func(t *testing.T) {
			r := newResticRun(t, bin, appendOnly.Repository(name))
			smokeBackup(t, r)
			snaps, _ := filepath.Glob(filepath.Join(appendOnly.RepositoryDir(name), "snapshots", "*"))
			if len(snaps) != 1 {
				t.Fatalf("want 1 archive in %s, got %v", appendOnly.RepositoryDir(name), snaps)
			}
			out, err := r.run(t, 3*time.Minute, "forget", "--prune", filepath.Base(snaps[0]))
			t.Logf("restic forget --prune on the append-only server: %v\n%s", err, out)
			if after, _ := filepath.Glob(filepath.Join(appendOnly.RepositoryDir(name), "snapshots", "*")); len(after) != 1 {
				t.Errorf("the append-only server let restic forget the archive: %v", after)
			}
		})
	})
}

// TestWeedVersionMatchesCI: the SeaweedFS the tests look for is the one
// .ci/weed builds.
func TestWeedVersionMatchesCI(t *testing.T) {
	script, err := os.ReadFile("../../.ci/weed")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(script), "\nversion="+WeedVersion+"\n") {
		t.Errorf(".ci/weed does not build WeedVersion %s: make its version= line the same", WeedVersion)
	}
}

func TestS3ServerSmoke(t *testing.T) {
	s := NewS3Server(t)
	ForEachRestic(t, func(t *testing.T, bin string) {
		name := ResticName(bin)
		r := newResticRun(t, bin, s.Repository(name))
		r.env = s.Env()
		smokeBackup(t, r)
		bad := newResticRun(t, bin, s.Repository(name))
		bad.passwordFile = r.passwordFile
		bad.env = []string{"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=wrong-secret"}
		// restic 0.18 retries the refusal (403 SignatureDoesNotMatch) for
		// up to 15 minutes: it is stopped after 20 s.
		out, err, timedOut := bad.runBounded(t, 20*time.Second, "snapshots")
		if (err == nil && !timedOut) || !strings.Contains(out, "signature") {
			t.Errorf("restic snapshots with a wrong S3 secret: want the server's refusal (signature), got %v:\n%s", err, out)
		}
		t.Logf("restic with a wrong S3 secret said:\n%s", out)
	})
}

// TestServersStopKill freezes and kills each server under plain restic,
// each version: while the server is frozen or dead restic does not
// succeed (it fails, or still retries when stopped after 15 s: logged,
// with how long it took); after Cont or Restart the repository is there.
func TestServersStopKill(t *testing.T) {
	type backend struct {
		name  string
		start func(t *testing.T) (*Server, func(r *resticRun))
	}
	backends := []backend{
		{"sftp", func(t *testing.T) (*Server, func(r *resticRun)) {
			s := NewSFTPServer(t)
			return s.Server, func(r *resticRun) { r.repo = s.Repository(ResticName(r.bin)); r.opts = s.Options() }
		}},
		{"rest", func(t *testing.T) (*Server, func(r *resticRun)) {
			s := NewRESTServer(t, RESTOptions{})
			return s.Server, func(r *resticRun) { r.repo = s.Repository(ResticName(r.bin)) }
		}},
		{"s3", func(t *testing.T) (*Server, func(r *resticRun)) {
			var s *S3Server
			// Registered first, so it runs after the server's cleanups.
			t.Cleanup(func() {
				if s == nil {
					return // skipped
				}
				for _, p := range s.sockets {
					if _, err := os.Lstat(p); err == nil {
						t.Errorf("weed's socket %s is left after the test", p)
					}
				}
			})
			s = NewS3Server(t)
			t.Logf("weed's gRPC sockets: %v", s.sockets)
			return s.Server, func(r *resticRun) { r.repo = s.Repository(ResticName(r.bin)); r.env = s.Env() }
		}},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			srv, setup := b.start(t)
			ForEachRestic(t, func(t *testing.T, bin string) {
				r := newResticRun(t, bin, "")
				setup(r)
				r.must(t, "init")
				for _, c := range []struct {
					what       string
					down, back func()
				}{
					{"stopped (SIGSTOP)", srv.Stop, srv.Cont},
					{"killed", srv.Kill, srv.Restart},
				} {
					c.down()
					out, err, timedOut := r.runBounded(t, 5*time.Second, "snapshots")
					if err == nil && !timedOut {
						t.Errorf("restic snapshots succeeded against a %s server:\n%s", c.what, out)
					}
					t.Logf("restic snapshots against the %s %s server (still running after 5 s: %v):\n%s", c.what, b.name, timedOut, out)
					c.back()
					r.must(t, "snapshots")
				}
			})
		})
	}
}

package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/internal/testutil"
	"github.com/subvault/subvault/restic"
)

// failBound is the generous bound on a backup against a server
// that refuses it or is not there: restic 0.18 alone retries for 15 minutes.
const failBound = 60 * time.Second

// resticInit creates a repository with plain restic, as its owner would.
func resticInit(t *testing.T, bin, url, password string, env []string, opts ...string) {
	t.Helper()
	if out, err := plainRestic(t, bin, url, password, env, append(opts, "init")...); err != nil {
		t.Fatalf("restic init %s: %v\n%s", restic.RedactURL(url), err, out)
	}
}

// plainRestic runs restic on url as its owner would, and returns its output.
func plainRestic(t *testing.T, bin, url, password string, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "RESTIC_REPOSITORY="+url, "RESTIC_PASSWORD_FILE="+password, "RESTIC_CACHE_DIR="+t.TempDir()), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// tree lists the files under dir with their sizes and times: a repository
// nobody touched lists the same.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		lines = append(lines, fmt.Sprintf("%s %d %d", p, fi.Size(), fi.ModTime().UnixNano()))
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestRemoteFailuresSayWhatToDo: against real servers on loopback, with
// both restic versions, each way a remote repository can refuse a backup
// ends the job in seconds with its own one-line error (the job's Error, as
// `subvault jobs` shows it) that names the host and what to do, and a
// repository that refused the credentials is never initialized, init: true
// or not.
func TestRemoteFailuresSayWhatToDo(t *testing.T) {
	testutil.RequireRoot(t)
	rest := testutil.NewRESTServer(t, testutil.RESTOptions{})
	auth := testutil.NewRESTServer(t, testutil.RESTOptions{Auth: true})
	sftp := testutil.NewSFTPServer(t)
	s3 := testutil.NewS3Server(t)
	envFile := func(t *testing.T, env []string) string {
		p := filepath.Join(t.TempDir(), "s3.env")
		testutil.WriteSecret(t, p, strings.Join(env, "\n")+"\n")
		return p
	}
	s3Right := envFile(t, s3.Env())
	s3WrongKey := envFile(t, []string{"AWS_ACCESS_KEY_ID=NOSUCHKEY", "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey})
	s3WrongSecret := envFile(t, []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=wrong-secret-5"})
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		name := testutil.ResticName(bin)
		e := newEnv(t, bin, 256, []string{"home"}, "")
		testutil.WriteFile(t, e.fs.Path("home", "f"), "x")
		wrongPassword := filepath.Join(t.TempDir(), "wrong.pass")
		testutil.WriteSecret(t, wrongPassword, "not the password\n")

		resticInit(t, bin, rest.Repository("r-"+name), e.password, nil)
		resticInit(t, bin, auth.RepositoryWithCredentials("r-"+name), e.password, nil)
		resticInit(t, bin, sftp.Repository("r-"+name), e.password, nil, sftp.Options()...)
		resticInit(t, bin, s3.Repository("r-"+name), e.password, s3.Env())
		// What the server's owner sees of an S3 repository: its config, or
		// restic's word that there is none.
		s3Config := func(repo string) func(t *testing.T) string {
			return func(t *testing.T) string {
				out, err := plainRestic(t, bin, repo, e.password, s3.Env(), "cat", "config")
				return fmt.Sprintf("%v: %s", err != nil, out)
			}
		}
		dirTree := func(dir string) func(t *testing.T) string {
			return func(t *testing.T) string { return tree(t, dir) }
		}
		s3Host := fmt.Sprintf("127.0.0.1:%d", s3.Port)
		closed := testutil.FreePort(t)
		sftpWith := func(command string) string {
			return "    backup:\n      extra_args: [\"-o\", \"sftp.command=" + command + "\"]"
		}
		wrongPortCommand := strings.Replace(sftp.SSHCommand, "-p "+strconv.Itoa(sftp.Port), "-p "+strconv.Itoa(closed), 1)
		restHost := fmt.Sprintf("127.0.0.1:%d", auth.Port)
		sftpHost := fmt.Sprintf("127.0.0.1:%d", sftp.Port)

		cases := []struct {
			name      string
			url       string
			password  string
			envFile   string
			init      bool
			planExtra string
			kind      error
			want      []string
			untouched func(t *testing.T) string // what the job must leave as it was (or absent)
		}{
			{name: "rest wrong port", url: fmt.Sprintf("rest:http://127.0.0.1:%d/r/", closed), kind: restic.ErrUnreachable,
				want: []string{fmt.Sprintf("is unreachable: cannot connect to 127.0.0.1:%d", closed), "connection refused"}},
			{name: "rest wrong password", url: rest.Repository("r-" + name), password: wrongPassword, kind: restic.ErrWrongPassword,
				want: []string{"wrong password", "wrong.pass"}},
			{name: "rest wrong credentials, init true", url: auth.RepositoryAs("r-"+name, auth.User, "wrong-secret-5"), init: true, kind: restic.ErrCredentials,
				want:      []string{"the server " + restHost + " refused the credentials (HTTP 401", "check the user and password in the url"},
				untouched: dirTree(auth.RepositoryDir("r-" + name))},
			{name: "rest wrong credentials, new repository, init true", url: auth.RepositoryAs("new-"+name, auth.User, "wrong-secret-5"), init: true, kind: restic.ErrCredentials,
				want:      []string{"the server " + restHost + " refused the credentials (HTTP 401"},
				untouched: dirTree(auth.RepositoryDir("new-" + name))},
			{name: "rest no credentials", url: auth.Repository("r-" + name), kind: restic.ErrCredentials,
				want: []string{"refused the credentials (HTTP 401"}},
			{name: "s3 wrong port", url: fmt.Sprintf("s3:http://127.0.0.1:%d/bucket/r", closed), envFile: s3Right, kind: restic.ErrUnreachable,
				want: []string{fmt.Sprintf("is unreachable: cannot connect to 127.0.0.1:%d", closed), "connection refused"}},
			{name: "s3 wrong password", url: s3.Repository("r-" + name), envFile: s3Right, password: wrongPassword, kind: restic.ErrWrongPassword,
				want: []string{"wrong password", "wrong.pass"}},
			{name: "s3 wrong key id, init true", url: s3.Repository("r-" + name), envFile: s3WrongKey, init: true, kind: restic.ErrCredentials,
				want:      []string{"the server " + s3Host + " refused the S3 credentials (InvalidAccessKeyId)", "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in env_file " + s3WrongKey},
				untouched: s3Config(s3.Repository("r-" + name))},
			{name: "s3 wrong secret, new repository, init true", url: s3.Repository("new-" + name), envFile: s3WrongSecret, init: true, kind: restic.ErrCredentials,
				want:      []string{"the server " + s3Host + " refused the S3 credentials (SignatureDoesNotMatch)"},
				untouched: s3Config(s3.Repository("new-" + name))},
			{name: "sftp wrong key", url: sftp.Repository("r-" + name), planExtra: sftpWith(sftp.Command(sftp.WrongKeyFile, sftp.KnownHostsFile)), kind: restic.ErrCredentials,
				want: []string{"the server " + sftpHost + " refused the ssh key " + sftp.WrongKeyFile + " (Permission denied (publickey)): add its public key (" + sftp.WrongKeyFile + ".pub) to ~" + sftp.User + "/.ssh/authorized_keys on 127.0.0.1"}},
			{name: "sftp unknown host key", url: sftp.Repository("r-" + name), planExtra: sftpWith(sftp.Command(sftp.KeyFile, sftp.EmptyKnownHostsFile)), kind: restic.ErrHostKey,
				want: []string{fmt.Sprintf("unknown host key for [127.0.0.1]:%d: add it to %s (ssh-keyscan -p %d 127.0.0.1)", sftp.Port, sftp.EmptyKnownHostsFile, sftp.Port)}},
			{name: "sftp wrong port", url: sftp.Repository("r-" + name), planExtra: sftpWith(wrongPortCommand), kind: restic.ErrUnreachable,
				want: []string{fmt.Sprintf("is unreachable: cannot connect to 127.0.0.1:%d", closed), "Connection refused"}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				pw := c.password
				if pw == "" {
					pw = e.password
				}
				repoYAML := fmt.Sprintf("url: %s\n    password_file: %s", c.url, pw)
				if c.init {
					repoYAML += "\n    init: true"
				}
				if c.envFile != "" {
					repoYAML += "\n    env_file: " + c.envFile
				}
				e.configure(t, repoYAML, []string{e.fs.Path("home")}, c.planExtra)
				before := ""
				if c.untouched != nil {
					before = c.untouched(t)
				}
				e.logs.Reset()
				start := time.Now()
				res, err := e.job(1).Run(context.Background())
				took := time.Since(start)
				t.Logf("restic %s, %s: %s after %s: %v", testutil.ResticVersion(bin), c.name, res.Result, took.Round(10*time.Millisecond), err)
				if err == nil || res.Result != ResultFailed {
					t.Fatalf("result %q, err %v; want failed", res.Result, err)
				}
				if !errors.Is(err, c.kind) {
					t.Errorf("error %v is not %v", err, c.kind)
				}
				for _, w := range c.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "wrong-secret-5") {
					t.Errorf("error %q: not one line, or holds the password", err)
				}
				if !errors.Is(c.kind, restic.ErrWrongPassword) && (restic.IsNoRepository(err) || strings.Contains(err.Error(), "restic init")) {
					t.Errorf("error %q reads as a missing repository", err)
				}
				if took > failBound {
					t.Errorf("the job took %s, want under %s", took, failBound)
				}
				if strings.Contains(e.logs.String(), "creating repository") {
					t.Errorf("the job ran restic init:\n%s", e.logs)
				}
				if c.untouched != nil {
					if after := c.untouched(t); after != before {
						t.Errorf("the server's repository changed:\nbefore:\n%s\nafter:\n%s", before, after)
					}
				}
				noSnapshotsLeft(t, e.fs.Path("home", planstore.DefaultSnapshotDirName))
			})
		}
	})
}

// TestServerKilledMidBackup: the repository's server killed while restic
// uploads. sftp ends the job at once (ssh exits); restic retries REST and S3
// for minutes (restic 0.14 too, once the repository is open), so the job is canceled (what the plan's stall timeout does) and
// its error says the connection to the host was lost. No snapshot is left.
func TestServerKilledMidBackup(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		name := testutil.ResticName(bin)
		for _, backend := range []string{"sftp", "rest", "s3"} {
			t.Run(backend, func(t *testing.T) {
				e := newEnv(t, bin, 512, []string{"home"}, "")
				writeFiles(t, e.fs.Path("home"), 48, 1<<20)
				var url, host, planExtra, repoExtra string
				var kill func()
				switch backend {
				case "sftp":
					s := testutil.NewSFTPServer(t)
					url, host, kill = s.Repository("r-"+name), fmt.Sprintf("127.0.0.1:%d", s.Port), s.Kill
					resticInit(t, bin, url, e.password, nil, s.Options()...)
					planExtra = "    backup:\n      extra_args: [\"--limit-upload\", \"2048\", \"-o\", \"sftp.command=" + s.SSHCommand + "\"]"
				case "rest":
					s := testutil.NewRESTServer(t, testutil.RESTOptions{})
					url, host, kill = s.Repository("r-"+name), fmt.Sprintf("127.0.0.1:%d", s.Port), s.Kill
					resticInit(t, bin, url, e.password, nil)
					planExtra = "    backup:\n      extra_args: [\"--limit-upload\", \"2048\"]"
				case "s3":
					s := testutil.NewS3Server(t)
					url, host, kill = s.Repository("r-"+name), fmt.Sprintf("127.0.0.1:%d", s.Port), s.Kill
					resticInit(t, bin, url, e.password, s.Env())
					env := filepath.Join(t.TempDir(), "s3.env")
					testutil.WriteSecret(t, env, strings.Join(s.Env(), "\n")+"\n")
					repoExtra = "\n    env_file: " + env
					planExtra = "    backup:\n      extra_args: [\"--limit-upload\", \"2048\"]"
				}
				e.configure(t, fmt.Sprintf("url: %s\n    password_file: %s", url, e.password)+repoExtra, []string{e.fs.Path("home")}, planExtra)
				var uploaded atomic.Uint64
				j := e.job(1)
				j.OnStatus = func(s restic.BackupStatus) { uploaded.Store(s.BytesDone) }
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				type ended struct {
					res Result
					err error
				}
				done := make(chan ended, 1)
				go func() { r, err := j.Run(ctx); done <- ended{r, err} }()
				deadline := time.Now().Add(time.Minute)
				for uploaded.Load() < 4<<20 && time.Now().Before(deadline) {
					time.Sleep(100 * time.Millisecond)
				}
				if uploaded.Load() == 0 {
					t.Fatalf("restic uploaded nothing in a minute:\n%s", e.logs)
				}
				kill()
				killed := time.Now()
				var got ended
				select {
				case got = <-done:
				case <-time.After(10 * time.Second):
					// restic retries: end the job as the stall timeout would.
					t.Logf("restic %s still retrying 10 s after the %s server was killed: canceling the job", testutil.ResticVersion(bin), backend)
					cancel()
					select {
					case got = <-done:
					case <-time.After(2 * failBound):
						t.Fatalf("the job did not end within %s of its cancel", 2*failBound)
					}
				}
				t.Logf("restic %s, %s server killed mid-backup: %s %s later: %v", testutil.ResticVersion(bin), backend, got.res.Result, time.Since(killed).Round(10*time.Millisecond), got.err)
				if got.err == nil || got.res.ArchiveID != "" {
					t.Fatalf("result %+v, err %v: want no archive and an error", got.res, got.err)
				}
				if !errors.Is(got.err, restic.ErrConnectionLost) {
					t.Errorf("error %v is not a lost connection", got.err)
				}
				if !strings.Contains(got.err.Error(), host) {
					t.Errorf("error %q does not name %s", got.err, host)
				}
				noSnapshotsLeft(t, e.fs.Path("home", planstore.DefaultSnapshotDirName))
			})
		}
	})
}

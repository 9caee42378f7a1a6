package restic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/internal/testutil"
)

// unreachableBound is the generous bound on an unreachable
// repository ending a command: restic 0.17+ alone retries for 15 minutes.
const unreachableBound = 60 * time.Second

// TestUnreachableRepositoryEndsInSeconds: a REST or S3 repository on a port
// nothing listens on ends every kind of command (every job kind's: backup,
// prune, check, restore; and the lock check after a cancel) in seconds with both restic
// versions (0.18 alone retries for 15 minutes), as ErrUnreachable naming the
// host, never as a missing repository.
func TestUnreachableRepositoryEndsInSeconds(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		pw := filepath.Join(t.TempDir(), "pw")
		testutil.WriteSecret(t, pw, testutil.ResticPassword+"\n")
		env := filepath.Join(t.TempDir(), "s3.env")
		testutil.WriteSecret(t, env, "AWS_ACCESS_KEY_ID=subvault\nAWS_SECRET_ACCESS_KEY=subvault-secret\n")
		tree := smallTree(t, 2, 0)
		for _, backend := range []string{"rest", "s3"} {
			port := testutil.FreePort(t)
			host := fmt.Sprintf("127.0.0.1:%d", port)
			url := "rest:http://u:url-secret-7@" + host + "/r"
			if backend == "s3" {
				url = "s3:http://" + host + "/bucket"
			}
			logs := &testutil.SyncBuffer{}
			r := &Runner{Binary: bin, Repo: Repository{URL: url, PasswordFile: pw, EnvFile: env, CacheDir: filepath.Join(t.TempDir(), "cache")},
				Logger: slog.New(slog.NewTextHandler(logs, nil)), Grace: 10 * time.Second}
			for _, c := range []struct {
				op  string
				run func(ctx context.Context) error
			}{
				{"backup", func(ctx context.Context) error {
					_, err := r.Backup(ctx, BackupOptions{Paths: []string{tree}}, nil)
					return err
				}},
				{"snapshots", func(ctx context.Context) error { _, err := r.Snapshots(ctx, SnapshotFilter{}); return err }},
				{"check", func(ctx context.Context) error { return r.Check(ctx, "") }},
				{"forget --prune", func(ctx context.Context) error {
					_, err := r.Forget(ctx, ForgetOptions{KeepLast: 1, Prune: true})
					return err
				}},
				{"restore", func(ctx context.Context) error {
					return r.Restore(ctx, RestoreOptions{ArchiveID: "latest", Target: t.TempDir()}, nil)
				}},
				{"list locks", func(ctx context.Context) error { _, err := r.Locks(ctx); return err }},
			} {
				t.Run(backend+"/"+c.op, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), 3*unreachableBound)
					defer cancel()
					start := time.Now()
					err := c.run(ctx)
					took := time.Since(start)
					t.Logf("restic %s, %s %s against a closed port: %s: %v", testutil.ResticVersion(bin), backend, c.op, took.Round(10*time.Millisecond), err)
					var e *Error
					if !errors.As(err, &e) || !errors.Is(err, ErrUnreachable) || errors.Is(err, ErrInterrupted) {
						t.Fatalf("want ErrUnreachable, got %v\nlog:\n%s", err, logs)
					}
					if took > unreachableBound {
						t.Errorf("took %s, want under %s", took, unreachableBound)
					}
					for _, s := range []string{"is unreachable: cannot connect to " + host, "connection refused"} {
						if !strings.Contains(err.Error(), s) {
							t.Errorf("message %q lacks %q", err, s)
						}
					}
					if IsNoRepository(err) || strings.Contains(err.Error(), "url-secret-7") {
						t.Errorf("message %q", err)
					}
				})
			}
		}
	})
}

// TestDiagnoseSSH: subvault's own run of the repository's ssh command reads
// ssh's reason, which restic passes on only when it copied it before it
// exited: a refused key, an unknown host key, a closed port; and nothing
// for a server that lets it in.
func TestDiagnoseSSH(t *testing.T) {
	s := testutil.NewSFTPServer(t)
	loc := s.Repository("r")
	for _, c := range []struct {
		name, command, want string
	}{
		{"wrong key", s.Command(s.WrongKeyFile, s.KnownHostsFile), "Permission denied (publickey)"},
		{"unknown host key", s.Command(s.KeyFile, s.EmptyKnownHostsFile), "Host key verification failed"},
		{"closed port", strings.Replace(s.SSHCommand, fmt.Sprintf("-p %d", s.Port), fmt.Sprintf("-p %d", testutil.FreePort(t)), 1), "Connection refused"},
		{"right key", s.SSHCommand, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			lines := diagnoseSSH(context.Background(), loc, []string{"-o", "sftp.command=" + c.command, "snapshots"}, []string{"PATH=/usr/bin:/bin"})
			t.Logf("%s: %q", time.Since(start).Round(time.Millisecond), lines)
			got := strings.Join(lines, "\n")
			if c.want == "" && got != "" || !strings.Contains(got, c.want) {
				t.Errorf("ssh said %q, want %q", got, c.want)
			}
			for _, l := range lines {
				if !strings.HasPrefix(l, sshRerunPrefix) {
					t.Errorf("line %q is not marked as subvault's run of ssh", l)
				}
			}
		})
	}
}

// TestHealthyBackupHasNoProbe: failing fast costs a healthy backup nothing:
// the watch is on restic's own stderr, so a backup to a REST repository or a
// local one starts exactly one restic process, and takes as long as plain
// restic (figures logged; no timing assertion).
func TestHealthyBackupHasNoProbe(t *testing.T) {
	rest := testutil.NewRESTServer(t, testutil.RESTOptions{})
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		pw := filepath.Join(t.TempDir(), "pw")
		testutil.WriteSecret(t, pw, testutil.ResticPassword+"\n")
		tree := smallTree(t, 200, 0)
		local := filepath.Join(t.TempDir(), "repo")
		for _, url := range []string{local, rest.Repository("probe-" + testutil.ResticName(bin))} {
			kind := "local"
			if url != local {
				kind = "REST"
			}
			r := &Runner{Binary: bin, Repo: Repository{URL: url, PasswordFile: pw, CacheDir: filepath.Join(t.TempDir(), "cache")}}
			if err := r.Init(context.Background()); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Backup(context.Background(), BackupOptions{Paths: []string{tree}}, nil); err != nil {
				t.Fatal(err)
			}
			started := 0
			r.onStart = func(int) { started++ }
			var viaRunner, plain []time.Duration
			for range 3 {
				start := time.Now()
				if _, err := r.Backup(context.Background(), BackupOptions{Paths: []string{tree}}, nil); err != nil {
					t.Fatal(err)
				}
				viaRunner = append(viaRunner, time.Since(start))
				start = time.Now()
				cmd := exec.Command(bin, "backup", "--json", "--cache-dir", r.Repo.CacheDir, tree)
				cmd.Env = append(os.Environ(), "RESTIC_REPOSITORY="+url, "RESTIC_PASSWORD_FILE="+pw)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("plain restic: %v\n%s", err, out)
				}
				plain = append(plain, time.Since(start))
			}
			if started != 3 {
				t.Errorf("%s: 3 backups started %d restic processes, want 3 (no probe)", RedactURL(url), started)
			}
			t.Logf("restic %s, %s, unchanged backup of 200 files: runner %v, plain restic %v", testutil.ResticVersion(bin), kind, viaRunner, plain)
		}
	})
}

// TestUnknownHostEndsInSeconds: a host name that does not resolve (a
// laptop away from home, a typo) ends the command in seconds as
// ErrUnreachable naming the host; restic 0.18 alone retries it for 15
// minutes. (.invalid never resolves, RFC 2606; without a resolver the
// lookup fails as well, in other words.)
func TestUnknownHostEndsInSeconds(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		pw := filepath.Join(t.TempDir(), "pw")
		testutil.WriteSecret(t, pw, testutil.ResticPassword+"\n")
		r := &Runner{Binary: bin, Repo: Repository{URL: "rest:http://nas.subvault-test.invalid:8000/r", PasswordFile: pw, CacheDir: filepath.Join(t.TempDir(), "cache")}}
		start := time.Now()
		_, err := r.Snapshots(context.Background(), SnapshotFilter{})
		took := time.Since(start)
		t.Logf("restic %s, unknown host: %s: %v", testutil.ResticVersion(bin), took.Round(10*time.Millisecond), err)
		if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "cannot connect to nas.subvault-test.invalid:8000 (dial tcp: lookup nas.subvault-test.invalid") ||
			!strings.Contains(err.Error(), "the name does not resolve") {
			t.Errorf("want ErrUnreachable naming the host, got %v", err)
		}
		if took > unreachableBound {
			t.Errorf("took %s, want under %s", took, unreachableBound)
		}
	})
}

// TestMissingS3BucketIsNoRepository: an S3 repository whose bucket does not
// exist is a repository that does not exist yet, with both restic versions
// and in seconds (0.18 alone retries it for 15 minutes), so that init: true
// makes it; init does, and a backup then succeeds.
func TestMissingS3BucketIsNoRepository(t *testing.T) {
	s3 := testutil.NewS3Server(t)
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		pw := filepath.Join(t.TempDir(), "pw")
		testutil.WriteSecret(t, pw, testutil.ResticPassword+"\n")
		env := filepath.Join(t.TempDir(), "s3.env")
		testutil.WriteSecret(t, env, strings.Join(s3.Env(), "\n")+"\n")
		bucket := "missing-" + strings.ReplaceAll(filepath.Base(t.Name()), ".", "-")
		url := fmt.Sprintf("s3:http://%s:%d/%s/repo", s3.Host, s3.Port, bucket)
		r := &Runner{Binary: bin, Repo: Repository{URL: url, PasswordFile: pw, EnvFile: env, CacheDir: filepath.Join(t.TempDir(), "cache")}}
		ctx, cancel := context.WithTimeout(context.Background(), 3*unreachableBound)
		defer cancel()
		start := time.Now()
		_, err := r.Snapshots(ctx, SnapshotFilter{})
		took := time.Since(start)
		t.Logf("snapshots on a missing bucket: %v after %v", err, took.Round(10*time.Millisecond))
		if !IsNoRepository(err) {
			t.Fatalf("snapshots on a missing bucket: %v; want a repository that does not exist", err)
		}
		if took > unreachableBound {
			t.Errorf("took %v, want under %v", took, unreachableBound)
		}
		if err := r.Init(ctx); err != nil {
			t.Fatalf("init on a missing bucket: %v", err)
		}
		if _, err := r.Backup(ctx, BackupOptions{Paths: []string{smallTree(t, 2, 0)}}, nil); err != nil {
			t.Fatalf("backup after init: %v", err)
		}
	})
}

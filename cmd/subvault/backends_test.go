package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/emergencykit"
	"github.com/subvault/subvault/daemon/shell"
	"github.com/subvault/subvault/internal/testutil"
)

// backend is one way of reaching a repository on a real server on
// loopback, as a user writes it in the configuration.
type backend struct {
	name string
	// minMinor is the oldest restic 0.x that has what the entry uses.
	minMinor int
	// server starts the server, once for all restic versions, and
	// returns what makes the repository entry's lines (url and what else
	// the form needs, indented by four) of a repository named repo on it.
	server func(t *testing.T) (entry func(t *testing.T, repo string) string)
	// programs are what the kit's commands need on PATH besides restic
	// (any rescue system has them).
	programs []string
	// short: a variant of a form the matrix runs in full; it runs the
	// first backup (init included), the check and the kit only.
	short bool
}

// backendEnv is a btrfs with a subvolume home of small files, the daemon
// on a private bus with a plan home that keeps one archive, and a
// repository on a server.
type backendEnv struct {
	*apiEnv
	bin   string
	files int
}

// backendMatrixTimes collects each cell's time for the summary line.
var backendMatrixTimes sync.Map

// TestBackendsEndToEnd: each kind of remote repository, as the
// configuration gives it (options, ssh, env_file, credentials), with each
// restic version, through subvault: the first backup creates the
// repository (init: true), an unchanged second backup finds its parent
// (every file unmodified), a diff of the two archives and of the last one
// with the live subvolume finds nothing, a restore gives back the tree, a
// prune keeps
// the one archive the retention asks for, a check passes, and the
// emergency kit's commands, run in a shell as printed (only the restore's
// --target moved into the test's directory), list the archives and
// restore the tree (the files an ssh block names removed first: the kit
// writes them back). Variants of a form the matrix runs in full (short)
// run the first backup, the check and the kit. Each server is started once
// for both restic versions, each version with its own repository.
func TestBackendsEndToEnd(t *testing.T) {
	testutil.RequireRoot(t)
	// Mostly waiting on servers and restic: beside the other parallel
	// tests, after the package's serial ones.
	t.Parallel()
	start := time.Now()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			entry := b.server(t)
			testutil.ForEachRestic(t, func(t *testing.T, bin string) {
				if v := testutil.ResticVersion(bin); versionMinor(v) < b.minMinor {
					t.Logf("restic %s: the entry needs restic 0.%d or later; not run", v, b.minMinor)
					return
				}
				cell := time.Now()
				backendCell(t, b, bin, entry(t, "repo-"+testutil.ResticVersion(bin)))
				d := time.Since(cell).Round(10 * time.Millisecond)
				backendMatrixTimes.Store(t.Name(), d)
				t.Logf("cell %s: %v", t.Name(), d)
			})
		})
	}
	var lines []string
	backendMatrixTimes.Range(func(k, v any) bool {
		lines = append(lines, fmt.Sprintf("  %-60s %v", k, v))
		return true
	})
	slices.Sort(lines)
	t.Logf("backend matrix in %v:\n%s", time.Since(start).Round(100*time.Millisecond), strings.Join(lines, "\n"))
}

func versionMinor(v string) int {
	var major, minor, patch int
	if _, err := fmt.Sscanf(v, "%d.%d.%d", &major, &minor, &patch); err != nil {
		return -1
	}
	return minor
}

func newBackendEnv(t *testing.T, bin string, files int) *backendEnv {
	t.Helper()
	testutil.RequireRestic(t, bin)
	testutil.RequireCommand(t, "busctl", "systemd")
	fs := testutil.NewBtrfs(t, 200, "home")
	state := t.TempDir()
	e := &backendEnv{apiEnv: &apiEnv{daemonEnv: &daemonEnv{
		runEnv: &runEnv{fs: fs, restic: bin, config: filepath.Join(state, "config.yaml")},
		bus:    testutil.NewBus(t), notify: newNotifySocket(t), state: state,
	}, called: map[string]bool{}}, bin: bin, files: files}
	e.password = filepath.Join(t.TempDir(), "password")
	testutil.WriteSecret(t, e.password, testutil.ResticPassword+"\n")
	buf := make([]byte, 48<<10)
	for i := range files {
		if _, err := rand.Read(buf); err != nil {
			t.Fatal(err)
		}
		testutil.WriteFile(t, fs.Path("home", fmt.Sprintf("d%d", i%4), fmt.Sprintf("f%d", i)), string(buf))
	}
	return e
}

// writeConfig writes the configuration with the repository entry's lines.
func (e *backendEnv) writeConfig(t *testing.T, repository string) {
	t.Helper()
	testutil.WriteFile(t, e.config, fmt.Sprintf(`repositories:
  r:
    password_file: %s
    init: true
%s
plans:
  home:
    subvolumes: [%s]
    repository: r
    snapshot_dir: %s
    retention: {last: 1}
settings:
  state_dir: %s
  cache_dir: %s
  restic: %s
`, e.password, strings.TrimRight(repository, "\n"), e.fs.Path("home"), e.fs.Path("snapshots"), e.state, filepath.Join(e.state, "cache"), e.bin))
	t.Logf("repository entry:\n%s", repository)
}

func backendCell(t *testing.T, b backend, bin, repository string) {
	e := newBackendEnv(t, bin, 24)
	e.writeConfig(t, repository)
	if code, out, errOut := runCmd(t, subvaultCmd("check-config", "--config", e.config)); code != exitOK {
		t.Fatalf("check-config: exit %d\n%s%s", code, out, errOut)
	}
	e.startDaemon(t)
	home := e.fs.Path("home")

	step := func(what string, args ...string) string {
		t.Helper()
		start := time.Now()
		code, out, errOut := e.cli(t, args...)
		t.Logf("%s: %v", what, time.Since(start).Round(10*time.Millisecond))
		if code != exitOK {
			t.Fatalf("%s (subvault %s): exit %d\nstdout: %s\nstderr: %s", what, strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	out := step("first backup", "backup", "home", "--wait")
	if want := fmt.Sprintf("files: %d new, 0 changed, 0 unmodified", e.files); !strings.Contains(out, want) {
		t.Errorf("first backup: no %q in\n%s", want, out)
	}
	if b.short {
		step("check", "check", "home", "--wait")
		start := time.Now()
		e.runKit(t, b)
		t.Logf("emergency kit: %v", time.Since(start).Round(10*time.Millisecond))
		return
	}
	out = step("second backup", "backup", "home", "--wait")
	if want := fmt.Sprintf("files: 0 new, 0 changed, %d unmodified", e.files); !strings.Contains(out, want) {
		t.Errorf("unchanged second backup did not use its parent: no %q in\n%s", want, out)
	}
	ids := e.archives(t)
	if len(ids) != 2 {
		t.Fatalf("%d archives after two backups, want 2", len(ids))
	}
	// restic diff and ls: the two archives, and the last one and the live
	// subvolume, hold the same tree.
	step("diff of the archives", "diff", "home", ids[0], ids[1])
	step("diff with the live subvolume", "diff", "home", "latest", "live")

	target := filepath.Join(e.fs.Mount, "restored")
	step("restore", "restore", "home", "latest", target, "--wait")
	if diffs := testutil.CompareTrees(t, home, filepath.Join(target, home)); len(diffs) != 0 {
		t.Errorf("the restored tree differs:\n%s", strings.Join(diffs, "\n"))
	}

	step("prune", "prune", "home", "--wait")
	if n := len(e.archives(t)); n != 1 {
		t.Errorf("%d archives after a prune keeping the last one, want 1", n)
	}
	step("check", "check", "home", "--wait")

	start := time.Now()
	e.runKit(t, b)
	t.Logf("emergency kit: %v", time.Since(start).Round(10*time.Millisecond))
}

// archives are the ids of the plan's archives the daemon lists, oldest
// first.
func (e *backendEnv) archives(t *testing.T) []string {
	t.Helper()
	code, out, errOut := e.cli(t, "archives", "home", "--json")
	if code != exitOK {
		t.Fatalf("archives: exit %d: %s", code, errOut)
	}
	var archives []struct {
		ID   string
		Time time.Time
	}
	if err := json.Unmarshal([]byte(out), &archives); err != nil {
		t.Fatalf("archives --json: %v\n%s", err, out)
	}
	slices.SortFunc(archives, func(a, b struct {
		ID   string
		Time time.Time
	}) int {
		return a.Time.Compare(b.Time)
	})
	ids := make([]string, len(archives))
	for i, a := range archives {
		ids[i] = a.ID
	}
	return ids
}

// runKit writes the kit and runs its commands in /bin/sh, with restic (and
// the backend's programs) on PATH, an empty HOME, and the password typed.
func (e *backendEnv) runKit(t *testing.T, b backend) {
	t.Helper()
	kitDir := t.TempDir()
	code, out, errOut := runCmd(t, subvaultCmd("emergency-kit", "home", "--config", e.config, "--out", kitDir, "--format", "text"))
	if code != exitOK {
		t.Fatalf("emergency-kit: exit %d\n%s%s", code, out, errOut)
	}
	paths, _ := filepath.Glob(filepath.Join(kitDir, "*.txt"))
	if len(paths) != 1 {
		t.Fatalf("emergency-kit wrote %v", paths)
	}
	text := readKitFile(t, paths[0])
	if !strings.Contains(text, "Checked: the password above opened it") {
		t.Errorf("the kit did not open the repository:\n%s", text)
	}
	var commands []string
	for _, line := range strings.Split(text, "\n") {
		if c, ok := strings.CutPrefix(strings.TrimLeft(line, " "), emergencykit.CommandPrefix); ok {
			commands = append(commands, c)
		}
	}
	restoreTo := t.TempDir()
	moved := 0
	for i, c := range commands {
		if strings.Contains(c, " --target "+emergencykit.RestoreTarget+" ") {
			commands[i] = strings.Replace(c, " --target "+emergencykit.RestoreTarget+" ", " --target "+shell.Quote(restoreTo)+" ", 1)
			moved++
		}
	}
	if moved != 1 {
		t.Fatalf("no restore to %s among the kit's commands:\n%s", emergencykit.RestoreTarget, strings.Join(commands, "\n"))
	}
	// The files of the ssh block are not on a rescue machine: the kit's
	// commands write them back.
	cfg, err := config.Load(e.config)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{cfg.Repositories["r"].SSH.Key, cfg.Repositories["r"].SSH.KnownHosts, cfg.Repositories["r"].SSH.ConfigFile} {
		if f != "" {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("the kit's commands, as run:\n%s", strings.Join(commands, "\n"))
	script := filepath.Join(t.TempDir(), "kit.sh")
	testutil.WriteFile(t, script, strings.Join(commands, "\n")+"\n")
	pathDir := t.TempDir()
	for _, p := range append([]string{"restic=" + e.bin}, b.programs...) {
		name, target, ok := strings.Cut(p, "=")
		if !ok {
			var err error
			if target, err = exec.LookPath(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink(target, filepath.Join(pathDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	sh := exec.Command("/bin/sh", "-eu", script)
	sh.Env = []string{"PATH=" + pathDir, "HOME=" + t.TempDir()}
	sh.Dir = t.TempDir()
	sh.Stdin = strings.NewReader(testutil.ResticPassword + "\n")
	shOut, err := sh.CombinedOutput()
	if err != nil {
		t.Fatalf("the kit's commands failed: %v\n%s", err, shOut)
	}
	if !regexp.MustCompile(`finished verifying \d+ files`).Match(shOut) {
		t.Errorf("the kit's restore did not verify the files:\n%s", shOut)
	}
	home := e.fs.Path("home")
	if diffs := testutil.CompareTrees(t, home, filepath.Join(restoreTo, home)); len(diffs) != 0 {
		t.Errorf("the kit's restore differs:\n%s", strings.Join(diffs, "\n"))
	}
}

// backends are the cells of the matrix.
func backends() []backend {
	return []backend{
		{name: "sftp key and known_hosts on a port", programs: []string{"ssh", "mkdir"},
			server: func(t *testing.T) func(*testing.T, string) string {
				s := testutil.NewSFTPServer(t)
				return func(t *testing.T, repo string) string {
					return fmt.Sprintf("    url: %s\n    ssh:\n      key: %s\n      known_hosts: %s\n    connections: 2\n",
						s.URL(repo), s.KeyFile, s.KnownHostsFile)
				}
			}},
		{name: "sftp Host alias in an ssh config_file", programs: []string{"ssh", "mkdir"}, short: true,
			server: func(t *testing.T) func(*testing.T, string) string {
				s := testutil.NewSFTPServer(t)
				conf := filepath.Join(t.TempDir(), "ssh_config")
				testutil.WriteFile(t, conf, fmt.Sprintf("Host backup-nas\n  HostName %s\n  Port %d\n  User %s\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n",
					s.Host, s.Port, s.User, s.KeyFile, s.KnownHostsFile))
				return func(t *testing.T, repo string) string {
					return fmt.Sprintf("    url: sftp:backup-nas:%s\n    ssh: {config_file: %s}\n", filepath.Join(s.Dir, repo), conf)
				}
			}},
		{name: "sftp own command", programs: []string{"ssh", "mkdir"}, short: true,
			server: func(t *testing.T) func(*testing.T, string) string {
				s := testutil.NewSFTPServer(t)
				return func(t *testing.T, repo string) string {
					return fmt.Sprintf("    url: %s\n    ssh:\n      command: %q\n", s.Repository(repo), s.SSHCommand)
				}
			}},
		{name: "REST basic auth, credentials in the url",
			server: func(t *testing.T) func(*testing.T, string) string {
				s := testutil.NewRESTServer(t, testutil.RESTOptions{Auth: true})
				return func(t *testing.T, repo string) string {
					return fmt.Sprintf("    url: %s\n    connections: 2\n", s.RepositoryWithCredentials(repo))
				}
			}},
		{name: "REST plain with options", short: true,
			server: func(t *testing.T) func(*testing.T, string) string {
				s := testutil.NewRESTServer(t, testutil.RESTOptions{})
				return func(t *testing.T, repo string) string {
					return fmt.Sprintf("    url: %s\n    options: {rest.connections: \"3\"}\n", s.Repository(repo))
				}
			}},
		{name: "REST basic auth, credentials in an env_file", short: true, minMinor: 16,
			server: func(t *testing.T) func(*testing.T, string) string {
				s := testutil.NewRESTServer(t, testutil.RESTOptions{Auth: true})
				env := filepath.Join(t.TempDir(), "rest.env")
				testutil.WriteSecret(t, env, fmt.Sprintf("RESTIC_REST_USERNAME=%s\nRESTIC_REST_PASSWORD=%s\n", s.User, s.Password))
				return func(t *testing.T, repo string) string {
					return fmt.Sprintf("    url: %s\n    env_file: %s\n", s.Repository(repo), env)
				}
			}},
		{name: "S3 keys in an env_file",
			server: func(t *testing.T) func(*testing.T, string) string {
				s := testutil.NewS3Server(t)
				// The bucket exists, as a user makes it first: restic 0.18
				// retries a missing bucket for 15 minutes instead of
				// saying the repository does not exist (0.14 says so),
				// and init: true never comes to run.
				makeBucket(t, s)
				env := filepath.Join(t.TempDir(), "s3.env")
				testutil.WriteSecret(t, env, strings.Join(s.Env(), "\n")+"\n")
				return func(t *testing.T, repo string) string {
					return fmt.Sprintf("    url: %s\n    env_file: %s\n    options: {s3.bucket-lookup: path}\n    connections: 2\n", s.Repository(repo), env)
				}
			}},
	}
}

// TestLimitsHold: limit_upload holds for a backup and limit_download for a
// restore, through subvault, with each restic version: moving limitBytes of
// random data at limitKiB KiB/s takes at least half the time the limit
// allows (restic's limiter lets one second's worth through at once; the
// bound is generous on purpose). The measured rates are logged.
func TestLimitsHold(t *testing.T) {
	testutil.RequireRoot(t)
	// Only a lower bound on the time is checked: other tests beside it
	// cannot make the limit look broken.
	t.Parallel()
	const limitKiB = 256
	const size = 2 << 20
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		e := newBackendEnv(t, bin, 0)
		data := make([]byte, size)
		if _, err := rand.Read(data); err != nil {
			t.Fatal(err)
		}
		testutil.WriteFile(t, e.fs.Path("home", "big"), string(data))
		e.writeConfig(t, limitRepository(t)+fmt.Sprintf("    limit_upload: %d\n    limit_download: %d\n", limitKiB, limitKiB))
		e.startDaemon(t)
		least := time.Duration(float64(size) / 1024 / limitKiB / 2 * float64(time.Second))

		for _, op := range []struct {
			what string
			args []string
		}{
			{"backup (limit_upload)", []string{"backup", "home", "--wait"}},
			{"restore (limit_download)", []string{"restore", "home", "latest", filepath.Join(e.fs.Mount, "restored"), "--wait"}},
		} {
			start := time.Now()
			code, out, errOut := e.cli(t, op.args...)
			elapsed := time.Since(start)
			if code != exitOK {
				t.Fatalf("%s: exit %d\n%s%s", op.what, code, out, errOut)
			}
			t.Logf("%s of %d KiB at %d KiB/s: %v, %.0f KiB/s measured", op.what, size>>10, limitKiB, elapsed.Round(10*time.Millisecond),
				float64(size)/1024/elapsed.Seconds())
			if elapsed < least {
				t.Errorf("%s of %d KiB took %v: faster than twice the limit of %d KiB/s (at least %v)", op.what, size>>10, elapsed, limitKiB, least)
			}
		}
	})
}

// limitRepository is the server the limits are timed against.
func limitRepository(t *testing.T) string {
	s := testutil.NewRESTServer(t, testutil.RESTOptions{})
	return fmt.Sprintf("    url: %s\n", s.Repository("repo"))
}

// makeBucket makes the server's bucket through SeaweedFS's filer (a bucket
// is a directory under /buckets there), with one small object in it.
func makeBucket(t *testing.T, s *testutil.S3Server) {
	t.Helper()
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	part, err := w.CreateFormFile("file", "made-by-the-test")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = part.Write([]byte("the bucket exists\n"))
	_ = w.Close()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Post(fmt.Sprintf("http://%s:%d/buckets/%s/made-by-the-test", s.Host, s.FilerPort, s.Bucket), w.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("making bucket %s: %s", s.Bucket, resp.Status)
	}
}

package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/internal/testutil"
)

// The test binary doubles as the subvault binary, so that tests can run
// and kill it as a separate process.
func TestMain(m *testing.M) {
	testutil.HostileMain()
	if os.Getenv("SUBVAULT_TEST_AS_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func subvaultCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "SUBVAULT_TEST_AS_MAIN=1")
	return cmd
}

type runEnv struct {
	fs       *testutil.BtrfsFS
	restic   string
	repo     string
	password string
	config   string
}

func newRunEnv(t *testing.T, sizeMiB int) *runEnv {
	t.Helper()
	return newRunEnvWith(t, testutil.Restic(t), sizeMiB)
}

// newRunEnvWith is a loop-device btrfs of sizeMiB with a subvolume home, a
// repository, and a configuration of one plan home whose restic is bin.
func newRunEnvWith(t *testing.T, bin string, sizeMiB int) *runEnv {
	t.Helper()
	fs := testutil.NewBtrfs(t, sizeMiB, "home")
	repo, password := testutil.NewResticRepo(t, bin)
	state := t.TempDir()
	config := filepath.Join(state, "config.yaml")
	testutil.WriteFile(t, config, fmt.Sprintf(`repositories:
  r:
    url: %s
    password_file: %s
plans:
  home:
    subvolumes: [%s]
    repository: r
settings:
  state_dir: %s
  cache_dir: %s
  restic: %s
`, repo, password, fs.Path("home"), state, filepath.Join(state, "cache"), bin))
	return &runEnv{fs: fs, restic: bin, repo: repo, password: password, config: config}
}

func (e *runEnv) resticOut(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(e.restic, append([]string{"-r", e.repo, "--no-cache"}, args...)...)
	cmd.Env = append(os.Environ(), "RESTIC_PASSWORD_FILE="+e.password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("restic %v: %v: %s", args, err, out)
	}
	return string(out)
}

func TestRunBackupPrintsSummaryAndExitCodes(t *testing.T) {
	testutil.RequireRoot(t)
	e := newRunEnv(t, 256)
	testutil.WriteFile(t, e.fs.Path("home", "a"), "hello")

	var out, errOut bytes.Buffer
	code := run([]string{"run", "backup", "home", "--config", e.config}, &out, &errOut)
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, errOut.String())
	}
	for _, want := range []string{"plan home, job 1: archive ", "files: 1 new, 0 changed, 0 unmodified"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"run", "backup", "home", "--config", e.config}, &out, &errOut); code != exitOK {
		t.Fatalf("second run: exit %d", code)
	}
	if !strings.Contains(out.String(), "job 2:") || !strings.Contains(out.String(), "files: 0 new, 0 changed, 1 unmodified") {
		t.Errorf("second summary:\n%s", out.String())
	}

	errOut.Reset()
	if code := run([]string{"run", "backup", "nosuch", "--config", e.config}, &out, &errOut); code != exitUsage || !strings.Contains(errOut.String(), `no plan "nosuch"`) {
		t.Errorf("unknown plan: exit %d, %q", code, errOut.String())
	}
	if code := run([]string{"run", "backup", "--config", e.config}, &out, &errOut); code != exitUsage {
		t.Errorf("no plan: exit %d", code)
	}
}

// Killing subvault mid-backup, then starting again, leaves no snapshot and
// no restic lock, and the next backup works on a repository that checks.
func TestKilledMidBackupRecoversAtNextStart(t *testing.T) {
	testutil.RequireRoot(t)
	e := newRunEnv(t, 1024)
	buf := make([]byte, 1<<20)
	for i := range 500 {
		if _, err := rand.Read(buf); err != nil {
			t.Fatal(err)
		}
		testutil.WriteFile(t, e.fs.Path("home", fmt.Sprintf("d%d", i%10), fmt.Sprintf("f%d", i)), string(buf))
	}
	snapDir := e.fs.Path("home", ".subvault-snapshots")

	cmd := subvaultCmd("run", "backup", "home", "--config", e.config)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	resticPID := waitFor(t, 30*time.Second, func() int { return testutil.ProcessBelow(cmd.Process.Pid, "restic", "backup") })
	time.Sleep(500 * time.Millisecond) // let restic write some of the archive
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// restic gets SIGINT when subvault dies (Pdeathsig), removes its lock
	// and exits.
	waitFor(t, 60*time.Second, func() int {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", resticPID)); os.IsNotExist(err) {
			return 1
		}
		return 0
	})
	left, err := btrfs.ListSnapshots(snapDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 {
		t.Fatalf("after the kill, %d snapshots are left (want 1: the crash must leave one for the next start to find)\n%s", len(left), log.String())
	}

	var out, errOut bytes.Buffer
	if code := run([]string{"run", "backup", "home", "--config", e.config, "--verbose"}, &out, &errOut); code != exitOK {
		t.Fatalf("backup after the kill: exit %d\n%s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), left[0].Name()) {
		t.Errorf("the removal of the leftover %s is not logged:\n%s", left[0].Name(), errOut.String())
	}
	if after, _ := btrfs.ListSnapshots(snapDir); len(after) != 0 {
		t.Errorf("snapshots left after the next backup: %v", after)
	}
	if locks := strings.TrimSpace(e.resticOut(t, "list", "locks", "--no-lock")); locks != "" {
		t.Errorf("stale restic locks: %s", locks)
	}
	e.resticOut(t, "check")
}

// waitFor polls f until it returns non-zero.
func waitFor(t *testing.T, limit time.Duration, f func() int) int {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if v := f(); v != 0 {
			return v
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("gave up after %v", limit)
	return 0
}

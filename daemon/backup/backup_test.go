package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/state"
	"github.com/subvault/subvault/internal/testutil"
	"github.com/subvault/subvault/restic"
)

// testEnv is a loop-device btrfs, a restic repository and a configuration
// whose plan "p" backs up the given subvolumes.
type testEnv struct {
	fs       *testutil.BtrfsFS
	restic   string
	repo     string
	password string
	cfg      *config.Config
	logs     *bytes.Buffer
}

func newEnv(t *testing.T, resticBin string, sizeMiB int, subvolumes []string, planExtra string) *testEnv {
	t.Helper()
	fs := testutil.NewBtrfs(t, sizeMiB, subvolumes...)
	repo, password := testutil.NewResticRepo(t, resticBin)
	e := &testEnv{fs: fs, restic: resticBin, repo: repo, password: password, logs: &bytes.Buffer{}}
	paths := make([]string, len(subvolumes))
	for i, sv := range subvolumes {
		paths[i] = fs.Path(sv)
	}
	e.configure(t, fmt.Sprintf("url: %s\n    password_file: %s", repo, password), paths, planExtra)
	return e
}

func (e *testEnv) configure(t *testing.T, repoYAML string, paths []string, planExtra string) {
	t.Helper()
	state := t.TempDir()
	text := fmt.Sprintf(`repositories:
  r:
    %s
plans:
  p:
    subvolumes: [%s]
    repository: r
%s
settings:
  state_dir: %s
  cache_dir: %s
  restic: %s
`, repoYAML, strings.Join(paths, ", "), planExtra, state, filepath.Join(state, "cache"), e.restic)
	cfg, err := config.Parse("test.yaml", []byte(text))
	if err != nil {
		t.Fatalf("test configuration: %v\n%s", err, text)
	}
	e.cfg = cfg
}

func (e *testEnv) job(id uint32) *Job {
	return &Job{ID: id, Config: e.cfg, Plan: e.cfg.Plans["p"], Logger: slog.New(slog.NewTextHandler(e.logs, nil))}
}

func (e *testEnv) run(t *testing.T, id uint32) Result {
	t.Helper()
	res, err := e.job(id).Run(context.Background())
	if err != nil {
		t.Fatalf("backup job %d: %v\nlog:\n%s", id, err, e.logs)
	}
	return res
}

// resticCmd runs restic on the test repository and returns its stdout.
func (e *testEnv) resticCmd(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(e.restic, append([]string{"-r", e.repo, "--no-cache"}, args...)...)
	cmd.Env = append(os.Environ(), "RESTIC_PASSWORD_FILE="+e.password)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("restic %v: %v: %s", args, err, errOut.String())
	}
	return out.String()
}

func (e *testEnv) archives(t *testing.T) []restic.Archive {
	t.Helper()
	runner, err := planstore.NewRunner(e.cfg, e.cfg.Plans["p"], slog.New(slog.NewTextHandler(e.logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	list, err := runner.Snapshots(context.Background(), restic.SnapshotFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func writeFiles(t *testing.T, dir string, n, size int) {
	t.Helper()
	buf := make([]byte, size)
	for i := range n {
		if _, err := rand.Read(buf); err != nil {
			t.Fatal(err)
		}
		testutil.WriteFile(t, filepath.Join(dir, fmt.Sprintf("d%02d", i%10), fmt.Sprintf("f%04d", i)), string(buf))
	}
}

// noSnapshotsLeft fails the test if any subvault snapshot is left in dir.
func noSnapshotsLeft(t *testing.T, dir string) {
	t.Helper()
	list, err := btrfs.ListSnapshots(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) > 0 {
		t.Errorf("%d snapshot(s) left in %s: %v", len(list), dir, list)
	}
}

// The archive records the original path, finds its parent, and a second
// run of unchanged data reads no file; a third after one change reads one.
func TestBackupIsAtomicAndIncrementalAtTheOriginalPath(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		e := newEnv(t, bin, 512, []string{"home"}, "")
		home := e.fs.Path("home")
		writeFiles(t, home, 200, 4096)

		first := e.run(t, 1)
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
		if first.Result != ResultDone || first.ArchiveID == "" {
			t.Fatalf("first backup: %+v", first)
		}
		if first.Backup.Summary == nil || first.Backup.Summary.FilesNew != 200 {
			t.Fatalf("first backup: summary %+v, want 200 new files", first.Backup.Summary)
		}
		second := e.run(t, 2)
		s := second.Backup.Summary
		if s.FilesNew != 0 || s.FilesChanged != 0 || s.FilesUnmodified != 200 {
			t.Errorf("second backup of unchanged data: new %d, changed %d, unmodified %d; want 0, 0, 200", s.FilesNew, s.FilesChanged, s.FilesUnmodified)
		}
		testutil.WriteFile(t, filepath.Join(home, "d03", "f0003"), "changed")
		// An archive's time is its snapshot's, to the second; restic picks
		// the newest archive not newer than that as the parent, so two
		// backups in one second could not tell which is newer.
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
		third := e.run(t, 3)
		s = third.Backup.Summary
		if s.FilesNew != 0 || s.FilesChanged != 1 || s.FilesUnmodified != 199 {
			t.Errorf("third backup after one change: new %d, changed %d, unmodified %d; want 0, 1, 199", s.FilesNew, s.FilesChanged, s.FilesUnmodified)
		}

		list := e.archives(t)
		if len(list) != 3 {
			t.Fatalf("%d archives, want 3", len(list))
		}
		for _, a := range list {
			if len(a.Paths) != 1 || a.Paths[0] != home {
				t.Errorf("archive %s records paths %v, want [%s] (the original path, not the snapshot's)", a.ShortID, a.Paths, home)
			}
			if len(a.Tags) != 1 || a.Tags[0] != "subvault:p" {
				t.Errorf("archive %s has tags %v, want [subvault:p]", a.ShortID, a.Tags)
			}
		}
		// restic 0.14 reports 8 hex digits of the id, later ones all 64.
		full := func(id string) restic.Archive {
			for _, a := range list {
				if strings.HasPrefix(a.ID, id) {
					return a
				}
			}
			t.Fatalf("no archive %s", id)
			return restic.Archive{}
		}
		if p := full(second.ArchiveID).Parent; !strings.HasPrefix(p, full(first.ArchiveID).ID) || p == "" {
			t.Errorf("second archive's parent is %q, want the first archive %s", p, first.ArchiveID)
		}
		if p := full(third.ArchiveID).Parent; !strings.HasPrefix(p, full(second.ArchiveID).ID) || p == "" {
			t.Errorf("third archive's parent is %q, want the second archive %s", p, second.ArchiveID)
		}
		noSnapshotsLeft(t, filepath.Join(home, planstore.DefaultSnapshotDirName))
		if got := e.resticCmd(t, "dump", third.ArchiveID, filepath.Join(home, "d03", "f0003")); got != "changed" {
			t.Errorf("restored content %q, want %q", got, "changed")
		}
	})
}

// Nested subvolumes (/srv and /srv/db) are both mounted before restic
// starts, and both end up in one archive.
func TestBackupOfNestedSubvolumes(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.Restic(t)
	e := newEnv(t, bin, 256, []string{"srv", "srv/db"}, "")
	testutil.WriteFile(t, e.fs.Path("srv", "www", "index.html"), "v1")
	testutil.WriteFile(t, e.fs.Path("srv", "db", "table"), "rows v1")
	res := e.run(t, 1)
	list := e.archives(t)
	if len(list) != 1 || strings.Join(list[0].Paths, " ") != e.fs.Path("srv")+" "+e.fs.Path("srv", "db") {
		t.Fatalf("archives %+v, want one with paths [%s %s]", list, e.fs.Path("srv"), e.fs.Path("srv", "db"))
	}
	for path, want := range map[string]string{e.fs.Path("srv", "www", "index.html"): "v1", e.fs.Path("srv", "db", "table"): "rows v1"} {
		if got := e.resticCmd(t, "dump", res.ArchiveID, path); got != want {
			t.Errorf("%s in the archive: %q, want %q", path, got, want)
		}
	}
	ls := e.resticCmd(t, "ls", res.ArchiveID)
	if strings.Contains(ls, planstore.DefaultSnapshotDirName+"/") {
		t.Errorf("the archive holds subvault's snapshot directory:\n%s", ls)
	}
	noSnapshotsLeft(t, e.fs.Path("srv", planstore.DefaultSnapshotDirName))
	noSnapshotsLeft(t, e.fs.Path("srv", "db", planstore.DefaultSnapshotDirName))
}

// The host's mount table never changes, before, during or after a backup;
// restic's own shows the snapshot over the original path.
func TestHostMountsUnchangedResticSeesSnapshot(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.Restic(t)
	e := newEnv(t, bin, 768, []string{"home"}, "")
	home := e.fs.Path("home")
	writeFiles(t, home, 300, 1<<20) // enough for restic to report progress

	before := testutil.HostMounts(t, e.fs.Mount)
	var checked atomic.Bool
	var during, resticView string
	var mu sync.Mutex
	job := e.job(1)
	job.OnStatus = func(restic.BackupStatus) {
		if checked.Load() {
			return
		}
		pid := testutil.ProcessBelow(os.Getpid(), "restic", "backup")
		if pid == 0 {
			return
		}
		mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
		if err != nil {
			return
		}
		mu.Lock()
		during, resticView = testutil.HostMounts(t, e.fs.Mount), string(mi)
		mu.Unlock()
		checked.Store(true)
	}
	if _, err := job.Run(context.Background()); err != nil {
		t.Fatalf("backup: %v\n%s", err, e.logs)
	}
	after := testutil.HostMounts(t, e.fs.Mount)
	if !checked.Load() {
		t.Fatal("never saw restic running: no progress reported")
	}
	if during != before || after != before {
		t.Errorf("host mountinfo changed:\nbefore:\n%s\nduring:\n%s\nafter:\n%s", before, during, after)
	}
	found := false
	for _, line := range strings.Split(resticView, "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == home && strings.Contains(f[3], planstore.DefaultSnapshotDirName+"/subvault@p@") {
			found = true
		}
	}
	if !found {
		t.Errorf("restic's mountinfo shows no snapshot over %s:\n%s", home, resticView)
	}
}

// While a writer keeps a == b or a == b+1 at every instant, each archive
// subvault makes keeps it too; plain restic on the live path breaks it,
// which proves the check can fail.
func TestBackupIsConsistentUnderConcurrentWrites(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.Restic(t)
	e := newEnv(t, bin, 512, []string{"data"}, "")
	data := e.fs.Path("data")
	writeFiles(t, filepath.Join(data, "m"), 64, 256<<10) // between a/ and z/ in restic's walk
	a, b := filepath.Join(data, "a", "counter"), filepath.Join(data, "z", "counter")
	testutil.WriteFile(t, a, "0")
	testutil.WriteFile(t, b, "0")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 1; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			replaceFile(a, strconv.Itoa(n))
			replaceFile(b, strconv.Itoa(n))
			time.Sleep(200 * time.Microsecond)
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	// One restore of both counters per archive (each restic call pays the
	// repository's key derivation).
	check := func(archive string) (int, int, bool) {
		dir := t.TempDir()
		e.resticCmd(t, "restore", archive, "--target", dir, "--include", a, "--include", b)
		x, _ := strconv.Atoi(readFile(t, filepath.Join(dir, a)))
		y, _ := strconv.Atoi(readFile(t, filepath.Join(dir, b)))
		return x, y, x == y || x == y+1
	}
	start := time.Now()
	for i := range 20 {
		res := e.run(t, uint32(i+1))
		if x, y, ok := check(res.ArchiveID); !ok {
			t.Errorf("subvault backup %d: a=%d b=%d breaks a == b or a == b+1", i+1, x, y)
		}
	}

	t.Logf("20 subvault backups under writes, each restored and checked: %v", time.Since(start))
	runner, err := planstore.NewRunner(e.cfg, e.cfg.Plans["p"], slog.New(slog.NewTextHandler(e.logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	broken := 0
	for i := 0; i < 10 && broken == 0; i++ {
		res, err := runner.Backup(context.Background(), restic.BackupOptions{Paths: []string{data}}, nil)
		var partial *restic.PartialError
		if err != nil && !errors.As(err, &partial) { // a vanished temp file makes a partial archive
			t.Fatal(err)
		}
		if x, y, ok := check(res.SnapshotID); !ok {
			broken++
			t.Logf("plain restic on the live path, try %d: a=%d b=%d: broken, as expected", i+1, x, y)
		}
	}
	if broken == 0 {
		t.Error("plain restic on the live path kept the invariant 10 times: this test cannot tell a consistent backup from a lucky one")
	}
}

// Cancel mid-backup: the job ends canceled, its snapshot is gone, and restic
// left no lock.
func TestCancelCleansUp(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		e := newEnv(t, bin, 768, []string{"home"}, "")
		home := e.fs.Path("home")
		writeFiles(t, home, 400, 1<<20)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		job := e.job(7)
		var once sync.Once
		job.OnStatus = func(s restic.BackupStatus) {
			if s.BytesDone > 0 {
				once.Do(cancel)
			}
		}
		res, err := job.Run(ctx)
		if res.Result != ResultCanceled || err == nil {
			t.Fatalf("result %q, err %v; want canceled", res.Result, err)
		}
		noSnapshotsLeft(t, filepath.Join(home, planstore.DefaultSnapshotDirName))
		if locks := strings.TrimSpace(e.resticCmd(t, "list", "locks")); locks != "" {
			t.Errorf("restic left locks behind: %s", locks)
		}
		// And the next backup works.
		if again := e.run(t, 8); again.Result != ResultDone {
			t.Errorf("backup after a cancel: %+v", again)
		}
	})
}

// Snapshots that a crashed job left are removed at the next start; foreign
// subvolumes beside them are never touched; keep_snapshots keeps its own.
func TestLeftoversRemovedForeignKept(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.Restic(t)
	e := newEnv(t, bin, 256, []string{"home"}, "    keep_snapshots: {last: 1}")
	home := e.fs.Path("home")
	dir := filepath.Join(home, planstore.DefaultSnapshotDirName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	crashed := btrfs.Snapshot{Plan: "p", Time: time.Now().UTC().Add(-time.Hour).Truncate(time.Second), JobID: 41, Subvolume: home}
	if err := btrfs.SnapshotReadOnly(home, filepath.Join(dir, crashed.Name())); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "btrfs", "subvolume", "create", filepath.Join(dir, "mine"))

	var started []uint32 // the start of subvault run backup's pings
	res, id, err := RunOnce(context.Background(), e.cfg, "p", slog.New(slog.NewTextHandler(e.logs, nil)), func(id uint32) { started = append(started, id) }, nil)
	if err != nil || res.Result != ResultDone {
		t.Fatalf("RunOnce: %+v, %v\n%s", res, err, e.logs)
	}
	if len(started) != 1 || started[0] != id || id == 0 {
		t.Errorf("RunOnce told of its start with ids %v, want job %d's once", started, id)
	}
	list, err := btrfs.ListSnapshots(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].JobID != id {
		t.Errorf("snapshots after the run: %+v; want only job %d's (keep_snapshots last: 1)", list, id)
	}
	if ok, _ := btrfs.IsSubvolume(filepath.Join(dir, "mine")); !ok {
		t.Error("a subvolume subvault did not make was removed")
	}
	if !strings.Contains(e.logs.String(), crashed.Name()) {
		t.Errorf("the removal of the leftover is not logged:\n%s", e.logs)
	}
	// The run is recorded for the daemon's history (docs/daemon.md,
	// "Foreground runs").
	rec, err := state.Spool{Dir: filepath.Join(e.cfg.Settings.StateDir, state.ForegroundDir)}.Read(id)
	if err != nil || rec.State != contract.StateFinished || rec.Result != contract.ResultDone || rec.ArchiveID != res.ArchiveID ||
		rec.Summary["files_new"] == nil || rec.PID != os.Getpid() || !rec.FinishedAt.After(rec.StartedAt) {
		t.Errorf("the run's record: %+v, %v", rec, err)
	}
}

// Each failure says what failed and what to do, and leaves no snapshot.
func TestFailuresSayWhatToDo(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.Restic(t)
	cases := []struct {
		name  string
		setup func(t *testing.T, e *testEnv)
		want  []string
	}{
		{"wrong password", func(t *testing.T, e *testEnv) {
			wrong := filepath.Join(t.TempDir(), "wrong.pass")
			testutil.WriteSecret(t, wrong, "not the password")
			e.configure(t, fmt.Sprintf("url: %s\n    password_file: %s", e.repo, wrong), []string{e.fs.Path("home")}, "")
		}, []string{"wrong password", "wrong.pass"}},
		{"missing repository", func(t *testing.T, e *testEnv) {
			e.configure(t, fmt.Sprintf("url: %s\n    password_file: %s", filepath.Join(t.TempDir(), "nothere"), e.password), []string{e.fs.Path("home")}, "")
		}, []string{"does not exist", "init: true"}},
		{"not a subvolume", func(t *testing.T, e *testEnv) {
			plain := e.fs.Path("home", "plain")
			if err := os.MkdirAll(plain, 0o755); err != nil {
				t.Fatal(err)
			}
			e.configure(t, fmt.Sprintf("url: %s\n    password_file: %s", e.repo, e.password), []string{plain}, "")
		}, []string{"is not a btrfs subvolume", "plain"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, bin, 256, []string{"home"}, "")
			testutil.WriteFile(t, e.fs.Path("home", "f"), "x")
			c.setup(t, e)
			res, err := e.job(1).Run(context.Background())
			if err == nil || res.Result != ResultFailed {
				t.Fatalf("result %q, err %v; want failed", res.Result, err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			noSnapshotsLeft(t, e.fs.Path("home", planstore.DefaultSnapshotDirName))
		})
	}
}

// init: true creates a missing repository, then backs up.
func TestInitCreatesRepository(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.Restic(t)
	e := newEnv(t, bin, 256, []string{"home"}, "")
	testutil.WriteFile(t, e.fs.Path("home", "f"), "x")
	e.repo = filepath.Join(t.TempDir(), "new-repo")
	e.configure(t, fmt.Sprintf("url: %s\n    password_file: %s\n    init: true", e.repo, e.password), []string{e.fs.Path("home")}, "")
	if res := e.run(t, 1); res.ArchiveID == "" {
		t.Fatalf("no archive: %+v", res)
	}
	if n := len(e.archives(t)); n != 1 {
		t.Errorf("%d archives in the new repository, want 1", n)
	}
}

// Hooks run in order with the job's environment; a failing before_snapshot
// hook fails the job before anything is taken.
func TestHooks(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.Restic(t)
	out := filepath.Join(t.TempDir(), "hooks.log")
	hook := func(name string) string {
		return fmt.Sprintf(`["/bin/sh", "-c", "echo %s $SUBVAULT_PLAN $SUBVAULT_JOB $SUBVAULT_RESULT >> %s"]`, name, out)
	}
	extra := fmt.Sprintf("    hooks:\n      before_snapshot: %s\n      after_snapshot: %s\n      on_success: %s\n      on_failure: %s\n",
		hook("before"), hook("after"), hook("success"), hook("failure"))
	e := newEnv(t, bin, 256, []string{"home"}, extra)
	testutil.WriteFile(t, e.fs.Path("home", "f"), "x")
	e.run(t, 5)
	if got, want := readFile(t, out), "before p 5\nafter p 5\nsuccess p 5 done\n"; got != want {
		t.Errorf("hooks ran:\n%s\nwant:\n%s", got, want)
	}

	failing := strings.Replace(extra, hook("before"), `["/bin/false"]`, 1)
	e.configure(t, fmt.Sprintf("url: %s\n    password_file: %s", e.repo, e.password), []string{e.fs.Path("home")}, failing)
	if err := os.Remove(out); err != nil {
		t.Fatal(err)
	}
	res, err := e.job(6).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "before_snapshot") {
		t.Fatalf("failing before_snapshot hook: %+v, %v", res, err)
	}
	if got, want := readFile(t, out), "failure p 6 failed\n"; got != want {
		t.Errorf("hooks ran:\n%s\nwant:\n%s", got, want)
	}
	noSnapshotsLeft(t, e.fs.Path("home", planstore.DefaultSnapshotDirName))
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

// replaceFile writes content to path atomically (write, rename), so that a
// reader or a snapshot sees the old content or the new, never a torn write.
func replaceFile(path, content string) {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err == nil {
		_ = os.Rename(tmp, path)
	}
}

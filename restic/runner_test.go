package restic

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/internal/testutil"
)

// The test binary's main thread stays with the main goroutine, so a test
// goroutine that unshares its mount namespace (TestPartialBackup) never
// runs on it. daemon/mountns's init does this for every binary that runs
// restic in a namespace (its mainthread.go says why); restic sits below
// daemon and cannot import it.
func init() { runtime.LockOSThread() }

type fixture struct {
	r    *Runner
	logs *testutil.SyncBuffer
	bin  string
	ver  string
	repo string
	pw   string
}

// forEachRestic runs fn in a subtest for every restic binary
// (testutil.ForEachRestic), each with a new repository.
func forEachRestic(t *testing.T, fn func(t *testing.T, f *fixture)) {
	t.Helper()
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		repo, pw := testutil.NewResticRepo(t, bin)
		logs := &testutil.SyncBuffer{}
		r := &Runner{
			Binary:   bin,
			Repo:     Repository{URL: repo, PasswordFile: pw, CacheDir: filepath.Join(t.TempDir(), "cache")},
			Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			Hostname: "subvault-test",
			Grace:    10 * time.Second,
		}
		fn(t, &fixture{r: r, logs: logs, bin: bin, ver: testutil.ResticVersion(bin), repo: repo, pw: pw})
		if t.Failed() {
			t.Logf("runner log:\n%s", logs)
		}
	})
}

// smallTree makes n files of 1 KiB and a sparse file of sparseGiB (restic
// reads its zeros, which takes long enough for status messages).
func smallTree(t *testing.T, n int, sparseGiB int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		body := bytes.Repeat([]byte(fmt.Sprintf("file %d ", i)), 128)
		if err := os.WriteFile(filepath.Join(dir, "sub", fmt.Sprintf("f%02d", i)), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if sparseGiB > 0 {
		f, err := os.Create(filepath.Join(dir, "sparse"))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(sparseGiB << 30); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	return dir
}

func TestVersion(t *testing.T) {
	forEachRestic(t, func(t *testing.T, f *fixture) {
		v, err := f.r.Version(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if v.String() != f.ver {
			t.Errorf("Version = %s, want %s", v, f.ver)
		}
		if f.r.deviceIDFlag != v.AtLeast(0, 17, 0) {
			t.Errorf("restic %s: device-id-for-hardlinks flag %v", v, f.r.deviceIDFlag)
		}
		f.r.Binary = "/nonexistent/restic" // cached: no second run
		if v2, err := f.r.Version(context.Background()); err != nil || v2 != v {
			t.Errorf("second Version = %v, %v", v2, err)
		}
	})
}

func TestBackupSnapshotsForgetCheckRestore(t *testing.T) {
	forEachRestic(t, func(t *testing.T, f *fixture) {
		ctx := context.Background()
		dir := smallTree(t, 10, 3)
		var statuses []BackupStatus
		snapTime := time.Date(2026, 11, 21, 3, 0, 7, 0, time.Local)
		first, err := f.r.Backup(ctx, BackupOptions{Paths: []string{dir}, Tags: []string{"plan-home"}, Time: snapTime}, func(s BackupStatus) { statuses = append(statuses, s) })
		if err != nil {
			t.Fatal(err)
		}
		if first.Summary == nil || first.Summary.FilesNew != 11 || first.SnapshotID == "" || first.Partial {
			t.Fatalf("first backup: %+v %+v", first, first.Summary)
		}
		if len(statuses) == 0 {
			t.Error("the status callback was never called")
		} else if last := statuses[len(statuses)-1]; last.TotalBytes < 3<<30 {
			t.Errorf("last status %+v: total bytes should count the 3 GiB file", last)
		}
		archives, err := f.r.Snapshots(ctx, SnapshotFilter{Tags: []string{"plan-home"}, Hosts: []string{"subvault-test"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(archives) != 1 || strings.Join(archives[0].Paths, ",") != dir || archives[0].Hostname != "subvault-test" ||
			!strings.HasPrefix(archives[0].ID, first.SnapshotID) || archives[0].Parent != "" || archives[0].Tags[0] != "plan-home" ||
			!archives[0].Time.Equal(snapTime) {
			t.Fatalf("archives = %+v", archives)
		}

		second, err := f.r.Backup(ctx, BackupOptions{Paths: []string{dir}, Tags: []string{"plan-home"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if s := second.Summary; s.FilesUnmodified != 11 || s.FilesNew != 0 || s.FilesChanged != 0 {
			t.Errorf("second backup summary %+v: want all 11 files unmodified", s)
		}
		archives, err = f.r.Snapshots(ctx, SnapshotFilter{Paths: []string{dir}})
		if err != nil {
			t.Fatal(err)
		}
		if len(archives) != 2 || archives[1].Parent != archives[0].ID {
			t.Fatalf("second archive's parent: %+v", archives)
		}
		if none, err := f.r.Snapshots(ctx, SnapshotFilter{Hosts: []string{"elsewhere"}}); err != nil || len(none) != 0 {
			t.Errorf("Snapshots for another host = %v, %v", none, err)
		}

		if _, err := f.r.Backup(ctx, BackupOptions{Paths: []string{dir}, Tags: []string{"plan-home"}}, nil); err != nil {
			t.Fatal(err)
		}
		res, err := f.r.Forget(ctx, ForgetOptions{KeepLast: 1, Prune: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Groups) != 1 || len(res.Kept()) != 1 || len(res.Removed()) != 2 || res.Groups[0].Host != "subvault-test" {
			t.Errorf("forget: %+v", res)
		}
		if !strings.Contains(res.PruneOutput, "done") {
			t.Errorf("prune output %q", res.PruneOutput)
		}
		if archives, err = f.r.Snapshots(ctx, SnapshotFilter{}); err != nil || len(archives) != 1 || archives[0].ID != res.Kept()[0] {
			t.Errorf("after forget: %+v, %v", archives, err)
		}
		if err := f.r.Check(ctx, "50%"); err != nil {
			t.Errorf("check: %v", err)
		}

		target := t.TempDir()
		if err := f.r.Restore(ctx, RestoreOptions{ArchiveID: archives[0].ShortID, Target: target, Include: []string{filepath.Join(dir, "sub")}}, nil); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(target, dir, "sub", "f03"))
		if err != nil || !bytes.HasPrefix(got, []byte("file 3 ")) {
			t.Errorf("restored f03: %q, %v", got, err)
		}
		if _, err := os.Stat(filepath.Join(target, dir, "sparse")); !os.IsNotExist(err) {
			t.Errorf("restore ignored --include: sparse is there (%v)", err)
		}

		packs, _ := filepath.Glob(filepath.Join(f.repo, "data", "*", "*"))
		if len(packs) == 0 {
			t.Fatal("no pack files in the repository")
		}
		// Garbage in place of the packs (a missing file would make 0.14
		// retry for a minute and a half). restic makes them read-only,
		// which stops their owner too unless it is root.
		for _, p := range packs {
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, bytes.Repeat([]byte{0x5a}, int(st.Size())), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		err = f.r.Check(ctx, "")
		if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "restic check found problems in repository "+f.repo) {
			t.Errorf("check of a damaged repository: %v", err)
		}
		t.Logf("restic %s, damaged repository: %s", f.ver, err)
	})
}

func TestWrongPassword(t *testing.T) {
	forEachRestic(t, func(t *testing.T, f *fixture) {
		bad := filepath.Join(t.TempDir(), "nas.pass")
		os.WriteFile(bad, []byte("not-the-password\n"), 0o600)
		f.r.Repo.PasswordFile = bad
		_, err := f.r.Backup(context.Background(), BackupOptions{Paths: []string{smallTree(t, 1, 0)}}, nil)
		if !errors.Is(err, ErrWrongPassword) {
			t.Fatalf("err = %v, want ErrWrongPassword", err)
		}
		want := fmt.Sprintf("repository %s: wrong password (check password_file %s)", f.repo, bad)
		if err.Error() != want {
			t.Errorf("message %q, want %q", err, want)
		}
		t.Logf("restic %s: %s", f.ver, err)
	})
}

func TestMissingRepositoryThenInit(t *testing.T) {
	forEachRestic(t, func(t *testing.T, f *fixture) {
		ctx := context.Background()
		f.r.Repo.URL = filepath.Join(t.TempDir(), "new-repo")
		dir := smallTree(t, 2, 0)
		_, err := f.r.Backup(ctx, BackupOptions{Paths: []string{dir}}, nil)
		if !IsNoRepository(err) {
			t.Fatalf("err = %v, want ErrNoRepository", err)
		}
		if !strings.Contains(err.Error(), `does not exist (create it with "restic init", or set init: true for this repository)`) {
			t.Errorf("message %q", err)
		}
		t.Logf("restic %s: %s", f.ver, err)
		if _, err := f.r.Snapshots(ctx, SnapshotFilter{}); !IsNoRepository(err) {
			t.Errorf("snapshots: %v, want ErrNoRepository", err)
		}
		if err := f.r.Init(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := f.r.Backup(ctx, BackupOptions{Paths: []string{dir}}, nil); err != nil {
			t.Fatalf("backup after init: %v", err)
		}
		if err := f.r.Init(ctx); err == nil || IsNoRepository(err) {
			t.Errorf("second init: %v, want a plain failure", err)
		}
	})
}

// unreadableAsRoot finds a file root cannot read: a sysfs attribute without
// read permission refuses open(O_RDONLY) with EACCES even to root (kernfs
// checks the mode, not capabilities), and reading it has no side effect.
// chmod 000, FIFOs and chattr do not stop root, and a vanishing file is a
// race.
func unreadableAsRoot(t *testing.T) string {
	t.Helper()
	matches, _ := filepath.Glob("/sys/bus/*/uevent")
	for _, m := range matches {
		if st, err := os.Stat(m); err == nil && st.Mode().Perm()&0o444 == 0 {
			if fh, err := os.Open(m); err == nil {
				fh.Close()
				continue
			}
			return m
		}
	}
	testutil.SkipOrFail(t, "a write-only sysfs file (/sys/bus/*/uevent, mode 0200) to make an unreadable file as root")
	return ""
}

// TestPartialBackup binds an unreadable sysfs file over a file of the tree,
// in a private mount namespace of a locked thread, and runs the backup from
// that thread: the way the daemon does it. That restic sees the bind mount
// proves Backup forks from the calling thread.
func TestPartialBackup(t *testing.T) {
	testutil.RequireRoot(t)
	forEachRestic(t, func(t *testing.T, f *fixture) {
		src := unreadableAsRoot(t)
		dir := smallTree(t, 3, 0)
		victim := filepath.Join(dir, "sub", "unreadable")
		if err := os.WriteFile(victim, []byte("readable outside the namespace\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		type outcome struct {
			res BackupResult
			err error
		}
		done := make(chan outcome)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread dies with the namespace
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				done <- outcome{err: fmt.Errorf("unshare: %w", err)}
				return
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				done <- outcome{err: fmt.Errorf("make / private: %w", err)}
				return
			}
			if err := unix.Mount(src, victim, "", unix.MS_BIND, ""); err != nil {
				done <- outcome{err: fmt.Errorf("bind %s: %w", src, err)}
				return
			}
			res, err := f.r.Backup(context.Background(), BackupOptions{Paths: []string{dir}}, nil)
			done <- outcome{res, err}
		}()
		o := <-done
		var perr *PartialError
		if !errors.As(o.err, &perr) {
			t.Fatalf("err = %v, want *PartialError", o.err)
		}
		if !o.res.Partial || o.res.SnapshotID == "" || perr.SnapshotID != o.res.SnapshotID {
			t.Errorf("result %+v", o.res)
		}
		if len(o.res.Unreadable) != 1 || o.res.Unreadable[0].Path != victim || !strings.Contains(o.res.Unreadable[0].Message, "permission denied") {
			t.Errorf("unreadable = %+v, want %s: permission denied", o.res.Unreadable, victim)
		}
		if errors.Is(o.err, ErrFailed) {
			t.Error("a partial backup is also a failure")
		}
		t.Logf("restic %s: %s", f.ver, o.err)
		archives, err := f.r.Snapshots(context.Background(), SnapshotFilter{})
		if err != nil || len(archives) != 1 || !strings.HasPrefix(archives[0].ID, o.res.SnapshotID) {
			t.Errorf("the partial archive should exist: %+v, %v", archives, err)
		}
		if b, _ := os.ReadFile(victim); !bytes.HasPrefix(b, []byte("readable")) {
			t.Error("the bind mount leaked out of the namespace")
		}
	})
}

// holdLock starts `restic key passwd`, which takes an exclusive lock and
// then waits for a new password on stdin, and returns once the lock is in
// the repository. foreignHost, when set, is the hostname restic runs under
// (unshare --uts), so the lock looks made elsewhere.
func holdLock(t *testing.T, f *fixture, foreignHost string) *exec.Cmd {
	t.Helper()
	var cmd *exec.Cmd
	if foreignHost == "" {
		cmd = exec.Command(f.bin, "key", "passwd")
	} else {
		testutil.RequireRoot(t)
		testutil.RequireCommand(t, "unshare", "util-linux")
		cmd = exec.Command("unshare", "--uts", "sh", "-c", `hostname "$1" && exec "$2" key passwd`, "sh", foreignHost, f.bin)
	}
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "RESTIC_REPOSITORY=" + f.repo, "RESTIC_PASSWORD_FILE=" + f.pw}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close() })
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if locks, err := f.r.Locks(context.Background()); err == nil && len(locks) == 1 {
			return cmd
		}
	}
	t.Fatal("restic key passwd did not lock the repository within 30 s")
	return nil
}

func TestStaleLockOfThisHostIsRemoved(t *testing.T) {
	forEachRestic(t, func(t *testing.T, f *fixture) {
		ctx := context.Background()
		holder := holdLock(t, f, "")
		holder.Process.Kill() // SIGKILL: restic cannot remove its lock
		holder.Wait()
		locks, err := f.r.Locks(ctx)
		if err != nil || len(locks) != 1 || !locks[0].Exclusive {
			t.Fatalf("want one stale exclusive lock: %+v, %v", locks, err)
		}
		if _, err := f.r.Backup(ctx, BackupOptions{Paths: []string{smallTree(t, 2, 0)}}, nil); err != nil {
			t.Fatalf("backup over a stale lock of this host: %v", err)
		}
		if !strings.Contains(f.logs.String(), "removing a stale lock of this host") {
			t.Error("no log line for the removed lock")
		}
		if locks, err := f.r.Locks(ctx); err != nil || len(locks) != 0 {
			t.Errorf("locks after backup: %+v, %v", locks, err)
		}

		// The same for check, which needs an exclusive lock itself, over
		// the non-exclusive one of a killed backup.
		holder = holdLock(t, f, "")
		holder.Process.Kill()
		holder.Wait()
		if err := f.r.Check(ctx, ""); err != nil {
			t.Fatalf("check over a stale lock of this host: %v", err)
		}
	})
}

func TestLiveAndForeignLocksAreKept(t *testing.T) {
	forEachRestic(t, func(t *testing.T, f *fixture) {
		ctx := context.Background()
		dir := smallTree(t, 2, 0)

		live := holdLock(t, f, "")
		_, err := f.r.Backup(ctx, BackupOptions{Paths: []string{dir}}, nil)
		if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("locked by a restic still running on this host (pid %d", live.Process.Pid)) {
			t.Fatalf("live lock: %v", err)
		}
		t.Logf("restic %s, live lock: %s", f.ver, err)
		live.Process.Kill()
		live.Wait()
		if err := f.r.Unlock(ctx); err != nil {
			t.Fatal(err)
		}

		foreign := holdLock(t, f, "other-host")
		foreign.Process.Kill()
		foreign.Wait()
		_, err = f.r.Backup(ctx, BackupOptions{Paths: []string{dir}}, nil)
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("foreign lock: err = %v, want ErrLocked", err)
		}
		var e *Error
		errors.As(err, &e)
		if e.Lock == nil || e.Lock.Hostname != "other-host" ||
			!strings.Contains(err.Error(), "is locked by another restic (host other-host, pid ") ||
			!strings.HasSuffix(err.Error(), `; if that process is gone, run "restic unlock"`) {
			t.Errorf("message %q, lock %+v", err, e.Lock)
		}
		t.Logf("restic %s, foreign lock: %s", f.ver, err)
		locks, err := f.r.Locks(ctx)
		if err != nil || len(locks) != 1 || locks[0].Hostname != "other-host" {
			t.Errorf("the foreign lock should stay: %+v, %v", locks, err)
		}
		if strings.Contains(f.logs.String(), "removing a stale lock") {
			t.Error("a lock was removed")
		}
	})
}

func TestCancelBackup(t *testing.T) {
	forEachRestic(t, func(t *testing.T, f *fixture) {
		dir := smallTree(t, 2, 400) // sparse: minutes of reading zeros
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var once sync.Once
		start := time.Now()
		_, err := f.r.Backup(ctx, BackupOptions{Paths: []string{dir}}, func(s BackupStatus) {
			if s.BytesDone > 0 {
				once.Do(cancel)
			}
		})
		elapsed := time.Since(start)
		if !errors.Is(err, ErrInterrupted) {
			t.Fatalf("err = %v, want ErrInterrupted", err)
		}
		t.Logf("restic %s: %s after %v", f.ver, err, elapsed.Round(time.Millisecond))
		if elapsed > f.r.Grace {
			t.Errorf("took %v: restic did not stop on SIGINT before the grace period", elapsed)
		}
		if !strings.Contains(f.logs.String(), "canceled=true") || strings.Contains(f.logs.String(), "signal=killed") {
			t.Errorf("restic should have ended by itself after SIGINT:\n%s", f.logs)
		}
		locks, err := f.r.Locks(context.Background())
		if err != nil || len(locks) != 0 {
			t.Errorf("locks left after an interrupted backup: %+v, %v", locks, err)
		}
		if archives, err := f.r.Snapshots(context.Background(), SnapshotFilter{}); err != nil || len(archives) != 0 {
			t.Errorf("an interrupted backup made an archive: %+v, %v", archives, err)
		}
	})
}

func TestSecretsStayOut(t *testing.T) {
	forEachRestic(t, func(t *testing.T, f *fixture) {
		ctx := context.Background()
		envFile := filepath.Join(t.TempDir(), "backend.env")
		os.WriteFile(envFile, []byte("# backend keys\nexport AWS_SECRET_ACCESS_KEY=\"env-file-secret-77\"\n"), 0o600)
		f.r.Repo.EnvFile = envFile
		t.Setenv("SUBVAULT_DAEMON_ONLY", "must-not-reach-restic")
		var cmdlines, environs []string
		f.r.onStart = func(pid int) {
			c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			e, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
			cmdlines = append(cmdlines, string(bytes.ReplaceAll(c, []byte{0}, []byte{' '})))
			environs = append(environs, string(bytes.ReplaceAll(e, []byte{0}, []byte{'\n'})))
		}
		if _, err := f.r.Backup(ctx, BackupOptions{Paths: []string{smallTree(t, 2, 0)}}, nil); err != nil {
			t.Fatal(err)
		}
		// A repository URL with a password, unreachable: 0.17+ retries, so
		// stop it after a few seconds.
		f.r.Repo.URL = "rest:http://user:url-secret-42@127.0.0.1:1/"
		short, cancel := context.WithTimeout(ctx, 4*time.Second)
		_, uerr := f.r.Snapshots(short, SnapshotFilter{})
		cancel()
		if !errors.Is(uerr, ErrUnreachable) && !errors.Is(uerr, ErrInterrupted) {
			t.Errorf("unreachable: %v", uerr)
		}
		var e *Error
		errors.As(uerr, &e)
		t.Logf("restic %s, unreachable: %s", f.ver, uerr)

		secrets := []string{testutil.ResticPassword, "env-file-secret-77", "url-secret-42"}
		if len(cmdlines) < 2 {
			t.Fatalf("saw %d processes", len(cmdlines))
		}
		for i, c := range cmdlines {
			for _, s := range secrets {
				if strings.Contains(c, s) {
					t.Errorf("argv %q holds a secret", c)
				}
			}
			env := environs[i]
			if strings.Contains(env, "SUBVAULT_DAEMON_ONLY") {
				t.Errorf("restic got the daemon's environment:\n%s", env)
			}
			if strings.HasPrefix(c, f.bin+" backup") {
				for _, want := range []string{"RESTIC_PASSWORD_FILE=" + f.pw, "AWS_SECRET_ACCESS_KEY=env-file-secret-77", "LANG=C.UTF-8"} {
					if !strings.Contains(env, want+"\n") {
						t.Errorf("backup env lacks %s:\n%s", want, env)
					}
				}
				if got := strings.Contains(env, "RESTIC_FEATURES=device-id-for-hardlinks\n"); got != !strings.HasPrefix(f.ver, "0.14") {
					t.Errorf("restic %s: RESTIC_FEATURES set = %v", f.ver, got)
				}
			}
		}
		logs := f.logs.String()
		for _, s := range secrets {
			if strings.Contains(logs, s) || strings.Contains(uerr.Error(), s) || (e != nil && strings.Contains(e.Stderr, s)) {
				t.Errorf("secret %q in logs or error", s)
			}
		}
		if !strings.Contains(logs, "rest:http://user:***@127.0.0.1:1/") {
			t.Errorf("logs should name the redacted url:\n%s", logs)
		}
	})
}

func TestEnvFileErrorsStopTheRun(t *testing.T) {
	forEachRestic(t, func(t *testing.T, f *fixture) {
		envFile := filepath.Join(t.TempDir(), "bad.env")
		os.WriteFile(envFile, []byte("AWS_KEY=x\nRESTIC_PASSWORD=hunter2\n"), 0o600)
		f.r.Repo.EnvFile = envFile
		started := false
		f.r.onStart = func(int) { started = true }
		_, err := f.r.Snapshots(context.Background(), SnapshotFilter{})
		want := envFile + ":2: RESTIC_PASSWORD may not be set in an env_file"
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("err = %v, want %q", err, want)
		}
		// Version ran (it needs no repository); nothing with the repository did.
		if started && strings.Contains(f.logs.String(), "op=snapshots") {
			t.Error("restic snapshots ran despite the bad env file")
		}
	})
}

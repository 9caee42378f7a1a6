package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/internal/testutil"
)

// newCopyEnv is the daemon on a private system bus with plan home copying
// to repository offsite, plan wrong (same subvolume) copying to the same
// repository with the wrong password, and plan ao on an append_only
// repository.
func newCopyEnv(t *testing.T, bin string) (e *apiEnv, offsite, offsitePassword string) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.SkipShort(t, "btrfs, restic and a bus")
	testutil.RequireCommand(t, "busctl", "systemd")
	testutil.RequireCommand(t, "dbus-send", "dbus-bin")
	bus := testutil.NewSystemBus(t, busPolicy)
	e = &apiEnv{daemonEnv: &daemonEnv{runEnv: newRunEnvWith(t, bin, 512), bus: bus, notify: newNotifySocket(t)}, called: map[string]bool{}}
	e.state = filepath.Dir(e.config)
	offsite, offsitePassword = testutil.NewResticRepo(t, bin)
	nas, nasPassword := testutil.NewResticRepo(t, bin)
	wrong := filepath.Join(t.TempDir(), "wrong.pass")
	testutil.WriteFile(t, wrong, "not the password of offsite")
	if err := os.Chmod(wrong, 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, e.config, fmt.Sprintf(`repositories:
  r:
    url: %[1]s
    password_file: %[2]s
  offsite:
    url: %[3]s
    password_file: %[4]s
  offsite-wrong:
    url: %[3]s
    password_file: %[5]s
  nas:
    url: %[6]s
    password_file: %[7]s
    append_only: true
plans:
  home:
    subvolumes: [%[8]s]
    repository: r
    copy_to: [offsite]
  wrong:
    subvolumes: [%[8]s]
    repository: r
    copy_to: [offsite-wrong]
  ao:
    subvolumes: [%[8]s]
    repository: nas
settings:
  state_dir: %[9]s
  cache_dir: %[10]s
  restic: %[11]s
`, e.repo, e.password, offsite, offsitePassword, wrong, nas, nasPassword, e.fs.Path("home"), e.state, filepath.Join(e.state, "cache"), bin))
	testutil.WriteFile(t, e.fs.Path("home", "a"), "the file the copy carries")
	return e, offsite, offsitePassword
}

// waitJobs waits until the plan has a finished job of each kind, and
// returns the plan's jobs from jobs.json.
func (e *apiEnv) waitJobs(t *testing.T, plan string, limit time.Duration, kinds ...queue.Kind) map[queue.Kind]queue.Job {
	t.Helper()
	var got map[queue.Kind]queue.Job
	waitFor(t, limit, func() int {
		got = map[queue.Kind]queue.Job{}
		for _, j := range e.jobs(t) {
			if j.Plan == plan && j.State == queue.StateFinished {
				got[j.Kind] = j
			}
		}
		for _, k := range kinds {
			if _, ok := got[k]; !ok {
				return 0
			}
		}
		return 1
	})
	return got
}

func resticJSON(t *testing.T, bin, repo, password string, out any, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-r", repo, "--no-cache", "--json"}, args...)...)
	cmd.Env = append(os.Environ(), "RESTIC_PASSWORD_FILE="+password)
	data, err := cmd.Output()
	if err != nil {
		t.Fatalf("restic %v: %v", args, err)
	}
	if err := json.Unmarshal(data, out); err != nil {
		t.Fatalf("restic %v: %v: %s", args, err, data)
	}
}

// copy_to through the daemon, with both restic versions: a backup of home
// queues a copy job (kind copy) that ends done, and the second repository
// then holds the archive with the same tree and the same files; a copy
// to a repository whose password is wrong is its own failed job, naming
// the repository, and its backup stays done. A prune of the plan on the
// append_only repository is refused over D-Bus (InvalidArgument) and by
// the CLI, with the reason; nobody (uid 65534) may not start a copy, and
// a flood of copies is one queued job.
func TestCopyToThroughTheDaemon(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		e, offsite, offsitePassword := newCopyEnv(t, bin)
		e.startDaemon(t)

		// Append-only: refused before anything is queued.
		before := e.jobCount(t)
		name, out := e.send("StartPrune", "string:ao")
		if name != contract.ErrorInvalidArgument || !strings.Contains(out, "append_only: true on repository nas") ||
			!strings.Contains(out, "retention belongs to the server's owner") {
			t.Errorf("StartPrune of a plan on an append_only repository: %s %s", name, out)
		}
		cli := subvaultCmd("prune", "ao", "--bus", e.bus.Address)
		cliOut, _ := cli.CombinedOutput()
		if code := cli.ProcessState.ExitCode(); code != exitUsage || !strings.Contains(string(cliOut), "this host never forgets or prunes there") {
			t.Errorf("subvault prune ao: exit %d, %s", code, cliOut)
		}
		t.Logf("subvault prune ao: %s", strings.TrimSpace(string(cliOut)))
		if n := e.jobCount(t); n != before {
			t.Errorf("%d jobs after the refused prunes, want %d", n, before)
		}

		// A backup, then its copy.
		bid := e.startJob(t, "StartBackup", "s", "home")
		jobs := e.waitJobs(t, "home", 3*time.Minute, queue.KindBackup, queue.KindCopy)
		b, c := jobs[queue.KindBackup], jobs[queue.KindCopy]
		if b.ID != bid || b.Result != queue.ResultDone {
			t.Fatalf("backup %d: %s %s", b.ID, b.Result, b.Error)
		}
		if c.Result != queue.ResultDone || c.ID <= b.ID || len(c.CopyArchives) != 1 || c.CopyArchives[0] != b.ArchiveID {
			t.Fatalf("copy job %d: %s %q archives %v; want done, after backup %d, of its archive %s", c.ID, c.Result, c.Error, c.CopyArchives, b.ID, b.ArchiveID)
		}
		var src, dst []struct {
			ID, Tree, Original string
			Tags               []string
		}
		resticJSON(t, bin, e.repo, e.password, &src, "snapshots")
		resticJSON(t, bin, offsite, offsitePassword, &dst, "snapshots")
		if len(src) != 1 || len(dst) != 1 || dst[0].Tree != src[0].Tree {
			t.Fatalf("archives: source %+v, second repository %+v; want one each with the same tree", src, dst)
		}
		cmd := exec.Command(bin, "-r", offsite, "--no-cache", "--json", "ls", dst[0].ID)
		cmd.Env = append(os.Environ(), "RESTIC_PASSWORD_FILE="+offsitePassword)
		lsOut, err := cmd.Output()
		if err != nil || !strings.Contains(string(lsOut), e.fs.Path("home", "a")) {
			t.Errorf("restic ls of the copy: %v: %s", err, lsOut)
		}

		// jobs shows it.
		list := subvaultCmd("jobs", "--bus", e.bus.Address)
		listOut, _ := list.CombinedOutput()
		if !strings.Contains(string(listOut), "copy") {
			t.Errorf("subvault jobs does not show the copy:\n%s", listOut)
		}

		// A copy with the wrong password: its own failure.
		wid := e.startJob(t, "StartBackup", "s", "wrong")
		jobs = e.waitJobs(t, "wrong", 3*time.Minute, queue.KindBackup, queue.KindCopy)
		b, c = jobs[queue.KindBackup], jobs[queue.KindCopy]
		if b.ID != wid || b.Result != queue.ResultDone {
			t.Errorf("backup of wrong: %s %s, want done whatever its copy does", b.Result, b.Error)
		}
		if c.Result != queue.ResultFailed || !strings.Contains(c.Error, "to repository offsite-wrong") || !strings.Contains(c.Error, "wrong password") {
			t.Errorf("copy to offsite-wrong: %s %q; want failed, naming the repository and the wrong password", c.Result, c.Error)
		}
		t.Logf("failed copy: %s", c.Error)

		// Nobody may not start a copy of a plan they are not allowed on.
		if name, out := e.sendAsNobody("StartCopy", "string:home"); name != contract.ErrorAccessDenied {
			t.Errorf("StartCopy as uid 65534: %s %s, want AccessDenied", name, out)
		}
		// A flood of copies gathers in one queued job next to the running one.
		for range 30 {
			e.send("StartCopy", "string:home")
		}
		active := 0
		for _, j := range e.jobs(t) {
			if j.Kind == queue.KindCopy && j.Plan == "home" && j.Active() {
				active++
			}
		}
		if active > 2 {
			t.Errorf("%d copy jobs of home queued or running after 30 StartCopy, want at most 2", active)
		}
		e.waitJobs(t, "home", 3*time.Minute, queue.KindCopy)
		waitFor(t, 3*time.Minute, func() int {
			for _, j := range e.jobs(t) {
				if j.Active() {
					return 0
				}
			}
			return 1
		})
	})
}

// A prune through the daemon against a server that refuses deletes (the
// repository not marked append_only): the job ends failed, never done,
// with the one line that says the server refused and what to do, and
// both archives are still there. Before: done, "archives_removed=1" (0.18)
// or a Go stack trace's last line after 44 s (0.14).
func TestPruneOnAppendOnlyServerThroughTheDaemon(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.SkipShort(t, "btrfs, restic, rclone and a bus")
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		e := &daemonEnv{runEnv: newRunEnvWith(t, bin, 256), bus: testutil.NewBus(t), notify: newNotifySocket(t)}
		e.state = filepath.Dir(e.config)
		url := testutil.NewRESTServer(t, testutil.RESTOptions{AppendOnly: true}).Repository("repo")
		testutil.WriteFile(t, e.config, fmt.Sprintf(`repositories:
  nas:
    url: %s
    password_file: %s
    init: true
plans:
  home:
    subvolumes: [%s]
    repository: nas
    retention: {last: 1}
    prune_schedule: ""
settings:
  state_dir: %s
  cache_dir: %s
  restic: %s
`, url, e.password, e.fs.Path("home"), e.state, filepath.Join(e.state, "cache"), bin))
		testutil.WriteFile(t, e.fs.Path("home", "a"), "first")
		_, log := e.start(t)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("daemon log:\n%s", log)
			}
		})
		e.notify.waitFor(t, 0, 30*time.Second, "READY=1", func(m string) bool { return m == "READY=1" })
		for i := range 2 {
			testutil.WriteFile(t, e.fs.Path("home", "a"), fmt.Sprintf("version %d", i))
			cmd := subvaultCmd("backup", "home", "--wait", "--bus", e.bus.Address)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("backup %d: %v\n%s", i, err, out)
			}
		}
		start := time.Now()
		cmd := subvaultCmd("prune", "home", "--wait", "--bus", e.bus.Address)
		out, _ := cmd.CombinedOutput()
		t.Logf("%s: subvault prune home --wait: exit %d after %s:\n%s", testutil.ResticName(bin), cmd.ProcessState.ExitCode(),
			time.Since(start).Round(time.Millisecond), out)
		if cmd.ProcessState.ExitCode() == exitOK {
			t.Errorf("subvault prune against an append-only server exited 0")
		}
		// The bus hears of the end a moment before jobs.json has it.
		var prune queue.Job
		waitFor(t, 10*time.Second, func() int {
			for _, j := range e.jobs(t) {
				if j.Kind == queue.KindPrune && j.State == queue.StateFinished {
					prune = j
					return 1
				}
			}
			return 0
		})
		if prune.Result != queue.ResultFailed || !strings.Contains(prune.Error, "the server refused to delete archives") ||
			!strings.Contains(prune.Error, "set append_only: true") || strings.Contains(prune.Error, ".go:") {
			t.Errorf("prune job: %s %q; want failed with the server's refusal and what to do", prune.Result, prune.Error)
		}
		var archives []struct{ ID string }
		cmdR := exec.Command(bin, "-r", url, "--no-cache", "--json", "snapshots")
		cmdR.Env = append(os.Environ(), "RESTIC_PASSWORD_FILE="+e.password)
		data, err := cmdR.Output()
		if err != nil || json.Unmarshal(data, &archives) != nil || len(archives) != 2 {
			t.Errorf("archives after the refused prune: %v %s; want both", err, data)
		}
	})
}

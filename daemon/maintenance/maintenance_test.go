package maintenance

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/internal/testutil"
	"github.com/subvault/subvault/restic"
)

// testEnv is a restic repository and a configuration whose plans "p" and
// "q" both use it.
type testEnv struct {
	bin  string
	repo string
	cfg  *config.Config
	logs *testutil.SyncBuffer
	log  *slog.Logger
	// dir is a plain directory with a file in it, to back up.
	dir string
}

// newEnv makes a repository with bin and a configuration in which plan p
// backs up subvolumes with pExtra (YAML lines at plan level, indented 4) and
// plan q backs up the same with the default retention.
func newEnv(t *testing.T, bin string, subvolumes []string, pExtra string) *testEnv {
	t.Helper()
	repo, password := testutil.NewResticRepo(t, bin)
	state := t.TempDir()
	dir := t.TempDir()
	buf := make([]byte, 4096)
	if _, err := rand.Read(buf); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, filepath.Join(dir, "file"), string(buf))
	if subvolumes == nil {
		subvolumes = []string{dir}
	}
	text := fmt.Sprintf(`repositories:
  r:
    url: %s
    password_file: %s
plans:
  p:
    subvolumes: [%[3]s]
    repository: r
%[4]s
  q:
    subvolumes: [%[3]s]
    repository: r
settings:
  state_dir: %[5]s
  cache_dir: %[6]s
  restic: %[7]s
`, repo, password, strings.Join(subvolumes, ", "), pExtra, state, filepath.Join(state, "cache"), bin)
	cfg, err := config.Parse("test.yaml", []byte(text))
	if err != nil {
		t.Fatalf("test configuration: %v\n%s", err, text)
	}
	logs := &testutil.SyncBuffer{}
	e := &testEnv{bin: bin, repo: repo, cfg: cfg, logs: logs, dir: dir,
		log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs)
		}
	})
	return e
}

func (e *testEnv) runner(t *testing.T) *restic.Runner {
	t.Helper()
	r, err := planstore.NewRunner(e.cfg, e.cfg.Plans["p"], e.log)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// archive makes an archive of e.dir dated at, with the tags, as host ("" for
// this host), and returns its id (8 hex digits with 0.14, 64 after).
func (e *testEnv) archive(t *testing.T, at time.Time, host string, tags ...string) string {
	t.Helper()
	return e.archiveOf(t, e.dir, at, host, tags...)
}

func (e *testEnv) archiveOf(t *testing.T, path string, at time.Time, host string, tags ...string) string {
	t.Helper()
	res, err := e.runner(t).Backup(context.Background(), restic.BackupOptions{Paths: []string{path}, Tags: tags, Time: at, Host: host}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.SnapshotID
}

// days are five archive times, the newest an hour ago, each 26 hours
// before the next: five calendar days, and exactly two of them within 2d
// (48h) of the newest. Oldest first.
func days() []time.Time {
	newest := time.Now().Add(-time.Hour).Truncate(time.Second)
	var ts []time.Time
	for i := 4; i >= 0; i-- {
		ts = append(ts, newest.Add(-time.Duration(i)*26*time.Hour))
	}
	return ts
}

func (e *testEnv) archives(t *testing.T) []restic.Archive {
	t.Helper()
	list, err := e.runner(t).Snapshots(context.Background(), restic.SnapshotFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// sameIDs reports whether the full ids and the (possibly short) ids name
// the same archives, in any order.
func sameIDs(full, short []string) bool {
	if len(full) != len(short) {
		return false
	}
	for _, s := range short {
		if !slices.ContainsFunc(full, func(f string) bool { return s != "" && strings.HasPrefix(f, s) }) {
			return false
		}
	}
	return true
}

// count is how many archives have the tag (or no tag at all, for "") and,
// when host is not "", that host.
func count(list []restic.Archive, tag, host string) int {
	n := 0
	for _, a := range list {
		if host != "" && a.Hostname != host {
			continue
		}
		if tag == "" && len(a.Tags) == 0 || tag != "" && slices.Contains(a.Tags, tag) {
			n++
		}
	}
	return n
}

// daily: 2 over five days keeps the two newest of the plan's archives, all
// in one group although the plan's own tags and paths changed on the way,
// and leaves alone another plan's archives, untagged archives made by hand
// and the plan's archives made by another host.
func TestPruneDailyKeepsTwoAndOnlyThePlans(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		e := newEnv(t, bin, nil, "    retention: {daily: 2}\n    prune_schedule: \"@daily\"")
		other := t.TempDir()
		testutil.WriteFile(t, filepath.Join(other, "f"), "other")
		var mine []string
		for i, at := range days() {
			// The plan's user tags and its subvolumes changed after the
			// second day: still one plan, one group.
			if i < 2 {
				mine = append(mine, e.archiveOf(t, other, at, "", planstore.Tag("p"), "old-tag"))
			} else {
				mine = append(mine, e.archive(t, at, "", planstore.Tag("p"), "new-tag"))
			}
			e.archive(t, at, "", planstore.Tag("q"))
		}
		for _, at := range days()[:2] {
			e.archive(t, at, "") // by hand, untagged
		}
		e.archive(t, days()[0], "elsewhere", planstore.Tag("p"))

		res, err := Prune(context.Background(), e.cfg, e.cfg.Plans["p"], e.log, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if !sameIDs(res.KeptArchives, mine[3:]) {
			t.Errorf("forget kept %v, want the two newest %v", res.KeptArchives, mine[3:])
		}
		if !sameIDs(res.RemovedArchives, mine[:3]) {
			t.Errorf("forget removed %v, want the three oldest %v", res.RemovedArchives, mine[:3])
		}
		if res.PruneOutput == "" {
			t.Error("no prune report: was --prune passed?")
		}

		list := e.archives(t)
		host, _ := os.Hostname()
		var left []string
		for _, a := range list {
			if a.Hostname == host && slices.Contains(a.Tags, planstore.Tag("p")) {
				left = append(left, a.ID)
			}
		}
		if !sameIDs(left, mine[3:]) {
			t.Errorf("restic snapshots after the prune: plan p's archives %v, want %v", left, mine[3:])
		}
		if n := count(list, planstore.Tag("q"), ""); n != 5 {
			t.Errorf("plan q has %d archives left, want all 5", n)
		}
		if n := count(list, "", ""); n != 2 {
			t.Errorf("%d untagged archives left, want both", n)
		}
		if n := count(list, planstore.Tag("p"), "elsewhere"); n != 1 {
			t.Errorf("%d of plan p's archives of host elsewhere left, want 1", n)
		}
		if len(list) != 2+5+2+1 {
			t.Errorf("%d archives in all, want 10", len(list))
		}
		logs := e.logs.String()
		for _, want := range []string{"plan=p kind=prune event=job-started", "event=job-done", "event=archive-forgotten", "--group-by host"} {
			if !strings.Contains(logs, want) {
				t.Errorf("the log lacks %q", want)
			}
		}
	})
}

// within: 2d keeps what is less than two days older than the plan's newest
// archive.
func TestPruneWithin(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		e := newEnv(t, bin, nil, "    retention: {within: 2d}")
		var mine []string
		for _, at := range days() {
			mine = append(mine, e.archive(t, at, "", planstore.Tag("p")))
		}
		e.archive(t, days()[0], "", planstore.Tag("q"))
		res, err := Prune(context.Background(), e.cfg, e.cfg.Plans["p"], e.log, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if !sameIDs(res.KeptArchives, mine[3:]) || !sameIDs(res.RemovedArchives, mine[:3]) {
			t.Errorf("kept %v and removed %v, want kept %v", res.KeptArchives, res.RemovedArchives, mine[3:])
		}
		list := e.archives(t)
		if n := count(list, planstore.Tag("p"), ""); n != 2 {
			t.Errorf("%d archives of plan p left, want 2", n)
		}
		if n := count(list, planstore.Tag("q"), ""); n != 1 {
			t.Errorf("%d archives of plan q left, want 1", n)
		}
	})
}

// A retention that keeps nothing is refused before restic runs, also for a
// manual prune (which the configuration lets through without a
// prune_schedule).
func TestPruneRefusesRetentionKeepingNothing(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		e := newEnv(t, bin, nil, "    retention: {}\n    prune_schedule: \"\"")
		for _, at := range days()[:3] {
			e.archive(t, at, "", planstore.Tag("p"))
		}
		res, err := Prune(context.Background(), e.cfg, e.cfg.Plans["p"], e.log, time.Now())
		if !errors.Is(err, ErrKeepsNothing) {
			t.Fatalf("Prune = %+v, %v; want ErrKeepsNothing", res, err)
		}
		msg := err.Error()
		for _, want := range []string{"plan p", "keeps no archive", "refused", "nothing was deleted", "plans.p.retention"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message %q lacks %q", msg, want)
			}
		}
		if strings.Contains(e.logs.String(), "op=forget") {
			t.Error("restic ran for a refused prune")
		}
		if n := len(e.archives(t)); n != 3 {
			t.Errorf("%d archives left, want all 3", n)
		}
		t.Logf("refused: %v", err)
	})
}

// A prune whose context is already done deletes nothing.
func TestPruneCanceled(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		e := newEnv(t, bin, nil, "    retention: {last: 1}")
		for _, at := range days()[:3] {
			e.archive(t, at, "", planstore.Tag("p"))
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := Prune(ctx, e.cfg, e.cfg.Plans["p"], e.log, time.Now())
		if err == nil || !strings.Contains(err.Error(), "canceled") {
			t.Fatalf("Prune with a canceled context: %v", err)
		}
		if n := len(e.archives(t)); n != 3 {
			t.Errorf("%d archives left, want all 3", n)
		}
		if !strings.Contains(e.logs.String(), "event=job-canceled") {
			t.Error("no job-canceled event logged")
		}
	})
}

// keep_snapshots {last: 1} leaves the plan's newest local snapshot, and
// another plan's snapshots alone.
func TestPruneAppliesKeepSnapshots(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		fs := testutil.NewBtrfs(t, 256, "home")
		home := fs.Path("home")
		testutil.WriteFile(t, filepath.Join(home, "notes"), "v1")
		e := newEnv(t, bin, []string{home}, "    retention: {last: 3}\n    keep_snapshots: {last: 1}")
		e.archiveOf(t, home, time.Now().Add(-time.Hour), "", planstore.Tag("p"))

		dir := planstore.SnapshotDir(e.cfg.Plans["p"], home)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC().Truncate(time.Second)
		var made []btrfs.Snapshot
		for i, plan := range []string{"p", "p", "p", "q"} {
			s := btrfs.Snapshot{Plan: plan, Time: now.Add(time.Duration(i-4) * time.Hour), JobID: uint32(i + 1), Subvolume: home}
			s.Path = filepath.Join(dir, s.Name())
			if err := btrfs.SnapshotReadOnly(home, s.Path); err != nil {
				t.Fatal(err)
			}
			made = append(made, s)
		}

		left := func() []string {
			t.Helper()
			list, err := btrfs.ListSnapshots(dir)
			if err != nil {
				t.Fatal(err)
			}
			var paths []string
			for _, s := range list {
				paths = append(paths, s.Path)
			}
			slices.Sort(paths)
			return paths
		}

		// Canceled: it stops, local snapshots included.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := Prune(ctx, e.cfg, e.cfg.Plans["p"], e.log, time.Now()); err == nil {
			t.Fatal("a canceled prune succeeded")
		}
		if n := len(left()); n != 4 {
			t.Fatalf("%d snapshots left after a canceled prune, want all 4", n)
		}

		res, err := Prune(context.Background(), e.cfg, e.cfg.Plans["p"], e.log, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(res.KeptArchives) != 1 || len(res.RemovedArchives) != 0 {
			t.Errorf("archives kept %v, removed %v; want 1 kept", res.KeptArchives, res.RemovedArchives)
		}
		if len(res.KeptSnapshots) != 1 || res.KeptSnapshots[0].Path != made[2].Path {
			t.Errorf("snapshots kept %v, want the newest of plan p: %s", res.KeptSnapshots, made[2].Path)
		}
		if len(res.RemovedSnapshots) != 2 {
			t.Errorf("snapshots removed %v, want the two older of plan p", res.RemovedSnapshots)
		}
		want := []string{made[2].Path, made[3].Path}
		slices.Sort(want)
		if got := left(); !slices.Equal(got, want) {
			t.Errorf("snapshots left %v, want %v (plan p's newest and plan q's)", got, want)
		}

		// restic fails (a wrong password): keep_snapshots still applies,
		// and the error says both.
		newer := btrfs.Snapshot{Plan: "p", Time: now.Add(-time.Minute), JobID: 9, Subvolume: home}
		newer.Path = filepath.Join(dir, newer.Name())
		if err := btrfs.SnapshotReadOnly(home, newer.Path); err != nil {
			t.Fatal(err)
		}
		wrong := filepath.Join(t.TempDir(), "wrong")
		testutil.WriteSecret(t, wrong, "not the password\n")
		cfg := *e.cfg
		repo := *cfg.Repositories["r"]
		repo.PasswordFile = wrong
		cfg.Repositories = map[string]*config.Repository{"r": &repo}
		res, err = Prune(context.Background(), &cfg, cfg.Plans["p"], e.log, time.Now())
		if !errors.Is(err, restic.ErrWrongPassword) || !strings.Contains(err.Error(), "wrong password") {
			t.Errorf("prune with a wrong password: %v", err)
		}
		if len(res.RemovedSnapshots) != 1 || res.RemovedSnapshots[0].Path != made[2].Path ||
			len(res.KeptSnapshots) != 1 || res.KeptSnapshots[0].Path != newer.Path {
			t.Errorf("with restic failing: kept %v, removed %v; want %s kept, %s removed", res.KeptSnapshots, res.RemovedSnapshots, newer.Path, made[2].Path)
		}
		t.Logf("restic failing: %v", err)
	})
}

// Check passes on a sound repository, also reading data back, and on one
// whose pack file is gone says the repository has errors and what to do.
func TestCheck(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		e := newEnv(t, bin, nil, "    check_read_data_subset: \"100%\"")
		big := make([]byte, 1<<20)
		if _, err := rand.Read(big); err != nil {
			t.Fatal(err)
		}
		testutil.WriteFile(t, filepath.Join(e.dir, "big"), string(big))
		e.archive(t, time.Now(), "", planstore.Tag("p"))

		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := Check(ctx, e.cfg, e.cfg.Plans["p"], e.log); err == nil || !strings.Contains(err.Error(), "canceled") {
			t.Errorf("check with a canceled context: %v", err)
		}
		if err := Check(context.Background(), e.cfg, e.cfg.Plans["p"], e.log); err != nil {
			t.Fatalf("check of a sound repository: %v", err)
		}
		if !strings.Contains(e.logs.String(), "--read-data-subset=100%") {
			t.Error("check did not read data back")
		}

		// The largest pack holds the random megabyte, not trees: removing it
		// is a damage a metadata-only check sees, without restic 0.14
		// retrying a missing tree pack for a minute and a half.
		packs, _ := filepath.Glob(filepath.Join(e.repo, "data", "*", "*"))
		var largest string
		var size int64
		for _, p := range packs {
			if st, err := os.Stat(p); err == nil && st.Size() > size {
				largest, size = p, st.Size()
			}
		}
		if size < 1<<20 {
			t.Fatalf("no pack of the random megabyte among %v", packs)
		}
		if err := os.Remove(largest); err != nil {
			t.Fatal(err)
		}
		plan := *e.cfg.Plans["p"]
		plan.CheckReadDataSubset = ""
		err := Check(context.Background(), e.cfg, &plan, e.log)
		var derr *DamagedError
		if !errors.Is(err, ErrRepositoryDamaged) || !errors.Is(err, restic.ErrFailed) || !errors.As(err, &derr) {
			t.Fatalf("check of a damaged repository: %v", err)
		}
		msg := err.Error()
		for _, want := range []string{"repository r (" + e.repo + ") of plan p has errors, the first: pack " + filepath.Base(largest) + ": does not exist",
			"restic check", "troubleshooting", "check again"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message %q lacks %q", msg, want)
			}
		}
		if strings.Contains(msg, "\n") {
			t.Errorf("message has several lines: %q", msg)
		}
		logs := e.logs.String()
		for _, want := range []string{"kind=check event=job-started", "event=job-canceled", "event=repository-damaged", "event=job-failed", "event=job-done"} {
			if !strings.Contains(logs, want) {
				t.Errorf("the log lacks %q", want)
			}
		}
		t.Logf("damaged: %v", err)
	})
}

func TestForgetOptions(t *testing.T) {
	plan := &config.Plan{Name: "home", Retention: config.Retention{Daily: 7, Weekly: 4, Within: "3d"}}
	o := ForgetOptions(plan, "box")
	if o.KeepDaily != 7 || o.KeepWeekly != 4 || o.KeepWithin != "3d" || o.KeepLast != 0 || !o.Prune || o.DryRun {
		t.Errorf("keep rules: %+v", o)
	}
	if o.GroupBy != "host" || !slices.Equal(o.Filter.Tags, []string{"subvault:home"}) || !slices.Equal(o.Filter.Hosts, []string{"box"}) {
		t.Errorf("selection: group by %q, filter %+v", o.GroupBy, o.Filter)
	}
	if o := ForgetOptions(plan, ""); len(o.Filter.Hosts) != 0 {
		t.Errorf("no host: filter %+v", o.Filter)
	}
}

func TestFirstProblem(t *testing.T) {
	for _, c := range []struct{ stderr, want string }{
		{"pack 2728: does not exist\nFatal: repository contains errors\n", "pack 2728: does not exist"},
		{"pack d1d4: does not exist\n\nThe repository is damaged and must be repaired. Please follow the troubleshooting guide at https://x .\n\nFatal: repository contains errors\n", "pack d1d4: does not exist"},
		{"{\"message_type\":\"x\"}\n[0:00] 100.00%\nFatal: repository contains errors", ""},
	} {
		if got := firstProblem(c.stderr); got != c.want {
			t.Errorf("firstProblem(%q) = %q, want %q", c.stderr, got, c.want)
		}
	}
}

package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/journal/journaltest"
)

// The queue's tests run in a synctest bubble: the queue's clock (time.Now)
// is the bubble's, which moves only when every goroutine of the test waits,
// and synctest.Wait returns once they all do, so "nothing else started" and
// "the job has ended" are facts, not guesses after a sleep.

// fakeExecutor runs jobs until they are released or canceled.
type fakeExecutor struct {
	mu       sync.Mutex
	started  chan Job
	release  map[uint32]chan error
	progress func(Progress)
	// progressOf is each started job's progress.
	progressOf map[uint32]func(Progress)
}

func newFakeExecutor() *fakeExecutor {
	return &fakeExecutor{started: make(chan Job, 100), release: map[uint32]chan error{}, progressOf: map[uint32]func(Progress){}}
}

func (f *fakeExecutor) ch(id uint32) chan error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.release[id] == nil {
		f.release[id] = make(chan error, 1)
	}
	return f.release[id]
}

func (f *fakeExecutor) Execute(ctx context.Context, job Job, progress func(Progress)) (Outcome, error) {
	f.mu.Lock()
	f.progress = progress
	f.progressOf[job.ID] = progress
	f.mu.Unlock()
	f.started <- job
	select {
	case err := <-f.ch(job.ID):
		return Outcome{ArchiveID: "a1"}, err
	case <-ctx.Done():
		return Outcome{}, ctx.Err()
	}
}

func (f *fakeExecutor) finish(id uint32, err error) { f.ch(id) <- err }

func (f *fakeExecutor) waitStarted(t *testing.T) Job {
	t.Helper()
	select {
	case j := <-f.started:
		return j
	case <-time.After(5 * time.Second):
		t.Fatal("no job started")
		return Job{}
	}
}

// noneStarted checks, once every goroutine of the bubble waits, that no
// job started.
func (f *fakeExecutor) noneStarted(t *testing.T) {
	t.Helper()
	synctest.Wait()
	select {
	case j := <-f.started:
		t.Fatalf("job %d (%s of %s) started, want none", j.ID, j.Kind, j.Plan)
	default:
	}
}

type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(s string)     { r.mu.Lock(); r.events = append(r.events, s); r.mu.Unlock() }
func (r *recorder) JobQueued(j Job)  { r.add(fmt.Sprintf("queued %s %s", j.Kind, j.Plan)) }
func (r *recorder) JobChanged(j Job) {}
func (r *recorder) JobFinished(j Job) {
	r.add(fmt.Sprintf("finished %s %s %s", j.Kind, j.Plan, j.Result))
}
func (r *recorder) JobForgotten(j Job) { r.add(fmt.Sprintf("forgotten %s %s", j.Kind, j.Plan)) }

var repos = map[string]string{"home": "nas", "srv": "nas", "laptop": "usb"}

func newTestQueue(t *testing.T, dir string, maxConcurrent, history int) (*Queue, *fakeExecutor, *recorder) {
	t.Helper()
	exec := newFakeExecutor()
	q, err := New(Config{MaxConcurrent: maxConcurrent, History: history, Repository: func(p string) string { return repos[p] }},
		exec, dir, slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	q.Subscribe(rec)
	t.Cleanup(q.Drain)
	return q, exec, rec
}

func TestConcurrentStartsOfOnePlanMakeOneJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, exec, _ := newTestQueue(t, t.TempDir(), 1, 10)
		var wg sync.WaitGroup
		ids := make(chan uint32, 50)
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				j, _, err := q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: TriggerManual, Caller: 0})
				if err != nil {
					t.Error(err)
				}
				ids <- j.ID
			}()
		}
		wg.Wait()
		close(ids)
		first := uint32(0)
		for id := range ids {
			if first == 0 {
				first = id
			}
			if id != first {
				t.Fatalf("two jobs: %d and %d", first, id)
			}
		}
		exec.waitStarted(t)
		if n := len(q.Jobs()); n != 1 {
			t.Errorf("%d jobs in the queue, want 1", n)
		}
	})
}

func TestPruneNeverBesideAnotherJobOnItsRepository(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, exec, _ := newTestQueue(t, t.TempDir(), 3, 10)
		b, _, _ := q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: TriggerManual, Caller: 0})
		exec.waitStarted(t)
		p, _, _ := q.Enqueue(Order{Kind: KindPrune, Plan: "srv", Trigger: TriggerManual, Caller: 0}) // same repository
		exec.noneStarted(t)
		// A backup of srv (same repository) queued after the prune waits too,
		// so the prune is not starved; a job on another repository runs.
		q.Enqueue(Order{Kind: KindBackup, Plan: "srv", Trigger: TriggerManual, Caller: 0})
		q.Enqueue(Order{Kind: KindBackup, Plan: "laptop", Trigger: TriggerManual, Caller: 0})
		if j := exec.waitStarted(t); j.Plan != "laptop" {
			t.Fatalf("started %s of %s, want the backup of laptop", j.Kind, j.Plan)
		}
		exec.noneStarted(t)
		exec.finish(b.ID, nil)
		if j := exec.waitStarted(t); j.ID != p.ID {
			t.Fatalf("started %s of %s, want the prune", j.Kind, j.Plan)
		}
		exec.noneStarted(t) // the srv backup waits for the prune
		exec.finish(p.ID, nil)
		if j := exec.waitStarted(t); j.Plan != "srv" || j.Kind != KindBackup {
			t.Fatalf("started %s of %s, want the backup of srv", j.Kind, j.Plan)
		}
	})
}

func TestMaxConcurrentJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, exec, _ := newTestQueue(t, t.TempDir(), 1, 10)
		a, _, _ := q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: TriggerManual, Caller: 0})
		exec.waitStarted(t)
		q.Enqueue(Order{Kind: KindBackup, Plan: "laptop", Trigger: TriggerManual, Caller: 0})
		exec.noneStarted(t)
		exec.finish(a.ID, nil)
		exec.waitStarted(t)
	})
}

func TestCancelQueuedAndRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, exec, rec := newTestQueue(t, t.TempDir(), 1, 10)
		running, _, _ := q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: TriggerManual, Caller: 0})
		exec.waitStarted(t)
		queued, _, _ := q.Enqueue(Order{Kind: KindBackup, Plan: "laptop", Trigger: TriggerManual, Caller: 0})
		if err := q.Cancel(queued.ID); err != nil {
			t.Fatal(err)
		}
		if err := q.Cancel(running.ID); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if n := q.Running(); n > 0 {
			t.Fatalf("%d job(s) still running after their cancel", n)
		}
		for _, id := range []uint32{queued.ID, running.ID} {
			if j, _ := q.Job(id); j.State != StateFinished || j.Result != ResultCanceled {
				t.Errorf("job %d: state %s result %s, want finished canceled", id, j.State, j.Result)
			}
		}
		if err := q.Cancel(running.ID); !errors.Is(err, ErrNoSuchJob) {
			t.Errorf("cancel of a finished job: %v, want ErrNoSuchJob", err)
		}
		exec.noneStarted(t) // the canceled queued job never ran
		_ = rec
	})
}

func TestHistoryPersistsAndInterruptedJobsComeBackFailed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		q, exec, _ := newTestQueue(t, dir, 1, 3)
		for range 5 {
			j, _, _ := q.Enqueue(Order{Kind: KindCheck, Plan: "laptop", Trigger: TriggerSchedule, Caller: -1})
			exec.waitStarted(t)
			exec.finish(j.ID, nil)
			waitFinished(t, q, j.ID)
		}
		running, _, _ := q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: TriggerManual, Caller: 0})
		exec.waitStarted(t)

		// The daemon "dies" here: a new queue reads the state file as it is.
		data, err := os.ReadFile(filepath.Join(dir, StateFile))
		if err != nil {
			t.Fatal(err)
		}
		dir2 := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir2, StateFile), data, 0o600); err != nil {
			t.Fatal(err)
		}
		q2, _, _ := newTestQueue(t, dir2, 1, 3)
		jobs := q2.Jobs()
		if len(jobs) != 3 {
			t.Fatalf("%d jobs after restart, want the 3 of the history", len(jobs))
		}
		if jobs[0].ID != running.ID || jobs[0].Result != ResultFailed || jobs[0].Error != InterruptedError {
			t.Errorf("newest job after restart: %+v; want job %d failed %q", jobs[0], running.ID, InterruptedError)
		}
		if st := q2.PlanStatus("home"); st.LastResult != ResultFailed || st.LastError != InterruptedError {
			t.Errorf("plan status after restart: %+v", st)
		}
		if q2.LastRun("laptop", KindCheck).IsZero() {
			t.Error("last run times were not kept")
		}
		if next, _, _ := q2.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: TriggerManual, Caller: 0}); next.ID <= running.ID {
			t.Errorf("job id %d reused (last was %d)", next.ID, running.ID)
		}
	})
}

func TestBrokenStateFileIsMovedAside(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	q, _, _ := newTestQueue(t, dir, 1, 3)
	if len(q.Jobs()) != 0 {
		t.Error("jobs from a broken file")
	}
	aside, _ := filepath.Glob(filepath.Join(dir, StateFile+".broken-*"))
	if len(aside) != 1 {
		t.Errorf("the broken file was not kept aside: %v", aside)
	}
}

func TestDrainInterruptsRunningJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, exec, _ := newTestQueue(t, t.TempDir(), 1, 10)
		a, _, _ := q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: TriggerManual, Caller: 0})
		exec.waitStarted(t)
		b, _, _ := q.Enqueue(Order{Kind: KindBackup, Plan: "laptop", Trigger: TriggerManual, Caller: 0})
		q.Drain()
		if j, _ := q.Job(a.ID); j.Result != ResultFailed || j.Error != InterruptedError {
			t.Errorf("running job after drain: %s %q", j.Result, j.Error)
		}
		if j, _ := q.Job(b.ID); j.State != StateFinished {
			t.Errorf("queued job after drain: %s", j.State)
		}
		if _, _, err := q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: TriggerManual, Caller: 0}); err == nil {
			t.Error("a draining queue accepted a job")
		}
	})
}

// LastSuccess is the last done backup's end: a failed, partial or canceled
// backup after it moves LastBackup only, and a restart (the state file)
// keeps both.
func TestLastSuccessSurvivesFailedBackupsAndRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		q, exec, _ := newTestQueue(t, dir, 1, 10)
		backup := func(end func(id uint32)) Job {
			t.Helper()
			j, _, err := q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: TriggerManual, Caller: 0})
			if err != nil {
				t.Fatal(err)
			}
			exec.waitStarted(t)
			end(j.ID)
			waitFinished(t, q, j.ID)
			j, _ = q.Job(j.ID)
			return j
		}
		done := backup(func(id uint32) { exec.finish(id, nil) })
		if st := q.PlanStatus("home"); !st.LastSuccess.Equal(done.FinishedAt) || !st.LastBackup.Equal(done.FinishedAt) {
			t.Fatalf("after a done backup: %+v, want LastSuccess and LastBackup %v", st, done.FinishedAt)
		}
		time.Sleep(time.Minute) // distinct times: the bubble's clock moves at once
		// The fake executor's outcome has an archive: this is a partial backup.
		failed := backup(func(id uint32) { exec.finish(id, errors.New("restic: wrong password")) })
		time.Sleep(time.Minute)
		canceled := backup(func(id uint32) {
			if err := q.Cancel(id); err != nil {
				t.Fatal(err)
			}
		})
		if failed.Result != ResultFailed || canceled.Result != ResultCanceled {
			t.Fatalf("results %s, %s; want failed, canceled", failed.Result, canceled.Result)
		}
		st := q.PlanStatus("home")
		if !st.LastSuccess.Equal(done.FinishedAt) || !st.LastBackup.Equal(canceled.FinishedAt) || st.LastResult != ResultCanceled {
			t.Errorf("after failed and canceled backups: %+v; want LastSuccess %v, LastBackup %v canceled", st, done.FinishedAt, canceled.FinishedAt)
		}

		q.Drain()
		q2, _, _ := newTestQueue(t, dir, 1, 10)
		if st2 := q2.PlanStatus("home"); !st2.LastSuccess.Equal(st.LastSuccess) || !st2.LastBackup.Equal(st.LastBackup) || st2.LastResult != st.LastResult {
			t.Errorf("after a restart: %+v, want %+v", st2, st)
		}
	})
}

// A state file written before LastSuccess existed: a plan whose last backup
// was done succeeded then; one whose last backup was not done takes its
// newest done backup from the history, or keeps 0 when the history has
// none; a file without plans but with a backup that was running loads.
func TestLastSuccessFromAnOldStateFile(t *testing.T) {
	const old = `{"version": 1, "jobs": [
 {"id": 1, "kind": "backup", "plan": "home", "state": "finished", "result": "done", "finished_at": "2026-03-10T03:05:00Z"},
 {"id": 2, "kind": "backup", "plan": "home", "state": "finished", "result": "done", "finished_at": "2026-03-11T03:05:00Z"},
 {"id": 3, "kind": "check", "plan": "srv", "state": "finished", "result": "done", "finished_at": "2026-03-11T04:00:00Z"},
 {"id": 4, "kind": "backup", "plan": "home", "state": "finished", "result": "canceled", "finished_at": "2026-03-12T03:01:00Z"}
], "last_run": {}, "plans": {
 "home": {"last_backup": "2026-03-12T03:01:00Z", "last_result": "canceled", "last_error": "canceled"},
 "srv": {"last_backup": "2026-03-09T03:05:00Z", "last_result": "failed", "last_error": "wrong password"},
 "laptop": {"last_backup": "2026-03-01T03:05:00Z", "last_result": "done"}
}}`
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	q, _, _ := newTestQueue(t, dir, 1, 10)
	for plan, want := range map[string]time.Time{
		"home":   time.Date(2026, 3, 11, 3, 5, 0, 0, time.UTC),
		"srv":    {},
		"laptop": time.Date(2026, 3, 1, 3, 5, 0, 0, time.UTC),
	} {
		if got := q.PlanStatus(plan).LastSuccess; !got.Equal(want) {
			t.Errorf("%s: LastSuccess %v, want %v", plan, got, want)
		}
	}

	noPlans := `{"version": 1, "jobs": [{"id": 7, "kind": "backup", "plan": "home", "state": "running"}]}`
	dir2 := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir2, StateFile), []byte(noPlans), 0o600); err != nil {
		t.Fatal(err)
	}
	q2, _, _ := newTestQueue(t, dir2, 1, 10)
	if st := q2.PlanStatus("home"); st.LastResult != ResultFailed || !st.LastSuccess.IsZero() {
		t.Errorf("a backup interrupted before any success: %+v", st)
	}
}

// A restore job's entries say what it restores, where and how: the
// archive (the id it resolved to, once it ran), the target and the mode.
func TestRestoreJobEntriesNameTargetAndMode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// run runs one job of kind to its end with executor's outcome, and
		// returns what was logged.
		run := func(kind Kind, tmpl RestoreArgs, outcome Outcome, err error) *journaltest.Recorder {
			t.Helper()
			rec := journaltest.NewRecorder()
			q, qerr := New(Config{MaxConcurrent: 1, History: 10, Repository: func(p string) string { return repos[p] }},
				&outcomeExecutor{outcome, err}, t.TempDir(), slog.New(rec), nil)
			if qerr != nil {
				t.Fatal(qerr)
			}
			t.Cleanup(q.Drain)
			j, _, qerr := q.Enqueue(Order{Kind: kind, Plan: "home", Trigger: TriggerManual, Caller: 0, Restore: tmpl})
			if qerr != nil {
				t.Fatal(qerr)
			}
			waitFinished(t, q, j.ID)
			return rec
		}

		// A failed restore into a new subvolume, verified; the archive is not
		// resolved (the restore failed before it said which).
		rec := run(KindRestore, RestoreArgs{Archive: "latest", Target: "/srv/restored", RestoreMode: "subvolume", Verify: true},
			Outcome{}, errors.New("restic: no space left on device"))
		for _, event := range []string{journal.EventJobQueued, journal.EventJobStarted, journal.EventJobFailed} {
			rec.Only(t, event).Want(t, event, map[string]string{"SUBVAULT_KIND": "restore", "SUBVAULT_ARCHIVE": "latest",
				"SUBVAULT_TARGET": "/srv/restored", "SUBVAULT_MODE": "subvolume", "SUBVAULT_VERIFY": "true"})
		}

		// A done directory restore: mode directory where the job leaves it
		// empty, and the archive it resolved, from its summary.
		rec = run(KindRestore, RestoreArgs{Archive: "latest", Target: "/tmp/r"}, Outcome{Summary: map[string]any{"archive": "4f1b2c3d"}}, nil)
		rec.Only(t, journal.EventJobDone).Want(t, journal.EventJobDone, map[string]string{"SUBVAULT_ARCHIVE": "4f1b2c3d",
			"SUBVAULT_TARGET": "/tmp/r", "SUBVAULT_MODE": "directory", "SUBVAULT_VERIFY": ""})

		// A backup's entries have none of these.
		rec = run(KindBackup, RestoreArgs{}, Outcome{ArchiveID: "a1"}, nil)
		rec.Only(t, journal.EventJobDone).Want(t, journal.EventJobDone, map[string]string{"SUBVAULT_ARCHIVE": "a1", "SUBVAULT_TARGET": "", "SUBVAULT_MODE": ""})
	})
}

// outcomeExecutor ends every job at once with its outcome and error.
type outcomeExecutor struct {
	outcome Outcome
	err     error
}

func (e *outcomeExecutor) Execute(context.Context, Job, func(Progress)) (Outcome, error) {
	return e.outcome, e.err
}

// Everyone who asks for a queued or running job is recorded once, in
// order, and survives a restart; a job asked for by others too cannot be
// canceled as one caller's own, and nobody can join it between that check
// and the cancel.
func TestJobRequestsAndCancelAskedOnlyBy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		q, exec, _ := newTestQueue(t, dir, 1, 10)
		first, created, err := q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: "dbus:1000", Caller: 1000})
		if err != nil || !created {
			t.Fatal(created, err)
		}
		exec.waitStarted(t)
		for _, ask := range []struct {
			trigger Trigger
			caller  int64
		}{{"dbus:1000", 1000}, {"dbus:0", 0}, {TriggerSchedule, -1}, {"dbus:0", 0}} {
			j, created, err := q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: ask.trigger, Caller: ask.caller})
			if err != nil || created || j.ID != first.ID {
				t.Fatalf("%s: job %d, created %v, %v; want job %d", ask.trigger, j.ID, created, err, first.ID)
			}
		}
		j, _ := q.Job(first.ID)
		if got := fmt.Sprint(j.Triggers(), j.Callers()); got != "[dbus:1000 dbus:0 schedule] [1000 0]" {
			t.Errorf("triggers and callers %s", got)
		}
		if j.AskedOnlyBy(1000) || j.Trigger != "dbus:1000" || j.Caller != 1000 {
			t.Errorf("%+v", j)
		}
		if err := q.CancelAskedOnlyBy(first.ID, 1000); !errors.Is(err, ErrAskedByOthers) {
			t.Errorf("CancelAskedOnlyBy of a shared job: %v", err)
		}

		// A job of one caller alone is that caller's to cancel, however often
		// it asked; nobody else's.
		mine, _, _ := q.Enqueue(Order{Kind: KindCheck, Plan: "laptop", Trigger: "dbus:1000", Caller: 1000})
		q.Enqueue(Order{Kind: KindCheck, Plan: "laptop", Trigger: "dbus:1000", Caller: 1000})
		if j, _ := q.Job(mine.ID); !j.AskedOnlyBy(1000) || j.AskedOnlyBy(0) || len(j.Requests) != 1 {
			t.Errorf("%+v", j)
		}
		if err := q.CancelAskedOnlyBy(mine.ID, 1001); !errors.Is(err, ErrAskedByOthers) {
			t.Errorf("another uid's CancelAskedOnlyBy: %v", err)
		}
		if err := q.CancelAskedOnlyBy(mine.ID, 1000); err != nil {
			t.Errorf("the caller's own: %v", err)
		}
		if j, _ := q.Job(mine.ID); j.Result != ResultCanceled {
			t.Errorf("after CancelAskedOnlyBy: %s", j.Result)
		}

		exec.finish(first.ID, nil)
		waitFinished(t, q, first.ID)
		q.Drain()
		q2, _, _ := newTestQueue(t, dir, 1, 10)
		if j, _ := q2.Job(first.ID); fmt.Sprint(j.Triggers()) != "[dbus:1000 dbus:0 schedule]" || j.Requests[2].Caller != -1 || j.Requests[1].At.IsZero() {
			t.Errorf("after a restart: %+v", j.Requests)
		}

		// A job of a state file from before requests were recorded: its own
		// trigger was all.
		old := `{"version": 1, "jobs": [{"id": 3, "kind": "backup", "plan": "home", "state": "finished", "result": "done", "trigger": "dbus:1000", "caller": 1000},
 {"id": 4, "kind": "backup", "plan": "home", "state": "finished", "result": "done", "trigger": "schedule", "caller": -1}]}`
		dir3 := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir3, StateFile), []byte(old), 0o600); err != nil {
			t.Fatal(err)
		}
		q3, _, _ := newTestQueue(t, dir3, 1, 10)
		j3, _ := q3.Job(3)
		j4, _ := q3.Job(4)
		if fmt.Sprint(j3.Triggers(), j3.Callers(), j3.AskedOnlyBy(1000), j4.Triggers(), j4.Callers(), j4.AskedOnlyBy(1000)) !=
			"[dbus:1000] [1000] true [schedule] [] false" {
			t.Errorf("an old state file's jobs: %+v %+v", j3, j4)
		}
	})
}

// A trigger that has asked is not recorded again, and the record is
// bounded.
func TestJobRequestsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, exec, _ := newTestQueue(t, t.TempDir(), 1, 10)
		first, _, _ := q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: "dbus:1", Caller: 1})
		exec.waitStarted(t)
		for uid := range int64(100) {
			q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: Trigger(fmt.Sprintf("dbus:%d", uid)), Caller: uid})
		}
		if j, _ := q.Job(first.ID); len(j.Requests) != MaxRequests || j.Triggers()[0] != "dbus:1" || j.AskedOnlyBy(1) {
			t.Errorf("%d requests: %v", len(j.Requests), j.Triggers())
		}
	})
}

// waitFinished checks, once every goroutine of the bubble waits, that job
// id has finished.
func waitFinished(t *testing.T, q *Queue, id uint32) {
	t.Helper()
	synctest.Wait()
	if j, _ := q.Job(id); j.Active() {
		t.Fatalf("job %d did not finish: %s", id, j.State)
	}
}

// jobs.json is read and written both ways: testdata/jobs-v1.json, as the
// daemon wrote it before the queue was a package of its own (every field
// of a job, a restore's record among them), loads with its jobs' values,
// and the file the queue writes back is the same, byte for byte.
func TestStateFileKeepsItsBytes(t *testing.T) {
	golden, err := os.ReadFile(filepath.Join("testdata", "jobs-v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, StateFile), golden, 0o600); err != nil {
		t.Fatal(err)
	}
	q, _, _ := newTestQueue(t, dir, 1, 10)
	backup, _ := q.Job(1)
	restore, _ := q.Job(2)
	check, _ := q.Job(3)
	if backup.Kind != KindBackup || backup.Result != ResultDone || backup.Trigger != TriggerSchedule || len(backup.Requests) != 2 ||
		restore.Kind != KindRestore || restore.Result != ResultFailed || restore.RestoreMode != "in-place" || !restore.Verify ||
		len(restore.Include) != 1 || len(restore.RestoreMade) == 0 || check.Result != ResultCanceled || check.Trigger != TriggerManual {
		t.Errorf("the jobs as loaded:\n%+v\n%+v\n%+v", backup, restore, check)
	}
	if st := q.PlanStatus("srv"); st.LastResult != ResultFailed || st.LastError != "wrong password" {
		t.Errorf("plan srv as loaded: %+v", st)
	}
	q.AmendError(3, check.Error) // writes the file again, changing nothing
	written, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(written, golden) {
		t.Errorf("the state file written back differs from testdata/jobs-v1.json:\n%s", written)
	}
}

// A postponed job (the executor's error wraps Postpone) ends postponed,
// with the executor's reason as its Error and a job-postponed entry; the
// plan's last backup stays the one before (a failure is not hidden, the
// overdue clock is not restarted); the history keeps only the latest of
// postponed jobs of a plan's kind in a row, and other jobs run beside it.
func TestPostponedJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		exec := newFakeExecutor()
		log := journaltest.NewRecorder()
		q, err := New(Config{MaxConcurrent: 1, History: 10, Repository: func(p string) string { return repos[p] }}, exec, t.TempDir(), slog.New(log), nil)
		if err != nil {
			t.Fatal(err)
		}
		rec := &recorder{}
		q.Subscribe(rec)
		t.Cleanup(q.Drain)
		run := func(plan string, trigger Trigger, err error) Job {
			t.Helper()
			j, _, qerr := q.Enqueue(Order{Kind: KindBackup, Plan: plan, Trigger: trigger, Caller: -1})
			if qerr != nil {
				t.Fatal(qerr)
			}
			exec.waitStarted(t)
			exec.finish(j.ID, err)
			waitFinished(t, q, j.ID)
			j, _ = q.Job(j.ID)
			return j
		}
		failed := run("home", TriggerSchedule, errors.New("restic: disk full"))
		time.Sleep(time.Minute)
		first := run("home", TriggerSchedule, Postpone(errors.New("waiting for the network: repository nas is unreachable")))
		if first.Result != ResultPostponed || first.Error != "waiting for the network: repository nas is unreachable" {
			t.Errorf("postponed job: %s, %q", first.Result, first.Error)
		}
		if st := q.PlanStatus("home"); st.LastResult != ResultFailed || !st.LastBackup.Equal(failed.FinishedAt) {
			t.Errorf("after a postponed backup the plan says %+v; want the failed one before", st)
		}
		other := run("laptop", TriggerSchedule, nil)
		time.Sleep(time.Minute)
		second := run("home", TriggerCatchUp, Postpone(errors.New("waiting for the network: again")))
		var ids []uint32
		for _, j := range q.Jobs() {
			ids = append(ids, j.ID)
		}
		if want := []uint32{second.ID, other.ID, failed.ID}; fmt.Sprint(ids) != fmt.Sprint(want) {
			t.Errorf("history %v, want %v: the first postponed job forgotten for the second", ids, want)
		}
		if len(log.Events(journal.EventJobPostponed)) != 2 {
			t.Errorf("%d job-postponed entries, want 2", len(log.Events(journal.EventJobPostponed)))
		}
		for _, e := range log.Events(journal.EventJobPostponed) {
			e.HasCatalogFields(t, journal.EventJobPostponed)
		}
		done := run("home", TriggerCatchUp, nil)
		if st := q.PlanStatus("home"); st.LastResult != ResultDone || !st.LastSuccess.Equal(done.FinishedAt) {
			t.Errorf("after the retry was done: %+v", st)
		}
		// A done job between them: the postponed one before it stays.
		run("home", TriggerSchedule, Postpone(errors.New("on battery")))
		if n := len(q.Jobs()); n != 5 {
			t.Errorf("%d jobs in the history, want 5", n)
		}
	})
}

// Only the schedule's own triggers make a job ScheduledOnly; a caller
// who asked for it too makes it the caller's.
func TestScheduledOnly(t *testing.T) {
	for _, c := range []struct {
		requests []Request
		want     bool
	}{
		{[]Request{{Trigger: TriggerSchedule, Caller: -1}}, true},
		{[]Request{{Trigger: TriggerCatchUp, Caller: -1}, {Trigger: TriggerSchedule, Caller: -1}}, true},
		{[]Request{{Trigger: TriggerSchedule, Caller: -1}, {Trigger: "dbus:1000", Caller: 1000}}, false},
		{[]Request{{Trigger: TriggerManual, Caller: -1}}, false},
	} {
		j := Job{Trigger: c.requests[0].Trigger, Caller: c.requests[0].Caller, Requests: c.requests}
		if got := j.ScheduledOnly(); got != c.want {
			t.Errorf("%+v: ScheduledOnly %v, want %v", c.requests, got, c.want)
		}
	}
	if old := (Job{Trigger: TriggerSchedule, Caller: -1}); !old.ScheduledOnly() {
		t.Error("a job from a state file without requests, triggered by the schedule, is not ScheduledOnly")
	}
}

// An executor's Stalled error ends the job stalled, with the error's own
// message; the plan's last result is stalled, and it is no success.
func TestStalledJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, exec, rec := newTestQueue(t, t.TempDir(), 1, 10)
		j, _, _ := q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: TriggerSchedule, Caller: -1})
		exec.waitStarted(t)
		exec.finish(j.ID, Stalled(errors.New("restic backup on repository nas made no progress for 10m0s")))
		waitFinished(t, q, j.ID)
		j, _ = q.Job(j.ID)
		if j.Result != ResultStalled || j.Error != "restic backup on repository nas made no progress for 10m0s" {
			t.Errorf("job: %s %q, want stalled with the executor's message", j.Result, j.Error)
		}
		if st := q.PlanStatus("home"); st.LastResult != ResultStalled || !st.LastSuccess.IsZero() {
			t.Errorf("plan status %+v, want last result stalled and no success", st)
		}
		if !slices.Contains(rec.events, "finished backup home stalled") {
			t.Errorf("listeners heard %q", rec.events)
		}

	})
}

// report is what job id's executor reports of its progress.
func (f *fakeExecutor) report(id uint32, p Progress) {
	f.mu.Lock()
	progress := f.progressOf[id]
	f.mu.Unlock()
	progress(p)
}

// A running job that waits on its repository (its restic made no progress
// for a while) gives up its place among max_concurrent_jobs to a job on
// another repository, but not to one on its own: a backup there would wait
// on the same server, and a prune or check never runs beside another job
// on its repository. When it moves again it counts again (one job more
// than the limit runs for a while), and each change is logged once.
func TestJobWaitingOnItsRepositoryGivesUpItsPlace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		exec := newFakeExecutor()
		log := journaltest.NewRecorder()
		repos := map[string]string{"home": "nas", "srv": "nas", "laptop": "usb", "cloud": "s3"}
		q, err := New(Config{MaxConcurrent: 1, History: 10, Repository: func(p string) string { return repos[p] }}, exec, t.TempDir(), slog.New(log), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(q.Drain)
		enqueue := func(kind Kind, plan string) Job {
			t.Helper()
			j, _, err := q.Enqueue(Order{Kind: kind, Plan: plan, Trigger: TriggerManual, Caller: -1})
			if err != nil {
				t.Fatal(err)
			}
			return j
		}
		home := enqueue(KindBackup, "home")
		exec.waitStarted(t)
		exec.report(home.ID, Progress{Fraction: 0.4, BytesDone: 40})
		prune := enqueue(KindPrune, "srv")   // on nas, as home
		backup := enqueue(KindBackup, "srv") // on nas too
		laptop := enqueue(KindBackup, "laptop")
		exec.noneStarted(t)

		// home's server hangs: restic made no progress for 30 s.
		time.Sleep(time.Minute)
		since := time.Now().Add(-30 * time.Second)
		waiting := Progress{Fraction: 0.4, BytesDone: 40, WaitingSince: since, Waiting: "restic retries the repository"}
		exec.report(home.ID, waiting)
		if j := exec.waitStarted(t); j.ID != laptop.ID {
			t.Fatalf("started %s of %s, want the backup of laptop (another repository)", j.Kind, j.Plan)
		}
		exec.noneStarted(t) // neither the prune nor the backup on nas
		if j, _ := q.Job(home.ID); j.State != StateRunning || !j.WaitingSince.Equal(since) || j.Waiting != "restic retries the repository" || j.BytesDone != 40 {
			t.Errorf("the waiting job: %s since %v (%q), %d bytes", j.State, j.WaitingSince, j.Waiting, j.BytesDone)
		}
		exec.report(home.ID, waiting) // restic's status lines go on while it waits
		exec.report(home.ID, waiting)

		// laptop ends: its place goes to none of the nas jobs either.
		exec.finish(laptop.ID, nil)
		waitFinished(t, q, laptop.ID)
		exec.noneStarted(t)

		// A job on a third repository takes the free place; then home
		// moves again and counts: two run, one more than the limit, and
		// nothing else starts until both have ended.
		cloud := enqueue(KindBackup, "cloud")
		if j := exec.waitStarted(t); j.ID != cloud.ID {
			t.Fatalf("started %s of %s, want the backup of cloud", j.Kind, j.Plan)
		}
		exec.report(home.ID, Progress{Fraction: 0.5, BytesDone: 50})
		if j, _ := q.Job(home.ID); !j.WaitingSince.IsZero() || j.Waiting != "" {
			t.Errorf("home moves again but still waits since %v (%q)", j.WaitingSince, j.Waiting)
		}
		if n := q.Running(); n != 2 {
			t.Errorf("%d jobs run, want 2", n)
		}
		exec.finish(cloud.ID, nil)
		waitFinished(t, q, cloud.ID)
		exec.noneStarted(t) // home counts again: the limit is reached
		exec.finish(home.ID, nil)
		if j := exec.waitStarted(t); j.ID != prune.ID {
			t.Fatalf("started %s of %s, want the prune of srv", j.Kind, j.Plan)
		}
		exec.finish(prune.ID, nil)
		if j := exec.waitStarted(t); j.ID != backup.ID {
			t.Fatalf("started %s of %s, want the backup of srv", j.Kind, j.Plan)
		}

		waits, moves := log.Events(journal.EventJobWaiting), log.Events(journal.EventJobMoving)
		if len(waits) != 1 || len(moves) != 1 {
			t.Fatalf("%d job-waiting and %d job-moving entries, want one each", len(waits), len(moves))
		}
		waits[0].HasCatalogFields(t, journal.EventJobWaiting)
		moves[0].HasCatalogFields(t, journal.EventJobMoving)
		waits[0].Want(t, "the job waiting", map[string]string{"SUBVAULT_PLAN": "home", "SUBVAULT_REPOSITORY": "nas", "SUBVAULT_NO_PROGRESS_FOR": "30s", "SUBVAULT_WHY": "restic retries the repository"})
	})
}

// stallListener keeps the StalledSince of every JobChanged and
// JobFinished it hears.
type stallListener struct {
	mu      sync.Mutex
	changed []time.Time
	ended   time.Time
}

func (l *stallListener) JobQueued(Job) {}
func (l *stallListener) JobChanged(j Job) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changed = append(l.changed, j.StalledSince)
}
func (l *stallListener) JobFinished(j Job) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ended = j.StalledSince
}
func (l *stallListener) JobForgotten(Job) {}

// A running job whose executor reports it stalled (on_stall: report)
// shows StalledSince in Jobs() and in the copies its listeners hear, is
// logged once (job-stall-reported, with the plan's stall_timeout), and
// clears when it moves again (job-stall-cleared); it keeps its place
// and ends as its executor says. A finished job is never stalled.
func TestJobStalledIsShownAndClears(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		exec := newFakeExecutor()
		log := journaltest.NewRecorder()
		q, err := New(Config{MaxConcurrent: 1, History: 10, Repository: func(p string) string { return repos[p] }}, exec, t.TempDir(), slog.New(log), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(q.Drain)
		l := &stallListener{}
		q.Subscribe(l)
		home, _, err := q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: TriggerManual, Caller: -1})
		if err != nil {
			t.Fatal(err)
		}
		exec.waitStarted(t)
		exec.report(home.ID, Progress{Fraction: 0.4, BytesDone: 40, StallTimeout: 5 * time.Second})
		time.Sleep(10 * time.Second)
		since := time.Now().Add(-5 * time.Second)
		stalled := Progress{Fraction: 0.4, BytesDone: 40, StalledSince: since, StallTimeout: 5 * time.Second}
		exec.report(home.ID, stalled)
		exec.report(home.ID, stalled) // status lines go on
		jobs := q.Jobs()
		if len(jobs) != 1 || !jobs[0].StalledSince.Equal(since) || jobs[0].StallTimeout != 5*time.Second || jobs[0].State != StateRunning {
			t.Fatalf("Jobs() = %+v, want the running job stalled since %v", jobs, since)
		}
		l.mu.Lock()
		if n := len(l.changed); n == 0 || !l.changed[n-1].Equal(since) {
			t.Errorf("listeners heard StalledSince %v, want %v last", l.changed, since)
		}
		l.mu.Unlock()
		if n := q.Running(); n != 1 {
			t.Errorf("%d jobs run, want 1", n)
		}

		exec.report(home.ID, Progress{Fraction: 0.5, BytesDone: 50, StallTimeout: 5 * time.Second})
		if j, _ := q.Job(home.ID); !j.StalledSince.IsZero() {
			t.Errorf("the job moves again but is stalled since %v", j.StalledSince)
		}
		exec.report(home.ID, stalled)
		exec.finish(home.ID, nil)
		waitFinished(t, q, home.ID)
		j, _ := q.Job(home.ID)
		if j.Result != ResultDone || !j.StalledSince.IsZero() {
			t.Errorf("finished %s, stalled since %v; want done and not stalled", j.Result, j.StalledSince)
		}
		l.mu.Lock()
		if !l.ended.IsZero() {
			t.Errorf("listeners heard a finished job stalled since %v", l.ended)
		}
		l.mu.Unlock()

		reported, cleared := log.Events(journal.EventJobStallReported), log.Events(journal.EventJobStallCleared)
		if len(reported) != 2 || len(cleared) != 1 {
			t.Fatalf("%d job-stall-reported and %d job-stall-cleared entries, want 2 and 1", len(reported), len(cleared))
		}
		reported[0].HasCatalogFields(t, journal.EventJobStallReported)
		cleared[0].HasCatalogFields(t, journal.EventJobStallCleared)
		reported[0].Want(t, "the stalled job", map[string]string{"SUBVAULT_PLAN": "home", "SUBVAULT_REPOSITORY": "nas",
			"SUBVAULT_NO_PROGRESS_FOR": "5s", "SUBVAULT_STALL_TIMEOUT": "5s"})
	})
}

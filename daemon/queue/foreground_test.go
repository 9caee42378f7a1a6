package queue

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func foregroundDone(id uint32, plan string, result Result, started, finished time.Time) Job {
	return Job{ID: id, Kind: KindBackup, Plan: plan, State: StateFinished, Result: result,
		QueuedAt: started, StartedAt: started, FinishedAt: finished}
}

// A foreground job runs in its own process: shown among the running jobs,
// its cancel refused with the process named, never written to jobs.json;
// once imported it is in the history, the plan's status and the last run
// as a job of the queue's would be, and the listeners hear of it.
func TestForegroundJobShownThenImported(t *testing.T) {
	dir := t.TempDir()
	q, _, rec := newTestQueue(t, dir, 1, 10)
	t0 := time.Date(2026, 12, 3, 3, 0, 0, 0, time.UTC)
	if !q.TrackForeground(Job{ID: 7, Kind: KindBackup, Plan: "home", StartedAt: t0, QueuedAt: t0}, 4242) {
		t.Fatal("TrackForeground: not shown")
	}
	active := q.Active()
	if len(active) != 1 || active[0].State != StateRunning || active[0].Trigger != TriggerForeground {
		t.Fatalf("active: %+v", active)
	}
	err := q.Cancel(7)
	if !errors.Is(err, ErrForeground) || !strings.Contains(err.Error(), "process 4242") {
		t.Errorf("Cancel of the foreground job: %v", err)
	}
	if err := q.CancelAskedOnlyBy(7, 1000); !errors.Is(err, ErrForeground) {
		t.Errorf("CancelAskedOnlyBy of the foreground job: %v", err)
	}
	if q.TrackForeground(Job{ID: 7, Kind: KindBackup, Plan: "home"}, 4242) {
		t.Error("tracked twice")
	}

	if err := q.Import(foregroundDone(7, "home", ResultDone, t0, t0.Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	j, ok := q.Job(7)
	if !ok || j.State != StateFinished || j.Result != ResultDone || j.Trigger != TriggerForeground || j.Progress != 1 {
		t.Errorf("imported job: %+v", j)
	}
	if len(q.Active()) != 0 {
		t.Errorf("still active: %+v", q.Active())
	}
	if st := q.PlanStatus("home"); st.LastResult != ResultDone || !st.LastSuccess.Equal(t0.Add(time.Minute)) {
		t.Errorf("plan status: %+v", st)
	}
	if !q.LastRun("home", KindBackup).Equal(t0) {
		t.Errorf("last run: %v", q.LastRun("home", KindBackup))
	}
	if got := strings.Join(rec.events, "; "); got != "queued backup home; finished backup home done" {
		t.Errorf("listeners heard: %s", got)
	}

	// Imported again (the record was not removed before a crash): skipped.
	if err := q.Import(foregroundDone(7, "home", ResultFailed, t0, t0.Add(2*time.Minute))); err != nil {
		t.Fatal(err)
	}
	if n := len(q.Jobs()); n != 1 {
		t.Errorf("%d jobs after importing job 7 twice", n)
	}

	// The next daemon reads the history from jobs.json.
	q.Drain()
	q2, _, _ := newTestQueue(t, dir, 1, 10)
	if j, ok := q2.Job(7); !ok || j.Result != ResultDone || j.Trigger != TriggerForeground {
		t.Errorf("after a restart: %+v %v", j, ok)
	}
	if st := q2.PlanStatus("home"); st.LastResult != ResultDone {
		t.Errorf("plan status after a restart: %+v", st)
	}
}

// A running foreground job is never in jobs.json: the next daemon would
// fail it as "daemon stopped" while its process may still run.
func TestRunningForegroundJobNotPersisted(t *testing.T) {
	dir := t.TempDir()
	q, _, _ := newTestQueue(t, dir, 1, 10)
	q.TrackForeground(Job{ID: 3, Kind: KindBackup, Plan: "home", StartedAt: time.Now()}, 1)
	q.Enqueue(Order{Kind: KindCheck, Plan: "srv", Trigger: TriggerManual, Caller: -1}) // writes jobs.json
	q.Drain()
	q2, _, _ := newTestQueue(t, dir, 1, 10)
	if _, ok := q2.Job(3); ok {
		t.Error("the running foreground job came back from jobs.json")
	}
}

// An import of a job that ended before the plan's last backup known
// (imported late) keeps the later one as the plan's last, but a success
// still counts when it is the newest; the schedule's last run only moves
// forward.
func TestForegroundImportKeepsNewerStatus(t *testing.T) {
	q, _, _ := newTestQueue(t, t.TempDir(), 1, 10)
	t0 := time.Date(2026, 12, 3, 3, 0, 0, 0, time.UTC)
	if err := q.Import(foregroundDone(5, "home", ResultFailed, t0.Add(time.Hour), t0.Add(2*time.Hour))); err != nil {
		t.Fatal(err)
	}
	if err := q.Import(foregroundDone(4, "home", ResultDone, t0, t0.Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	st := q.PlanStatus("home")
	if st.LastResult != ResultFailed || !st.LastBackup.Equal(t0.Add(2*time.Hour)) || !st.LastSuccess.Equal(t0.Add(time.Minute)) {
		t.Errorf("plan status: %+v", st)
	}
	if !q.LastRun("home", KindBackup).Equal(t0.Add(time.Hour)) {
		t.Errorf("last run went back: %v", q.LastRun("home", KindBackup))
	}
	var ids []uint32
	for _, j := range q.Jobs() {
		ids = append(ids, j.ID)
	}
	if !slices.Equal(ids, []uint32{4, 5}) {
		t.Errorf("history, newest first: %v", ids)
	}
}

// A backup of a plan whose foreground run is shown waits, queued, for it
// (the run holds the plan's lock: started, it would fail "plan is busy");
// a copy of the plan and jobs of other plans do not wait.
func TestJobsOfAPlanWaitForItsForegroundRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, exec, _ := newTestQueue(t, t.TempDir(), 3, 10)
		t0 := time.Now()
		q.TrackForeground(Job{ID: 100, Kind: KindBackup, Plan: "home", StartedAt: t0}, 1)
		b, _, _ := q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: TriggerSchedule, Caller: -1})
		exec.noneStarted(t)
		q.Enqueue(Order{Kind: KindBackup, Plan: "laptop", Trigger: TriggerManual, Caller: 0})
		if j := exec.waitStarted(t); j.Plan != "laptop" {
			t.Fatalf("started %+v, want laptop's backup", j)
		}
		q.Enqueue(Order{Kind: KindCopy, Plan: "home", Trigger: TriggerManual, Caller: 0})
		if j := exec.waitStarted(t); j.Kind != KindCopy {
			t.Fatalf("started %+v, want home's copy", j)
		}
		if j, _ := q.Job(b.ID); j.State != StateQueued {
			t.Fatalf("home's backup: %s while the foreground run runs", j.State)
		}
		if err := q.Import(foregroundDone(100, "home", ResultDone, t0, time.Now())); err != nil {
			t.Fatal(err)
		}
		if j := exec.waitStarted(t); j.ID != b.ID {
			t.Errorf("started %+v after the foreground run ended, want home's backup", j)
		}
	})
}

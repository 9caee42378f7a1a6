package queue

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"testing/synctest"
)

// thenExecutor ends a backup with an archive and a copy to follow, and
// holds every copy until it is released.
type thenExecutor struct {
	*fakeExecutor
}

func (e thenExecutor) Execute(ctx context.Context, job Job, progress func(Progress)) (Outcome, error) {
	out, err := e.fakeExecutor.Execute(ctx, job, progress)
	if job.Kind == KindBackup {
		out.Then = []Order{{Kind: KindCopy, Plan: job.Plan, Trigger: "ignored", Caller: -1, Copy: CopyArgs{CopyArchives: []string{"arch-" + job.Plan}}}}
	}
	return out, err
}

// A backup's follow-up copy is queued when the backup ends, even a
// failed one the executor asks it for (partial), asked for by whoever
// asked for the backup (so they may cancel it as their own); its failure
// is its own and leaves the plan's last backup as it was.
func TestCopyFollowsItsBackup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		exec := thenExecutor{newFakeExecutor()}
		q, err := New(Config{MaxConcurrent: 1, History: 10, Repository: func(p string) string { return repos[p] },
			CopyTo: func(string) []string { return []string{"offsite"} }},
			exec, t.TempDir(), slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(q.Drain)
		b, _, _ := q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: "dbus:1000", Caller: 1000})
		exec.waitStarted(t)
		exec.finish(b.ID, nil)
		c := exec.waitStarted(t)
		if c.Kind != KindCopy || c.Plan != "home" || !slices.Equal(c.CopyArchives, []string{"arch-home"}) {
			t.Fatalf("started %s of %s archives %v, want the copy of arch-home", c.Kind, c.Plan, c.CopyArchives)
		}
		if c.Trigger != "dbus:1000" || !c.AskedOnlyBy(1000) {
			t.Errorf("copy asked for by %v (trigger %s), want the backup's caller 1000 alone", c.Triggers(), c.Trigger)
		}
		exec.finish(c.ID, errors.New("copy from repository nas: wrong password"))
		waitFinished(t, q, c.ID)
		if j, _ := q.Job(c.ID); j.Result != ResultFailed {
			t.Errorf("copy result %s, want failed", j.Result)
		}
		if st := q.PlanStatus("home"); st.LastResult != ResultDone {
			t.Errorf("plan's last result %s after a failed copy, want its backup's done", st.LastResult)
		}
	})
}

// Copies of one plan: a second one asked for while one is queued is that
// job with the archives gathered; while one runs, one more is queued. A
// copy is on its destination too: a prune of another plan there waits.
func TestCopiesGatherAndRespectBothRepositories(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		exec := newFakeExecutor()
		q, err := New(Config{MaxConcurrent: 3, History: 10, Repository: func(p string) string { return repos[p] },
			CopyTo: func(p string) []string {
				if p == "home" {
					return []string{"usb"}
				}
				return nil
			}},
			exec, t.TempDir(), slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(q.Drain)
		// A prune on usb (plan laptop) runs: the copy of home to usb waits.
		p, _, _ := q.Enqueue(Order{Kind: KindPrune, Plan: "laptop", Trigger: TriggerManual, Caller: -1})
		exec.waitStarted(t)
		c1, created, _ := q.Enqueue(Order{Kind: KindCopy, Plan: "home", Trigger: TriggerManual, Caller: -1, Copy: CopyArgs{CopyArchives: []string{"a1"}}})
		if !created {
			t.Fatal("first copy not created")
		}
		exec.noneStarted(t)
		c2, created, _ := q.Enqueue(Order{Kind: KindCopy, Plan: "home", Trigger: "dbus:1000", Caller: 1000, Copy: CopyArgs{CopyArchives: []string{"a2", "a1"}}})
		if created || c2.ID != c1.ID || !slices.Equal(c2.CopyArchives, []string{"a1", "a2"}) {
			t.Fatalf("second copy: created %v, id %d (first %d), archives %v; want the first job with a1, a2", created, c2.ID, c1.ID, c2.CopyArchives)
		}
		exec.finish(p.ID, nil)
		if j := exec.waitStarted(t); j.ID != c1.ID {
			t.Fatalf("started %s of %s, want the copy", j.Kind, j.Plan)
		}
		c3, created, _ := q.Enqueue(Order{Kind: KindCopy, Plan: "home", Trigger: TriggerManual, Caller: -1})
		if !created || c3.ID == c1.ID {
			t.Fatalf("a copy asked for while one runs: created %v, id %d; want a new queued job", created, c3.ID)
		}
		for range 100 { // a flood gathers in the one queued job
			q.Enqueue(Order{Kind: KindCopy, Plan: "home", Trigger: "dbus:65534", Caller: 65534})
		}
		n := 0
		for _, j := range q.Jobs() {
			if j.Kind == KindCopy && j.Active() {
				n++
			}
		}
		if n != 2 {
			t.Errorf("%d copy jobs active after a flood, want 2 (one running, one queued)", n)
		}
		// A check of laptop (on usb, where the copy writes) waits for it.
		q.Enqueue(Order{Kind: KindCheck, Plan: "laptop", Trigger: TriggerManual, Caller: -1})
		exec.noneStarted(t)
		exec.finish(c1.ID, nil)
		if j := exec.waitStarted(t); j.ID != c3.ID {
			t.Fatalf("started %s of %s after the copy, want the queued copy", j.Kind, j.Plan)
		}
		exec.noneStarted(t) // the check waits for that copy too
		exec.finish(c3.ID, nil)
		if j := exec.waitStarted(t); j.Kind != KindCheck {
			t.Fatalf("started %s of %s, want the check", j.Kind, j.Plan)
		}
	})
}

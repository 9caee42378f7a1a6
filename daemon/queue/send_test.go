package queue

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/journal/journaltest"
)

func sendOrder(plan, target string, trigger Trigger, caller int64) Order {
	return Order{Kind: KindSend, Plan: plan, Trigger: trigger, Caller: caller, Send: SendArgs{SendTarget: target}}
}

func activeSends(q *Queue) []string {
	var out []string
	for _, j := range q.Jobs() {
		if j.Kind == KindSend && j.Active() {
			out = append(out, fmt.Sprintf("%s>%s %s", j.Plan, j.SendTarget, j.State))
		}
	}
	slices.Sort(out)
	return out
}

// Sends of a plan to a target: one asked for while one is queued is that
// job (a flood of callers makes no more); while one runs, one more is
// queued, since the running one has chosen its snapshots. Sends to two
// targets are two jobs, one after the other: each takes the plan's lock.
func TestSendsOnePerPlanAndTargetQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, exec, _ := newTestQueue(t, t.TempDir(), 4, 10)
		s1, created, _ := q.Enqueue(sendOrder("home", "usb", TriggerManual, -1))
		if !created || s1.SendTarget != "usb" {
			t.Fatalf("first send: created %v, target %q", created, s1.SendTarget)
		}
		exec.waitStarted(t)
		s2, created, _ := q.Enqueue(sendOrder("home", "usb", "dbus:1000", 1000))
		if !created || s2.ID == s1.ID {
			t.Fatalf("a send asked for while one runs: created %v, id %d; want a new queued job", created, s2.ID)
		}
		for range 100 {
			j, created, err := q.Enqueue(sendOrder("home", "usb", "dbus:65534", 65534))
			if err != nil || created || j.ID != s2.ID {
				t.Fatalf("flooding send: %v, created %v, id %d; want the queued job %d", err, created, j.ID, s2.ID)
			}
		}
		if j, _ := q.Job(s2.ID); !slices.Equal(j.Callers(), []uint32{1000, 65534}) {
			t.Errorf("queued send asked for by %v, want 1000 then 65534 once", j.Callers())
		}
		d, created, _ := q.Enqueue(sendOrder("home", "disk", TriggerManual, -1))
		if !created || d.ID == s1.ID || d.ID == s2.ID {
			t.Fatalf("a send to another target: created %v, id %d", created, d.ID)
		}
		exec.noneStarted(t)
		want := []string{"home>disk queued", "home>usb queued", "home>usb running"}
		if got := activeSends(q); !slices.Equal(got, want) {
			t.Errorf("active sends %v, want %v", got, want)
		}
		exec.finish(s1.ID, nil)
		if j := exec.waitStarted(t); j.ID != s2.ID {
			t.Fatalf("started %s of %s to %s, want the queued send to usb (first in order)", j.Kind, j.Plan, j.SendTarget)
		}
	})
}

// A send runs neither beside another send to its target (of any plan)
// nor beside a job of its plan that takes the plan's lock (a backup);
// a copy of its plan and a backup of another plan may run beside it.
func TestSendWaitsForItsTargetAndItsPlan(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, exec, _ := newTestQueue(t, t.TempDir(), 8, 20)
		b, _, _ := q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: TriggerManual, Caller: -1})
		exec.waitStarted(t)
		s, _, _ := q.Enqueue(sendOrder("home", "usb", TriggerManual, -1))
		exec.noneStarted(t) // the backup of home holds its plan
		o, _, _ := q.Enqueue(sendOrder("laptop", "usb", TriggerManual, -1))
		if j := exec.waitStarted(t); j.ID != o.ID {
			t.Fatalf("started %s of %s, want the send of laptop", j.Kind, j.Plan)
		}
		exec.finish(b.ID, nil)
		exec.noneStarted(t) // laptop's send holds usb
		exec.finish(o.ID, nil)
		if j := exec.waitStarted(t); j.ID != s.ID {
			t.Fatalf("started %s of %s, want the send of home", j.Kind, j.Plan)
		}
		// Running: a backup of home waits for the send; one of srv and a
		// copy of home do not.
		b2, _, _ := q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: TriggerManual, Caller: -1})
		exec.noneStarted(t)
		q.Enqueue(Order{Kind: KindBackup, Plan: "srv", Trigger: TriggerManual, Caller: -1})
		q.Enqueue(Order{Kind: KindCopy, Plan: "home", Trigger: TriggerManual, Caller: -1})
		var kinds []string
		for range 2 {
			j := exec.waitStarted(t)
			kinds = append(kinds, string(j.Kind)+" "+j.Plan)
		}
		slices.Sort(kinds)
		if want := []string{"backup srv", "copy home"}; !slices.Equal(kinds, want) {
			t.Errorf("started beside the send: %v, want %v", kinds, want)
		}
		exec.noneStarted(t)
		exec.finish(s.ID, nil)
		if j := exec.waitStarted(t); j.ID != b2.ID {
			t.Fatalf("started %s of %s after the send, want the backup of home", j.Kind, j.Plan)
		}
	})
}

// A skipped send (its target is absent) ends skipped with why, logged
// send-skipped with its target, and leaves the plan's status (its
// backups', which health is made of) as it was; it survives a restart.
func TestSkippedSendLeavesThePlanAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		exec := newFakeExecutor()
		log := journaltest.NewRecorder()
		q, err := New(Config{MaxConcurrent: 1, History: 10, Repository: func(p string) string { return repos[p] }}, exec, dir, slog.New(log), nil)
		if err != nil {
			t.Fatal(err)
		}
		rec := &recorder{}
		q.Subscribe(rec)
		b, _, _ := q.Enqueue(Order{Kind: KindBackup, Plan: "home", Trigger: TriggerManual, Caller: -1})
		exec.waitStarted(t)
		exec.finish(b.ID, errors.New("restic: disk full"))
		waitFinished(t, q, b.ID)
		before := q.PlanStatus("home")
		s, _, _ := q.Enqueue(sendOrder("home", "disk", TriggerManual, -1))
		exec.waitStarted(t)
		why := "target disk: no block device has the btrfs filesystem 0f6c1a2b-0000-4000-8000-000000000001 (plug the disk in): target is absent"
		exec.finish(s.ID, Skip(errors.New(why)))
		waitFinished(t, q, s.ID)
		j, _ := q.Job(s.ID)
		if j.Result != ResultSkipped || j.Error != why {
			t.Errorf("send: %s %q, want skipped with why", j.Result, j.Error)
		}
		if st := q.PlanStatus("home"); st != before {
			t.Errorf("plan status %+v after a skipped send, want %+v", st, before)
		}
		if !slices.Contains(rec.events, "finished send home skipped") {
			t.Errorf("listeners heard %q", rec.events)
		}
		entries := log.Events(journal.EventSendSkipped)
		if len(entries) != 1 {
			t.Fatalf("%d send-skipped entries, want 1", len(entries))
		}
		entries[0].HasCatalogFields(t, journal.EventSendSkipped)
		entries[0].Want(t, "send-skipped", map[string]string{"SUBVAULT_TARGET": "disk", "SUBVAULT_PLAN": "home", "SUBVAULT_WHY": why})
		for _, ev := range []string{journal.EventJobFailed, journal.EventJobPartial, journal.EventJobDone} {
			for _, e := range log.Events(ev) {
				if e.Fields["SUBVAULT_KIND"] == string(KindSend) {
					t.Errorf("the skipped send logged %s: %v", ev, e.Fields)
				}
			}
		}
		q.Drain()
		data, err := os.ReadFile(filepath.Join(dir, "jobs.json"))
		if err != nil || !strings.Contains(string(data), `"send_target": "disk"`) && !strings.Contains(string(data), `"send_target":"disk"`) {
			t.Errorf("jobs.json lacks the send's target: %v", err)
		}
		q2, err := New(Config{MaxConcurrent: 1, History: 10}, exec, dir, slog.New(log), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(q2.Drain)
		if j, _ := q2.Job(s.ID); j.Result != ResultSkipped || j.SendTarget != "disk" {
			t.Errorf("after a restart the send is %s to %q", j.Result, j.SendTarget)
		}
		if st := q2.PlanStatus("home"); st.LastResult != ResultFailed {
			t.Errorf("after a restart the plan's last result is %s, want the backup's failed", st.LastResult)
		}
	})
}

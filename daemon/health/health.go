// Package health decides how a plan stands: ok, failed, overdue or never
// backed up, and why, in one line a person can act on. The daemon
// publishes it (the Plan object's Health and HealthReason), so that
// `subvault status`, the status-bar widget, the notifier and any other
// client show the same verdict. It is pure: the plan's schedule, what its
// backups did and the time in, the verdict out.
package health

import (
	"fmt"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/subvault/subvault/api/contract"
)

// Plan is what a plan's health is judged from. Its times are in the zone
// the schedule is read in (the daemon's: time.Local), so that a weekday
// schedule's weekend falls where the scheduler's does.
type Plan struct {
	// Schedule is the plan's backup schedule; nil for a manual plan.
	Schedule    cron.Schedule
	LastBackup  time.Time
	LastResult  contract.Result
	LastError   string
	LastSuccess time.Time
	// Waiting is what the plan's postponed scheduled jobs wait for, in a
	// few words ("waiting for the network"), "" when none does.
	Waiting string
}

// Status is a plan's health and its reason: one line, with no time in it
// that would go stale (a client shows LastBackup's age itself).
type Status struct {
	Health contract.Health
	Reason string
}

// Of is plan p's health at now.
//
//   - A failed last backup (a partial one too: the archive lacks files a
//     restore would be expected to bring back) is failed, whatever its
//     age, and its error is the reason. So is a stalled one (restic made
//     no progress for the plan's stall_timeout): no archive was made.
//   - A plan that never succeeded is never: there is no age to judge, and
//     a plan not yet run is not a problem. It is not unhealthy.
//   - A plan whose last success is twice its schedule's interval old or
//     older is overdue (OverdueAt). A canceled backup does not restart
//     that clock: it counts from LastSuccess, not LastBackup. A manual
//     plan is never overdue.
//   - Otherwise it is ok.
//
// A plan whose scheduled jobs wait (postponed: the network, the battery,
// a metered connection) keeps the health its backups give it, and its
// reason says what it waits for: waiting is not a failure, and overdue
// still comes when the wait outlasts the schedule.
func Of(p Plan, now time.Time) Status {
	s := of(p, now)
	if p.Waiting != "" {
		s.Reason += "; " + p.Waiting
	}
	return s
}

func of(p Plan, now time.Time) Status {
	if p.LastResult == contract.ResultFailed {
		return Status{contract.HealthFailed, "last backup failed" + errorSuffix(p.LastError)}
	}
	if p.LastResult == contract.ResultStalled {
		return Status{contract.HealthFailed, "last backup stalled" + errorSuffix(p.LastError)}
	}
	if p.LastBackup.IsZero() {
		return Status{contract.HealthNever, "no backup yet"}
	}
	last := "last backup succeeded"
	if p.LastResult == contract.ResultCanceled {
		last = "last backup canceled"
	}
	success := lastSuccess(p)
	if success.IsZero() {
		return Status{contract.HealthNever, "no backup succeeded yet; " + last}
	}
	if due := OverdueAt(p); !due.IsZero() && !now.Before(due) {
		interval := scheduleInterval(p.Schedule, success)
		reason := "overdue: no successful backup for over " + intervalText(2*interval) + " (scheduled every " + intervalText(interval) + ")"
		if !success.Equal(p.LastBackup) {
			reason += "; " + last
		}
		return Status{contract.HealthOverdue, reason}
	}
	if !success.Equal(p.LastBackup) {
		return Status{contract.HealthOK, last + "; the one before succeeded"}
	}
	return Status{contract.HealthOK, last}
}

// OverdueAt is when plan p becomes overdue if no backup succeeds until
// then: its last success plus twice its schedule's interval. It is zero
// when time alone never makes p overdue: a manual plan, one that never
// succeeded, one whose last backup failed (failed stays failed).
//
// The interval is the longest gap between the next few scheduled runs
// after the last success, so that a weekday schedule is not overdue on a
// Monday morning.
func OverdueAt(p Plan) time.Time {
	if p.LastResult == contract.ResultFailed || p.LastResult == contract.ResultStalled || p.LastBackup.IsZero() {
		return time.Time{}
	}
	success := lastSuccess(p)
	if success.IsZero() {
		return time.Time{}
	}
	interval := scheduleInterval(p.Schedule, success)
	if interval <= 0 {
		return time.Time{}
	}
	return success.Add(2 * interval)
}

// lastSuccess is when plan p's last backup that ended done finished: its
// LastSuccess, or its LastBackup when that one was done (a state file
// older than LastSuccess); zero when none is known.
func lastSuccess(p Plan) time.Time {
	if p.LastSuccess.IsZero() && p.LastResult == contract.ResultDone {
		return p.LastBackup
	}
	return p.LastSuccess
}

// scheduleInterval is the longest gap between consecutive runs among the
// first few after from; 0 for a manual plan.
func scheduleInterval(sched cron.Schedule, from time.Time) time.Duration {
	if sched == nil {
		return 0
	}
	var longest time.Duration
	t := sched.Next(from)
	for range 8 {
		next := sched.Next(t)
		if next.IsZero() {
			break
		}
		longest = max(longest, next.Sub(t))
		t = next
	}
	return longest
}

// intervalText is a schedule's interval as people say it: 15m, 6h, 24h,
// 1h30m, 7d.
func intervalText(d time.Duration) string {
	d = d.Round(time.Minute)
	switch {
	case d >= 48*time.Hour && d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", int(d.Hours())/24)
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

func errorSuffix(e string) string {
	if e == "" {
		return ""
	}
	return ": " + e
}

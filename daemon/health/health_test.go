package health

import (
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon/config"
)

func schedule(t *testing.T, spec string) cron.Schedule {
	t.Helper()
	if spec == "" {
		return nil
	}
	s, err := config.CronParser.Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The rules with a fake clock: the overdue line is twice the schedule's
// interval, counted from the last success; a failed backup is failed
// whatever its age; a plan that never succeeded is never, not overdue.
func TestHealthRules(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 16, 2, 0, 0, 0, time.UTC) // a Monday
	friday := time.Date(2026, 3, 13, 3, 10, 0, 0, time.UTC)
	type plan struct {
		schedule                string
		lastBackup, lastSuccess time.Time
		result                  contract.Result
		err                     string
	}
	ago := func(schedule string, d time.Duration, result contract.Result) plan {
		p := plan{schedule: schedule, result: result}
		if d > 0 {
			p.lastBackup = now.Add(-d)
		}
		return p
	}
	for _, c := range []struct {
		name   string
		plan   plan
		want   contract.Health
		reason string
	}{
		{"daily, 47h ago", ago("0 3 * * *", 47*time.Hour, "done"), contract.HealthOK, "last backup succeeded"},
		{"daily, 49h ago", ago("0 3 * * *", 49*time.Hour, "done"), contract.HealthOverdue, "overdue: no successful backup for over 2d (scheduled every 24h)"},
		{"daily, 48h ago to the second", ago("0 3 * * *", 48*time.Hour, "done"), contract.HealthOverdue, ""},
		{"daily, a second less than 48h ago", ago("0 3 * * *", 48*time.Hour-time.Second, "done"), contract.HealthOK, ""},
		{"hourly, 3h ago", ago("@hourly", 3*time.Hour, "done"), contract.HealthOverdue, "overdue: no successful backup for over 2h (scheduled every 1h)"},
		{"every 6h, 11h ago", ago("@every 6h", 11*time.Hour, "done"), contract.HealthOK, ""},
		{"every 6h, 13h ago", ago("@every 6h", 13*time.Hour, "done"), contract.HealthOverdue, ""},
		// Friday's backup is not overdue on Monday morning: the weekend's
		// 72 h gap is the interval.
		{"weekdays, Friday's on Monday", plan{schedule: "0 3 * * 1-5", lastBackup: friday, result: "done"}, contract.HealthOK, ""},
		{"weekdays, a week ago", plan{schedule: "0 3 * * 1-5", lastBackup: friday.Add(-7 * 24 * time.Hour), result: "done"}, contract.HealthOverdue, "overdue: no successful backup for over 6d (scheduled every 3d)"},
		{"every 90m, 4h ago", ago("@every 90m", 4*time.Hour, "done"), contract.HealthOverdue, "overdue: no successful backup for over 3h (scheduled every 1h30m)"},
		{"manual, a year ago", ago("", 365*24*time.Hour, "done"), contract.HealthOK, "last backup succeeded"},
		{"never", ago("0 3 * * *", 0, ""), contract.HealthNever, "no backup yet"},
		{"failed an hour ago", plan{schedule: "0 3 * * *", lastBackup: now.Add(-time.Hour), result: "failed", err: "wrong password"}, contract.HealthFailed, "last backup failed: wrong password"},
		{"failed long ago: failed, not overdue", ago("0 3 * * *", 30*24*time.Hour, "failed"), contract.HealthFailed, "last backup failed"},
		{"failed with no time (an interrupted job of an old state file)", plan{schedule: "0 3 * * *", result: "failed", err: "interrupted: daemon stopped"}, contract.HealthFailed, "last backup failed: interrupted: daemon stopped"},
		// A state file that has LastSuccess: the same as LastBackup after
		// a done backup.
		{"daily, 49h ago, LastSuccess set", plan{schedule: "0 3 * * *", lastBackup: now.Add(-49 * time.Hour), lastSuccess: now.Add(-49 * time.Hour), result: "done"}, contract.HealthOverdue, "overdue: no successful backup for over 2d (scheduled every 24h)"},
		{"canceled after a recent success", plan{schedule: "0 3 * * *", lastBackup: now.Add(-time.Hour), lastSuccess: now.Add(-23 * time.Hour), result: "canceled"}, contract.HealthOK, "last backup canceled; the one before succeeded"},
		// A cancel does not restart the overdue clock: overdue from the
		// success three days ago, not from the cancel an hour ago.
		{"canceled after an old success", plan{schedule: "0 3 * * *", lastBackup: now.Add(-time.Hour), lastSuccess: now.Add(-72 * time.Hour), result: "canceled", err: "canceled"}, contract.HealthOverdue, "overdue: no successful backup for over 2d (scheduled every 24h); last backup canceled"},
		{"canceled, none succeeded", ago("0 3 * * *", time.Hour, "canceled"), contract.HealthNever, "no backup succeeded yet; last backup canceled"},
		{"failed after a success: failed", plan{schedule: "0 3 * * *", lastBackup: now.Add(-time.Hour), lastSuccess: now.Add(-72 * time.Hour), result: "failed", err: "partial backup"}, contract.HealthFailed, "last backup failed: partial backup"},
		// A stalled backup (restic made no progress for stall_timeout) made
		// no archive: failed, whatever its age, with the reason.
		{"stalled after a recent success", plan{schedule: "0 3 * * *", lastBackup: now.Add(-time.Hour), lastSuccess: now.Add(-23 * time.Hour), result: "stalled",
			err: "restic backup on repository rest:http://nas:8000/ made no progress for 10m0s"},
			contract.HealthFailed, "last backup stalled: restic backup on repository rest:http://nas:8000/ made no progress for 10m0s"},
		{"stalled long ago: failed, not overdue", ago("0 3 * * *", 30*24*time.Hour, "stalled"), contract.HealthFailed, "last backup stalled"},
		// A partial backup made an archive, but not a whole one: failed,
		// with the error that says what to do.
		{"partial", plan{schedule: "0 3 * * *", lastBackup: now.Add(-time.Hour), lastSuccess: now.Add(-25 * time.Hour), result: "failed",
			err: "partial backup, archive 0123abcd exists: restic could not read 2 file(s); the daemon's log names them (subvault logs --job 7)"},
			contract.HealthFailed, "last backup failed: partial backup, archive 0123abcd exists: restic could not read 2 file(s); the daemon's log names them (subvault logs --job 7)"},
	} {
		p := Plan{Schedule: schedule(t, c.plan.schedule), LastBackup: c.plan.lastBackup, LastSuccess: c.plan.lastSuccess, LastResult: c.plan.result, LastError: c.plan.err}
		got := Of(p, now)
		if got.Health != c.want || (c.reason != "" && got.Reason != c.reason) {
			t.Errorf("%s: %s (%s), want %s (%s)", c.name, got.Health, got.Reason, c.want, c.reason)
		}
		if due := OverdueAt(p); !due.IsZero() && (got.Health == contract.HealthOverdue) != !now.Before(due) {
			t.Errorf("%s: %s at %v, but OverdueAt says %v", c.name, got.Health, now, due)
		}
	}
}

// OverdueAt is the moment the daemon's timer waits for: a plan that
// succeeded is overdue from then on unless a backup succeeds again, and
// time alone never changes the health of the others.
func TestOverdueAt(t *testing.T) {
	t.Parallel()
	success := time.Date(2026, 3, 13, 3, 10, 0, 0, time.UTC) // a Friday
	for _, c := range []struct {
		name string
		plan Plan
		want time.Time
	}{
		{"daily", Plan{Schedule: schedule(t, "0 3 * * *"), LastBackup: success, LastSuccess: success, LastResult: "done"}, success.Add(48 * time.Hour)},
		{"weekdays: the weekend is the interval", Plan{Schedule: schedule(t, "0 3 * * 1-5"), LastBackup: success, LastSuccess: success, LastResult: "done"}, success.Add(6 * 24 * time.Hour)},
		{"canceled since: from the success", Plan{Schedule: schedule(t, "0 3 * * *"), LastBackup: success.Add(time.Hour), LastSuccess: success, LastResult: "canceled"}, success.Add(48 * time.Hour)},
		{"a state file without LastSuccess", Plan{Schedule: schedule(t, "0 3 * * *"), LastBackup: success, LastResult: "done"}, success.Add(48 * time.Hour)},
		{"manual", Plan{LastBackup: success, LastSuccess: success, LastResult: "done"}, time.Time{}},
		{"failed", Plan{Schedule: schedule(t, "0 3 * * *"), LastBackup: success.Add(time.Hour), LastSuccess: success, LastResult: "failed"}, time.Time{}},
		{"never", Plan{Schedule: schedule(t, "0 3 * * *")}, time.Time{}},
		{"never succeeded", Plan{Schedule: schedule(t, "0 3 * * *"), LastBackup: success, LastResult: "canceled"}, time.Time{}},
	} {
		if got := OverdueAt(c.plan); !got.Equal(c.want) {
			t.Errorf("%s: OverdueAt = %v, want %v", c.name, got, c.want)
		}
		if !c.want.IsZero() {
			if h := Of(c.plan, c.want.Add(-time.Nanosecond)).Health; h != contract.HealthOK {
				t.Errorf("%s: %s just before OverdueAt, want ok", c.name, h)
			}
			if h := Of(c.plan, c.want).Health; h != contract.HealthOverdue {
				t.Errorf("%s: %s at OverdueAt, want overdue", c.name, h)
			}
		}
	}
}

// A plan whose scheduled jobs wait keeps its health, and its reason says
// what it waits for; the wait does not keep it from becoming overdue.
func TestHealthWhileWaiting(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 16, 2, 0, 0, 0, time.UTC)
	daily := schedule(t, "0 3 * * *")
	for _, c := range []struct {
		name   string
		plan   Plan
		want   contract.Health
		reason string
	}{
		{"ok", Plan{Schedule: daily, LastBackup: now.Add(-time.Hour), LastResult: contract.ResultDone, Waiting: "waiting for the network"},
			contract.HealthOK, "last backup succeeded; waiting for the network"},
		{"overdue", Plan{Schedule: daily, LastBackup: now.Add(-49 * time.Hour), LastResult: contract.ResultDone, Waiting: "waiting: on battery"},
			contract.HealthOverdue, "overdue: no successful backup for over 2d (scheduled every 24h); waiting: on battery"},
		{"failed", Plan{Schedule: daily, LastBackup: now.Add(-time.Hour), LastResult: contract.ResultFailed, LastError: "disk full", Waiting: "waiting for the network"},
			contract.HealthFailed, "last backup failed: disk full; waiting for the network"},
		{"never", Plan{Schedule: daily, Waiting: "waiting: metered connection"},
			contract.HealthNever, "no backup yet; waiting: metered connection"},
	} {
		if got := Of(c.plan, now); got.Health != c.want || got.Reason != c.reason {
			t.Errorf("%s: %s (%q), want %s (%q)", c.name, got.Health, got.Reason, c.want, c.reason)
		}
	}
	// OverdueAt does not move while waiting.
	p := Plan{Schedule: daily, LastBackup: now.Add(-time.Hour), LastResult: contract.ResultDone}
	w := p
	w.Waiting = "waiting for the network"
	if !OverdueAt(p).Equal(OverdueAt(w)) {
		t.Errorf("OverdueAt %v while waiting, %v without", OverdueAt(w), OverdueAt(p))
	}
}

package daemon

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/health"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/scheduler"
)

// Listener hears that the plans changed other than through a job (the
// queue's listeners hear of those: a backup's end moves LastBackup and the
// health with it): the configuration was reloaded, a plan's next run
// moved, or time made a plan overdue. It is called from the daemon's
// goroutines, never with one of its locks held, and must be quick.
type Listener interface {
	PlansChanged()
}

// Subscribe adds a listener of the plans' changes.
func (d *Daemon) Subscribe(l Listener) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.listeners = append(d.listeners, l)
}

// plansChanged tells the listeners that Plans may say something new.
func (d *Daemon) plansChanged() {
	d.mu.Lock()
	listeners := slices.Clone(d.listeners)
	d.mu.Unlock()
	for _, l := range listeners {
		l.PlansChanged()
	}
}

// healthPlan is what health judges: the times in the zone the scheduler
// reads the schedule in (a state file's times keep the offset they were
// written with).
func healthPlan(p *config.Plan, st queue.PlanStatus) health.Plan {
	return health.Plan{
		Schedule: p.ScheduleSpec, LastBackup: st.LastBackup.In(time.Local), LastResult: st.LastResult,
		LastError: st.LastError, LastSuccess: st.LastSuccess.In(time.Local),
	}
}

// nextOverdue is the soonest moment after since that time alone makes a
// plan overdue; zero when none will.
func (d *Daemon) nextOverdue(since time.Time) time.Time {
	cfg := d.Config()
	var next time.Time
	for _, name := range cfg.PlanNames() {
		at := health.OverdueAt(healthPlan(cfg.Plans[name], d.queue.PlanStatus(name)))
		if at.After(since) && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	return next
}

// rearmHealth tells watchHealth that a plan's overdue moment may have
// moved (a backup ended, the configuration changed).
func (d *Daemon) rearmHealth() {
	select {
	case d.healthWake <- struct{}{}:
	default:
	}
}

// watchHealth tells the listeners when time makes a plan overdue: it
// waits on the daemon's clock for the soonest such moment after since
// (when the plans were published), across suspend as the scheduler does,
// never polling; and for a new moment whenever a backup ends or the
// configuration is reloaded (which tell of themselves). A moment that
// passed before it was waited for is told at once.
func (d *Daemon) watchHealth(ctx context.Context, since time.Time) {
	for {
		select {
		case <-d.healthWake:
		default:
		}
		until := d.nextOverdue(since)
		reached, err := d.waitUntil(ctx, until, d.healthWake)
		switch {
		case ctx.Err() != nil:
			return
		case reached:
			since = until
			d.plansChanged()
		case errors.Is(err, scheduler.ErrClockChanged):
			// Set back or forward: a plan may be overdue now, or no longer.
			since = d.opts.Clock.Now()
			d.plansChanged()
		case err != nil:
			d.log.Error("cannot wait for a plan to become overdue; its health shows at the next change of its plans", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-d.healthWake:
			}
		}
	}
}

// waitUntil waits until the wall clock reaches until (reached), or a
// message on wake or ctx ends the wait; a zero until waits for those only.
// The health timer (wake: a rearm) and the retries of postponed jobs
// (wake: a change of the conditions) wait with it.
func (d *Daemon) waitUntil(ctx context.Context, until time.Time, wake <-chan struct{}) (reached bool, err error) {
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-wake:
			cancel()
		case <-waitCtx.Done():
		}
	}()
	defer func() { cancel(); <-done }()
	if until.IsZero() {
		<-waitCtx.Done()
		return false, nil
	}
	if err := d.opts.Clock.Wait(waitCtx, until); err != nil {
		if waitCtx.Err() != nil {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// healthListener rearms the health timer when a backup ends: a success
// moves the plan's overdue moment, a failure takes it away.
type healthListener struct{ d *Daemon }

func (l healthListener) JobQueued(queue.Job)    {}
func (l healthListener) JobChanged(queue.Job)   {}
func (l healthListener) JobForgotten(queue.Job) {}
func (l healthListener) JobFinished(j queue.Job) {
	if j.Kind == queue.KindBackup {
		l.d.rearmHealth()
	}
}

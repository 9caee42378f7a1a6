package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/scheduler"
)

// NetworkState is how connected the machine is, as NetworkManager or
// systemd-networkd says; the states are ordered, worst first after
// NetworkUnknown.
type NetworkState int

// The network states.
const (
	// NetworkUnknown: neither NetworkManager nor systemd-networkd is on
	// the bus (or says so); only the retry timer brings a postponed job
	// back.
	NetworkUnknown NetworkState = iota
	// NetworkOffline: no connection at all. A postponed job waits for the
	// network to come back instead of retrying on its timer.
	NetworkOffline
	// NetworkLocal: connected, but not known to reach the internet (a
	// local or site connection, a captive portal, limited connectivity):
	// a repository on the LAN may be reachable.
	NetworkLocal
	// NetworkOnline: full connectivity, or a routable link.
	NetworkOnline
)

func (n NetworkState) String() string {
	switch n {
	case NetworkOffline:
		return "offline"
	case NetworkLocal:
		return "local"
	case NetworkOnline:
		return "online"
	}
	return "unknown"
}

// ConditionState is the machine's power and network at one moment. Its
// zero value is "nothing known", which holds back no job.
type ConditionState struct {
	// OnBattery is UPower's OnBattery.
	OnBattery bool
	// Metered is NetworkManager's Metered: yes or guess-yes.
	Metered bool
	Network NetworkState
}

// Conditions tells the daemon what it needs of the machine's power and
// network: the plans' on_battery and metered, and when a job postponed
// for the network may try again. The api layer provides it over the
// system bus (UPower, NetworkManager, systemd-networkd): daemon speaks no
// D-Bus.
type Conditions interface {
	// State is the state now.
	State() ConditionState
	// OnChange registers fn, called whenever State may have changed. It
	// is called from the implementation's goroutine and must be quick.
	OnChange(fn func())
}

// How a job postponed for the network is retried when nothing says the
// network came back: after RetryFirst, then twice as long each time, at
// most RetryMax apart. A machine offline for a day so tries about 50
// times, each one a snapshot taken and deleted and a restic run that
// fails at once; a network that comes back is noticed at once anyway
// where NetworkManager or systemd-networkd is on the bus.
const (
	RetryFirst = time.Minute
	RetryMax   = 30 * time.Minute
)

// waitReason is why a plan's scheduled job waits.
type waitReason int

const (
	waitNetwork waitReason = iota + 1
	waitBattery
	waitMetered
)

// short is the reason as the plan's health says it.
func (r waitReason) short() string {
	switch r {
	case waitNetwork:
		return "waiting for the network"
	case waitBattery:
		return "waiting: on battery"
	case waitMetered:
		return "waiting: metered connection"
	}
	return "waiting"
}

type waitKey struct {
	plan string
	kind queue.Kind
}

// wait is a plan's scheduled job of one kind that was postponed and is to
// run again.
type wait struct {
	reason waitReason
	// text is the postponed job's error: why, in one line.
	text string
	// attempts counts the postponements for the network in a row.
	attempts int
	// retryAt is when it is retried at the latest; zero: when its
	// condition clears.
	retryAt time.Time
	// retrying: a retry is queued or running.
	retrying bool
}

// backoff is the delay before retry number attempts+1 of a job postponed
// for the network.
func backoff(attempts int) time.Duration {
	d := RetryFirst
	for i := 1; i < attempts && d < RetryMax; i++ {
		d *= 2
	}
	return min(d, RetryMax)
}

// blockedBy says whether plan's scheduled jobs must wait in state, and
// why: the reason, and the job's error.
func blockedBy(plan *config.Plan, kind queue.Kind, st ConditionState) (waitReason, error) {
	switch {
	case plan.OnBattery == config.ConditionSkip && st.OnBattery:
		return waitBattery, fmt.Errorf("on battery (on_battery: skip): the scheduled %s runs when the machine is on AC power", kind)
	case plan.Metered == config.ConditionSkip && st.Metered:
		return waitMetered, fmt.Errorf("metered connection (metered: skip): the scheduled %s runs when the connection is no longer metered", kind)
	}
	return 0, nil
}

// scheduled says whether plan has a schedule for jobs of kind.
func scheduled(plan *config.Plan, kind queue.Kind) bool {
	switch kind {
	case queue.KindBackup:
		return plan.ScheduleSpec != nil
	case queue.KindPrune:
		return plan.PruneSpec != nil
	case queue.KindCheck:
		return plan.CheckSpec != nil
	}
	return false
}

// postponed records why job (a scheduled one of plan and kind) is being
// postponed; the executor calls it before the job ends, and the wait
// begins when the queue says the job ended (waitsListener): a retry the
// wait watcher queued before that would join the job still running and be
// lost with it.
func (d *Daemon) postponed(job uint32, reason waitReason, text string) {
	d.waitMu.Lock()
	d.pending[job] = pendingWait{reason, text}
	d.waitMu.Unlock()
}

// pendingWait is why a job is being postponed, until it has ended.
type pendingWait struct {
	reason waitReason
	text   string
}

// waitLocked begins (or goes on with) the wait of plan's job of kind,
// postponed for p (waitMu held).
func (d *Daemon) waitLocked(k waitKey, p pendingWait) {
	w := d.waits[k]
	if w == nil {
		w = &wait{}
		d.waits[k] = w
	}
	w.reason, w.text, w.retrying = p.reason, p.text, false
	if p.reason == waitNetwork {
		w.attempts++
		w.retryAt = d.opts.Clock.Now().Add(backoff(w.attempts))
	} else {
		w.attempts, w.retryAt = 0, time.Time{}
	}
}

// wakeWaits tells watchWaits to look again.
func (d *Daemon) wakeWaits() {
	select {
	case d.waitWake <- struct{}{}:
	default:
	}
}

// waiting is what plan's scheduled jobs wait for: the line its Waiting
// property shows (the backup's first, then the others' with their kind),
// the short reason its health adds, and when the soonest is retried.
func (d *Daemon) waiting(plan string) (text, short string, retryAt time.Time) {
	d.waitMu.Lock()
	defer d.waitMu.Unlock()
	var texts, shorts []string
	for _, kind := range []queue.Kind{queue.KindBackup, queue.KindPrune, queue.KindCheck} {
		w := d.waits[waitKey{plan, kind}]
		if w == nil {
			continue
		}
		t, s := w.text, w.reason.short()
		if kind != queue.KindBackup {
			t, s = string(kind)+": "+t, s+" ("+string(kind)+")"
		}
		texts, shorts = append(texts, t), append(shorts, s)
		if !w.retryAt.IsZero() && (retryAt.IsZero() || w.retryAt.Before(retryAt)) {
			retryAt = w.retryAt
		}
	}
	return strings.Join(texts, "; "), strings.Join(shorts, "; "), retryAt
}

// conditionState is the machine's state, or nothing known without a
// Conditions.
func (d *Daemon) conditionState() ConditionState {
	if d.opts.Conditions == nil {
		return ConditionState{}
	}
	return d.opts.Conditions.State()
}

// resumeWaits retries, once the daemon runs, each plan's scheduled job
// whose last run was postponed before the daemon stopped: the job checks
// its conditions again, and is postponed again if they still hold.
func (d *Daemon) resumeWaits() {
	seen := map[waitKey]bool{}
	for _, j := range d.queue.Jobs() {
		k := waitKey{j.Plan, j.Kind}
		if j.State != queue.StateFinished || seen[k] {
			continue
		}
		seen[k] = true
		if j.Result != queue.ResultPostponed {
			continue
		}
		if _, ok := d.Config().Plans[j.Plan]; !ok {
			continue
		}
		d.waitMu.Lock()
		if d.waits[k] == nil {
			d.waits[k] = &wait{reason: waitNetwork, text: j.Error, retrying: true}
		}
		d.waitMu.Unlock()
		d.retry(k, "the daemon started")
	}
}

// retry queues plan's postponed job of kind again.
func (d *Daemon) retry(k waitKey, why string) {
	j, _, err := d.queue.Enqueue(queue.Order{Kind: k.kind, Plan: k.plan, Trigger: queue.TriggerCatchUp, Caller: -1})
	if err != nil {
		d.log.Warn("cannot retry a postponed job", "plan", k.plan, "kind", k.kind, "why", why, "err", err)
		d.waitMu.Lock()
		if w := d.waits[k]; w != nil {
			w.retrying = false
		}
		d.waitMu.Unlock()
		return
	}
	d.log.Info("retrying a postponed job: "+why, journal.Event(journal.EventJobRetried), "plan", k.plan, "kind", k.kind, "job", j.ID, "why", why)
}

// watchWaits runs each postponed job again when its time comes: a job
// postponed for the network after its backoff (unless the network is
// known to be down) and at once when the network comes back; one
// postponed for the battery or a metered connection when that clears (or
// the plan no longer skips). It waits on the daemon's clock and on the
// Conditions' changes, never polling.
func (d *Daemon) watchWaits(ctx context.Context) {
	lastNetwork := d.conditionState().Network
	for {
		select {
		case <-d.waitWake:
		default:
		}
		now := d.opts.Clock.Now()
		st := d.conditionState()
		rose := st.Network > lastNetwork && st.Network >= NetworkLocal
		if st.Network != lastNetwork {
			d.log.Info("the network is "+st.Network.String(), "was", lastNetwork.String())
		}
		lastNetwork = st.Network
		cfg := d.Config()

		type due struct {
			k   waitKey
			why string
		}
		var retries []due
		var next time.Time
		d.waitMu.Lock()
		for k, w := range d.waits {
			plan, ok := cfg.Plans[k.plan]
			if !ok || !scheduled(plan, k.kind) {
				// The plan, or its schedule of that kind, is gone.
				delete(d.waits, k)
				continue
			}
			if w.retrying {
				continue
			}
			why := ""
			switch w.reason {
			case waitNetwork:
				switch {
				case rose:
					why = "the network is " + st.Network.String() + " again"
				case w.retryAt.IsZero() && st.Network != NetworkOffline:
					// Waited for the network, which is now neither
					// down nor up: back to the timer.
					w.retryAt = now.Add(backoff(w.attempts))
				case !w.retryAt.IsZero() && !now.Before(w.retryAt):
					if st.Network == NetworkOffline {
						w.retryAt = time.Time{} // until it comes back
					} else {
						why = fmt.Sprintf("retry %d after %s", w.attempts+1, backoff(w.attempts))
					}
				}
			case waitBattery, waitMetered:
				if r, _ := blockedBy(plan, k.kind, st); r != w.reason {
					switch {
					case w.reason == waitBattery && !st.OnBattery:
						why = "on AC power"
					case w.reason == waitMetered && !st.Metered:
						why = "the connection is not metered"
					default:
						why = "the plan no longer skips it"
					}
				}
			}
			if why != "" {
				w.retrying = true
				retries = append(retries, due{k, why})
				continue
			}
			if !w.retryAt.IsZero() && (next.IsZero() || w.retryAt.Before(next)) {
				next = w.retryAt
			}
		}
		d.waitMu.Unlock()
		slices.SortFunc(retries, func(a, b due) int { return strings.Compare(a.k.plan+string(a.k.kind), b.k.plan+string(b.k.kind)) })
		for _, r := range retries {
			d.retry(r.k, r.why)
		}
		d.plansChanged()

		if _, err := d.waitUntil(ctx, next, d.waitWake); ctx.Err() != nil {
			return
		} else if err != nil && !errors.Is(err, scheduler.ErrClockChanged) {
			d.log.Error("cannot wait to retry a postponed job; it is retried when the network or the power changes", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-d.waitWake:
			}
		}
	}
}

// waitsListener begins a plan's wait when its scheduled job ended
// postponed, and ends it when its job of that kind ends otherwise: done,
// failed, or canceled (a job a caller asked for too, or the retry itself).
type waitsListener struct{ d *Daemon }

func (l waitsListener) JobQueued(queue.Job)    {}
func (l waitsListener) JobChanged(queue.Job)   {}
func (l waitsListener) JobForgotten(queue.Job) {}
func (l waitsListener) JobFinished(j queue.Job) {
	// A foreground job is no retry of the daemon's, whatever its result:
	// the plan's postponed run waits on.
	if j.Kind == queue.KindRestore || j.Trigger == queue.TriggerForeground {
		return
	}
	k := waitKey{j.Plan, j.Kind}
	l.d.waitMu.Lock()
	p, pending := l.d.pending[j.ID]
	delete(l.d.pending, j.ID)
	_, had := l.d.waits[k]
	switch {
	case j.Result == queue.ResultPostponed && pending:
		l.d.waitLocked(k, p)
	case j.Result == queue.ResultPostponed:
		// Postponed without a reason recorded: cannot happen; retried on
		// the network's terms, the safe ones.
		l.d.waitLocked(k, pendingWait{waitNetwork, j.Error})
	default:
		delete(l.d.waits, k)
	}
	l.d.waitMu.Unlock()
	if had || j.Result == queue.ResultPostponed {
		l.d.wakeWaits()
	}
}

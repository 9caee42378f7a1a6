package client

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
)

// EventType says what changed.
type EventType string

// The events a Watcher delivers.
const (
	JobNew        EventType = "job-new"       // a job was queued
	JobChanged    EventType = "job-changed"   // a job's properties changed (progress, state)
	JobFinished   EventType = "job-finished"  // a job ended; Job.Result says how
	JobForgotten  EventType = "job-forgotten" // a finished job left the history
	PlanChanged   EventType = "plan-changed"  // a plan's properties changed (last backup, next run)
	PlanAdded     EventType = "plan-added"    // a plan appeared on reload
	PlanRemoved   EventType = "plan-removed"  // a plan went on reload
	DaemonGone    EventType = "daemon-gone"   // the daemon left the bus
	DaemonStarted EventType = "daemon-started"
)

// Event is one change, with the job or plan as it is after it.
type Event struct {
	Type EventType
	Job  contract.Job
	Plan contract.Plan
}

// Watcher follows the daemon's signals and keeps a mirror of its plans and
// jobs: no polling, one GetManagedObjects at the start (and after the daemon
// restarts), then only signals.
type Watcher struct {
	// C delivers the events in the order the daemon sent them. It is closed
	// when the watcher stops (Close, the context ends, or the bus goes).
	C <-chan Event

	c       *Client
	signals chan *dbus.Signal
	events  chan Event
	cancel  context.CancelFunc
	done    chan struct{}

	mu    sync.Mutex
	plans map[dbus.ObjectPath]*contract.Plan
	jobs  map[dbus.ObjectPath]*contract.Job
	up    bool
}

// Watch subscribes to the daemon's signals, then reads its objects.
func (c *Client) Watch(ctx context.Context) (*Watcher, error) {
	rules := [][]dbus.MatchOption{
		{dbus.WithMatchSender(contract.BusName), dbus.WithMatchPathNamespace(contract.ManagerPath)},
		{dbus.WithMatchSender("org.freedesktop.DBus"), dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, contract.BusName)},
	}
	for _, r := range rules {
		if err := c.conn.AddMatchSignalContext(ctx, r...); err != nil {
			return nil, wrap("follow the daemon's signals", err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	events := make(chan Event, 256)
	w := &Watcher{
		C: events, c: c, events: events, cancel: cancel, done: make(chan struct{}),
		signals: make(chan *dbus.Signal, 1024),
	}
	c.conn.Signal(w.signals)
	if err := w.sync(ctx); err != nil {
		c.conn.RemoveSignal(w.signals)
		cancel()
		return nil, err
	}
	go w.loop(ctx)
	return w, nil
}

// Close stops the watcher.
func (w *Watcher) Close() {
	w.cancel()
	<-w.done
}

// Plans is the mirror's plans, sorted by name.
func (w *Watcher) Plans() []contract.Plan {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]contract.Plan, 0, len(w.plans))
	for _, p := range w.plans {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b contract.Plan) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Jobs is the mirror's jobs, in ListJobs order.
func (w *Watcher) Jobs() []contract.Job {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]contract.Job, 0, len(w.jobs))
	for _, j := range w.jobs {
		out = append(out, *j)
	}
	SortJobs(out)
	return out
}

// Job is one job of the mirror.
func (w *Watcher) Job(id uint32) (contract.Job, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	j, ok := w.jobs[contract.JobPath(id)]
	if !ok {
		return contract.Job{}, false
	}
	return *j, true
}

// Up reports whether the daemon is on the bus.
func (w *Watcher) Up() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.up
}

// syncTimeout bounds one GetManagedObjects: the watcher's own context lives
// as long as the watcher.
const syncTimeout = 30 * time.Second

func (w *Watcher) sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	objs, err := w.c.managedObjects(ctx)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.plans = map[dbus.ObjectPath]*contract.Plan{}
	w.jobs = map[dbus.ObjectPath]*contract.Job{}
	for path, ifaces := range objs {
		if p, ok := ifaces[contract.PlanInterface]; ok {
			plan := contract.PlanOf(p)
			w.plans[path] = &plan
		}
		if j, ok := ifaces[contract.JobInterface]; ok {
			job := contract.JobOf(j)
			w.jobs[path] = &job
		}
	}
	w.up = true
	return nil
}

func (w *Watcher) loop(ctx context.Context) {
	defer close(w.done)
	defer close(w.events)
	defer w.c.conn.RemoveSignal(w.signals)
	for {
		select {
		case <-ctx.Done():
			return
		case s, ok := <-w.signals:
			if !ok {
				return
			}
			for _, e := range w.handle(ctx, s) {
				select {
				case w.events <- e:
				case <-ctx.Done():
					return
				}
			}
		}
	}
}

// handle applies one signal to the mirror and says what changed.
func (w *Watcher) handle(ctx context.Context, s *dbus.Signal) []Event {
	switch s.Name {
	case "org.freedesktop.DBus.NameOwnerChanged":
		if len(s.Body) < 3 {
			return nil
		}
		if owner, _ := s.Body[2].(string); owner == "" {
			w.mu.Lock()
			w.up = false
			w.mu.Unlock()
			return []Event{{Type: DaemonGone}}
		}
		if err := w.sync(ctx); err != nil {
			return nil
		}
		return []Event{{Type: DaemonStarted}}
	case contract.PropertiesInterface + ".PropertiesChanged":
		if len(s.Body) < 2 {
			return nil
		}
		iface, _ := s.Body[0].(string)
		changed, _ := s.Body[1].(map[string]dbus.Variant)
		w.mu.Lock()
		defer w.mu.Unlock()
		switch iface {
		case contract.JobInterface:
			j := w.jobs[s.Path]
			if j == nil {
				id, ok := contract.JobID(s.Path)
				if !ok {
					return nil
				}
				j = &contract.Job{ID: id}
				w.jobs[s.Path] = j
			}
			applyJobMonotonic(j, changed)
			return []Event{{Type: JobChanged, Job: copyJob(j)}}
		case contract.PlanInterface:
			p := w.plans[s.Path]
			if p == nil {
				p = &contract.Plan{}
				w.plans[s.Path] = p
			}
			p.Apply(changed)
			return []Event{{Type: PlanChanged, Plan: *p}}
		}
	case contract.ObjectManagerInterface + ".InterfacesAdded":
		if len(s.Body) < 2 {
			return nil
		}
		path, _ := s.Body[0].(dbus.ObjectPath)
		ifaces, _ := s.Body[1].(map[string]map[string]dbus.Variant)
		w.mu.Lock()
		defer w.mu.Unlock()
		if p, ok := ifaces[contract.PlanInterface]; ok {
			plan := contract.PlanOf(p)
			w.plans[path] = &plan
			return []Event{{Type: PlanAdded, Plan: plan}}
		}
		if j, ok := ifaces[contract.JobInterface]; ok {
			job := w.jobs[path]
			if job == nil {
				job = &contract.Job{}
				w.jobs[path] = job
			}
			applyJobMonotonic(job, j)
			return []Event{{Type: JobNew, Job: copyJob(job)}}
		}
	case contract.ObjectManagerInterface + ".InterfacesRemoved":
		if len(s.Body) < 1 {
			return nil
		}
		path, _ := s.Body[0].(dbus.ObjectPath)
		w.mu.Lock()
		defer w.mu.Unlock()
		if p := w.plans[path]; p != nil {
			delete(w.plans, path)
			return []Event{{Type: PlanRemoved, Plan: *p}}
		}
		if j := w.jobs[path]; j != nil {
			delete(w.jobs, path)
			return []Event{{Type: JobForgotten, Job: *j}}
		}
	case contract.ManagerInterface + ".JobRemoved":
		// u id, o job, s kind, s plan, s result; the job's last
		// PropertiesChanged came before it.
		if len(s.Body) < 5 {
			return nil
		}
		path, _ := s.Body[1].(dbus.ObjectPath)
		result, _ := s.Body[4].(string)
		w.mu.Lock()
		defer w.mu.Unlock()
		j := w.jobs[path]
		if j == nil {
			id, _ := s.Body[0].(uint32)
			kind, _ := s.Body[2].(string)
			plan, _ := s.Body[3].(string)
			j = &contract.Job{ID: id, Kind: contract.Kind(kind), Plan: plan}
			w.jobs[path] = j
		}
		j.State, j.Result = contract.StateFinished, contract.Result(result)
		return []Event{{Type: JobFinished, Job: copyJob(j)}}
	}
	return nil
}

// applyJobMonotonic applies changed properties, except that a job never
// goes back (finished to running, running to queued): a signal sent before
// the first GetManagedObjects may arrive after it.
func applyJobMonotonic(j *contract.Job, changed map[string]dbus.Variant) {
	if s, ok := changed["State"].Value().(string); ok && contract.State(s).Rank() < j.State.Rank() {
		// An older state: only what never changes is news.
		static := map[string]dbus.Variant{}
		for _, k := range []string{"Id", "Kind", "Plan", "Trigger", "QueuedAt"} {
			if v, ok := changed[k]; ok {
				static[k] = v
			}
		}
		j.Apply(static)
		return
	}
	j.Apply(changed)
}

func copyJob(j *contract.Job) contract.Job {
	out := *j
	out.CurrentFiles = append([]string(nil), j.CurrentFiles...)
	return out
}

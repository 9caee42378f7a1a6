package client

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api"
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
	Job  Job
	Plan Plan
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
	plans map[dbus.ObjectPath]*Plan
	jobs  map[dbus.ObjectPath]*Job
	up    bool
}

// Watch subscribes to the daemon's signals, then reads its objects.
func (c *Client) Watch(ctx context.Context) (*Watcher, error) {
	rules := [][]dbus.MatchOption{
		{dbus.WithMatchSender(api.BusName), dbus.WithMatchPathNamespace(api.ManagerPath)},
		{dbus.WithMatchSender("org.freedesktop.DBus"), dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, api.BusName)},
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
func (w *Watcher) Plans() []Plan {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]Plan, 0, len(w.plans))
	for _, p := range w.plans {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, k int) bool { return out[i].Name < out[k].Name })
	return out
}

// Jobs is the mirror's jobs, in ListJobs order.
func (w *Watcher) Jobs() []Job {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]Job, 0, len(w.jobs))
	for _, j := range w.jobs {
		out = append(out, *j)
	}
	SortJobs(out)
	return out
}

// Job is one job of the mirror.
func (w *Watcher) Job(id uint32) (Job, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	j, ok := w.jobs[api.JobPath(id)]
	if !ok {
		return Job{}, false
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
	var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	if err := w.c.mgr.CallWithContext(ctx, api.ObjectManagerInterface+".GetManagedObjects", 0).Store(&objs); err != nil {
		return wrap("list the daemon's plans and jobs", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.plans = map[dbus.ObjectPath]*Plan{}
	w.jobs = map[dbus.ObjectPath]*Job{}
	for path, ifaces := range objs {
		if p, ok := ifaces[api.PlanInterface]; ok {
			plan := planFrom(p)
			w.plans[path] = &plan
		}
		if j, ok := ifaces[api.JobInterface]; ok {
			job := jobFrom(j)
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
	case "org.freedesktop.DBus.Properties.PropertiesChanged":
		if len(s.Body) < 2 {
			return nil
		}
		iface, _ := s.Body[0].(string)
		changed, _ := s.Body[1].(map[string]dbus.Variant)
		w.mu.Lock()
		defer w.mu.Unlock()
		switch iface {
		case api.JobInterface:
			j := w.jobs[s.Path]
			if j == nil {
				id, ok := JobID(s.Path)
				if !ok {
					return nil
				}
				j = &Job{ID: id}
				w.jobs[s.Path] = j
			}
			applyJobMonotonic(j, changed)
			return []Event{{Type: JobChanged, Job: copyJob(j)}}
		case api.PlanInterface:
			p := w.plans[s.Path]
			if p == nil {
				p = &Plan{}
				w.plans[s.Path] = p
			}
			applyPlan(p, changed)
			return []Event{{Type: PlanChanged, Plan: *p}}
		}
	case api.ObjectManagerInterface + ".InterfacesAdded":
		if len(s.Body) < 2 {
			return nil
		}
		path, _ := s.Body[0].(dbus.ObjectPath)
		ifaces, _ := s.Body[1].(map[string]map[string]dbus.Variant)
		w.mu.Lock()
		defer w.mu.Unlock()
		if p, ok := ifaces[api.PlanInterface]; ok {
			plan := planFrom(p)
			w.plans[path] = &plan
			return []Event{{Type: PlanAdded, Plan: plan}}
		}
		if j, ok := ifaces[api.JobInterface]; ok {
			job := w.jobs[path]
			if job == nil {
				job = &Job{}
				w.jobs[path] = job
			}
			applyJobMonotonic(job, j)
			return []Event{{Type: JobNew, Job: copyJob(job)}}
		}
	case api.ObjectManagerInterface + ".InterfacesRemoved":
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
	case api.ManagerInterface + ".JobRemoved":
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
			j = &Job{ID: id, Kind: kind, Plan: plan}
			w.jobs[path] = j
		}
		j.State, j.Result = StateFinished, result
		return []Event{{Type: JobFinished, Job: copyJob(j)}}
	}
	return nil
}

// applyJobMonotonic applies changed properties, except that a job never
// goes back (finished to running, running to queued): a signal sent before
// the first GetManagedObjects may arrive after it.
func applyJobMonotonic(j *Job, changed map[string]dbus.Variant) {
	if s, ok := changed["State"].Value().(string); ok && StateRank(s) < StateRank(j.State) {
		// An older state: only what never changes is news.
		static := map[string]dbus.Variant{}
		for _, k := range []string{"Id", "Kind", "Plan", "Trigger", "QueuedAt"} {
			if v, ok := changed[k]; ok {
				static[k] = v
			}
		}
		applyJob(j, static)
		return
	}
	applyJob(j, changed)
}

// StateRank orders job states: queued < running < finished.
func StateRank(state string) int {
	switch state {
	case StateQueued:
		return 1
	case StateRunning:
		return 2
	case StateFinished:
		return 3
	}
	return 0
}

func copyJob(j *Job) Job {
	out := *j
	out.CurrentFiles = append([]string(nil), j.CurrentFiles...)
	return out
}

package api

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/queue"
)

// ProgressInterval is the least time between two PropertiesChanged signals
// of one job: at most 4 a second, however often restic reports. 300 ms, not
// 250: a client sees the signals with the bus's and its own delays, and one
// late signal must not put 5 into a second of its clock.
const ProgressInterval = 300 * time.Millisecond

// Server publishes a daemon on the bus: the manager object, a plan object
// per plan and a job object per job in the queue and its history.
//
// The queue tells the server of job changes with its own lock held, and
// the daemon of the plans' other changes (a reload, a next run moved, a
// plan become overdue), so the listener only appends the change to a list; one goroutine (loop)
// applies the changes in order, exports and unexports objects and emits
// every signal, holding mu. Method calls run on their own goroutines and
// call into the daemon without holding mu, so no lock is ever awaited
// while another is held in the opposite order.
type Server struct {
	conn     *dbus.Conn
	d        *daemon.Daemon
	authz    Authorizer
	log      *slog.Logger
	interval time.Duration

	mu        sync.Mutex
	manager   *properties
	jobs      map[uint32]*jobObject
	plans     map[string]*planObject
	active    map[uint32]queue.State // queued and running jobs: their state
	throttled map[uint32]*jobObject

	evMu   sync.Mutex
	events []event
	wake   chan struct{}

	stop      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
}

type eventKind int

const (
	evQueued eventKind = iota
	evChanged
	evFinished
	evForgotten
	evBarrier
	evPlans // the daemon's plans changed: compare the plan objects with them
)

type event struct {
	kind eventKind
	job  queue.Job
	done chan struct{} // evBarrier
}

// NewServer makes the server of d on conn. authz decides who may do what;
// nil lets only root (uid 0 by the bus's word) do what needs authorization.
func NewServer(conn *dbus.Conn, d *daemon.Daemon, authz Authorizer, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	if authz == nil {
		authz = rootOnly{conn: conn}
	}
	return &Server{
		conn: conn, d: d, authz: authz, log: log, interval: ProgressInterval,
		jobs: map[uint32]*jobObject{}, plans: map[string]*planObject{},
		active: map[uint32]queue.State{}, throttled: map[uint32]*jobObject{},
		wake: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{}),
	}
}

// Serve returns the daemon's Serve option: it exports every object with its
// introspection, and only then takes the well-known name, without queueing;
// another owner is an error that says so.
func Serve(conn *dbus.Conn, authz Authorizer, log *slog.Logger) func(d *daemon.Daemon) error {
	return func(d *daemon.Daemon) error {
		s := NewServer(conn, d, authz, log)
		if err := s.Export(); err != nil {
			return err
		}
		return RequestName(conn)
	}
}

// RequestName takes the daemon's bus name on conn, or says who has it.
func RequestName(conn *dbus.Conn) error {
	reply, err := conn.RequestName(contract.BusName, dbus.NameFlagDoNotQueue)
	if err != nil {
		return fmt.Errorf("cannot request the bus name %s: %w", contract.BusName, err)
	}
	if reply != dbus.RequestNameReplyPrimaryOwner {
		return fmt.Errorf("another process owns the bus name %s: is subvault already running? (systemctl status subvault)", contract.BusName)
	}
	return nil
}

// Export publishes the manager, the plans and the jobs the queue holds
// (its history too), subscribes to the queue and starts the goroutine that
// follows it.
func (s *Server) Export() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.manager, err = exportProperties(s.conn, contract.ManagerPath, contract.ManagerInterface, s.managerValues().Properties()); err != nil {
		return err
	}
	for iface, v := range map[string]any{
		contract.ManagerInterface:        manager{s},
		contract.ObjectManagerInterface:  objectManager{s},
		contract.IntrospectableInterface: introspect.NewIntrospectable(node([]string{"job", "plan"}, managerIntrospection, objectManagerIntrospection)),
	} {
		if err := s.conn.Export(v, contract.ManagerPath, iface); err != nil {
			return fmt.Errorf("cannot export %s on %s: %w", iface, contract.ManagerPath, err)
		}
	}

	if err := s.exportMissing(); err != nil {
		return err
	}

	// Subscribed before the jobs and plans are read, so no change falls
	// between; a change already shown is applied again, harmlessly.
	s.d.Queue().Subscribe(listener{s})
	s.d.Subscribe(listener{s})
	for _, j := range s.d.Queue().Jobs() {
		if _, err := s.exportJob(j); err != nil {
			return err
		}
		if j.Active() {
			s.active[j.ID] = j.State
		}
	}
	if err := s.syncPlans(false); err != nil {
		return err
	}
	s.updateManager()
	go s.loop()
	return nil
}

// Close stops following the queue (tests; the daemon's process simply ends).
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.stop) })
	<-s.stopped
}

// listener hands the queue's and the daemon's changes to the loop; it
// runs under the queue's lock and takes only evMu, which nothing holds for
// long.
type listener struct{ s *Server }

func (l listener) push(ev event) {
	l.s.evMu.Lock()
	l.s.events = append(l.s.events, ev)
	l.s.evMu.Unlock()
	select {
	case l.s.wake <- struct{}{}:
	default:
	}
}

func (l listener) JobQueued(j queue.Job)    { l.push(event{kind: evQueued, job: j}) }
func (l listener) JobChanged(j queue.Job)   { l.push(event{kind: evChanged, job: j}) }
func (l listener) JobFinished(j queue.Job)  { l.push(event{kind: evFinished, job: j}) }
func (l listener) JobForgotten(j queue.Job) { l.push(event{kind: evForgotten, job: j}) }
func (l listener) PlansChanged()            { l.push(event{kind: evPlans}) }

// sync returns once every change the queue reported before the call is on
// the bus: a caller told "job 7" finds /org/subvault/Subvault1/job/7.
func (s *Server) sync() {
	done := make(chan struct{})
	listener{s}.push(event{kind: evBarrier, done: done})
	select {
	case <-done:
	case <-s.stopped:
	case <-time.After(5 * time.Second):
		s.log.Warn("the D-Bus objects lag more than 5 s behind the job queue")
	}
}

func (s *Server) loop() {
	defer close(s.stopped)
	throttle := time.NewTimer(time.Hour)
	throttle.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.wake:
			s.evMu.Lock()
			events := s.events
			s.events = nil
			s.evMu.Unlock()
			s.mu.Lock()
			for _, ev := range events {
				s.handle(ev, time.Now())
			}
			s.mu.Unlock()
		case <-throttle.C:
			s.mu.Lock()
			now := time.Now()
			for _, o := range s.throttled {
				if !o.due.After(now) {
					s.flushJob(o, now, true)
				}
			}
			s.mu.Unlock()
		}
		s.mu.Lock()
		var next time.Time
		for _, o := range s.throttled {
			if next.IsZero() || o.due.Before(next) {
				next = o.due
			}
		}
		s.mu.Unlock()
		throttle.Stop()
		if !next.IsZero() {
			throttle.Reset(max(time.Until(next), time.Millisecond))
		}
	}
}

// handle applies one change of the queue; mu is held.
func (s *Server) handle(ev event, now time.Time) {
	j := ev.job
	switch ev.kind {
	case evBarrier:
		close(ev.done)
		return
	case evPlans:
		if err := s.syncPlans(true); err != nil {
			s.log.Error("cannot update the plan objects", "err", err)
		}
		return
	case evQueued, evChanged, evFinished:
		o, existed := s.jobs[j.ID]
		if !existed {
			var err error
			if o, err = s.exportJob(j); err != nil {
				s.log.Error("cannot export a job object", "job", j.ID, "err", err)
				return
			}
			s.emit(contract.ManagerPath, contract.ObjectManagerInterface+".InterfacesAdded", o.path, o.interfaces())
			if ev.kind == evQueued {
				s.emit(contract.ManagerPath, contract.ManagerInterface+".JobNew", j.ID, o.path, j.Kind, j.Plan)
			}
		} else {
			o.set(j) // on evQueued: the listener raced Export, and the job is shown already
		}
		if j.Active() {
			s.active[j.ID] = j.State
		} else {
			delete(s.active, j.ID)
		}
		if ev.kind == evFinished {
			fin := j
			o.final = &fin
		}
		s.updateManager()
		s.flushJob(o, now, false)
		if ev.kind != evChanged {
			// LastBackup/LastResult/LastError after a backup, NextRun
			// after a scheduled run.
			if err := s.syncPlans(true); err != nil {
				s.log.Error("cannot update the plan objects", "err", err)
			}
		}
	case evForgotten:
		o, ok := s.jobs[j.ID]
		if !ok {
			return
		}
		s.flushJob(o, now, true)
		s.unexportJob(o)
		s.emit(contract.ManagerPath, contract.ObjectManagerInterface+".InterfacesRemoved", o.path, []string{contract.JobInterface})
	}
}

// flushJob sends the job's changed properties in one PropertiesChanged,
// now if force or the job's last one is at least interval old, otherwise
// when it is (the changes until then coalesce). JobRemoved follows the
// final state. mu is held.
func (s *Server) flushJob(o *jobObject, now time.Time, force bool) {
	if !force && now.Sub(o.lastEmit) < s.interval {
		o.due = o.lastEmit.Add(s.interval)
		s.throttled[o.id] = o
		return
	}
	delete(s.throttled, o.id)
	o.due = time.Time{}
	if changed := o.changed(); len(changed) > 0 {
		s.emit(o.path, contract.PropertiesInterface+".PropertiesChanged", contract.JobInterface, changed, []string{})
		o.lastEmit = now
	}
	if f := o.final; f != nil {
		o.final = nil
		s.emit(contract.ManagerPath, contract.ManagerInterface+".JobRemoved", f.ID, o.path, f.Kind, f.Plan, f.Result)
	}
}

// managerValues are the manager's properties from the jobs and plans
// shown. mu is held.
func (s *Server) managerValues() contract.Manager {
	m := contract.Manager{Version: s.d.Version(), State: contract.ManagerIdle, Plans: slices.Sorted(maps.Keys(s.plans)),
		Running: []uint32{}, Queued: []uint32{}}
	for id, state := range s.active {
		if state == queue.StateRunning {
			m.Running = append(m.Running, id)
		} else {
			m.Queued = append(m.Queued, id)
		}
	}
	slices.Sort(m.Running)
	slices.Sort(m.Queued)
	if len(s.active) > 0 {
		m.State = contract.ManagerRunning
	}
	if r := s.d.LastReset(); !r.Time.IsZero() {
		m.LastReset = &contract.LastReset{Time: r.Time, Path: contract.EscapeInvalidUTF8(r.Path), Result: r.Result,
			Reason: contract.EscapeInvalidUTF8(r.Reason), State: contract.EscapeInvalidUTF8(r.State)}
	}
	return m
}

// updateManager sets the manager's properties from the jobs and plans
// shown, and announces what changed. mu is held.
func (s *Server) updateManager() {
	if changed := s.manager.store(s.managerValues().Properties()); len(changed) > 0 {
		s.emit(contract.ManagerPath, contract.PropertiesInterface+".PropertiesChanged", contract.ManagerInterface, changed, []string{})
	}
}

// sortPaths sorts job paths by job id, not as strings (job/10 after job/9).
func sortPaths(p []dbus.ObjectPath) {
	slices.SortFunc(p, func(a, b dbus.ObjectPath) int {
		if len(a) != len(b) {
			return len(a) - len(b)
		}
		if a < b {
			return -1
		}
		if a > b {
			return 1
		}
		return 0
	})
}

// syncPlans makes the plan objects match the daemon's plans: new ones
// exported (InterfacesAdded when announce), gone ones removed
// (InterfacesRemoved), changed properties announced. mu is held.
func (s *Server) syncPlans(announce bool) error {
	infos := s.d.Plans()
	seen := map[string]bool{}
	for _, p := range infos {
		seen[p.Name] = true
		o, ok := s.plans[p.Name]
		if !ok {
			var err error
			if o, err = s.exportPlan(p); err != nil {
				return err
			}
			if announce {
				s.emit(contract.ManagerPath, contract.ObjectManagerInterface+".InterfacesAdded", o.path, o.interfaces())
			}
			continue
		}
		if changed := o.set(p); len(changed) > 0 && announce {
			s.emit(o.path, contract.PropertiesInterface+".PropertiesChanged", contract.PlanInterface, changed, []string{})
		}
	}
	for name, o := range s.plans {
		if !seen[name] {
			s.unexportPlan(o)
			if announce {
				s.emit(contract.ManagerPath, contract.ObjectManagerInterface+".InterfacesRemoved", o.path, []string{contract.PlanInterface})
			}
		}
	}
	s.updateManager()
	return nil
}

func (s *Server) emit(path dbus.ObjectPath, name string, args ...any) {
	if err := s.conn.Emit(path, name, args...); err != nil {
		s.log.Debug("cannot emit a D-Bus signal", "path", path, "signal", name, "err", err)
	}
}

// planConfig is the configuration of plan, nil when it has none.
func (s *Server) planConfig(name string) *config.Plan {
	return s.d.Config().Plans[name]
}

// rootOnly is the Authorizer when none is given: uid 0 may do everything,
// others nothing that needs authorization.
type rootOnly struct{ conn *dbus.Conn }

func (r rootOnly) CallerUID(sender dbus.Sender) (uint32, *dbus.Error) {
	var uid uint32
	if err := r.conn.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixUser", 0, string(sender)).Store(&uid); err != nil {
		return 0, newError(contract.ErrorAccessDenied, "cannot learn who is calling from the bus: %v", err)
	}
	return uid, nil
}

func (r rootOnly) Authorize(sender dbus.Sender, _ bool, action string, _ *config.Plan) *dbus.Error {
	uid, derr := r.CallerUID(sender)
	if derr != nil {
		return derr
	}
	if uid != 0 {
		return newError(contract.ErrorAccessDenied, "uid %d may not do %s: only root may", uid, action)
	}
	return nil
}

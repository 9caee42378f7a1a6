package api

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/daemon"
)

// readCall is the context of a call that runs restic or walks a tree for
// its caller (ListArchives, Diff): it ends after timeout, or as soon as the
// caller leaves the bus, so that restic is interrupted rather than left
// running for nobody; and it carries the caller's uid, by which the daemon
// bounds such calls (daemon.ReadCallsPerCaller, daemon.ReadCallsInAll;
// beyond them a call waits briefly, then is refused with LimitsExceeded).
// The call must call done when it returns. A new method of this kind
// wraps its daemon call the same way, after authorization:
//
//	ctx, done := s.readCall(parent, sender, uid, timeout)
//	defer done()
func (s *Server) readCall(parent context.Context, sender dbus.Sender, uid uint32, timeout time.Duration) (context.Context, func()) {
	ctx, cancel := context.WithTimeout(daemon.WithCaller(parent, uid), timeout)
	stop := s.callers.onLeave(string(sender), cancel)
	return ctx, func() { stop(); cancel() }
}

// callerWatch runs functions when a caller leaves the bus: it follows the
// bus's NameOwnerChanged signals (one match rule, added at the first use)
// for unique names that lose their owner.
type callerWatch struct {
	conn *dbus.Conn
	log  *slog.Logger

	startOnce sync.Once
	started   bool

	mu      sync.Mutex
	next    uint64
	byName  map[string]map[uint64]func()
	signals chan *dbus.Signal
}

func newCallerWatch(conn *dbus.Conn, log *slog.Logger) *callerWatch {
	return &callerWatch{conn: conn, log: log, byName: map[string]map[uint64]func(){}}
}

const (
	busDriver        = "org.freedesktop.DBus"
	nameOwnerChanged = busDriver + ".NameOwnerChanged"
)

func (w *callerWatch) start() bool {
	w.startOnce.Do(func() {
		err := w.conn.AddMatchSignal(dbus.WithMatchSender(busDriver), dbus.WithMatchInterface(busDriver),
			dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchObjectPath("/org/freedesktop/DBus"))
		if err != nil {
			w.log.Error("cannot follow callers leaving the bus; their calls run on to their deadline", "err", err)
			return
		}
		w.signals = make(chan *dbus.Signal, 64)
		w.conn.Signal(w.signals)
		go w.loop()
		w.started = true
	})
	return w.started
}

func (w *callerWatch) loop() {
	for sig := range w.signals {
		// Only the bus itself says who left: any peer may send a signal
		// of that name, but none can send it as the bus.
		if sig.Name != nameOwnerChanged || sig.Sender != busDriver || len(sig.Body) != 3 {
			continue
		}
		name, _ := sig.Body[0].(string)
		newOwner, _ := sig.Body[2].(string)
		if newOwner != "" || name == "" || name[0] != ':' {
			continue
		}
		w.mu.Lock()
		fns := w.byName[name]
		delete(w.byName, name)
		w.mu.Unlock()
		for _, f := range fns {
			f()
		}
	}
}

// onLeave runs f when the unique name leaves the bus (at once when it has
// left already), unless stop is called first.
func (w *callerWatch) onLeave(name string, f func()) (stop func()) {
	if name == "" || !w.start() {
		return func() {}
	}
	w.mu.Lock()
	w.next++
	id := w.next
	if w.byName[name] == nil {
		w.byName[name] = map[uint64]func(){}
	}
	w.byName[name][id] = f
	w.mu.Unlock()
	stop = func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if fns := w.byName[name]; fns != nil {
			delete(fns, id)
			if len(fns) == 0 {
				delete(w.byName, name)
			}
		}
	}
	// Watching first, then asking: a caller that left before the watch
	// began is caught here, and one that leaves after it by the signal.
	var has bool
	if err := w.conn.BusObject().Call(busDriver+".NameHasOwner", 0, name).Store(&has); err == nil && !has {
		stop()
		f()
	}
	return stop
}

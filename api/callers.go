package api

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/godbus/dbus/v5"
)

// callerWatch tells when a caller leaves the bus, so that what it asked
// for (a polkit check, a restic process) ends with it instead of running on
// for nobody. One match rule brings every connection's departure
// (NameOwnerChanged with an empty new owner); a caller is watched only
// while someone holds a Watch on it, so the watch holds nothing for
// callers that come and go.
//
// Everything in package api that serves one connection shares its watch:
// callersOn(conn).
type callerWatch struct {
	conn *dbus.Conn

	setup    sync.Once
	setupErr error

	mu      sync.Mutex
	watched map[string]*watchedCaller // by unique name
}

type watchedCaller struct {
	gone  chan struct{}
	left  bool
	holds int
}

var (
	watchesMu sync.Mutex
	watches   = map[*dbus.Conn]*callerWatch{}
)

// callersOn returns the watch of the callers of conn, made on first use
// and forgotten when conn closes.
func callersOn(conn *dbus.Conn) *callerWatch {
	watchesMu.Lock()
	defer watchesMu.Unlock()
	if w := watches[conn]; w != nil {
		return w
	}
	w := &callerWatch{conn: conn, watched: map[string]*watchedCaller{}}
	watches[conn] = w
	go func() {
		<-conn.Context().Done()
		watchesMu.Lock()
		delete(watches, conn)
		watchesMu.Unlock()
	}()
	return w
}

// start adds the match rule and follows the signals, once.
func (w *callerWatch) start() error {
	w.setup.Do(func() {
		signals := make(chan *dbus.Signal, 64)
		w.conn.Signal(signals)
		w.setupErr = w.conn.AddMatchSignal(
			dbus.WithMatchSender("org.freedesktop.DBus"),
			dbus.WithMatchObjectPath("/org/freedesktop/DBus"),
			dbus.WithMatchInterface("org.freedesktop.DBus"),
			dbus.WithMatchMember("NameOwnerChanged"),
			dbus.WithMatchArg(2, ""),
		)
		if w.setupErr != nil {
			w.conn.RemoveSignal(signals)
			w.setupErr = fmt.Errorf("cannot follow callers leaving the bus: %w", w.setupErr)
			return
		}
		go func() {
			// godbus closes the channel when the connection closes.
			for s := range signals {
				if s.Name != "org.freedesktop.DBus.NameOwnerChanged" || s.Sender != "org.freedesktop.DBus" || len(s.Body) != 3 {
					continue
				}
				name, _ := s.Body[0].(string)
				if owner, _ := s.Body[2].(string); owner == "" {
					w.left(name)
				}
			}
		}()
	})
	return w.setupErr
}

// left closes the channel of a watched caller that left.
func (w *callerWatch) left(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c := w.watched[name]; c != nil && !c.left {
		c.left = true
		close(c.gone)
	}
}

// Gone returns a channel that is closed when sender leaves the bus (at
// once if it already has), and the function to call when the answer no
// longer matters. If the bus cannot tell (the match rule was refused), the
// channel is never closed and err says why.
func (w *callerWatch) Gone(sender dbus.Sender) (gone <-chan struct{}, release func(), err error) {
	name := string(sender)
	err = w.start()
	w.mu.Lock()
	c := w.watched[name]
	if c == nil {
		c = &watchedCaller{gone: make(chan struct{})}
		w.watched[name] = c
	}
	c.holds++
	w.mu.Unlock()
	release = func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if c.holds--; c.holds == 0 && w.watched[name] == c {
			delete(w.watched, name)
		}
	}
	if err != nil {
		return c.gone, release, err
	}
	// The caller may have left before the watch began: a unique name is
	// never reused, so one without an owner now is gone for good.
	var has bool
	if callErr := w.conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, name).Store(&has); callErr == nil && !has {
		w.left(name)
	}
	return c.gone, release, nil
}

// Context returns a context that is canceled when sender leaves the bus
// or parent ends, and its cancel function (call it when done).
func (w *callerWatch) Context(parent context.Context, sender dbus.Sender) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	gone, release, _ := w.Gone(sender)
	go func() {
		defer release()
		select {
		case <-gone:
			cancel(errCallerLeft)
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(context.Canceled) }
}

// errCallerLeft is the cause of a Context canceled because its caller
// left the bus (context.Cause).
var errCallerLeft = errors.New("the caller left the bus")

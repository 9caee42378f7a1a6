package api

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/internal/testutil"
)

// The watch of callers: a caller's channel closes when it leaves the bus,
// at once for one that has left already, and the watch forgets callers
// nobody holds.
func TestCallerWatch(t *testing.T) {
	bus := testutil.NewBus(t)
	server := connectRetrying(t, bus.Address)
	t.Cleanup(func() { server.Close() })
	w := callersOn(server)
	if callersOn(server) != w {
		t.Fatal("a second watch on one connection")
	}

	caller := connectRetrying(t, bus.Address)
	name := dbus.Sender(caller.Names()[0])
	gone, release, err := w.Gone(name)
	if err != nil {
		t.Fatal(err)
	}
	gone2, release2, _ := w.Gone(name)
	ctx, cancel := w.Context(context.Background(), name)
	defer cancel()
	select {
	case <-gone:
		t.Fatal("closed while the caller is on the bus")
	case <-time.After(100 * time.Millisecond):
	}
	caller.Close()
	for _, ch := range []<-chan struct{}{gone, gone2, ctx.Done()} {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatal("not closed within 5 s of the caller leaving")
		}
	}
	if !errors.Is(context.Cause(ctx), errCallerLeft) {
		t.Errorf("the context's cause: %v", context.Cause(ctx))
	}
	// Left before anyone watched: closed at once.
	late, releaseLate, _ := w.Gone(name)
	select {
	case <-late:
	default:
		t.Error("a caller that has left is not gone")
	}
	release()
	release2()
	releaseLate()
	waitUntil(t, 5*time.Second, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.watched) == 0
	})

	server.Close()
	waitUntil(t, 5*time.Second, func() bool {
		watchesMu.Lock()
		defer watchesMu.Unlock()
		return watches[server] == nil
	})
}

package api

import (
	"context"
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
	ctx, stop := callersOn(s.conn).Context(ctx, sender)
	return ctx, func() { stop(); cancel() }
}

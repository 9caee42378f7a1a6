package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
)

// DiffTimeout is how long the daemon may take over a Diff before it gives
// up; Diff waits that long and a minute more.
const DiffTimeout = 30 * time.Minute

// Diff lists what differs from a to b in plan: each an archive id,
// "latest", "live" or a local snapshot's name, at least one an archive.
func (c *Client) Diff(ctx context.Context, plan, a, b string) ([]contract.Change, error) {
	out := []contract.Change{}
	_, err := c.DiffEach(ctx, plan, a, b, func(ch contract.Change) error {
		out = append(out, ch)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DiffEach calls each with every change from a to b in plan, as they come,
// and returns how many there were. A directory's path ends in "/"; bytes
// of a path that are not UTF-8 are written as \xNN, as the daemon's
// replies write them. They come through a pipe (DiffTo), so
// that a result of any size arrives whole: a reply on the bus is bounded.
// A daemon older than DiffTo is asked with Diff.
func (c *Client) DiffEach(ctx context.Context, plan, a, b string, each func(contract.Change) error) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, DiffTimeout+time.Minute)
	defer cancel()
	what := fmt.Sprintf("compare %s with %s in plan %s", a, b, plan)
	r, w, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("cannot %s: %w", what, err)
	}
	defer r.Close() //nolint:errcheck // read to its end, or abandoned
	call := c.send(ctx, "DiffTo", make(chan *dbus.Call, 1), plan, a, b, dbus.UnixFD(w.Fd()), map[string]dbus.Variant{})
	// The message is sent: the daemon has a descriptor of its own, and the
	// pipe ends when it closes that one.
	w.Close() //nolint:errcheck,gosec // nothing was written through it
	n, readErr := contract.ReadDiffRecords(r, func(ch contract.Change) error {
		ch.Path = contract.EscapeInvalidUTF8(ch.Path)
		return each(ch)
	})
	if readErr != nil {
		// The daemon's next write fails, and it answers.
		r.Close() //nolint:errcheck,gosec // closing is the point
	}
	<-call.Done
	if call.Err != nil {
		var derr dbus.Error
		if errors.As(call.Err, &derr) && derr.Name == contract.ErrorUnknownMethod && n == 0 {
			return c.diffReply(ctx, what, plan, a, b, each)
		}
		return n, wrap(what, call.Err)
	}
	var count uint64
	if err := call.Store(&count); err != nil {
		return n, wrap(what, err)
	}
	if readErr != nil {
		return n, fmt.Errorf("cannot %s: %w", what, readErr)
	}
	if count != uint64(n) {
		return n, fmt.Errorf("cannot %s: the daemon wrote %d changes, %d came through the pipe", what, count, n)
	}
	return n, nil
}

// diffReply asks with Diff, whose reply holds the changes (a daemon
// without DiffTo).
func (c *Client) diffReply(ctx context.Context, what, plan, a, b string, each func(contract.Change) error) (int, error) {
	var raw []contract.Change
	if err := c.call(ctx, "Diff", plan, a, b).Store(&raw); err != nil {
		return 0, wrap(what, err)
	}
	for i, r := range raw {
		if err := each(r); err != nil {
			return i, err
		}
	}
	return len(raw), nil
}

package client

import (
	"context"
	"fmt"
	"time"
)

// Kinds of Change, as Diff names them.
const (
	ChangeAdded       = "added"
	ChangeRemoved     = "removed"
	ChangeChanged     = "changed"
	ChangeTypeChanged = "type-changed"
	ChangeMetadata    = "metadata"
)

// Change is one path that differs between the two sides of a Diff. A
// directory's path ends in "/".
type Change struct {
	Kind string `json:"kind"`
	Path string `json:"path"`
}

// DiffTimeout is how long the daemon may take over a Diff before it gives
// up; Diff waits that long and a minute more.
const DiffTimeout = 30 * time.Minute

// Diff lists what differs from a to b in plan: each an archive id,
// "latest", "live" or a local snapshot's name, at least one an archive.
func (c *Client) Diff(ctx context.Context, plan, a, b string) ([]Change, error) {
	ctx, cancel := context.WithTimeout(ctx, DiffTimeout+time.Minute)
	defer cancel()
	var raw []struct{ Kind, Path string }
	if err := c.call(ctx, "Diff", plan, a, b).Store(&raw); err != nil {
		return nil, wrap(fmt.Sprintf("compare %s with %s in plan %s", a, b, plan), err)
	}
	out := make([]Change, 0, len(raw))
	for _, r := range raw {
		out = append(out, Change{Kind: r.Kind, Path: r.Path})
	}
	return out, nil
}

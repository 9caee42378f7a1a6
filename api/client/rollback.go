package client

import (
	"context"

	"github.com/godbus/dbus/v5"
)

// RollbackOptions are Rollback's options.
type RollbackOptions struct {
	// DryRun says what would happen and changes nothing.
	DryRun bool
	// SetDefault makes the subvolume prepared for a mounted one the
	// filesystem's default.
	SetDefault bool
}

// Rollback makes subvolume (one of plan's) hold snapshot's content again,
// or prepares that for the next boot when it is mounted. It returns where
// the state before is kept (a pinned snapshot's name, or the mounted
// subvolume's path from the top level) and the daemon's message for a
// person.
func (c *Client) Rollback(ctx context.Context, plan, snapshot, subvolume string, opts RollbackOptions) (kept, message string, err error) {
	options := map[string]dbus.Variant{}
	if opts.DryRun {
		options["dry_run"] = dbus.MakeVariant(true)
	}
	if opts.SetDefault {
		options["set_default"] = dbus.MakeVariant(true)
	}
	if err := c.call(ctx, "Rollback", plan, snapshot, subvolume, options).Store(&kept, &message); err != nil {
		return "", "", wrap("roll "+subvolume+" back to "+snapshot, err)
	}
	return kept, message, nil
}

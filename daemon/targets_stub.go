package daemon

// Stubs of the onsite tier's daemon side (docs: the issue 16 plan's "daemon
// (part D)"), so that api and the command line build before it is merged.
// The daemon's own implementation replaces this file.

import (
	"context"
	"time"
)

// TargetInfo is one target as ListTargets shows it.
type TargetInfo struct {
	Name, Path, UUID string
	Present          bool
	Where, Error     string
	Plans            []TargetPlan
}

// TargetPlan is one plan's copies on a target.
type TargetPlan struct {
	Plan   string
	Newest time.Time
	Copies int
	Pinned int // source snapshots pinned for the target
}

// PlanTarget is one of a plan's targets as its Plan object shows it.
type PlanTarget struct {
	Name    string
	Newest  time.Time
	Present bool
}

// Targets lists the configured targets (stub: names and places only).
func (d *Daemon) Targets(_ context.Context) []TargetInfo {
	cfg := d.Config()
	var out []TargetInfo
	for _, name := range cfg.TargetNames() {
		t := cfg.Targets[name]
		out = append(out, TargetInfo{Name: name, Path: t.Path, UUID: t.UUID})
	}
	return out
}

// TargetAppeared starts the due sends to the target of filesystem uuid
// (stub: nothing).
func (d *Daemon) TargetAppeared(_ string) {}

package contract

import (
	"time"

	"github.com/godbus/dbus/v5"
)

// The onsite tier on the bus: a plan's Targets property (a(sxb)) and the
// Manager's ListTargets (aa{sv}). Times here are unix seconds (0: none),
// as docs/dbus-api.md says.

// PlanTarget is one of a plan's send_to targets as the plan's Targets
// property shows it: its newest copy of the plan (zero: none known) and
// whether the target is present now.
type PlanTarget struct {
	Name    string    `json:"name"`
	Newest  time.Time `json:"newest,omitzero"`
	Present bool      `json:"present"`
}

// PlanTargetEntry is one element of a plan's Targets property: (sxb).
type PlanTargetEntry struct {
	Name    string
	Newest  int64
	Present bool
}

// Target is one target of ListTargets: where it is, whether it is present
// now (and where its copies are reachable, or why it is not), and per plan
// that sends to it its newest copy, how many copies it holds and how many
// of the plan's snapshots are pinned for it.
type Target struct {
	Name    string       `json:"name"`
	Path    string       `json:"path,omitempty"`
	UUID    string       `json:"uuid,omitempty"`
	Present bool         `json:"present"`
	Where   string       `json:"where,omitempty"`
	Error   string       `json:"error,omitempty"`
	Plans   []TargetPlan `json:"plans"`
}

// TargetPlan is one plan's copies on a target.
type TargetPlan struct {
	Plan   string    `json:"plan"`
	Newest time.Time `json:"newest,omitzero"`
	Copies uint32    `json:"copies"`
	Pinned uint32    `json:"pinned"`
}

// TargetPlanEntry is one element of a ListTargets entry's Plans: (sxuu).
type TargetPlanEntry struct {
	Plan   string
	Newest int64
	Copies uint32
	Pinned uint32
}

// Dict is t as ListTargets carries it: one a{sv}.
func (t Target) Dict() map[string]dbus.Variant {
	plans := make([]TargetPlanEntry, 0, len(t.Plans))
	for _, p := range t.Plans {
		plans = append(plans, TargetPlanEntry{Plan: p.Plan, Newest: Seconds(p.Newest), Copies: p.Copies, Pinned: p.Pinned})
	}
	return map[string]dbus.Variant{
		"Name":    dbus.MakeVariant(t.Name),
		"Path":    dbus.MakeVariant(t.Path),
		"UUID":    dbus.MakeVariant(t.UUID),
		"Present": dbus.MakeVariant(t.Present),
		"Where":   dbus.MakeVariant(t.Where),
		"Error":   dbus.MakeVariant(t.Error),
		"Plans":   dbus.MakeVariant(plans),
	}
}

// TargetOf is the target a ListTargets entry describes; keys it does not
// know are left out, and a value of another type reads as its zero.
func TargetOf(d map[string]dbus.Variant) Target {
	var t Target
	for k, v := range d {
		switch k {
		case "Name":
			t.Name = str(v)
		case "Path":
			t.Path = str(v)
		case "UUID":
			t.UUID = str(v)
		case "Present":
			t.Present, _ = v.Value().(bool)
		case "Where":
			t.Where = str(v)
		case "Error":
			t.Error = str(v)
		case "Plans":
			var entries []TargetPlanEntry
			if err := v.Store(&entries); err != nil {
				continue
			}
			for _, e := range entries {
				t.Plans = append(t.Plans, TargetPlan{Plan: e.Plan, Newest: FromSeconds(e.Newest), Copies: e.Copies, Pinned: e.Pinned})
			}
		}
	}
	return t
}

func planTargetEntries(targets []PlanTarget) []PlanTargetEntry {
	out := make([]PlanTargetEntry, 0, len(targets))
	for _, t := range targets {
		out = append(out, PlanTargetEntry{Name: t.Name, Newest: Seconds(t.Newest), Present: t.Present})
	}
	return out
}

func planTargetsOf(v dbus.Variant) []PlanTarget {
	var entries []PlanTargetEntry
	if err := v.Store(&entries); err != nil {
		return nil
	}
	var out []PlanTarget
	for _, e := range entries {
		out = append(out, PlanTarget{Name: e.Name, Newest: FromSeconds(e.Newest), Present: e.Present})
	}
	return out
}

// Seconds is t as unix seconds, 0 for the zero time (and any time before
// the epoch).
func Seconds(t time.Time) int64 {
	if t.IsZero() || t.Unix() < 0 {
		return 0
	}
	return t.Unix()
}

// FromSeconds is the time s seconds after the epoch; 0 (or less) is the
// zero time.
func FromSeconds(s int64) time.Time {
	if s <= 0 {
		return time.Time{}
	}
	return time.Unix(s, 0)
}

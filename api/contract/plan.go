package contract

import (
	"time"

	"github.com/godbus/dbus/v5"
)

// Plan is a plan object's properties (org.subvault.Subvault1.Plan). Times
// are zero where the bus says 0.
type Plan struct {
	Name       string    `json:"name"`
	Subvolumes []string  `json:"subvolumes"`
	Repository string    `json:"repository"`
	Schedule   string    `json:"schedule"`
	NextRun    time.Time `json:"next_run,omitzero"`
	LastBackup time.Time `json:"last_backup,omitzero"`
	LastResult Result    `json:"last_result"`
	LastError  string    `json:"last_error"`
	// LastSuccess is when the last backup that ended done finished (zero
	// if none is known, and from a daemon older than the property).
	LastSuccess time.Time `json:"last_success,omitzero"`
	// Health is how the plan stands, as the daemon judges it, and
	// HealthReason why, in one line for a person (both empty from a daemon
	// older than the properties).
	Health       Health `json:"health"`
	HealthReason string `json:"health_reason"`
	// Waiting is why the plan's scheduled jobs wait, in one line ("waiting
	// for the network: ...", "on battery (on_battery: skip)"), empty when
	// none does; RetryAt is when the daemon tries again at the latest
	// (zero: when the condition clears). Both are empty from a daemon
	// older than the properties.
	Waiting string    `json:"waiting,omitempty"`
	RetryAt time.Time `json:"retry_at,omitzero"`
	// Targets are the plan's send_to targets, in its order, each with its
	// newest copy of the plan (empty from a daemon older than the
	// property).
	Targets []PlanTarget `json:"targets,omitempty"`
}

// Health is how a plan stands (its Health property): the daemon decides
// it, so that every client shows the same.
type Health string

// The healths of a plan.
const (
	// HealthOK: the last backup succeeded, or was canceled after a
	// success that is recent enough.
	HealthOK Health = "ok"
	// HealthFailed: the last backup failed (a partial one too), whatever
	// its age.
	HealthFailed Health = "failed"
	// HealthOverdue: the last successful backup is twice the schedule's
	// interval old or older (a canceled one does not count; a manual plan
	// is never overdue).
	HealthOverdue Health = "overdue"
	// HealthNever: no backup has succeeded yet, and the last one did not
	// fail.
	HealthNever Health = "never"
)

// NeedsAttention reports whether a person should act: the last backup
// failed, or the plan is overdue.
func (h Health) NeedsAttention() bool { return h == HealthFailed || h == HealthOverdue }

// Properties are the plan's properties as the bus carries them.
func (p Plan) Properties() map[string]dbus.Variant {
	return map[string]dbus.Variant{
		"Name":         dbus.MakeVariant(p.Name),
		"Subvolumes":   dbus.MakeVariant(nonNil(p.Subvolumes)),
		"Repository":   dbus.MakeVariant(p.Repository),
		"Schedule":     dbus.MakeVariant(p.Schedule),
		"NextRun":      dbus.MakeVariant(Micros(p.NextRun)),
		"LastBackup":   dbus.MakeVariant(Micros(p.LastBackup)),
		"LastResult":   dbus.MakeVariant(string(p.LastResult)),
		"LastError":    dbus.MakeVariant(p.LastError),
		"LastSuccess":  dbus.MakeVariant(Micros(p.LastSuccess)),
		"Health":       dbus.MakeVariant(string(p.Health)),
		"HealthReason": dbus.MakeVariant(p.HealthReason),
		"Waiting":      dbus.MakeVariant(p.Waiting),
		"RetryAt":      dbus.MakeVariant(Micros(p.RetryAt)),
		"Targets":      dbus.MakeVariant(planTargetEntries(p.Targets)),
	}
}

// Apply sets the properties props names, as Job.Apply does.
func (p *Plan) Apply(props map[string]dbus.Variant) {
	for k, v := range props {
		switch k {
		case "Name":
			p.Name = str(v)
		case "Subvolumes":
			p.Subvolumes, _ = v.Value().([]string)
		case "Repository":
			p.Repository = str(v)
		case "Schedule":
			p.Schedule = str(v)
		case "NextRun":
			p.NextRun = FromMicros(u64(v))
		case "LastBackup":
			p.LastBackup = FromMicros(u64(v))
		case "LastResult":
			p.LastResult = Result(str(v))
		case "LastError":
			p.LastError = str(v)
		case "LastSuccess":
			p.LastSuccess = FromMicros(u64(v))
		case "Health":
			p.Health = Health(str(v))
		case "HealthReason":
			p.HealthReason = str(v)
		case "Waiting":
			p.Waiting = str(v)
		case "RetryAt":
			p.RetryAt = FromMicros(u64(v))
		case "Targets":
			p.Targets = planTargetsOf(v)
		}
	}
}

// PlanOf is the plan that props describe.
func PlanOf(props map[string]dbus.Variant) Plan {
	var p Plan
	p.Apply(props)
	return p
}

// The manager's State.
const (
	ManagerIdle    = "idle"    // no job queued or running
	ManagerRunning = "running" // a job is queued or running
)

// Manager is the manager object's properties
// (org.subvault.Subvault1.Manager): the daemon's version and state, its
// plans' names, and the ids of the jobs running and queued, by id.
type Manager struct {
	Version string   `json:"version"`
	State   string   `json:"state"`
	Plans   []string `json:"plans"`
	Running []uint32 `json:"running_jobs"`
	Queued  []uint32 `json:"queued_jobs"`
	// LastReset is the last boot's reset; nil when there was none (no
	// reset section) or the daemon is older than the property.
	LastReset *LastReset `json:"last_reset,omitempty"`
}

// Properties are the manager's properties as the bus carries them: the
// jobs as their objects' paths.
func (m Manager) Properties() map[string]dbus.Variant {
	return map[string]dbus.Variant{
		"Version":     dbus.MakeVariant(m.Version),
		"State":       dbus.MakeVariant(m.State),
		"Plans":       dbus.MakeVariant(nonNil(m.Plans)),
		"RunningJobs": dbus.MakeVariant(jobPaths(m.Running)),
		"QueuedJobs":  dbus.MakeVariant(jobPaths(m.Queued)),
		"LastReset":   dbus.MakeVariant(lastResetProperty(m.LastReset)),
	}
}

// Apply sets the properties props names, as Job.Apply does; a path that
// is not a job's is left out.
func (m *Manager) Apply(props map[string]dbus.Variant) {
	for k, v := range props {
		switch k {
		case "Version":
			m.Version = str(v)
		case "State":
			m.State = str(v)
		case "Plans":
			m.Plans, _ = v.Value().([]string)
		case "RunningJobs":
			m.Running = jobIDs(v)
		case "QueuedJobs":
			m.Queued = jobIDs(v)
		case "LastReset":
			m.LastReset = lastResetOf(v)
		}
	}
}

func jobPaths(ids []uint32) []dbus.ObjectPath {
	out := make([]dbus.ObjectPath, len(ids))
	for i, id := range ids {
		out[i] = JobPath(id)
	}
	return out
}

func jobIDs(v dbus.Variant) []uint32 {
	var ids []uint32
	paths, _ := v.Value().([]dbus.ObjectPath)
	for _, p := range paths {
		if id, ok := JobID(p); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

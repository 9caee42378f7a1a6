package contract

import (
	"strconv"
	"time"

	"github.com/godbus/dbus/v5"
)

// Kind is what a job does, as its Kind property spells it.
type Kind string

// The kinds of job.
const (
	KindBackup  Kind = "backup"
	KindPrune   Kind = "prune"
	KindCheck   Kind = "check"
	KindRestore Kind = "restore"
	// KindCopy copies a plan's new archives to the repositories its
	// copy_to names (restic copy); queued after each backup that made an
	// archive.
	KindCopy Kind = "copy"
	// KindSend sends a plan's newest snapshots to one of the local btrfs
	// targets its send_to names (btrfs send and receive), incrementally
	// from a parent both sides have.
	KindSend Kind = "send"
)

// Doing is what a job of the kind is doing, for a person: "backing up".
func (k Kind) Doing() string {
	switch k {
	case KindBackup:
		return "backing up"
	case KindPrune:
		return "pruning"
	case KindCheck:
		return "checking"
	case KindRestore:
		return "restoring"
	case KindCopy:
		return "copying"
	case KindSend:
		return "sending"
	}
	return string(k)
}

// State is where a job is in its life.
type State string

// The states of a job, in the order a job goes through them.
const (
	StateQueued   State = "queued"
	StateRunning  State = "running"
	StateFinished State = "finished"
)

// Rank orders states as a job goes through them: queued 1, running 2,
// finished 3, anything else 0. A client that hears of a job twice keeps
// the later state.
func (s State) Rank() int {
	switch s {
	case StateQueued:
		return 1
	case StateRunning:
		return 2
	case StateFinished:
		return 3
	}
	return 0
}

// Result is how a finished job ended (empty until then), and a plan's
// LastResult.
type Result string

// The results of a job. A partial backup (an archive made, some files
// unreadable) is failed, with its ArchiveID set and an Error that starts
// with "partial". A postponed job is one the schedule asked for that did
// not run, or could not reach its repository: the machine was on battery
// or on a metered connection (the plan's on_battery, metered), or the
// repository was unreachable. Its Error says why; the daemon runs it
// again when that clears (docs/laptops.md). It is neither a success nor a
// failure: a plan's LastResult is never postponed. A stalled job is one
// whose restic made no progress for the plan's stall_timeout and was
// stopped (one that ran past its timeout is failed).
const (
	ResultDone      Result = "done"
	ResultFailed    Result = "failed"
	ResultCanceled  Result = "canceled"
	ResultPostponed Result = "postponed"
	ResultStalled   Result = "stalled"
	// ResultSkipped: the job had nothing it could do and that is not a
	// failure: a send whose target disk is absent.
	ResultSkipped Result = "skipped"
)

// What queued a job (a job's Trigger, and each of its Triggers).
const (
	TriggerSchedule = "schedule"
	TriggerCatchUp  = "catch-up"
)

// CallerTrigger is the trigger of a job a D-Bus caller asked for: "dbus:"
// and the caller's uid, as the bus says it.
func CallerTrigger(uid uint32) string { return "dbus:" + strconv.FormatUint(uint64(uid), 10) }

// Job is a job object's properties (org.subvault.Subvault1.Job). Callers
// and Triggers are everyone who asked for the job (nil from a daemon older
// than those properties). Times are zero where the bus says 0.
type Job struct {
	ID               uint32         `json:"id"`
	Kind             Kind           `json:"kind"`
	Plan             string         `json:"plan"`
	State            State          `json:"state"`
	Result           Result         `json:"result"`
	Trigger          string         `json:"trigger"`
	Callers          []uint32       `json:"callers"`
	Triggers         []string       `json:"triggers"`
	Progress         float64        `json:"progress"`
	BytesDone        uint64         `json:"bytes_done"`
	BytesTotal       uint64         `json:"bytes_total"`
	FilesDone        uint64         `json:"files_done"`
	FilesTotal       uint64         `json:"files_total"`
	SecondsRemaining uint64         `json:"seconds_remaining"`
	CurrentFiles     []string       `json:"current_files"`
	QueuedAt         time.Time      `json:"queued_at,omitzero"`
	StartedAt        time.Time      `json:"started_at,omitzero"`
	FinishedAt       time.Time      `json:"finished_at,omitzero"`
	Error            string         `json:"error"`
	ArchiveID        string         `json:"archive_id"`
	Summary          map[string]any `json:"summary"`
	// WaitingSince, while the running job waits on its repository (its
	// restic made no progress for a while), is when restic last made
	// progress; Waiting says why. Zero and empty while it moves.
	WaitingSince time.Time `json:"waiting_since,omitzero"`
	Waiting      string    `json:"waiting,omitempty"`
	// Stalled, while the running job counts as stalled (its restic made
	// no progress for the plan's stall_timeout, and the plan's on_stall:
	// report lets it go on), with StalledSince when restic last made
	// progress. False and zero while it moves. StallTimeout is the
	// plan's stall_timeout the job is judged by, in seconds (0: unknown
	// or none).
	Stalled      bool      `json:"stalled,omitempty"`
	StalledSince time.Time `json:"stalled_since,omitzero"`
	StallTimeout uint64    `json:"stall_timeout_seconds,omitempty"`
	// SendTarget is a send's target (one of its plan's send_to); empty
	// for the other kinds.
	SendTarget string `json:"send_target,omitempty"`
}

// Active reports whether the job is queued or running.
func (j Job) Active() bool { return j.State == StateQueued || j.State == StateRunning }

// Properties are the job's properties as the bus carries them: times as
// µs since the epoch, nil lists as empty ones, each Summary value as a
// variant of its own type (whole numbers are uint64 or int64, fractions
// float64, then string and bool).
func (j Job) Properties() map[string]dbus.Variant {
	return map[string]dbus.Variant{
		"Id":               dbus.MakeVariant(j.ID),
		"Kind":             dbus.MakeVariant(string(j.Kind)),
		"Plan":             dbus.MakeVariant(j.Plan),
		"State":            dbus.MakeVariant(string(j.State)),
		"Result":           dbus.MakeVariant(string(j.Result)),
		"Trigger":          dbus.MakeVariant(j.Trigger),
		"Callers":          dbus.MakeVariant(nonNil(j.Callers)),
		"Triggers":         dbus.MakeVariant(nonNil(j.Triggers)),
		"Progress":         dbus.MakeVariant(j.Progress),
		"BytesDone":        dbus.MakeVariant(j.BytesDone),
		"BytesTotal":       dbus.MakeVariant(j.BytesTotal),
		"FilesDone":        dbus.MakeVariant(j.FilesDone),
		"FilesTotal":       dbus.MakeVariant(j.FilesTotal),
		"SecondsRemaining": dbus.MakeVariant(j.SecondsRemaining),
		"CurrentFiles":     dbus.MakeVariant(nonNil(j.CurrentFiles)),
		"WaitingSince":     dbus.MakeVariant(Micros(j.WaitingSince)),
		"Waiting":          dbus.MakeVariant(j.Waiting),
		"Stalled":          dbus.MakeVariant(j.Stalled),
		"StalledSince":     dbus.MakeVariant(Micros(j.StalledSince)),
		"StallTimeout":     dbus.MakeVariant(j.StallTimeout),
		"QueuedAt":         dbus.MakeVariant(Micros(j.QueuedAt)),
		"StartedAt":        dbus.MakeVariant(Micros(j.StartedAt)),
		"FinishedAt":       dbus.MakeVariant(Micros(j.FinishedAt)),
		"Error":            dbus.MakeVariant(j.Error),
		"ArchiveId":        dbus.MakeVariant(j.ArchiveID),
		"Summary":          dbus.MakeVariant(variants(j.Summary)),
		"SendTarget":       dbus.MakeVariant(j.SendTarget),
	}
}

// Apply sets the properties props names (all of them from GetAll or
// GetManagedObjects, the changed ones from PropertiesChanged); a property
// of another type than the contract's reads as its zero value.
func (j *Job) Apply(props map[string]dbus.Variant) {
	for k, v := range props {
		switch k {
		case "Id":
			j.ID, _ = v.Value().(uint32)
		case "Kind":
			j.Kind = Kind(str(v))
		case "Plan":
			j.Plan = str(v)
		case "State":
			j.State = State(str(v))
		case "Result":
			j.Result = Result(str(v))
		case "Trigger":
			j.Trigger = str(v)
		case "Callers":
			j.Callers, _ = v.Value().([]uint32)
		case "Triggers":
			j.Triggers, _ = v.Value().([]string)
		case "Progress":
			j.Progress, _ = v.Value().(float64)
		case "BytesDone":
			j.BytesDone = u64(v)
		case "BytesTotal":
			j.BytesTotal = u64(v)
		case "FilesDone":
			j.FilesDone = u64(v)
		case "FilesTotal":
			j.FilesTotal = u64(v)
		case "SecondsRemaining":
			j.SecondsRemaining = u64(v)
		case "CurrentFiles":
			j.CurrentFiles, _ = v.Value().([]string)
		case "WaitingSince":
			j.WaitingSince = FromMicros(u64(v))
		case "Waiting":
			j.Waiting = str(v)
		case "Stalled":
			j.Stalled, _ = v.Value().(bool)
		case "StalledSince":
			j.StalledSince = FromMicros(u64(v))
		case "StallTimeout":
			j.StallTimeout = u64(v)
		case "QueuedAt":
			j.QueuedAt = FromMicros(u64(v))
		case "StartedAt":
			j.StartedAt = FromMicros(u64(v))
		case "FinishedAt":
			j.FinishedAt = FromMicros(u64(v))
		case "Error":
			j.Error = str(v)
		case "ArchiveId":
			j.ArchiveID = str(v)
		case "SendTarget":
			j.SendTarget = str(v)
		case "Summary":
			m, _ := v.Value().(map[string]dbus.Variant)
			j.Summary = make(map[string]any, len(m))
			for sk, sv := range m {
				j.Summary[sk] = sv.Value()
			}
		}
	}
}

// JobOf is the job that props describe.
func JobOf(props map[string]dbus.Variant) Job {
	var j Job
	j.Apply(props)
	return j
}

// Micros is t as the bus carries times: µs since the epoch, 0 for the zero
// time (and any time before the epoch).
func Micros(t time.Time) uint64 {
	if t.IsZero() || t.UnixMicro() < 0 {
		return 0
	}
	return uint64(t.UnixMicro())
}

// FromMicros is the time us µs after the epoch; 0 is the zero time.
func FromMicros(us uint64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(int64(us))
}

func variants(m map[string]any) map[string]dbus.Variant {
	out := make(map[string]dbus.Variant, len(m))
	for k, v := range m {
		if v != nil {
			out[k] = dbus.MakeVariant(v)
		}
	}
	return out
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func str(v dbus.Variant) string {
	s, _ := v.Value().(string)
	return s
}

func u64(v dbus.Variant) uint64 {
	n, _ := v.Value().(uint64)
	return n
}

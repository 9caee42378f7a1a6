package queue

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"time"

	"github.com/subvault/subvault/api/contract"
)

// Kind, State and Result are the contract's types (api/contract, the
// wire's leaf package): the queue, the state file and the bus spell each
// value once, and a job's fields go onto the bus without a conversion.
// They are strings underneath, so jobs.json keeps its bytes.

// Kind is a kind of job, as the D-Bus API and the state file name it.
type Kind = contract.Kind

// Kinds of job.
const (
	KindBackup  = contract.KindBackup
	KindPrune   = contract.KindPrune
	KindCheck   = contract.KindCheck
	KindRestore = contract.KindRestore
	KindCopy    = contract.KindCopy
	KindSend    = contract.KindSend
)

// exclusive kinds never run beside another job on their repository.
func exclusive(k Kind) bool { return k == KindPrune || k == KindCheck }

// State is where a job is: queued, then running, then finished.
type State = contract.State

// Job states.
const (
	StateQueued   = contract.StateQueued
	StateRunning  = contract.StateRunning
	StateFinished = contract.StateFinished
)

// Result is how a finished job ended. A partial backup (the archive
// exists, some files could not be read) ends failed, with its ArchiveID
// set and an Error that starts with "partial".
type Result = contract.Result

// Job results.
const (
	ResultDone      = contract.ResultDone
	ResultFailed    = contract.ResultFailed
	ResultCanceled  = contract.ResultCanceled
	ResultPostponed = contract.ResultPostponed
	ResultStalled   = contract.ResultStalled
	ResultSkipped   = contract.ResultSkipped
)

// Trigger is what asked for a job. A D-Bus caller is "dbus:<uid>"
// (contract.CallerTrigger). It stays the queue's own type: on the bus a
// job's Trigger is a plain string.
type Trigger string

// Triggers other than a D-Bus caller; the schedule's are the contract's.
const (
	TriggerSchedule Trigger = contract.TriggerSchedule
	TriggerCatchUp  Trigger = contract.TriggerCatchUp
	TriggerManual   Trigger = "manual"
	// TriggerDevice: a send the daemon started because its target's disk
	// appeared (the device watch, or the udev rule's TargetAppeared).
	TriggerDevice Trigger = "device"
	// TriggerForeground: a job that `subvault run` ran in its own process,
	// recorded in the history afterwards; the daemon did not run it.
	TriggerForeground Trigger = "foreground"
)

// InterruptedError is the error of a job that was queued or running when
// the daemon stopped or died.
const InterruptedError = "interrupted: daemon stopped"

// Job is one unit of work in the queue. The queue owns the live jobs; what
// it hands out (events, Jobs, Job) are copies.
type Job struct {
	ID      uint32  `json:"id"`
	Kind    Kind    `json:"kind"`
	Plan    string  `json:"plan"`
	State   State   `json:"state"`
	Result  Result  `json:"result,omitempty"`
	Trigger Trigger `json:"trigger"`
	// Caller is the uid that started the job over D-Bus, or -1.
	Caller int64 `json:"caller"`
	// Requests is everyone who asked for the job, in order: first whoever
	// queued it (Trigger, Caller), then each caller or schedule that asked
	// for a backup, prune or check of the plan while this one was queued
	// or running, and was given it. Who may cancel the job follows from
	// it. A trigger asking again is not recorded again, and at most
	// MaxRequests are. Empty in a state file written before it existed:
	// the job's own Trigger and Caller were then all.
	Requests []Request `json:"requests,omitempty"`

	Progress         float64  `json:"progress,omitempty"`
	BytesDone        uint64   `json:"bytes_done,omitempty"`
	BytesTotal       uint64   `json:"bytes_total,omitempty"`
	FilesDone        uint64   `json:"files_done,omitempty"`
	FilesTotal       uint64   `json:"files_total,omitempty"`
	SecondsRemaining uint64   `json:"seconds_remaining,omitempty"`
	CurrentFiles     []string `json:"-"`
	// WaitingSince and Waiting are Progress's: set while the running job
	// waits on its repository (no progress from restic for a while).
	// Not kept in the state file: a job that was running is over at the
	// next start.
	WaitingSince time.Time `json:"-"`
	Waiting      string    `json:"-"`
	// StalledSince is set while the running job counts as stalled: its
	// restic made no progress for the plan's stall_timeout, and the plan
	// says to report a stall rather than end the job (on_stall: report).
	// It is when the job last made progress. Not kept in the state file.
	StalledSince time.Time `json:"-"`
	// StallTimeout is the plan's stall_timeout the running job is judged
	// by, as its executor said (Progress); 0 when unknown or none.
	StallTimeout time.Duration `json:"-"`

	QueuedAt   time.Time `json:"queued_at"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`

	Error     string         `json:"error,omitempty"`
	ArchiveID string         `json:"archive_id,omitempty"`
	Summary   map[string]any `json:"summary,omitempty"`

	// A restore's arguments; zero for the other kinds. Embedded, so that
	// the state file has them among the job's own fields.
	RestoreArgs
	// A copy's arguments; zero for the other kinds.
	CopyArgs
	// A send's arguments; zero for the other kinds.
	SendArgs
	// RestoreMade is the running restore's record of what it has made
	// that it removes itself (staging directories, a new subvolume), kept
	// so that a start after a crash can remove it (restore.Made, as JSON).
	// The queue only keeps it: it neither reads nor checks it.
	RestoreMade json.RawMessage `json:"restore_made,omitempty"`

	cancel   context.CancelFunc
	canceled bool
}

// RestoreArgs are a restore job's arguments: which archive of the plan, into
// which target, which paths of it, how.
type RestoreArgs struct {
	Archive string   `json:"archive,omitempty"`
	Target  string   `json:"target,omitempty"`
	Include []string `json:"include,omitempty"`
	// RestoreMode is restore.IntoDirectory (or ""), restore.IntoSubvolume
	// or restore.InPlace.
	RestoreMode string `json:"restore_mode,omitempty"`
	Verify      bool   `json:"verify,omitempty"`
}

// CopyArgs are a copy job's arguments: which archives of the plan (full
// ids, in the plan's repository) to copy to the repositories the plan's
// copy_to names when the job runs; none: the plan's latest archive of this
// host.
type CopyArgs struct {
	CopyArchives []string `json:"copy_archives,omitempty"`
}

// SendArgs are a send job's arguments: the target (a key of the
// configuration's targets, one of the plan's send_to) it sends to.
type SendArgs struct {
	SendTarget string `json:"send_target,omitempty"`
}

// MaxCopyArchives bounds the archives one queued copy job gathers.
const MaxCopyArchives = 64

// Request is one asking for a job.
type Request struct {
	Trigger Trigger `json:"trigger"`
	// Caller is the D-Bus caller's uid, or -1 (the schedule, ...).
	Caller int64     `json:"caller"`
	At     time.Time `json:"at,omitzero"`
}

// MaxRequests bounds a job's Requests. Only whether anyone but one caller
// asked decides anything, so the ones past it need no record.
const MaxRequests = 32

// requests is j.Requests, or, for a job recorded before they were, its
// own trigger.
func (j *Job) requests() []Request {
	if len(j.Requests) > 0 {
		return j.Requests
	}
	return []Request{{Trigger: j.Trigger, Caller: j.Caller, At: j.QueuedAt}}
}

// addRequest records r unless its trigger has asked already, and reports
// whether it did.
func (j *Job) addRequest(r Request) bool {
	requests := j.requests()
	for _, old := range requests {
		if old.Trigger == r.Trigger {
			return false
		}
	}
	if len(requests) >= MaxRequests {
		return false
	}
	j.Requests = append(append([]Request(nil), requests...), r)
	return true
}

// addCopyArchives adds the archives a copy job does not have yet (at most
// MaxCopyArchives in all), and reports whether it added any.
func (j *Job) addCopyArchives(ids []string) bool {
	added := false
	for _, id := range ids {
		if !slices.Contains(j.CopyArchives, id) && len(j.CopyArchives) < MaxCopyArchives {
			j.CopyArchives = append(j.CopyArchives, id)
			added = true
		}
	}
	return added
}

// Callers are the uids of the D-Bus callers that asked for the job, in
// the order they asked.
func (j *Job) Callers() []uint32 {
	out := []uint32{}
	for _, r := range j.requests() {
		if r.Caller >= 0 && r.Caller <= math.MaxUint32 {
			out = append(out, uint32(r.Caller))
		}
	}
	return out
}

// Triggers are the triggers of everyone who asked for the job, in the
// order they asked: the first is Trigger.
func (j *Job) Triggers() []Trigger {
	out := []Trigger{}
	for _, r := range j.requests() {
		out = append(out, r.Trigger)
	}
	return out
}

// ScheduledOnly reports whether only the schedule asked for the job (its
// firings, a catch-up, the daemon's retries of a postponed run): nobody is
// there to see it, so it may be postponed. A job a caller asked for too
// is the caller's, and runs.
func (j *Job) ScheduledOnly() bool {
	for _, r := range j.requests() {
		if r.Trigger != TriggerSchedule && r.Trigger != TriggerCatchUp {
			return false
		}
	}
	return true
}

// AskedOnlyBy reports whether the D-Bus caller uid is the only one that
// asked for the job: no other caller, and not the schedule.
func (j *Job) AskedOnlyBy(uid uint32) bool {
	for _, r := range j.requests() {
		if r.Caller != int64(uid) {
			return false
		}
	}
	return true
}

func (j *Job) copy() Job {
	c := *j
	c.Requests = append([]Request(nil), j.Requests...)
	c.CurrentFiles = append([]string(nil), j.CurrentFiles...)
	c.Include = append([]string(nil), j.Include...)
	c.CopyArchives = append([]string(nil), j.CopyArchives...)
	c.RestoreMade = slices.Clone(j.RestoreMade)
	c.cancel = nil
	return c
}

// Active reports whether the job is queued or running.
func (j *Job) Active() bool { return j.State != StateFinished }

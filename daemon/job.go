package daemon

import (
	"context"
	"time"

	"github.com/subvault/subvault/daemon/restore"
)

// Kinds of job, as the D-Bus API names them.
const (
	KindBackup  = "backup"
	KindPrune   = "prune"
	KindCheck   = "check"
	KindRestore = "restore"
)

// Job states.
const (
	StateQueued   = "queued"
	StateRunning  = "running"
	StateFinished = "finished"
)

// Job results, once finished. A partial backup (the archive exists, some
// files could not be read) ends failed, with its ArchiveID set and an Error
// that starts with "partial".
const (
	ResultDone     = "done"
	ResultFailed   = "failed"
	ResultCanceled = "canceled"
)

// Triggers: what started a job. A D-Bus caller is "dbus:<uid>".
const (
	TriggerSchedule = "schedule"
	TriggerCatchUp  = "catch-up"
	TriggerManual   = "manual"
)

// InterruptedError is the error of a job that was queued or running when
// the daemon stopped or died.
const InterruptedError = "interrupted: daemon stopped"

// Job is one unit of work in the queue. The queue owns the live jobs; what
// it hands out (events, Jobs, Job) are copies.
type Job struct {
	ID      uint32 `json:"id"`
	Kind    string `json:"kind"`
	Plan    string `json:"plan"`
	State   string `json:"state"`
	Result  string `json:"result,omitempty"`
	Trigger string `json:"trigger"`
	// Caller is the uid that started the job over D-Bus, or -1.
	Caller int64 `json:"caller"`

	Progress         float64  `json:"progress,omitempty"`
	BytesDone        uint64   `json:"bytes_done,omitempty"`
	BytesTotal       uint64   `json:"bytes_total,omitempty"`
	FilesDone        uint64   `json:"files_done,omitempty"`
	FilesTotal       uint64   `json:"files_total,omitempty"`
	SecondsRemaining uint64   `json:"seconds_remaining,omitempty"`
	CurrentFiles     []string `json:"-"`

	QueuedAt   time.Time `json:"queued_at"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`

	Error     string         `json:"error,omitempty"`
	ArchiveID string         `json:"archive_id,omitempty"`
	Summary   map[string]any `json:"summary,omitempty"`

	// Restore's arguments. RestoreMode is restore.IntoDirectory (or ""),
	// restore.IntoSubvolume or restore.InPlace.
	Archive     string   `json:"archive,omitempty"`
	Target      string   `json:"target,omitempty"`
	Include     []string `json:"include,omitempty"`
	RestoreMode string   `json:"restore_mode,omitempty"`
	Verify      bool     `json:"verify,omitempty"`
	// RestoreMade is what the running restore has made that it removes
	// itself (staging directories, a new subvolume), kept so that a start
	// after a crash can remove it.
	RestoreMade restore.Made `json:"restore_made,omitzero"`

	cancel   context.CancelFunc
	canceled bool
}

func (j *Job) copy() Job {
	c := *j
	c.CurrentFiles = append([]string(nil), j.CurrentFiles...)
	c.Include = append([]string(nil), j.Include...)
	c.RestoreMade = j.RestoreMade.Clone()
	c.cancel = nil
	return c
}

// Active reports whether the job is queued or running.
func (j *Job) Active() bool { return j.State != StateFinished }

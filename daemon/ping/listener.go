package ping

import (
	"crypto/rand"
	"fmt"
	"strings"
	"sync"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/queue"
)

// Listener tells the notify entries of the daemon's jobs: it is a
// queue.Listener. A job is told of from the moment it runs: its start;
// each time it comes to count as stalled (on_stall: report); its end
// (done, failed, partial, stalled, canceled; postponed to the entries
// that heard its start). A job that never ran (canceled while queued) is
// not, and neither is one that `subvault run backup` ran and the daemon
// only recorded (Trigger foreground): that run sent its own.
type Listener struct {
	sender *Sender
	host   string

	mu      sync.Mutex
	cfg     *config.Config
	running map[uint32]*run // the jobs told of, by id
}

// run is what the Listener keeps of a job it told of the start of.
type run struct {
	id      string // the run id, for healthchecks' rid
	stalled bool
}

// NewListener returns a Listener that sends through sender, with cfg's
// entries; host names this machine in the reports.
func NewListener(sender *Sender, cfg *config.Config, host string) *Listener {
	return &Listener{sender: sender, host: host, cfg: cfg, running: map[uint32]*run{}}
}

// Configure puts cfg's entries in force (a reload): the next event of
// every job goes to them.
func (l *Listener) Configure(cfg *config.Config) {
	l.mu.Lock()
	l.cfg = cfg
	l.mu.Unlock()
	var all []config.Notify
	for _, name := range cfg.PlanNames() {
		all = append(all, cfg.Plans[name].Notify...)
	}
	l.sender.Forget(append(all, cfg.Settings.Notify...))
}

// JobQueued: nothing runs yet.
func (l *Listener) JobQueued(queue.Job) {}

// JobChanged tells of a job that started running, and of one that came
// to count as stalled.
func (l *Listener) JobChanged(j queue.Job) {
	if j.State != queue.StateRunning || j.Trigger == queue.TriggerForeground {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.running[j.ID]
	if r == nil {
		r = &run{id: NewRunID()}
		l.running[j.ID] = r
		l.send(j, EventStart, r)
	}
	stalled := !j.StalledSince.IsZero()
	if stalled && !r.stalled {
		l.send(j, EventStalled, r)
	}
	r.stalled = stalled
}

// JobFinished tells of the end of a job it told of the start of.
func (l *Listener) JobFinished(j queue.Job) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.running[j.ID]
	if r == nil {
		return
	}
	delete(l.running, j.ID)
	event := EventFailure
	switch j.Result {
	case queue.ResultDone:
		event = EventSuccess
	case queue.ResultPostponed, queue.ResultSkipped:
		// A skipped send (its target disk absent) neither failed nor
		// succeeded: it ends like a postponed run, where its start went.
		event = EventPostponed
	}
	l.send(j, event, r)
}

// JobForgotten: nothing to tell.
func (l *Listener) JobForgotten(queue.Job) {}

// send queues the report of j (l.mu held; Send never blocks).
func (l *Listener) send(j queue.Job, event Event, r *run) {
	report := Report{
		Event: event, Plan: j.Plan, Job: j.ID, Kind: string(j.Kind), Trigger: string(j.Trigger),
		Error: j.Error, ArchiveID: j.ArchiveID, StartedAt: j.StartedAt, Host: l.host, RunID: r.id,
	}
	switch event {
	case EventStalled:
		report.StalledSince = j.StalledSince
	case EventStart:
	default:
		report.Result, report.FinishedAt = string(j.Result), j.FinishedAt
		if j.Result == queue.ResultFailed && j.ArchiveID != "" && strings.HasPrefix(j.Error, "partial") {
			report.Result = ResultPartial
		}
	}
	l.sender.Send(l.cfg.NotifyFor(j.Plan), report)
}

// NewRunID is a random UUID (version 4) in the form healthchecks takes
// as a run id: lower case, with hyphens.
func NewRunID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24 and later)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Package queue holds subvault's jobs: the queued ones in order, the
// running ones and the history of finished ones, behind one lock. It starts
// queued jobs as the rules allow (at most max_concurrent_jobs, never a
// prune or check beside another job on its repository), hands each to an
// Executor, tells its Listeners of every change, and keeps itself in the
// state file (jobs.json) across restarts.
//
// It knows what a job is, never how one runs: the executor (the daemon's)
// runs backups, restores, prunes and checks, so the queue's tests run
// without btrfs or restic. docs/architecture.md ("The queue") has the
// rules.
package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/subvault/subvault/daemon/journal"
)

// Listener is told of every change of the queue, in order. Its methods are
// called with the queue's lock held, so they must be quick and must not
// call back into the Queue; they get copies.
type Listener interface {
	// JobQueued: a new job, queued.
	JobQueued(Job)
	// JobChanged: a queued or running job changed (state, progress).
	JobChanged(Job)
	// JobFinished: the job ended; Result is set.
	JobFinished(Job)
	// JobForgotten: the job fell out of the history.
	JobForgotten(Job)
}

// Progress is what an executor reports while a job runs.
type Progress struct {
	Fraction         float64
	BytesDone        uint64
	BytesTotal       uint64
	FilesDone        uint64
	FilesTotal       uint64
	SecondsRemaining uint64
	CurrentFiles     []string
	// WaitingSince, when set, is when the job's restic last made
	// progress: it has made none for a while (the executor decides how
	// long), so the job counts as waiting on its repository and gives
	// up its place among MaxConcurrent to jobs on other repositories.
	// Waiting says why, in a few words ("restic retries the
	// repository"). Both zero: it moves.
	WaitingSince time.Time
	Waiting      string
	// StalledSince, when set, is when the job's restic last made
	// progress: it has made none for the plan's stall_timeout, and the
	// plan lets the job go on (on_stall: report), so it counts as
	// stalled until it moves again (zero). StallTimeout is that bound.
	StalledSince time.Time
	StallTimeout time.Duration
}

// Outcome is what a finished job made.
type Outcome struct {
	ArchiveID string
	Summary   map[string]any
	// Then are jobs to queue once this one has finished, whatever its
	// result (a backup's copy to copy_to); each is asked for by whoever
	// asked for this job.
	Then []Order
}

// Executor runs one job. It returns when the job is over; ctx is canceled
// to cancel the job (the executor must still clean up before it returns).
type Executor interface {
	Execute(ctx context.Context, job Job, progress func(Progress)) (Outcome, error)
}

// ErrPostponed marks an executor's error that postpones the job instead of
// failing it (Postpone): the job ends postponed, the plan's last backup
// stays the one before.
var ErrPostponed = errors.New("postponed")

// Postpone is err as an executor returns it for a job that is to end
// postponed; its message is err's.
func Postpone(err error) error { return postponedError{err} }

type postponedError struct{ err error }

func (p postponedError) Error() string   { return p.err.Error() }
func (p postponedError) Unwrap() []error { return []error{ErrPostponed, p.err} }

// ErrStalled marks the error of a job whose restic made no progress for
// the plan's stall_timeout: the job ends ResultStalled. An executor
// returns Stalled(err).
var ErrStalled = errors.New("stalled")

// Stalled is err, marked as the error of a stalled job; its message is
// err's.
func Stalled(err error) error { return stalledError{err} }

type stalledError struct{ err error }

func (e stalledError) Error() string   { return e.err.Error() }
func (e stalledError) Unwrap() []error { return []error{e.err, ErrStalled} }

// ErrSkipped marks an executor's error that ends the job skipped (Skip):
// it had nothing it could do, and that is no failure (a send whose target
// disk is absent). A skipped job does not change its plan's status: that
// is its backups'.
var ErrSkipped = errors.New("skipped")

// Skip is err as an executor returns it for a job that is to end skipped;
// its message (why) is err's.
func Skip(err error) error { return skippedError{err} }

type skippedError struct{ err error }

func (e skippedError) Error() string   { return e.err.Error() }
func (e skippedError) Unwrap() []error { return []error{ErrSkipped, e.err} }

// ErrNoSuchJob is returned by Cancel for an unknown or finished job.
var ErrNoSuchJob = errors.New("no such job")

// ErrAskedByOthers is returned by CancelAskedOnlyBy for a job that someone
// else (another caller, the schedule) asked for too.
var ErrAskedByOthers = errors.New("others asked for the job too")

// PlanStatus is what the last backup of a plan did, and when the last one
// that succeeded finished: a canceled or failed backup moves LastBackup but
// not LastSuccess, so "overdue" counts from the last archive made whole. A
// partial backup (an archive made, some files unreadable) is failed and is
// not a success: the archive lacks files a restore would be expected to
// bring back.
type PlanStatus struct {
	LastBackup  time.Time `json:"last_backup,omitzero"`
	LastResult  Result    `json:"last_result,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	LastSuccess time.Time `json:"last_success,omitzero"`
}

// backupEnded is st after backup job j finished.
func (st PlanStatus) backupEnded(j *Job) PlanStatus {
	st.LastBackup, st.LastResult, st.LastError = j.FinishedAt, j.Result, j.Error
	if j.Result == ResultDone {
		st.LastSuccess = j.FinishedAt
	}
	return st
}

// Config is what the configuration decides for the queue.
type Config struct {
	MaxConcurrent int
	History       int
	// Repository maps a plan to its repository's name, for the rule that a
	// prune or check never runs beside another job on the same repository.
	Repository func(plan string) string
	// CopyTo maps a plan to the repositories its copy jobs write to: a
	// copy is on those and on its plan's repository (nil: none).
	CopyTo func(plan string) []string
}

// Queue holds the jobs: queued ones in order, running ones, and the history
// of finished ones; it starts queued jobs as the rules allow and persists
// itself to the state file on every change of state.
type Queue struct {
	mu        sync.Mutex
	cfg       Config
	exec      Executor
	log       *slog.Logger
	now       func() time.Time
	nextID    func() (uint32, error)
	persist   func(snapshot) error
	listeners []Listener

	jobs map[uint32]*Job // queued and running
	// foreground are the running jobs of `subvault run` processes
	// (TrackForeground), by id, with their pids: shown, never run,
	// canceled or persisted by the queue (foreground.go).
	foreground map[uint32]*foregroundJob
	queued     []*Job // in order
	history    []*Job // finished, oldest first
	lastRun    map[string]time.Time
	plans      map[string]PlanStatus
	draining   bool
	wg         sync.WaitGroup
}

// snapshot is what the state file holds.
type snapshot struct {
	Version int                   `json:"version"`
	Jobs    []Job                 `json:"jobs"`
	LastRun map[string]time.Time  `json:"last_run"`
	Plans   map[string]PlanStatus `json:"plans"`
}

func lastRunKey(plan string, kind Kind) string { return plan + "/" + string(kind) }

// Subscribe adds a listener.
func (q *Queue) Subscribe(l Listener) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.listeners = append(q.listeners, l)
}

// Configure changes the rules (on a config reload) and starts what they now
// allow.
func (q *Queue) Configure(cfg Config) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.cfg = cfg
	q.trimHistoryLocked()
	q.dispatchLocked()
}

// Order is what Enqueue is asked for: a job of Kind for Plan, asked for by
// Trigger and Caller (-1 unless a D-Bus caller), with a restore's
// arguments.
type Order struct {
	Kind    Kind
	Plan    string
	Trigger Trigger
	Caller  int64
	Restore RestoreArgs
	Copy    CopyArgs
	Send    SendArgs
}

// Enqueue queues the job o orders. A backup, prune or check of a plan that
// already has one of the same kind queued or running returns that job
// instead (created is false), with o's trigger added to its Requests. A
// copy of a plan that has one queued (not running: that one has chosen its
// archives) is that job, with o's archives added; so a plan has at most
// one copy queued and one running. A send to a target asked for while
// one of the plan to that target is queued is that job; while one runs
// (it has chosen its snapshots), one more is queued.
func (q *Queue) Enqueue(o Order) (job Job, created bool, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.enqueueLocked(o, nil)
}

// enqueueLocked is Enqueue; requests, when set, are the new job's askers
// (a follow-up job is asked for by whoever asked for the job before it).
func (q *Queue) enqueueLocked(o Order, requests []Request) (job Job, created bool, err error) {
	if q.draining {
		return Job{}, false, errors.New("the daemon is stopping; no new job is accepted")
	}
	if o.Kind == KindCopy {
		for _, j := range q.queued {
			if j.Plan == o.Plan && j.Kind == KindCopy {
				added := j.addCopyArchives(o.Copy.CopyArchives)
				asked := j.addRequest(Request{Trigger: o.Trigger, Caller: o.Caller, At: q.now()})
				if added || asked {
					q.log.Info("job asked for again", "job", j.ID, "kind", o.Kind, "plan", o.Plan, "trigger", o.Trigger, "state", j.State,
						"archives", j.CopyArchives)
					for _, l := range q.listeners {
						l.JobChanged(j.copy())
					}
					q.persistLocked()
				}
				return j.copy(), false, nil
			}
		}
	}
	if o.Kind == KindSend {
		for _, j := range q.queued {
			if j.Plan == o.Plan && j.Kind == KindSend && j.SendTarget == o.Send.SendTarget {
				return q.askedAgainLocked(j, o), false, nil
			}
		}
	}
	if o.Kind != KindRestore && o.Kind != KindCopy && o.Kind != KindSend {
		for _, j := range q.jobs {
			if j.Plan == o.Plan && j.Kind == o.Kind {
				if j.addRequest(Request{Trigger: o.Trigger, Caller: o.Caller, At: q.now()}) {
					q.log.Info("job asked for again", "job", j.ID, "kind", o.Kind, "plan", o.Plan, "trigger", o.Trigger, "state", j.State)
					for _, l := range q.listeners {
						l.JobChanged(j.copy())
					}
					q.persistLocked()
				}
				return j.copy(), false, nil
			}
		}
	}
	id, err := q.nextID()
	if err != nil {
		return Job{}, false, err
	}
	now := q.now()
	j := &Job{
		ID: id, Kind: o.Kind, Plan: o.Plan, State: StateQueued, Trigger: o.Trigger, Caller: o.Caller,
		Requests: []Request{{Trigger: o.Trigger, Caller: o.Caller, At: now}},
		QueuedAt: now, RestoreArgs: o.Restore, SendArgs: o.Send,
	}
	if len(requests) > 0 {
		j.Requests = append([]Request(nil), requests...)
		j.Trigger, j.Caller = requests[0].Trigger, requests[0].Caller
	}
	j.Include = append([]string(nil), o.Restore.Include...)
	j.addCopyArchives(o.Copy.CopyArchives)
	q.jobs[id] = j
	q.queued = append(q.queued, j)
	q.log.Info("job queued", append([]any{journal.Event(journal.EventJobQueued), "job", id, "kind", o.Kind, "plan", o.Plan, "trigger", j.Trigger}, jobAttrs(j)...)...)
	for _, l := range q.listeners {
		l.JobQueued(j.copy())
	}
	q.persistLocked()
	q.dispatchLocked()
	return j.copy(), true, nil
}

// askedAgainLocked records o's trigger among those who asked for j, and
// returns j.
func (q *Queue) askedAgainLocked(j *Job, o Order) Job {
	if j.addRequest(Request{Trigger: o.Trigger, Caller: o.Caller, At: q.now()}) {
		q.log.Info("job asked for again", append([]any{"job", j.ID, "kind", o.Kind, "plan", o.Plan, "trigger", o.Trigger, "state", j.State}, jobAttrs(j)...)...)
		for _, l := range q.listeners {
			l.JobChanged(j.copy())
		}
		q.persistLocked()
	}
	return j.copy()
}

// Cancel cancels a queued job (it ends canceled without running) or a
// running one (its executor is told; it ends canceled once cleaned up).
func (q *Queue) Cancel(id uint32) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	j, ok := q.jobs[id]
	if !ok {
		return q.notCancelableLocked(id)
	}
	q.cancelLocked(j)
	return nil
}

// CancelAskedOnlyBy cancels job id as Cancel does, if the D-Bus caller uid
// alone asked for it; otherwise it returns ErrAskedByOthers. The check and
// the cancel are one step, so that nobody's request can come between a
// caller's authorization for its own job and the cancel.
func (q *Queue) CancelAskedOnlyBy(id, uid uint32) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	j, ok := q.jobs[id]
	if !ok {
		return q.notCancelableLocked(id)
	}
	if !j.AskedOnlyBy(uid) {
		var asked []string
		for _, t := range j.Triggers() {
			asked = append(asked, string(t))
		}
		return fmt.Errorf("%w: job %d was asked for by %s", ErrAskedByOthers, id, strings.Join(asked, ", "))
	}
	q.cancelLocked(j)
	return nil
}

func (q *Queue) cancelLocked(j *Job) {
	j.canceled = true
	if j.State == StateQueued {
		q.removeQueuedLocked(j)
		q.finishLocked(j, Outcome{}, errors.New("canceled before it started"))
		q.dispatchLocked()
		return
	}
	j.cancel()
}

// Job returns a copy of job id, queued, running or in the history.
func (q *Queue) Job(id uint32) (Job, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if j, ok := q.jobs[id]; ok {
		return j.copy(), true
	}
	if f, ok := q.foreground[id]; ok {
		return f.job.copy(), true
	}
	for _, j := range q.history {
		if j.ID == id {
			return j.copy(), true
		}
	}
	return Job{}, false
}

// Active returns copies of the queued and running jobs, by id: what the
// STATUS line and a check of running jobs need, without copying the history.
func (q *Queue) Active() []Job {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.activeLocked()
}

func (q *Queue) activeLocked() []Job {
	out := make([]Job, 0, len(q.jobs)+len(q.foreground))
	for _, j := range q.jobs {
		out = append(out, j.copy())
	}
	for _, f := range q.foreground {
		out = append(out, f.job.copy())
	}
	slices.SortFunc(out, func(a, b Job) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Jobs returns copies of all jobs: queued and running first (by id), then
// the history, newest first.
func (q *Queue) Jobs() []Job {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.activeLocked()
	for i := len(q.history) - 1; i >= 0; i-- {
		out = append(out, q.history[i].copy())
	}
	return out
}

// LastRun is when a job of kind for plan last started (zero if never).
func (q *Queue) LastRun(plan string, kind Kind) time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.lastRun[lastRunKey(plan, kind)]
}

// PlanStatus is what the plan's last backup did.
func (q *Queue) PlanStatus(plan string) PlanStatus {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.plans[plan]
}

// Drain stops accepting jobs, cancels the queued ones, cancels the running
// ones and waits for them to finish (their executors clean up).
func (q *Queue) Drain() {
	q.mu.Lock()
	q.draining = true
	for _, j := range append([]*Job(nil), q.queued...) {
		j.canceled = true
		q.removeQueuedLocked(j)
		q.finishLocked(j, Outcome{}, errors.New(InterruptedError))
	}
	for _, j := range q.jobs {
		j.canceled = true
		j.cancel()
	}
	q.mu.Unlock()
	q.wg.Wait()
}

// Running reports the number of running jobs.
func (q *Queue) Running() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.jobs) - len(q.queued)
}

// dispatchLocked starts the queued jobs the rules allow, in order: at most
// MaxConcurrent at once, a prune or check never beside another job on
// its repository (a copy is on two), and one copy of a plan at a time. A
// job held back by its repository holds back the later jobs on that
// repository too, so a prune is not starved by backups.
//
// A running job that waits on its repository (WaitingSince: its restic
// made no progress for a while, a hung or unreachable server) counts
// only against jobs that share a repository with it: a job on another
// repository may take its place, so a healthy plan never waits behind a
// stuck one until its stall_timeout. When it moves again it counts
// again, and more than MaxConcurrent jobs may run until one ends.
func (q *Queue) dispatchLocked() {
	if q.draining {
		return
	}
	limit := max(1, q.cfg.MaxConcurrent)
	var waiting []*Job
	running := 0
	for _, r := range q.jobs {
		switch {
		case r.State != StateRunning:
		case r.WaitingSince.IsZero():
			running++
		default:
			waiting = append(waiting, r)
		}
	}
	held := map[string]bool{}
	for _, j := range append([]*Job(nil), q.queued...) {
		if running >= limit {
			return
		}
		repos := q.repositories(j)
		if running+q.sharingLocked(waiting, repos) >= limit {
			continue // the jobs waiting on its repository keep their places
		}
		if j.Kind == KindCopy && q.copyRunningLocked(j.Plan) {
			continue // one copy of a plan at a time: the next gathers what comes meanwhile
		}
		if q.foregroundHoldsLocked(j) {
			continue // a `subvault run` of the plan holds its lock: wait for it (foreground.go)
		}
		if q.sendHeldLocked(j) {
			continue
		}
		if slices.ContainsFunc(repos, func(r string) bool { return held[r] }) || !q.repositoriesFreeLocked(j, repos) {
			for _, r := range repos {
				held[r] = true
			}
			continue
		}
		q.startLocked(j)
		running++
	}
}

// sharingLocked is how many of jobs work on one of repos.
func (q *Queue) sharingLocked(jobs []*Job, repos []string) int {
	n := 0
	for _, r := range jobs {
		if slices.ContainsFunc(q.repositories(r), func(repo string) bool { return slices.Contains(repos, repo) }) {
			n++
		}
	}
	return n
}

func (q *Queue) copyRunningLocked(plan string) bool {
	for _, r := range q.jobs {
		if r.State == StateRunning && r.Kind == KindCopy && r.Plan == plan {
			return true
		}
	}
	return false
}

// sendHeldLocked reports whether j must wait for a send: a send runs
// neither beside another send to its target (one stream per disk) nor
// beside a job of its plan that takes the plan's lock (a backup, prune,
// check or restore: it takes that lock too, so that keep_snapshots cannot
// delete the snapshot it sends; started beside it, one of them would fail
// "plan is busy"). A copy takes no plan lock.
func (q *Queue) sendHeldLocked(j *Job) bool {
	for _, r := range q.jobs {
		if r.State != StateRunning || (r.Kind != KindSend && j.Kind != KindSend) {
			continue
		}
		if j.Kind == KindSend && r.Kind == KindSend && r.SendTarget == j.SendTarget {
			return true
		}
		if r.Plan == j.Plan && r.Kind != KindCopy && j.Kind != KindCopy {
			return true
		}
	}
	return false
}

// repositories are the repositories job j works on: its plan's, and for a
// copy those it copies to; none for a send, which reads no repository.
func (q *Queue) repositories(j *Job) []string {
	if j.Kind == KindSend {
		return nil
	}
	repos := []string{q.repository(j.Plan)}
	if j.Kind == KindCopy && q.cfg.CopyTo != nil {
		repos = append(repos, q.cfg.CopyTo(j.Plan)...)
	}
	return repos
}

func (q *Queue) repository(plan string) string {
	if q.cfg.Repository == nil {
		return ""
	}
	return q.cfg.Repository(plan)
}

// repositoriesFreeLocked reports whether j, on repos, may start: no prune
// or check may run beside another job on any repository they share.
func (q *Queue) repositoriesFreeLocked(j *Job, repos []string) bool {
	for _, r := range q.jobs {
		if r.State != StateRunning || !exclusive(j.Kind) && !exclusive(r.Kind) {
			continue
		}
		if slices.ContainsFunc(q.repositories(r), func(repo string) bool { return slices.Contains(repos, repo) }) {
			return false
		}
	}
	return true
}

func (q *Queue) startLocked(j *Job) {
	q.removeQueuedLocked(j)
	ctx, cancel := context.WithCancel(context.Background())
	j.cancel = cancel
	j.State = StateRunning
	j.StartedAt = q.now()
	q.lastRun[lastRunKey(j.Plan, j.Kind)] = j.StartedAt
	q.log.Info("job started", append([]any{journal.Event(journal.EventJobStarted), "job", j.ID, "kind", j.Kind, "plan", j.Plan}, jobAttrs(j)...)...)
	for _, l := range q.listeners {
		l.JobChanged(j.copy())
	}
	q.persistLocked()
	job := j.copy()
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		defer cancel()
		outcome, err := q.exec.Execute(ctx, job, func(p Progress) { q.progress(j, p) })
		q.mu.Lock()
		defer q.mu.Unlock()
		q.finishLocked(j, outcome, err)
		q.dispatchLocked()
	}()
}

func (q *Queue) progress(j *Job, p Progress) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if j.State != StateRunning {
		return
	}
	j.Progress, j.BytesDone, j.BytesTotal = p.Fraction, p.BytesDone, p.BytesTotal
	j.FilesDone, j.FilesTotal, j.SecondsRemaining = p.FilesDone, p.FilesTotal, p.SecondsRemaining
	j.CurrentFiles = p.CurrentFiles
	wasWaiting := !j.WaitingSince.IsZero()
	j.WaitingSince, j.Waiting = p.WaitingSince, p.Waiting
	if j.WaitingSince.IsZero() {
		j.Waiting = ""
	}
	wasStalled := !j.StalledSince.IsZero()
	j.StalledSince, j.StallTimeout = p.StalledSince, p.StallTimeout
	for _, l := range q.listeners {
		l.JobChanged(j.copy())
	}
	switch stalled := !j.StalledSince.IsZero(); {
	case stalled && !wasStalled:
		q.log.Error("job stalled; it goes on (on_stall: report)",
			journal.Event(journal.EventJobStallReported), "job", j.ID, "kind", j.Kind, "plan", j.Plan, "repository", q.repository(j.Plan),
			"no_progress_for", q.now().Sub(j.StalledSince).Round(time.Second), "stall_timeout", j.StallTimeout)
	case !stalled && wasStalled:
		q.log.Info("stalled job moves again", journal.Event(journal.EventJobStallCleared), "job", j.ID, "kind", j.Kind, "plan", j.Plan,
			"repository", q.repository(j.Plan))
	}
	switch waiting := !j.WaitingSince.IsZero(); {
	case waiting && !wasWaiting:
		q.log.Warn("job waits on its repository; jobs on other repositories may start meanwhile",
			journal.Event(journal.EventJobWaiting), "job", j.ID, "kind", j.Kind, "plan", j.Plan, "repository", q.repository(j.Plan),
			"no_progress_for", q.now().Sub(j.WaitingSince).Round(time.Second), "why", j.Waiting)
		q.dispatchLocked()
	case !waiting && wasWaiting:
		q.log.Info("job moves again", journal.Event(journal.EventJobMoving), "job", j.ID, "kind", j.Kind, "plan", j.Plan,
			"repository", q.repository(j.Plan))
	}
}

func (q *Queue) removeQueuedLocked(j *Job) {
	for i, x := range q.queued {
		if x == j {
			q.queued = append(q.queued[:i], q.queued[i+1:]...)
			return
		}
	}
}

func (q *Queue) finishLocked(j *Job, outcome Outcome, err error) {
	delete(q.jobs, j.ID)
	j.State = StateFinished
	j.FinishedAt = q.now()
	j.ArchiveID, j.Summary = outcome.ArchiveID, outcome.Summary
	j.CurrentFiles = nil
	j.WaitingSince, j.Waiting = time.Time{}, ""
	j.StalledSince = time.Time{}
	event := journal.EventJobDone
	switch {
	case err == nil:
		j.Result = ResultDone
		j.Progress = 1
	case j.canceled && (!q.draining || j.StartedAt.IsZero()):
		j.Result, j.Error = ResultCanceled, oneLine(err.Error())
		event = journal.EventJobCanceled
	case errors.Is(err, ErrPostponed):
		j.Result, j.Error = ResultPostponed, oneLine(err.Error())
		event = journal.EventJobPostponed
	case errors.Is(err, ErrStalled) && !j.canceled:
		j.Result, j.Error = ResultStalled, oneLine(err.Error())
		event = journal.EventJobStalled
	case errors.Is(err, ErrSkipped) && !j.canceled:
		j.Result, j.Error = ResultSkipped, oneLine(err.Error())
		j.Progress = 1
		event = journal.EventSendSkipped
	default:
		j.Result, j.Error = ResultFailed, oneLine(err.Error())
		event = journal.EventJobFailed
		if q.draining && j.canceled {
			j.Error = InterruptedError
		}
		if j.ArchiveID != "" {
			event = journal.EventJobPartial
		}
	}
	// A postponed backup did not run: the plan's last backup stays the one
	// before, so that it neither hides a failure nor restarts a clock.
	if j.Kind == KindBackup && j.Result != ResultPostponed {
		q.plans[j.Plan] = q.plans[j.Plan].backupEnded(j)
	}
	attrs := []any{journal.Event(event), "job", j.ID, "kind", j.Kind, "plan", j.Plan, "result", j.Result}
	if j.ArchiveID != "" {
		attrs = append(attrs, "archive", j.ArchiveID)
	}
	attrs = append(attrs, jobAttrs(j)...)
	switch j.Result {
	case ResultDone:
		q.log.Info("job done", attrs...)
	case ResultCanceled:
		q.log.Warn("job canceled", append(attrs, "err", j.Error)...)
	case ResultPostponed:
		q.log.Warn("job postponed", append(attrs, "err", j.Error)...)
	case ResultSkipped:
		q.log.Info("job skipped", append(attrs, "why", j.Error)...)
	case ResultStalled:
		q.log.Error("job stalled", append(attrs, "err", j.Error)...)
	default:
		q.log.Error("job failed", append(attrs, "err", j.Error)...)
	}
	if j.Result == ResultPostponed {
		q.forgetPostponedLocked(j)
	}
	q.history = append(q.history, j)
	for _, l := range q.listeners {
		l.JobFinished(j.copy())
	}
	q.trimHistoryLocked()
	q.persistLocked()
	for _, o := range outcome.Then {
		if _, _, err := q.enqueueLocked(o, j.requests()); err != nil {
			q.log.Error("cannot queue the job that follows", "job", j.ID, "kind", o.Kind, "plan", o.Plan, "err", err)
		}
	}
}

// jobAttrs are the fields a restore's, a copy's or a send's journal
// entries add; none for other kinds.
func jobAttrs(j *Job) []any {
	if j.Kind == KindSend {
		return []any{"target", j.SendTarget}
	}
	if j.Kind == KindCopy {
		if len(j.CopyArchives) == 0 {
			return []any{"archives", "latest"}
		}
		return []any{"archives", j.CopyArchives}
	}
	return restoreAttrs(j)
}

// restoreAttrs are the fields a restore job's journal entries add: which
// archive (the id it resolved to, once known), where, how; none for other
// kinds.
func restoreAttrs(j *Job) []any {
	if j.Kind != KindRestore {
		return nil
	}
	mode := j.RestoreMode
	if mode == "" {
		mode = "directory" // restore.IntoDirectory, which the queue need not import
	}
	attrs := []any{"target", j.Target, "mode", mode}
	if j.ArchiveID == "" { // a restore makes no archive: the one it reads
		archive := j.Archive
		if resolved, ok := j.Summary["archive"].(string); ok && resolved != "" {
			archive = resolved
		}
		attrs = append(attrs, "archive", archive)
	}
	if len(j.Include) > 0 {
		attrs = append(attrs, "include", j.Include)
	}
	if j.Verify {
		attrs = append(attrs, "verify", true)
	}
	return attrs
}

// forgetPostponedLocked drops from the history the job of j's plan and
// kind that finished last, when it was postponed too: a laptop offline
// for a day retries many times, and the history keeps one postponed job
// of each in a row, not dozens that push out the jobs that ran.
func (q *Queue) forgetPostponedLocked(j *Job) {
	for i := len(q.history) - 1; i >= 0; i-- {
		old := q.history[i]
		if old.Plan != j.Plan || old.Kind != j.Kind {
			continue
		}
		if old.Result == ResultPostponed {
			q.history = append(q.history[:i], q.history[i+1:]...)
			for _, l := range q.listeners {
				l.JobForgotten(old.copy())
			}
		}
		return
	}
}

func (q *Queue) trimHistoryLocked() {
	limit := max(1, q.cfg.History)
	for len(q.history) > limit {
		old := q.history[0]
		q.history = q.history[1:]
		for _, l := range q.listeners {
			l.JobForgotten(old.copy())
		}
	}
}

func (q *Queue) persistLocked() {
	if q.persist == nil {
		return
	}
	if err := q.persist(q.snapshotLocked()); err != nil {
		q.log.Error("cannot write the state file; job history may be lost at the next start", "err", err)
	}
}

// snapshotLocked is what the state file holds now: the history and the
// queue's own jobs (a running foreground job's record is its own).
func (q *Queue) snapshotLocked() snapshot {
	s := snapshot{Version: 1, LastRun: q.lastRun, Plans: q.plans}
	for _, j := range q.history {
		s.Jobs = append(s.Jobs, j.copy())
	}
	for _, j := range q.jobs {
		s.Jobs = append(s.Jobs, j.copy())
	}
	return s
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

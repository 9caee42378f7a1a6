package queue

import (
	"errors"
	"fmt"
	"slices"

	"github.com/subvault/subvault/daemon/journal"
)

// Jobs that `subvault run` ran in its own process (TriggerForeground): the
// daemon learns of them from their records (state.Spool) and shows them
// here as its own. The queue never runs, cancels or persists a running
// one (its process does, and its record is its persistence); a finished
// one is Imported into the history like a job the queue ran.
// docs/daemon.md ("Foreground runs") has the rules.

// ErrForeground is returned by Cancel for a running foreground job: the
// daemon did not start it and does not stop it.
var ErrForeground = errors.New("not the daemon's job")

type foregroundJob struct {
	job *Job
	pid int
}

// TrackForeground shows j, a foreground job its process runs now (pid),
// among the running jobs, until Import or ForgetForeground. A job the queue
// knows already is left as it is (false).
func (q *Queue) TrackForeground(j Job, pid int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.knownLocked(j.ID) {
		return false
	}
	j.State, j.Trigger, j.Caller = StateRunning, TriggerForeground, -1
	j.Requests = []Request{{Trigger: TriggerForeground, Caller: -1, At: j.StartedAt}}
	q.foreground[j.ID] = &foregroundJob{job: &j, pid: pid}
	// It is the plan's run: a daemon starting now does not catch up the
	// firing it came after.
	if key := lastRunKey(j.Plan, j.Kind); j.StartedAt.After(q.lastRun[key]) {
		q.lastRun[key] = j.StartedAt
	}
	q.log.Info("job started", journal.Event(journal.EventJobStarted), "job", j.ID, "kind", j.Kind, "plan", j.Plan,
		"trigger", j.Trigger, "pid", pid)
	for _, l := range q.listeners {
		l.JobQueued(j.copy())
	}
	return true
}

// ForgetForeground stops showing the running foreground job id (its record
// is gone without a result).
func (q *Queue) ForgetForeground(id uint32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	f, ok := q.foreground[id]
	if !ok {
		return
	}
	delete(q.foreground, id)
	for _, l := range q.listeners {
		l.JobForgotten(f.job.copy())
	}
	q.dispatchLocked()
}

// foregroundHoldsLocked reports whether a foreground job of plan runs: it
// holds the plan's lock, so the queue's jobs of the plan that take that
// lock (all but a copy) wait for it rather than fail on it.
func (q *Queue) foregroundHoldsLocked(j *Job) bool {
	if j.Kind == KindCopy {
		return false
	}
	for _, f := range q.foreground {
		if f.job.Plan == j.Plan {
			return true
		}
	}
	return false
}

// Import adds finished foreground jobs to the history, in the order given,
// as if the queue had run them: the plan's status (when the job ended
// after the plan's last backup known), the schedule's last run, the
// journal, the listeners, the state file. A job whose id the queue knows
// already (imported before) is skipped. It returns the state file's
// error: the records must stay until the history that holds them is
// written.
func (q *Queue) Import(jobs ...Job) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, in := range jobs {
		if _, ours := q.jobs[in.ID]; in.State != StateFinished || ours || q.historyHasLocked(in.ID) {
			continue
		}
		if f, ok := q.foreground[in.ID]; ok {
			delete(q.foreground, in.ID)
			in.QueuedAt = f.job.QueuedAt
		}
		j := in.copy()
		j.Trigger, j.Caller = TriggerForeground, -1
		j.Requests = []Request{{Trigger: TriggerForeground, Caller: -1, At: j.StartedAt}}
		j.Error = oneLine(j.Error)
		if j.Result == ResultDone {
			j.Progress = 1
		}
		if j.Kind == KindBackup {
			st := q.plans[j.Plan]
			switch {
			case j.FinishedAt.After(st.LastBackup):
				st = st.backupEnded(&j)
			case j.Result == ResultDone && j.FinishedAt.After(st.LastSuccess):
				st.LastSuccess = j.FinishedAt // an older success than the last backup, newer than the last success
			}
			q.plans[j.Plan] = st
		}
		if key := lastRunKey(j.Plan, j.Kind); j.StartedAt.After(q.lastRun[key]) {
			q.lastRun[key] = j.StartedAt
		}
		q.logImportedLocked(&j)
		q.history = append(q.history, &j)
		for _, l := range q.listeners {
			l.JobFinished(j.copy())
		}
	}
	q.trimHistoryLocked()
	var err error
	if q.persist != nil {
		err = q.persist(q.snapshotLocked())
	}
	q.dispatchLocked() // a job of the plan may have waited for it
	return err
}

func (q *Queue) logImportedLocked(j *Job) {
	event := journal.EventJobFailed
	switch {
	case j.Result == ResultDone:
		event = journal.EventJobDone
	case j.Result == ResultCanceled:
		event = journal.EventJobCanceled
	case j.Result == ResultStalled:
		event = journal.EventJobStalled
	case j.ArchiveID != "":
		event = journal.EventJobPartial
	}
	attrs := []any{journal.Event(event), "job", j.ID, "kind", j.Kind, "plan", j.Plan, "result", j.Result, "trigger", j.Trigger}
	if j.ArchiveID != "" {
		attrs = append(attrs, "archive", j.ArchiveID)
	}
	switch j.Result {
	case ResultDone:
		q.log.Info("job done", attrs...)
	case ResultCanceled:
		q.log.Warn("job canceled", append(attrs, "err", j.Error)...)
	default:
		q.log.Error("job "+string(j.Result), append(attrs, "err", j.Error)...)
	}
}

// knownLocked reports whether a job id is queued, running (the queue's or
// a foreground one) or in the history.
func (q *Queue) knownLocked(id uint32) bool {
	_, active := q.jobs[id]
	_, fg := q.foreground[id]
	return active || fg || q.historyHasLocked(id)
}

func (q *Queue) historyHasLocked(id uint32) bool {
	return slices.ContainsFunc(q.history, func(j *Job) bool { return j.ID == id })
}

// notCancelableLocked is Cancel's error for a job id the queue does not
// run: a foreground job's process, or none.
func (q *Queue) notCancelableLocked(id uint32) error {
	if f, ok := q.foreground[id]; ok {
		return fmt.Errorf("%w: job %d is `subvault run backup %s`, running in its own process %d, which the daemon neither started nor stops; stop that process (kill -INT %d, or stop the timer's service that runs it) or wait for it",
			ErrForeground, id, f.job.Plan, f.pid, f.pid)
	}
	return fmt.Errorf("%w: job %d is not queued or running", ErrNoSuchJob, id)
}

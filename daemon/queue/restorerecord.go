package queue

import (
	"encoding/json"
	"slices"
)

// RecordRestore keeps made, what running restore job id has made (a
// restore.Made as JSON), in its record and writes the state file before it
// returns: the restore makes the thing only then (or has just made it), so
// a daemon killed at any point leaves a record of it.
func (q *Queue) RecordRestore(id uint32, made json.RawMessage) {
	q.mu.Lock()
	defer q.mu.Unlock()
	j, ok := q.jobs[id]
	if !ok || j.State != StateRunning {
		return
	}
	j.RestoreMade = slices.Clone(made)
	q.persistLocked()
}

// InterruptedRestores are the restore jobs of the history that were running
// when an earlier daemon stopped or died and whose leftovers have not been
// looked at yet: their error is still exactly InterruptedError.
func (q *Queue) InterruptedRestores() []Job {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []Job
	for _, j := range q.history {
		if j.Kind == KindRestore && j.Error == InterruptedError && !j.StartedAt.IsZero() {
			out = append(out, j.copy())
		}
	}
	return out
}

// AmendError replaces the error of finished job id and writes the state
// file.
func (q *Queue) AmendError(id uint32, msg string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, j := range q.history {
		if j.ID == id {
			j.Error = msg
			q.persistLocked()
			return
		}
	}
}

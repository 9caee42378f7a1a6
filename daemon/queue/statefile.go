package queue

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/subvault/subvault/daemon/state"
)

// StateFile is the name of the queue's state in the state directory.
const StateFile = "jobs.json"

// New makes the queue and loads its history from the state directory.
// Jobs that were queued or running when the daemon stopped or died come back
// finished: failed, "interrupted: daemon stopped". A state file that cannot
// be read is moved aside (and logged), never a reason not to start.
func New(cfg Config, exec Executor, stateDir string, log *slog.Logger, now func() time.Time) (*Queue, error) {
	if err := state.EnsureDir(stateDir); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	path := filepath.Join(stateDir, StateFile)
	q := &Queue{
		cfg: cfg, exec: exec, log: log, now: now,
		nextID:     func() (uint32, error) { return state.NextJobID(stateDir) },
		jobs:       map[uint32]*Job{},
		foreground: map[uint32]*foregroundJob{},
		lastRun:    map[string]time.Time{},
		plans:      map[string]PlanStatus{},
	}
	q.persist = func(s snapshot) error {
		data, err := json.MarshalIndent(s, "", " ")
		if err != nil {
			return err
		}
		return state.WriteFileAtomic(path, data, 0o600)
	}

	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return q, nil
	case err != nil:
		return nil, fmt.Errorf("cannot read the job history %s: %w", path, err)
	}
	var s snapshot
	if err := json.Unmarshal(data, &s); err != nil || s.Version != 1 {
		aside := path + ".broken-" + now().UTC().Format("20060102T150405Z")
		log.Error("the job history cannot be read; it is moved aside and a new one started", "path", path, "aside", aside, "err", err)
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, fmt.Errorf("cannot move the unreadable job history %s aside: %w", path, rerr)
		}
		return q, nil
	}
	slices.SortFunc(s.Jobs, func(a, b Job) int { return cmp.Compare(a.ID, b.ID) })
	if s.Plans == nil {
		s.Plans = map[string]PlanStatus{}
	}
	for i := range s.Jobs {
		j := s.Jobs[i]
		if j.State != StateFinished {
			j.State, j.Result, j.Error = StateFinished, ResultFailed, InterruptedError
			if j.FinishedAt.IsZero() {
				j.FinishedAt = now()
			}
			if j.Kind == KindBackup {
				s.Plans[j.Plan] = s.Plans[j.Plan].backupEnded(&j)
			}
			log.Warn("job interrupted: the daemon stopped while it was "+string(s.Jobs[i].State), "job", j.ID, "kind", j.Kind, "plan", j.Plan)
		}
		q.history = append(q.history, &j)
	}
	if n := len(q.history); n > 0 {
		if err := state.ReserveJobIDs(stateDir, q.history[n-1].ID); err != nil {
			return nil, err
		}
	}
	if s.LastRun != nil {
		q.lastRun = s.LastRun
	}
	q.plans = s.Plans
	knownSuccesses(q.plans, q.history)
	q.trimHistoryLocked()
	q.persistLocked()
	return q, nil
}

// knownSuccesses fills in LastSuccess where a state file written before it
// existed lacks it: a plan whose last backup was done succeeded then, and
// otherwise the history may still hold a done backup. A plan whose history
// no longer reaches its last success keeps 0 (unknown), as does one that
// never succeeded.
func knownSuccesses(plans map[string]PlanStatus, history []*Job) {
	for name, st := range plans {
		if st.LastSuccess.IsZero() && st.LastResult == ResultDone {
			st.LastSuccess = st.LastBackup
			plans[name] = st
		}
	}
	for _, j := range history {
		st, ok := plans[j.Plan]
		if ok && j.Kind == KindBackup && j.Result == ResultDone && j.FinishedAt.After(st.LastSuccess) {
			st.LastSuccess = j.FinishedAt
			plans[j.Plan] = st
		}
	}
}

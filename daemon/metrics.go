package daemon

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon/metrics"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/queue"
)

// metricsSnapshot is the daemon's state as its metrics show it
// (docs/monitoring.md): the plans as Plans shows them (their health
// decided by daemon/health, their next run by the scheduler), the last
// backup's duration and summary from the job history, the archives the
// archive cache knows, the local snapshots, the queue and the job
// counts.
func (d *Daemon) metricsSnapshot() metrics.Snapshot {
	cfg := d.Config()
	d.mu.Lock()
	s := metrics.Snapshot{Version: d.opts.Version, Started: d.started, Reloaded: d.reloaded, ReloadOK: d.reloadOK}
	d.mu.Unlock()
	s.Jobs = d.jobCounts.Counts()
	jobs := d.queue.Jobs()
	stalled := map[string]int{}
	for _, j := range jobs {
		switch j.State {
		case queue.StateQueued:
			s.Queued++
		case queue.StateRunning:
			s.Running++
			if !j.StalledSince.IsZero() {
				stalled[j.Plan]++
			}
		}
	}
	for _, p := range d.Plans() {
		mp := metrics.Plan{
			Name: p.Name, LastBackup: p.LastBackup, LastResult: metrics.ResultOf(p.LastResult, p.LastError),
			LastSuccess: p.LastSuccess, LastDuration: -1, Archives: -1, Snapshots: -1,
			NextRun: p.NextRun, Overdue: p.Health == contract.HealthOverdue, Stalled: stalled[p.Name],
		}
		// The last backup's job, if the history still holds it (newest
		// first): the one that ended when the plan's last backup did.
		if i := slices.IndexFunc(jobs, func(j queue.Job) bool {
			return j.Kind == queue.KindBackup && j.Plan == p.Name && j.State == queue.StateFinished && j.FinishedAt.Equal(p.LastBackup)
		}); i >= 0 && !p.LastBackup.IsZero() {
			j := jobs[i]
			mp.LastResult = metrics.ResultOf(j.Result, j.Error)
			if !j.StartedAt.IsZero() {
				mp.LastDuration = j.FinishedAt.Sub(j.StartedAt)
			}
			mp.Summary = backupSummary(j.Summary)
		}
		if plan := cfg.Plans[p.Name]; plan != nil {
			if r := cfg.Repositories[plan.Repository]; r != nil {
				if list, ok := d.archives.known(r.URL); ok {
					tag := planstore.Tag(p.Name)
					mp.Archives = 0
					for _, a := range list {
						if slices.Contains(a.Tags, tag) {
							mp.Archives++
						}
					}
				}
			}
			if snaps, err := planstore.Snapshots(plan); err == nil {
				mp.Snapshots = len(snaps)
			}
		}
		s.Plans = append(s.Plans, mp)
	}
	return s
}

// backupSummary reads restic's summary of a backup as the job keeps it
// (numbers as json.Number from restic, float64 from the state file); nil
// when it has none.
func backupSummary(raw map[string]any) *metrics.Summary {
	if _, ok := raw["files_new"]; !ok {
		return nil
	}
	n := func(key string) uint64 {
		switch v := raw[key].(type) {
		case json.Number:
			if u, err := v.Int64(); err == nil && u >= 0 {
				return uint64(u)
			}
			if f, err := v.Float64(); err == nil && f >= 0 {
				return uint64(f)
			}
		case float64:
			if v >= 0 {
				return uint64(v)
			}
		case uint64:
			return v
		case int64:
			if v >= 0 {
				return uint64(v)
			}
		case int:
			if v >= 0 {
				return uint64(v)
			}
		}
		return 0
	}
	return &metrics.Summary{
		FilesNew: n("files_new"), FilesChanged: n("files_changed"), FilesUnmodified: n("files_unmodified"),
		AddedBytes: n("data_added"), ProcessedBytes: n("total_bytes_processed"),
	}
}

// metricsListener asks for the metrics textfile to be written again on
// every change of the queue and of the plans.
type metricsListener struct{ s *metrics.Service }

func (l metricsListener) JobQueued(queue.Job)    { l.s.Changed() }
func (l metricsListener) JobChanged(queue.Job)   { l.s.Changed() }
func (l metricsListener) JobFinished(queue.Job)  { l.s.Changed() }
func (l metricsListener) JobForgotten(queue.Job) {}
func (l metricsListener) PlansChanged()          { l.s.Changed() }

// configureMetrics puts cfg's settings.metrics in force.
func (d *Daemon) configureMetrics() {
	m := d.Config().Settings.Metrics
	_ = d.metrics.Configure(m.Textfile, m.Listen) // logged by the service
}

// reloadedAt records a load of the configuration for the metrics.
func (d *Daemon) reloadedAt(at time.Time, ok bool) {
	d.mu.Lock()
	d.reloaded, d.reloadOK = at, ok
	d.mu.Unlock()
	d.metrics.Changed()
}

// Metrics is the metrics service (tests read what it gathers).
func (d *Daemon) Metrics() *metrics.Service { return d.metrics }

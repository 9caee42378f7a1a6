// Package metrics publishes the daemon's state as Prometheus metrics
// (docs/monitoring.md): a collector that reads a Snapshot the daemon
// hands it at each scrape, the textfile node_exporter's textfile
// collector reads (written atomically through the directory's
// descriptor), and an HTTP listener on a loopback address or a unix
// socket. It decides nothing about a plan: the daemon's snapshot says
// what daemon/health and the queue decided, and the collector only
// spells it in Prometheus' words.
package metrics

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon/queue"
)

// Snapshot is the daemon's state at one moment, as the metrics show it.
type Snapshot struct {
	Version string
	// Started is when the daemon started.
	Started time.Time
	// Reloaded is when the configuration was last loaded (at start or by
	// a reload), and ReloadOK whether that load was accepted.
	Reloaded time.Time
	ReloadOK bool
	Plans    []Plan
	// Queued and Running count the jobs in those states.
	Queued, Running int
	// Jobs counts the jobs that finished since the daemon started, by
	// kind and result (JobCounter).
	Jobs map[JobKey]uint64
}

// Plan is one plan's state.
type Plan struct {
	Name string
	// LastBackup is when the last backup ended (zero: none known), and
	// LastResult how (Results).
	LastBackup time.Time
	LastResult string
	// LastSuccess is when the last backup that ended done ended (zero:
	// none known).
	LastSuccess time.Time
	// LastDuration is how long the last backup ran, from its start to its
	// end; negative when unknown (the job is no longer in the history).
	LastDuration time.Duration
	// Summary is what restic's summary of the last backup said; nil when
	// it made none (it failed before restic ended, or the job is no
	// longer in the history).
	Summary *Summary
	// Archives is the number of the plan's archives in its repository
	// when the daemon knows it, and Snapshots the number of its local
	// snapshots; negative: unknown.
	Archives  int
	Snapshots int
	// NextRun is when the plan's next scheduled backup is due; zero when
	// it has no schedule.
	NextRun time.Time
	// Overdue is the plan's health being overdue (daemon/health).
	Overdue bool
	// Stalled counts the plan's running jobs that count as stalled now
	// (queue.Job.StalledSince).
	Stalled int
}

// Summary is what a backup did, as restic summed it up.
type Summary struct {
	FilesNew, FilesChanged, FilesUnmodified uint64
	AddedBytes, ProcessedBytes              uint64
}

// The results a backup's metrics tell apart: the queue's results, with a
// failed backup that made an archive (some files unreadable) told apart
// as partial.
const ResultPartial = "partial"

// Results are the values of the result label, in the order of
// docs/monitoring.md.
var Results = []string{
	string(queue.ResultDone), ResultPartial, string(queue.ResultFailed), string(queue.ResultStalled),
	string(queue.ResultCanceled), string(queue.ResultPostponed),
}

// JobResults are the values of the jobs' result label: a backup's, and
// skipped (a send whose target was absent).
var JobResults = append(slices.Clone(Results), string(queue.ResultSkipped))

// Kinds are the values of the kind label.
var Kinds = []string{
	string(queue.KindBackup), string(queue.KindPrune), string(queue.KindCheck), string(queue.KindRestore), string(queue.KindCopy),
	string(queue.KindSend),
}

// ResultOf is how a finished job or a plan's last backup ended, in the
// words of the result label: a failure whose error says partial is
// partial (contract.ResultFailed), as the notify reports and subvault jobs
// say. A failure that made an archive but failed after it (keep_snapshots)
// is failed: with the plan's LastError, which has no archive, the label
// stays the same once the job has left the history.
func ResultOf(result contract.Result, errText string) string {
	if result == contract.ResultFailed && strings.HasPrefix(errText, "partial") {
		return ResultPartial
	}
	return string(result)
}

// JobKey is a kind and a result.
type JobKey struct{ Kind, Result string }

// JobCounter counts the jobs that finish, by kind and result: a queue
// Listener (quick, called with the queue's lock held).
type JobCounter struct {
	mu     sync.Mutex
	counts map[JobKey]uint64
}

// NewJobCounter is a counter at zero.
func NewJobCounter() *JobCounter { return &JobCounter{counts: map[JobKey]uint64{}} }

// Counts is a copy of the counts.
func (c *JobCounter) Counts() map[JobKey]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[JobKey]uint64, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

// JobFinished counts j.
func (c *JobCounter) JobFinished(j queue.Job) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts[JobKey{string(j.Kind), ResultOf(j.Result, j.Error)}]++
}

func (*JobCounter) JobQueued(queue.Job)    {}
func (*JobCounter) JobChanged(queue.Job)   {}
func (*JobCounter) JobForgotten(queue.Job) {}

// The metrics, each with its HELP text (docs/monitoring.md is their
// reference; a test holds the two together).
var (
	descLastBackup = prometheus.NewDesc("subvault_last_backup_timestamp_seconds",
		"When the plan's last backup ended (any result but postponed), in seconds since the epoch; absent until one is known.", []string{"plan"}, nil)
	descLastSuccessFlag = prometheus.NewDesc("subvault_last_backup_success",
		"1 when the plan's last backup ended done, 0 when it ended otherwise (partial, failed, stalled, canceled); absent until one is known.", []string{"plan"}, nil)
	descLastResult = prometheus.NewDesc("subvault_last_backup_result",
		"1 for the result the plan's last backup ended with, 0 for the other results (done, partial, failed, stalled, canceled, postponed); absent until one is known.", []string{"plan", "result"}, nil)
	descLastSuccess = prometheus.NewDesc("subvault_last_success_timestamp_seconds",
		"When the plan's last backup that ended done ended, in seconds since the epoch; absent until one is known.", []string{"plan"}, nil)
	descDuration = prometheus.NewDesc("subvault_last_backup_duration_seconds",
		"How long the plan's last backup ran, from its start to its end (snapshots, hooks and restic).", []string{"plan"}, nil)
	descFiles = prometheus.NewDesc("subvault_last_backup_files",
		"Files restic found new, changed and unmodified in the plan's last backup; absent when it made no summary.", []string{"plan", "change"}, nil)
	descAdded = prometheus.NewDesc("subvault_last_backup_added_bytes",
		"Bytes the plan's last backup added to the repository (restic's data_added, before compression); absent when it made no summary.", []string{"plan"}, nil)
	descProcessed = prometheus.NewDesc("subvault_last_backup_processed_bytes",
		"Bytes restic read in the plan's last backup (total_bytes_processed); absent when it made no summary.", []string{"plan"}, nil)
	descArchives = prometheus.NewDesc("subvault_archives",
		"The plan's archives in its repository, as the daemon last listed them; absent when it has not since the last job on the repository ended (subvault never runs restic for a scrape).", []string{"plan"}, nil)
	descSnapshots = prometheus.NewDesc("subvault_snapshots",
		"The plan's local btrfs snapshots.", []string{"plan"}, nil)
	descNextRun = prometheus.NewDesc("subvault_next_run_timestamp_seconds",
		"When the plan's next scheduled backup is due, in seconds since the epoch; absent for a plan without a schedule.", []string{"plan"}, nil)
	descOverdue = prometheus.NewDesc("subvault_overdue",
		"1 when the plan is overdue: its last success is twice its schedule's interval old or older, and its last backup did not fail (its health, as subvault status shows it).", []string{"plan"}, nil)
	descStalled = prometheus.NewDesc("subvault_stalled_jobs",
		"The plan's running jobs that count as stalled now: their restic made no progress for the plan's stall_timeout, and on_stall lets them go on.", []string{"plan"}, nil)
	descJobsTotal = prometheus.NewDesc("subvault_jobs_total",
		"Jobs that finished since the daemon started, by kind and result.", []string{"kind", "result"}, nil)
	descJobs = prometheus.NewDesc("subvault_jobs",
		"Jobs queued and running now.", []string{"state"}, nil)
	descBuildInfo = prometheus.NewDesc("subvault_build_info",
		"1, with the daemon's version as a label.", []string{"version"}, nil)
	descStartTime = prometheus.NewDesc("subvault_start_time_seconds",
		"When the daemon started, in seconds since the epoch.", nil, nil)
	descReloadOK = prometheus.NewDesc("subvault_config_last_reload_success",
		"1 when the daemon's last load of its configuration (at start or by a reload) was accepted, 0 when it was refused and the one before stays in force.", nil, nil)
	descReloadTime = prometheus.NewDesc("subvault_config_last_reload_timestamp_seconds",
		"When the daemon last loaded its configuration (at start or by a reload, accepted or not), in seconds since the epoch.", nil, nil)
)

var allDescs = []*prometheus.Desc{
	descLastBackup, descLastSuccessFlag, descLastResult, descLastSuccess, descDuration, descFiles, descAdded, descProcessed,
	descArchives, descSnapshots, descNextRun, descOverdue, descStalled, descJobsTotal, descJobs, descBuildInfo, descStartTime,
	descReloadOK, descReloadTime,
}

// Collector is a prometheus.Collector of the daemon's metrics: each
// Collect asks the daemon for a Snapshot.
type Collector struct {
	snapshot func() Snapshot
}

// NewCollector is a collector of what snapshot returns.
func NewCollector(snapshot func() Snapshot) *Collector { return &Collector{snapshot: snapshot} }

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect sends the metrics of a snapshot taken now.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, p := range s.Plans {
		if !p.LastBackup.IsZero() {
			gauge(descLastBackup, seconds(p.LastBackup), p.Name)
			gauge(descLastSuccessFlag, flag(p.LastResult == string(queue.ResultDone)), p.Name)
			for _, r := range Results {
				gauge(descLastResult, flag(p.LastResult == r), p.Name, r)
			}
			if p.LastDuration >= 0 {
				gauge(descDuration, p.LastDuration.Seconds(), p.Name)
			}
			if sum := p.Summary; sum != nil {
				gauge(descFiles, float64(sum.FilesNew), p.Name, "new")
				gauge(descFiles, float64(sum.FilesChanged), p.Name, "changed")
				gauge(descFiles, float64(sum.FilesUnmodified), p.Name, "unmodified")
				gauge(descAdded, float64(sum.AddedBytes), p.Name)
				gauge(descProcessed, float64(sum.ProcessedBytes), p.Name)
			}
		}
		if !p.LastSuccess.IsZero() {
			gauge(descLastSuccess, seconds(p.LastSuccess), p.Name)
		}
		if p.Archives >= 0 {
			gauge(descArchives, float64(p.Archives), p.Name)
		}
		if p.Snapshots >= 0 {
			gauge(descSnapshots, float64(p.Snapshots), p.Name)
		}
		if !p.NextRun.IsZero() {
			gauge(descNextRun, seconds(p.NextRun), p.Name)
		}
		gauge(descOverdue, flag(p.Overdue), p.Name)
		gauge(descStalled, float64(p.Stalled), p.Name)
	}
	for _, k := range Kinds {
		for _, r := range JobResults {
			ch <- prometheus.MustNewConstMetric(descJobsTotal, prometheus.CounterValue, float64(s.Jobs[JobKey{k, r}]), k, r)
		}
	}
	gauge(descJobs, float64(s.Queued), string(queue.StateQueued))
	gauge(descJobs, float64(s.Running), string(queue.StateRunning))
	gauge(descBuildInfo, 1, s.Version)
	if !s.Started.IsZero() {
		gauge(descStartTime, seconds(s.Started))
	}
	if !s.Reloaded.IsZero() {
		gauge(descReloadOK, flag(s.ReloadOK))
		gauge(descReloadTime, seconds(s.Reloaded))
	}
}

// seconds is t in seconds since the epoch, to the millisecond.
func seconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

func flag(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

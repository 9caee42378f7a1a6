package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/robfig/cron/v3"
	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/daemon/backup"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/maintenance"
	"github.com/subvault/subvault/daemon/metrics"
	"github.com/subvault/subvault/daemon/onsite"
	"github.com/subvault/subvault/daemon/ping"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/daemon/state"
	"github.com/subvault/subvault/scheduler"
)

// Inhibitor holds a sleep inhibitor (logind) while a job runs. The api
// layer provides it: daemon speaks no D-Bus.
type Inhibitor interface {
	Inhibit(why string) (release func(), err error)
}

// Options are the daemon's seams; zero values pick the real thing.
type Options struct {
	ConfigPath string
	Version    string
	Logger     *slog.Logger
	// Notify sends one sd_notify message; default: go-systemd's SdNotify
	// on $NOTIFY_SOCKET (nothing when it is unset).
	Notify func(state string) error
	// Inhibitor, when set and settings.inhibit_sleep is on, holds a sleep
	// inhibitor while a job runs.
	Inhibitor Inhibitor
	// Conditions, when set, tells of the battery, a metered connection
	// and the network: the plans' on_battery and metered, and when a job
	// postponed for the network tries again. Without it nothing holds a
	// job back, and a postponed job is retried on its timer only.
	Conditions Conditions
	Clock      scheduler.Clock
	// Serve publishes the daemon (the D-Bus API) and owns its bus name. Run
	// calls it before the scheduler starts and sends READY=1 only after it
	// returns nil; an error stops the daemon.
	Serve func(d *Daemon) error
	// Signals, for tests; default: SIGHUP reloads, SIGINT and SIGTERM stop.
	Signals <-chan os.Signal
}

// Daemon is subvault's service: the configuration in force, the job queue
// and the scheduler.
type Daemon struct {
	opts  Options
	log   *slog.Logger
	mu    sync.Mutex
	cfg   *config.Config
	queue *queue.Queue
	sched *scheduler.Scheduler

	statusDirty chan struct{}
	// listeners hear of the plans' changes that no job tells of (mu).
	listeners []Listener
	// healthWake tells watchHealth to wait for a new moment.
	healthWake chan struct{}
	// reads bounds the calls that run restic or walk a tree for a caller;
	// archives is each repository's archive list.
	reads    *readLimiter
	archives *archiveCache
	// pings tells the notify entries of jobs (daemon/ping); pingJobs is
	// its listener on the queue.
	pings    *ping.Sender
	pingJobs *ping.Listener

	// waits are the plans' postponed scheduled jobs (waitMu); waitWake
	// tells watchWaits to look at them again.
	waitMu   sync.Mutex
	waits    map[waitKey]*wait
	pending  map[uint32]pendingWait // jobs being postponed, by id
	waitWake chan struct{}

	// metrics publishes the metrics (docs/monitoring.md); jobCounts
	// counts the jobs finished since the start; started, reloaded and
	// reloadOK (mu) are the start and the last load of the configuration.
	metrics   *metrics.Service
	jobCounts *metrics.JobCounter
	started   time.Time
	reloaded  time.Time
	reloadOK  bool
	// foreground imports the jobs `subvault run backup` records.
	foreground *foregroundImporter
	// targets is what the daemon knows of the onsite targets, and the
	// targets that appeared (targets.go).
	targets *targetState
	// lastReset is the last boot's reset (mu), read at start.
	lastReset LastReset
}

// New loads the configuration and the job history, and removes what jobs
// that died with an earlier daemon left behind (snapshots, stale locks, a
// restore's staging directories and half-restored subvolume).
func New(ctx context.Context, opts Options) (*Daemon, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Notify == nil {
		opts.Notify = func(state string) error { _, err := sddaemon.SdNotify(false, state); return err }
	}
	if opts.Clock == nil {
		opts.Clock = scheduler.RealClock()
	}
	started := time.Now()
	cfg, err := config.Load(opts.ConfigPath)
	if err != nil {
		return nil, err
	}
	d := &Daemon{started: started, reloaded: started, reloadOK: true, jobCounts: metrics.NewJobCounter(), opts: opts, log: opts.Logger, cfg: cfg, statusDirty: make(chan struct{}, 1), healthWake: make(chan struct{}, 1),
		reads:    newReadLimiter(ReadCallsPerCaller, ReadCallsInAll, readCallQueue, readCallWait),
		archives: newArchiveCache(archiveCacheTTL),
		waits:    map[waitKey]*wait{}, pending: map[uint32]pendingWait{}, waitWake: make(chan struct{}, 1),
		targets: newTargetState()}
	exec := &executor{config: d.Config, log: d.log, inhibitor: opts.Inhibitor, conditions: d.conditionState, postponed: d.postponed}
	d.queue, err = queue.New(d.queueConfig(cfg), exec, cfg.Settings.StateDir, d.log, nil)
	if err != nil {
		return nil, err
	}
	exec.recordRestore = d.queue.RecordRestore
	exec.job = d.queue.Job
	d.queue.Subscribe(statusListener{d})
	d.queue.Subscribe(archiveCacheListener{d})
	d.queue.Subscribe(healthListener{d})
	d.queue.Subscribe(waitsListener{d})
	d.queue.Subscribe(targetsListener{d})
	d.metrics = metrics.NewService(d.metricsSnapshot, d.log)
	d.queue.Subscribe(d.jobCounts)
	d.queue.Subscribe(metricsListener{d.metrics})
	d.Subscribe(metricsListener{d.metrics})
	host, _ := os.Hostname()
	d.pings = ping.NewSender(d.log, opts.Version)
	d.pingJobs = ping.NewListener(d.pings, cfg, host)
	d.queue.Subscribe(d.pingJobs)
	d.warnNotifyReadable(cfg)
	d.readLastReset(cfg)

	lock := func(plan string) (func(), error) {
		l, err := state.LockPlan(cfg.Settings.StateDir, plan)
		if err != nil {
			return nil, err
		}
		return l.Unlock, nil
	}
	d.cleanUpInterruptedRestores(ctx, cfg, lock)
	if err := backup.RemoveLeftovers(ctx, cfg, d.log, time.Now(), time.Local, lock); err != nil {
		d.log.Error("cannot clean up after earlier jobs; the daemon goes on", "err", err)
	}
	// What a receive that died with an earlier daemon left on a present
	// target (the half copy under its temporary name) is removed before
	// any send runs.
	if err := onsite.RemoveLeftovers(ctx, cfg, d.log); err != nil {
		d.log.Error("cannot remove what earlier sends left on their targets; the next send to each removes it", "err", err)
	}
	if _, err := state.EnsureSpool(cfg.Settings.StateDir); err != nil {
		d.log.Error("cannot make the foreground job spool; foreground jobs are not imported", "err", err)
	}
	d.foreground = newForegroundImporter(d.queue, d.log, cfg.Settings.StateDir)
	d.sched = scheduler.New(opts.Clock, d.scheduled, d.log, scheduler.WithMoved(d.plansChanged))
	return d, nil
}

func (d *Daemon) queueConfig(cfg *config.Config) queue.Config {
	return queue.Config{
		MaxConcurrent: cfg.Settings.MaxConcurrentJobs,
		History:       cfg.Settings.JobHistory,
		Repository: func(plan string) string {
			if p, ok := cfg.Plans[plan]; ok {
				return p.Repository
			}
			return ""
		},
		CopyTo: func(plan string) []string {
			if p, ok := cfg.Plans[plan]; ok {
				return p.CopyTo
			}
			return nil
		},
	}
}

// Config is the configuration in force.
func (d *Daemon) Config() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// Queue is the job queue, for the api layer to read and subscribe to.
func (d *Daemon) Queue() *queue.Queue { return d.queue }

// Version is the daemon's version.
func (d *Daemon) Version() string { return d.opts.Version }

// JobRequest asks for a backup, prune, check, copy or send of Plan (a
// restore is a RestoreRequest). Trigger and Caller say who asks: a D-Bus
// caller's trigger ("dbus:<uid>") and uid, or the schedule's with Caller
// -1. SendTarget is a send's target: one of the plan's send_to, or ""
// when it has only one.
type JobRequest struct {
	Kind       queue.Kind
	Plan       string
	Trigger    queue.Trigger
	Caller     int64
	SendTarget string
}

// Start queues the job r asks for; a job of the same kind already queued or
// running for the plan is returned instead, with r recorded among those
// who asked for it.
//
// A prune of a plan whose repository is append_only is refused
// (ErrInvalidArgument): this host never prunes there. A copy (of the
// plan's latest archive of this host, to its copy_to) of a plan without
// copy_to is refused the same way, and so is a send of a plan without
// send_to, to a target not in its send_to, or without a target when it
// has more than one. A send to a target that has one of the plan queued
// is that job.
func (d *Daemon) Start(r JobRequest) (queue.Job, error) {
	cfg, plan, err := d.plan(r.Plan)
	if err != nil {
		return queue.Job{}, err
	}
	if repo := cfg.Repositories[plan.Repository]; r.Kind == queue.KindPrune && repo != nil && repo.AppendOnly {
		return queue.Job{}, fmt.Errorf("%w: %w", ErrInvalidArgument, maintenance.AppendOnlyRefusal(plan))
	}
	if r.Kind == queue.KindCopy && len(plan.CopyTo) == 0 {
		return queue.Job{}, fmt.Errorf("%w: plan %s has no copy_to: there is no repository to copy its archives to (add copy_to: [NAME] to plans.%s)",
			ErrInvalidArgument, plan.Name, plan.Name)
	}
	o := queue.Order{Kind: r.Kind, Plan: r.Plan, Trigger: r.Trigger, Caller: r.Caller}
	if r.Kind == queue.KindSend {
		target, err := sendTarget(plan, r.SendTarget)
		if err != nil {
			return queue.Job{}, err
		}
		o.Send.SendTarget = target
	}
	j, _, err := d.queue.Enqueue(o)
	return j, err
}

// NextRun is the next scheduled run of kind for plan, zero when manual.
func (d *Daemon) NextRun(plan string, kind queue.Kind) time.Time {
	return d.sched.Next(plan, string(kind))
}

// scheduled is the scheduler's way in. A firing while the plan's job of
// that kind is queued or running is that job's run: the schedule is
// recorded among those who asked for it (the queue logs it), so that only
// an administrator can cancel it. Skipping the run instead let a user who
// may back up the plan start a backup before each run, have the schedule
// skip it, and cancel it as the user's own. A send_schedule's firing
// queues a send to each of the plan's targets.
func (d *Daemon) scheduled(plan, kind, trigger string) error {
	if queue.Kind(kind) == queue.KindSend {
		p, ok := d.Config().Plans[plan]
		if !ok {
			return nil
		}
		var errs []error
		for _, o := range sendOrders(p, queue.Trigger(trigger), -1) {
			if _, _, err := d.queue.Enqueue(o); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	_, _, err := d.queue.Enqueue(queue.Order{Kind: queue.Kind(kind), Plan: plan, Trigger: queue.Trigger(trigger), Caller: -1})
	return err
}

// lastRun is the queue's LastRun in the scheduler's words.
func (d *Daemon) lastRun(plan, kind string) time.Time { return d.queue.LastRun(plan, queue.Kind(kind)) }

func (d *Daemon) entries(cfg *config.Config) []scheduler.Entry {
	var out []scheduler.Entry
	for _, name := range cfg.PlanNames() {
		p := cfg.Plans[name]
		for kind, spec := range map[queue.Kind]cron.Schedule{
			queue.KindBackup: p.ScheduleSpec, queue.KindPrune: p.PruneSpec, queue.KindCheck: p.CheckSpec,
			queue.KindSend: p.SendSpec,
		} {
			if spec == nil {
				continue
			}
			out = append(out, scheduler.Entry{Plan: name, Kind: string(kind), Spec: spec, CatchUp: p.CatchUp})
		}
	}
	return out
}

// Reload re-reads the configuration. An invalid file keeps the one in
// force and returns why (file:line: key: ...).
func (d *Daemon) Reload() error {
	now := time.Now()
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	d.notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000))
	defer d.notify("READY=1")
	cfg, err := config.Load(d.opts.ConfigPath)
	if err != nil {
		d.log.Error("configuration refused; the one in force stays", journal.Event(journal.EventConfigRefused), "config", d.opts.ConfigPath, "err", err)
		d.reloadedAt(now, false)
		return err
	}
	d.mu.Lock()
	d.cfg = cfg
	d.mu.Unlock()
	d.archives.invalidate("")
	d.queue.Configure(d.queueConfig(cfg))
	d.pingJobs.Configure(cfg)
	d.warnNotifyReadable(cfg)
	d.sched.Set(d.entries(cfg), d.lastRun)
	select {
	case d.targets.reloaded <- struct{}{}:
	default:
	}
	d.log.Info("configuration reloaded", journal.Event(journal.EventConfigReloaded), "config", cfg.File,
		"plans", len(cfg.Plans), "took", time.Since(now))
	d.markStatus()
	d.rearmHealth()
	d.wakeWaits() // a plan gone, or on_battery or metered changed
	d.reloadedAt(now, true)
	d.configureMetrics()
	d.plansChanged()
	return nil
}

// Run serves until ctx is done or SIGINT/SIGTERM arrives, then stops: no new
// jobs, running ones interrupted and cleaned up, and returns when they have.
// A ctx canceled with a cause (context.WithCancelCause: the bus is gone)
// is logged as the reason to stop, and returned once the jobs are cleaned
// up; a signal or a plain cancel returns nil.
func (d *Daemon) Run(ctx context.Context) error {
	signals := d.opts.Signals
	if signals == nil {
		ch := make(chan os.Signal, 4)
		signal.Notify(ch, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
		defer signal.Stop(ch)
		signals = ch
	}
	// Foreground jobs that ended while no daemon ran (or that run now)
	// are in the history before anything is published or scheduled (a
	// backup a timer ran is the plan's last backup, and its last run),
	// and every queue listener subscribed by now hears of them.
	for d.foreground.importOnce() {
	}
	// The schedule first, so that the plans are published with their
	// next run.
	d.sched.Set(d.entries(d.Config()), d.lastRun)
	// The plans are published with their health at this moment: the
	// health watcher tells of every plan overdue after it.
	published := d.opts.Clock.Now()
	if d.opts.Serve != nil {
		if err := d.opts.Serve(d); err != nil {
			return err
		}
	}
	schedCtx, stopSched := context.WithCancel(ctx)
	defer stopSched()
	schedDone := make(chan struct{})
	go func() {
		defer close(schedDone)
		if err := d.sched.Run(schedCtx); err != nil && !errors.Is(err, context.Canceled) {
			d.log.Error("the scheduler stopped", "err", err)
		}
	}()
	healthDone := make(chan struct{})
	go func() {
		defer close(healthDone)
		d.watchHealth(schedCtx, published)
	}()
	if d.opts.Conditions != nil {
		d.opts.Conditions.OnChange(d.wakeWaits)
	}
	waitsDone := make(chan struct{})
	go func() {
		defer close(waitsDone)
		d.watchWaits(schedCtx)
	}()
	d.resumeWaits()
	// The metrics until the jobs are drained: the textfile's last write
	// shows them ended.
	metricsCtx, stopMetrics := context.WithCancel(context.Background())
	defer stopMetrics()
	metricsDone := make(chan struct{})
	go func() {
		defer close(metricsDone)
		d.metrics.Run(metricsCtx)
	}()
	d.configureMetrics()
	foregroundDone := make(chan struct{})
	go func() {
		defer close(foregroundDone)
		d.watchForeground(schedCtx)
	}()
	// The targets: looked at once, the sends due to one that appears
	// queued, and new disks watched for.
	d.lookAtTargets()
	targetsDone := make(chan struct{})
	go func() {
		defer close(targetsDone)
		d.watchTargets(schedCtx)
	}()
	devicesDone := make(chan struct{})
	go func() {
		defer close(devicesDone)
		d.watchDevices(schedCtx)
	}()

	d.log.Info("subvault started", journal.Event(journal.EventDaemonStarted), "version", d.opts.Version,
		"config", d.Config().File, "plans", len(d.Config().Plans))
	d.notify("READY=1")
	d.updateStatus()

	var watchdog <-chan time.Time
	if interval, err := sddaemon.SdWatchdogEnabled(false); err == nil && interval > 0 {
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		watchdog = t.C
	}
	var statusLimit <-chan time.Time
	pending := false

	var stopErr error
loop:
	for {
		select {
		case <-ctx.Done():
			if cause := context.Cause(ctx); cause != nil && cause != ctx.Err() { //nolint:errorlint // a cause of its own, not ctx's
				stopErr = cause
				d.log.Error("stopping: "+cause.Error(), journal.Event(journal.EventDaemonStopping))
			}
			break loop
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				_ = d.Reload()
				continue
			}
			d.log.Info("stopping on "+sig.String(), journal.Event(journal.EventDaemonStopping))
			break loop
		case <-watchdog:
			// The probe takes the queue's lock: a wedged queue stops the
			// pings, and systemd restarts the daemon.
			_ = d.queue.Running()
			d.notify("WATCHDOG=1")
		case <-d.statusDirty:
			if statusLimit != nil {
				pending = true
				continue
			}
			d.updateStatus()
			statusLimit = time.After(250 * time.Millisecond)
		case <-statusLimit:
			statusLimit = nil
			if pending {
				pending = false
				d.updateStatus()
				statusLimit = time.After(250 * time.Millisecond)
			}
		}
	}

	d.notify("STOPPING=1")
	stopSched()
	<-schedDone
	<-healthDone
	<-waitsDone
	<-foregroundDone
	<-targetsDone
	<-devicesDone
	drained := make(chan struct{})
	// Then the reports of the jobs that ended, to the notify entries.
	go func() { d.queue.Drain(); d.flushPings(); close(drained) }()
	extend := time.NewTicker(5 * time.Second)
	defer extend.Stop()
	d.notify("EXTEND_TIMEOUT_USEC=20000000")
	for {
		select {
		case <-drained:
			d.metrics.Write()
			stopMetrics()
			<-metricsDone
			d.log.Info("subvault stopped")
			return stopErr
		case <-extend.C:
			d.notify("EXTEND_TIMEOUT_USEC=20000000")
		}
	}
}

// warnNotifyReadable warns when cfg's file holds notify URLs and others
// may read it.
func (d *Daemon) warnNotifyReadable(cfg *config.Config) {
	if mode, readable := cfg.NotifyReadable(); readable {
		d.log.Warn(cfg.NotifyReadableWarning(mode))
	}
}

// maxStopFlush bounds how long a stopping daemon waits for pings and
// webhook calls: a hanging endpoint must not hold up a restart.
const maxStopFlush = 10 * time.Second

// flushPings gives the reports of the jobs that ended as the daemon
// stopped as long as the longest notify timeout (at most maxStopFlush)
// to be delivered, then gives up the rest (logged).
func (d *Daemon) flushPings() {
	cfg := d.Config()
	var longest time.Duration
	for _, name := range cfg.PlanNames() {
		for _, e := range cfg.NotifyFor(name) {
			longest = max(longest, e.Timeout)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(longest, maxStopFlush))
	defer cancel()
	d.pings.Wait(ctx)
	d.pings.Close()
}

func (d *Daemon) notify(state string) {
	if err := d.opts.Notify(state); err != nil {
		d.log.Debug("sd_notify failed", "state", state, "err", err)
	}
}

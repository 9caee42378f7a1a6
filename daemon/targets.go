package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/devices"
	"github.com/subvault/subvault/daemon/onsite"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/queue"
)

// TargetInfo is one configured target as ListTargets shows it: where it
// is configured, whether it is there now and where it was found, and what
// each plan that sends to it has there.
type TargetInfo struct {
	Name, Path, UUID string
	Present          bool
	Where, Error     string
	Plans            []TargetPlan
}

// TargetPlan is one plan's copies on a target: the newest one's time
// (zero: none), how many, and how many of the plan's snapshots are
// pinned as that target's parents.
type TargetPlan struct {
	Plan   string
	Newest time.Time
	Copies int
	Pinned int
}

// PlanTarget is one of a plan's send_to targets as the plan shows it:
// its newest copy there (zero: none known) and whether the target was
// there when the daemon last looked.
type PlanTarget struct {
	Name    string
	Newest  time.Time
	Present bool
}

// How long a call that shows targets waits for one target's status: a
// slow or failing disk must not hold the caller (the look goes on, and the
// next call gets its answer); how long what a look found answers such
// calls; and how long one look may take at most.
const (
	targetStatusWait    = 4 * time.Second
	targetStatusFresh   = 10 * time.Second
	targetStatusTimeout = 2 * time.Minute
	// deviceWatchInterval is how often the daemon looks for new block
	// devices while a UUID target has a send due (daemon/devices).
	deviceWatchInterval = 5 * time.Second
)

// targetState is what the daemon knows of the targets: each one's last
// status (for the plans' Targets, read without touching a disk), the
// looks in flight (one per target, whoever waits for it), and the UUIDs
// of targets that appeared, for the worker that starts their due sends.
type targetState struct {
	mu       sync.Mutex
	known    map[string]*knownTarget
	looks    map[string]*targetLook
	appeared map[string]queue.Trigger // target name → who told
	wake     chan struct{}
	// reloaded tells the device watch that the configuration changed.
	reloaded chan struct{}
	// status is onsite.Status (a seam for the tests of the bounds).
	status func(ctx context.Context, cfg *config.Config, target string, plans []string) (onsite.TargetStatus, error)
}

// knownTarget is a target's last status, and which plans have a send due
// to it: their newest snapshot is not on it (or a backup made one since).
type knownTarget struct {
	status onsite.TargetStatus
	due    map[string]bool
	at     time.Time // when the look that found it ended
}

type targetLook struct {
	done   chan struct{}
	status onsite.TargetStatus
	err    error
}

func newTargetState() *targetState {
	return &targetState{known: map[string]*knownTarget{}, looks: map[string]*targetLook{},
		appeared: map[string]queue.Trigger{}, wake: make(chan struct{}, 1), reloaded: make(chan struct{}, 1),
		status: onsite.Status}
}

// targetPlans are the plans of cfg that send to target, by name.
func targetPlans(cfg *config.Config, target string) []string {
	var out []string
	for _, name := range cfg.PlanNames() {
		if slices.Contains(cfg.Plans[name].SendTo, target) {
			out = append(out, name)
		}
	}
	return out
}

// targetStatus is target's status now: one look at a time per target
// (a caller that comes while one runs waits for that one), waited for
// at most until ctx ends or targetStatusWait has passed; the look itself
// goes on to its end (at most targetStatusTimeout), and what it finds is
// known for the plans' Targets.
func (d *Daemon) targetStatus(ctx context.Context, cfg *config.Config, target string) (onsite.TargetStatus, error) {
	return d.targetStatusWithin(ctx, cfg, target, 0)
}

// targetStatusWithin is targetStatus, or what a look that ended less
// than maxAge ago found: ListTargets, which anyone may call as often as
// they like, mounts a disk (in a private namespace) at most once per
// maxAge.
func (d *Daemon) targetStatusWithin(ctx context.Context, cfg *config.Config, target string, maxAge time.Duration) (onsite.TargetStatus, error) {
	ts := d.targets
	ts.mu.Lock()
	if k := ts.known[target]; k != nil && maxAge > 0 && time.Since(k.at) < maxAge {
		st := k.status
		ts.mu.Unlock()
		return st, nil
	}
	look := ts.looks[target]
	if look == nil {
		look = &targetLook{done: make(chan struct{})}
		ts.looks[target] = look
		go func() {
			lctx, cancel := context.WithTimeout(context.Background(), targetStatusTimeout)
			defer cancel()
			st, err := ts.status(lctx, cfg, target, targetPlans(cfg, target))
			due := d.dueSends(cfg, target, st, err)
			ts.mu.Lock()
			look.status, look.err = st, err
			delete(ts.looks, target)
			if err == nil {
				ts.known[target] = &knownTarget{status: st, due: due, at: time.Now()}
			} else if k := ts.known[target]; k != nil {
				k.status.Present, k.at = false, time.Time{}
			}
			ts.mu.Unlock()
			close(look.done)
			d.plansChanged()
		}()
	}
	ts.mu.Unlock()
	wait := time.NewTimer(targetStatusWait)
	defer wait.Stop()
	select {
	case <-look.done:
		return look.status, look.err
	case <-ctx.Done():
		return onsite.TargetStatus{Name: target}, ctx.Err()
	case <-wait.C:
		return onsite.TargetStatus{Name: target}, fmt.Errorf("target %s did not answer within %s (a slow or failing disk?); the daemon keeps looking, ask again later", target, targetStatusWait)
	}
}

// dueSends says, for each plan sending to target, whether a send is due:
// its newest snapshot of some subvolume is not on the target (read-only).
// A target that could not be looked at, or is absent, is due for every
// plan with snapshots.
func (d *Daemon) dueSends(cfg *config.Config, target string, st onsite.TargetStatus, err error) map[string]bool {
	due := map[string]bool{}
	for _, name := range targetPlans(cfg, target) {
		newest := newestSnapshots(cfg.Plans[name])
		if len(newest) == 0 {
			continue
		}
		if err != nil || !st.Present {
			due[name] = true
			continue
		}
		have := map[string]bool{}
		for _, c := range st.Copies[name] {
			if c.ReadOnly {
				have[c.Name()] = true
			}
		}
		for _, s := range newest {
			if !have[s.Name()] {
				due[name] = true
			}
		}
	}
	return due
}

// newestSnapshots are plan's newest snapshot of each subvolume (a send's
// source), none when it has none or they cannot be listed.
func newestSnapshots(plan *config.Plan) []btrfs.Snapshot {
	all, err := planstore.Snapshots(plan)
	if err != nil {
		return nil
	}
	return newestSnapshotsOf(all)
}

// newestSnapshotsOf is the newest of each subvolume among all (pinned
// rollback snapshots aside), as planstore picks a send's source.
func newestSnapshotsOf(all []btrfs.Snapshot) []btrfs.Snapshot {
	newest := map[string]btrfs.Snapshot{}
	for _, s := range all {
		if s.Pinned {
			continue
		}
		if n, ok := newest[s.Subvolume]; !ok || s.Time.After(n.Time) || s.Time.Equal(n.Time) && s.JobID > n.JobID {
			newest[s.Subvolume] = s
		}
	}
	out := make([]btrfs.Snapshot, 0, len(newest))
	for _, s := range newest {
		out = append(out, s)
	}
	return out
}

// Targets is every configured target, by name, with its status now:
// each looked at in parallel, none waited for longer than a few seconds
// (one that does not answer says so in its Error).
func (d *Daemon) Targets(ctx context.Context) []TargetInfo {
	cfg := d.Config()
	names := cfg.TargetNames()
	out := make([]TargetInfo, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			out[i] = d.targetInfo(ctx, cfg, name)
		})
	}
	wg.Wait()
	return out
}

func (d *Daemon) targetInfo(ctx context.Context, cfg *config.Config, name string) TargetInfo {
	t := cfg.Targets[name]
	info := TargetInfo{Name: name, Path: t.Path, UUID: t.UUID}
	st, err := d.targetStatusWithin(ctx, cfg, name, targetStatusFresh)
	info.Present, info.Where, info.Error = st.Present, st.Where, st.Err
	if err != nil && info.Error == "" {
		info.Error = oneLine(err.Error())
	}
	for _, plan := range targetPlans(cfg, name) {
		tp := TargetPlan{Plan: plan}
		for _, c := range st.Copies[plan] {
			tp.Copies++
			if c.Time.After(tp.Newest) {
				tp.Newest = c.Time
			}
		}
		if pins, err := planstore.SendPins(cfg, plan); err == nil {
			for _, p := range pins {
				if p.Target == name {
					tp.Pinned++
				}
			}
		}
		info.Plans = append(info.Plans, tp)
	}
	return info
}

// planTargets is plan's send_to targets as the daemon last saw them,
// without looking again (Plans is read often; a disk is looked at by
// Targets, after each send and when a disk appears).
func (d *Daemon) planTargets(plan *config.Plan) []PlanTarget {
	ts := d.targets
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var out []PlanTarget
	for _, name := range plan.SendTo {
		pt := PlanTarget{Name: name}
		if k := ts.known[name]; k != nil {
			pt.Present = k.status.Present
			for _, c := range k.status.Copies[plan.Name] {
				if c.Time.After(pt.Newest) {
					pt.Newest = c.Time
				}
			}
		}
		out = append(out, pt)
	}
	return out
}

// TargetAppeared tells the daemon that the disk of the btrfs filesystem
// uuid appeared (the udev rule's call, or the device watch): every plan
// with a send due to a target of that UUID gets one. It returns at once;
// a worker looks at the target (one look per target, however often it is
// told) and queues the sends. A UUID no target has is ignored.
func (d *Daemon) TargetAppeared(uuid string) {
	d.targetAppeared(uuid, queue.TriggerDevice)
}

func (d *Daemon) targetAppeared(uuid string, trigger queue.Trigger) {
	uuid = strings.ToLower(strings.TrimSpace(uuid))
	cfg := d.Config()
	var names []string
	for name, t := range cfg.Targets {
		if t.UUID != "" && strings.EqualFold(t.UUID, uuid) && len(targetPlans(cfg, name)) > 0 {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		d.log.Debug("a filesystem no target sends to appeared", "uuid", uuid)
		return
	}
	ts := d.targets
	ts.mu.Lock()
	for _, n := range names {
		ts.appeared[n] = trigger
	}
	ts.mu.Unlock()
	select {
	case ts.wake <- struct{}{}:
	default:
	}
}

// watchTargets queues the due sends to the targets that appeared, until
// ctx ends.
func (d *Daemon) watchTargets(ctx context.Context) {
	ts := d.targets
	for {
		select {
		case <-ctx.Done():
			return
		case <-ts.wake:
		}
		ts.mu.Lock()
		appeared := ts.appeared
		ts.appeared = map[string]queue.Trigger{}
		ts.mu.Unlock()
		names := make([]string, 0, len(appeared))
		for n := range appeared {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, name := range names {
			d.startDueSends(ctx, name, appeared[name])
		}
	}
}

// startDueSends looks at target and queues a send of each plan with one
// due to it.
func (d *Daemon) startDueSends(ctx context.Context, target string, trigger queue.Trigger) {
	cfg := d.Config()
	if _, ok := cfg.Targets[target]; !ok {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, targetStatusTimeout)
	defer cancel()
	var st onsite.TargetStatus
	var err error
	for { // the look may outlast one wait: wait for its end
		st, err = d.targetStatus(lctx, cfg, target)
		if err == nil || lctx.Err() != nil || errors.Is(err, onsite.ErrAbsent) {
			break
		}
		d.targets.mu.Lock()
		_, looking := d.targets.looks[target]
		d.targets.mu.Unlock()
		if !looking {
			break
		}
	}
	if err != nil || !st.Present {
		d.log.Info("target appeared but cannot be used", "target", target, "err", err, "why", st.Err)
		return
	}
	d.targets.mu.Lock()
	var due []string
	if k := d.targets.known[target]; k != nil {
		for plan, ok := range k.due {
			if ok {
				due = append(due, plan)
			}
		}
	}
	d.targets.mu.Unlock()
	slices.Sort(due)
	d.log.Info("target appeared", "target", target, "where", st.Where, "due", due, "trigger", trigger)
	for _, plan := range due {
		if _, _, err := d.queue.Enqueue(queue.Order{Kind: queue.KindSend, Plan: plan, Trigger: trigger, Caller: -1,
			Send: queue.SendArgs{SendTarget: target}}); err != nil {
			d.log.Warn("cannot queue the send due to an appeared target", "plan", plan, "target", target, "err", err)
		}
	}
}

// wantedUUIDs are the filesystem UUIDs the device watch looks for: those
// of UUID targets some plan sends to that were absent when last looked
// at, or have a send due, or were never looked at.
func (d *Daemon) wantedUUIDs() []string {
	cfg := d.Config()
	ts := d.targets
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var out []string
	for _, name := range d.uuidTargets(cfg) {
		t := cfg.Targets[name]
		k := ts.known[name]
		if k == nil || !k.status.Present || slices.Contains(slices.Collect(maps.Values(k.due)), true) {
			out = append(out, strings.ToLower(t.UUID))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// watchDevices runs the device watch (daemon/devices) until ctx ends,
// while some plan sends to a UUID target: a new block device with the
// filesystem UUID of a wanted target is that target appearing. Without
// one, no block device is read; a reload looks again (and a watch started
// again finds the wanted disks already plugged in).
func (d *Daemon) watchDevices(ctx context.Context) {
	for {
		if len(d.uuidTargets(d.Config())) > 0 {
			wctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				devices.Watch(wctx, deviceWatchInterval, d.wantedUUIDs, func(uuid, dev string) {
					d.log.Info("a target's disk appeared", "uuid", uuid, "device", dev)
					d.targetAppeared(uuid, queue.TriggerDevice)
				})
			}()
			select {
			case <-ctx.Done():
			case <-d.targets.reloaded:
			}
			cancel()
			<-done
			if ctx.Err() != nil {
				return
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-d.targets.reloaded:
		}
	}
}

// uuidTargets are the names of cfg's UUID targets some plan sends to.
func (d *Daemon) uuidTargets(cfg *config.Config) []string {
	var out []string
	for _, name := range cfg.TargetNames() {
		if cfg.Targets[name].UUID != "" && len(targetPlans(cfg, name)) > 0 {
			out = append(out, name)
		}
	}
	return out
}

// targetsListener keeps what the daemon knows of the targets: a send
// that ended has the target looked at again (its copies, whether it is
// there), and a backup that made snapshots makes a send due to each of
// its plan's targets.
type targetsListener struct{ d *Daemon }

func (l targetsListener) JobQueued(queue.Job)    {}
func (l targetsListener) JobChanged(queue.Job)   {}
func (l targetsListener) JobForgotten(queue.Job) {}
func (l targetsListener) JobFinished(j queue.Job) {
	cfg := l.d.Config()
	switch {
	case j.Kind == queue.KindSend && j.SendTarget != "":
		if _, ok := cfg.Targets[j.SendTarget]; ok {
			// Called under the queue's lock: the look runs on its own.
			go l.d.targetStatus(context.Background(), cfg, j.SendTarget) //nolint:errcheck // known for the plans
		}
	case j.Kind == queue.KindBackup && j.ArchiveID != "":
		p, ok := cfg.Plans[j.Plan]
		if !ok {
			return
		}
		ts := l.d.targets
		ts.mu.Lock()
		for _, t := range p.SendTo {
			if k := ts.known[t]; k != nil {
				if k.due == nil {
					k.due = map[string]bool{}
				}
				k.due[j.Plan] = true
			}
		}
		ts.mu.Unlock()
	}
}

// lookAtTargets looks at every target once (at start), so that the plans
// show their targets' newest copies.
func (d *Daemon) lookAtTargets() {
	cfg := d.Config()
	for name := range cfg.Targets {
		go d.targetStatus(context.Background(), cfg, name) //nolint:errcheck // known for the plans
	}
}

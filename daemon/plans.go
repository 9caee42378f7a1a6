package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/health"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/daemon/safefs"
	"github.com/subvault/subvault/restic"
	"golang.org/x/sys/unix"
)

// PlanInfo is a plan as the D-Bus Plan object shows it.
type PlanInfo struct {
	Name       string
	Subvolumes []string
	Repository string
	Schedule   string
	NextRun    time.Time
	queue.PlanStatus
	// Health is how the plan stands now and why (daemon/health).
	Health       contract.Health
	HealthReason string
	// Waiting is why the plan's scheduled jobs wait, "" when none does;
	// RetryAt is when the soonest is retried at the latest (zero: when
	// its condition clears).
	Waiting string
	RetryAt time.Time
	// Targets are the plan's send_to targets with their newest copy of
	// the plan, as the daemon last saw them.
	Targets []PlanTarget
}

// Plans returns every configured plan, sorted by name, with its health at
// the daemon clock's now.
func (d *Daemon) Plans() []PlanInfo {
	cfg := d.Config()
	now := d.opts.Clock.Now()
	var out []PlanInfo
	for _, name := range cfg.PlanNames() {
		p := cfg.Plans[name]
		st := d.queue.PlanStatus(name)
		waiting, short, retryAt := d.waiting(name)
		hp := healthPlan(p, st)
		hp.Waiting = short
		h := health.Of(hp, now)
		out = append(out, PlanInfo{
			Name: name, Subvolumes: append([]string(nil), p.Subvolumes...), Repository: p.Repository,
			Schedule: p.Schedule, NextRun: d.NextRun(name, queue.KindBackup), PlanStatus: st,
			Health: h.Health, HealthReason: h.Reason, Waiting: waiting, RetryAt: retryAt,
			Targets: d.planTargets(p),
		})
	}
	return out
}

func (d *Daemon) plan(name string) (*config.Config, *config.Plan, error) {
	cfg := d.Config()
	p, ok := cfg.Plans[name]
	if !ok {
		return nil, nil, fmt.Errorf("%w: %q (plans: %s)", ErrNoSuchPlan, name, strings.Join(cfg.PlanNames(), ", "))
	}
	return cfg, p, nil
}

// SnapshotInfo is one local snapshot of a plan.
type SnapshotInfo struct {
	Name string
	Path string
	Time time.Time
	// Kept is set when keep_snapshots keeps it (or a running job uses it).
	Kept bool
}

// Snapshots lists the plan's local snapshots, oldest first.
func (d *Daemon) Snapshots(planName string) ([]SnapshotInfo, error) {
	cfg, plan, err := d.plan(planName)
	if err != nil {
		return nil, err
	}
	all, err := planstore.Snapshots(plan)
	if err != nil {
		return nil, err
	}
	k := plan.KeepSnapshots
	keep, _, _ := btrfs.SelectKeep(all, btrfs.KeepPolicy{Last: k.Last, Hourly: k.Hourly, Daily: k.Daily, Weekly: k.Weekly, Monthly: k.Monthly}, time.Now(), time.Local)
	kept := map[string]bool{}
	for _, s := range keep {
		kept[s.Path] = true
	}
	running := d.runningJobIDs()
	held := sendHeld(cfg, plan, all, time.Now())
	out := make([]SnapshotInfo, len(all))
	for i, s := range all {
		out[i] = SnapshotInfo{Name: s.Name(), Path: s.Path, Time: s.Time, Kept: kept[s.Path] || running[s.JobID] || held[s.Name()]}
	}
	return out, nil
}

// sendHeld names the snapshots keep_snapshots keeps for the plan's sends
// (planstore.ApplyKeepSnapshots): a target's pinned parent within
// target_pin_for, and the newest of each subvolume of a plan with send_to.
func sendHeld(cfg *config.Config, plan *config.Plan, all []btrfs.Snapshot, now time.Time) map[string]bool {
	held := map[string]bool{}
	if len(plan.SendTo) == 0 {
		return held
	}
	pinFor := plan.TargetPinFor
	if pinFor <= 0 {
		pinFor = config.DefaultTargetPinFor
	}
	if pins, err := planstore.SendPins(cfg, plan.Name); err == nil {
		for _, p := range pins {
			if slices.Contains(plan.SendTo, p.Target) && now.Sub(p.Since) < pinFor {
				held[p.Snapshot] = true
			}
		}
	}
	for _, s := range newestSnapshotsOf(all) {
		held[s.Name()] = true
	}
	return held
}

func (d *Daemon) runningJobIDs() map[uint32]bool {
	ids := map[uint32]bool{}
	for _, j := range d.queue.Active() {
		if j.State == queue.StateRunning {
			ids[j.ID] = true
		}
	}
	return ids
}

// findSnapshot returns the plan's snapshot called name.
func (d *Daemon) findSnapshot(plan *config.Plan, name string) (btrfs.Snapshot, error) {
	parsed, err := btrfs.ParseName(name)
	if err != nil || parsed.Plan != plan.Name {
		return btrfs.Snapshot{}, fmt.Errorf("%w: %q is not a snapshot name of plan %s (list them with ListSnapshots)", ErrNoSuchSnapshot, name, plan.Name)
	}
	all, err := planstore.Snapshots(plan)
	if err != nil {
		return btrfs.Snapshot{}, err
	}
	for _, s := range all {
		if s.Name() == name {
			return s, nil
		}
	}
	return btrfs.Snapshot{}, fmt.Errorf("%w: plan %s has no snapshot %s", ErrNoSuchSnapshot, plan.Name, name)
}

// DeleteSnapshot deletes one local snapshot of the plan; one a running job
// uses is refused.
func (d *Daemon) DeleteSnapshot(planName, name string) error {
	_, plan, err := d.plan(planName)
	if err != nil {
		return err
	}
	s, err := d.findSnapshot(plan, name)
	if err != nil {
		return err
	}
	if d.runningJobIDs()[s.JobID] {
		return fmt.Errorf("%w: snapshot %s belongs to job %d, which is running; cancel the job first", ErrInvalidArgument, name, s.JobID)
	}
	if err := planstore.DeleteSnapshot(plan, s); err != nil {
		return err
	}
	d.log.Info("snapshot deleted", "plan", planName, "snapshot", s.Path, "why", "asked over D-Bus")
	return nil
}

// CloneSnapshot makes a writable snapshot of one of the plan's snapshots at
// target (to look inside, or to boot in a container) and returns its path.
//
// name may be a copy on an onsite target, TARGET:NAME, reachable in the
// host (a UUID target's disk mounted); the clone is then made on that
// target's filesystem (a btrfs snapshot stays on its filesystem), outside
// the directory subvault keeps its copies in.
func (d *Daemon) CloneSnapshot(planName, name, target string) (string, error) {
	if d.IsReset(planName) {
		return d.cloneResetState(name, target)
	}
	cfg, plan, err := d.plan(planName)
	if err != nil {
		return "", err
	}
	if t, copyName, ok := splitTargetCopy(name); ok {
		if err := checkNewTarget(plan, target, false); err != nil {
			return "", err
		}
		return d.cloneTargetCopy(cfg, plan, t, copyName, target)
	}
	s, err := d.findSnapshot(plan, name)
	if err != nil {
		return "", err
	}
	if err := checkNewTarget(plan, target, false); err != nil {
		return "", err
	}
	// The target's directory is opened once, with no symbolic link on the
	// way, and the clone made in it from the snapshot's descriptor: a link
	// planted in the target's path by another user redirects nothing.
	parent, err := safefs.OpenDir(filepath.Dir(target))
	if err != nil {
		return "", fmt.Errorf("%w: target %s: %w", ErrInvalidArgument, target, err)
	}
	defer parent.Close() //nolint:errcheck // a directory
	src, err := planstore.OpenSnapshot(plan, s)
	if err != nil {
		return "", err
	}
	defer src.Close() //nolint:errcheck // a directory
	clone, _, err := btrfs.SnapshotAt(src, parent, filepath.Base(target), false)
	if err != nil {
		return "", err
	}
	clone.Close() //nolint:errcheck,gosec // a directory
	d.log.Info("snapshot cloned", "plan", planName, "snapshot", s.Path, "clone", target)
	return target, nil
}

// cloneTargetCopy is CloneSnapshot of the copy name on the onsite target
// targetName.
func (d *Daemon) cloneTargetCopy(cfg *config.Config, plan *config.Plan, targetName, name, target string) (string, error) {
	c, err := openTargetCopy(cfg, plan, targetName, name)
	if err != nil {
		return "", err
	}
	defer c.Open.Close() //nolint:errcheck // a directory
	if target == c.Dir || strings.HasPrefix(target, c.Dir+"/") {
		return "", fmt.Errorf("%w: %s is inside target %s's directory %s, which subvault keeps its copies in: clone beside it", ErrInvalidArgument, target, targetName, c.Dir)
	}
	parent, err := safefs.OpenDir(filepath.Dir(target))
	if err != nil {
		return "", fmt.Errorf("%w: target %s: %w", ErrInvalidArgument, target, err)
	}
	defer parent.Close() //nolint:errcheck // a directory
	clone, _, err := btrfs.SnapshotAt(c.Open, parent, filepath.Base(target), false)
	if errors.Is(err, unix.EXDEV) {
		return "", fmt.Errorf("%w: %s is not on the filesystem of target %s (%s): a clone is a btrfs snapshot, made on the filesystem of what it clones; name a path there",
			ErrInvalidArgument, target, targetName, c.Dir)
	}
	if err != nil {
		return "", err
	}
	clone.Close() //nolint:errcheck,gosec // a directory
	d.log.Info("target copy cloned", "plan", plan.Name, "target", targetName, "copy", c.Path, "clone", target)
	return target, nil
}

// Archive is one restic snapshot of a plan.
type Archive struct {
	ShortID  string
	ID       string
	Time     time.Time
	Hostname string
	Paths    []string
	Tags     []string
}

// Archives lists the plan's archives in its repository (those tagged with
// the plan), newest first.
func (d *Daemon) Archives(ctx context.Context, planName string) ([]Archive, error) {
	cfg, plan, err := d.plan(planName)
	if err != nil {
		return nil, err
	}
	list, err := d.planArchives(ctx, cfg, plan)
	if err != nil {
		return nil, err
	}
	out := make([]Archive, len(list))
	for i, a := range list {
		out[i] = Archive{ShortID: a.ShortID, ID: a.ID, Time: a.Time, Hostname: a.Hostname, Paths: a.Paths, Tags: a.Tags}
	}
	slices.SortStableFunc(out, func(a, b Archive) int { return b.Time.Compare(a.Time) })
	return out, nil
}

// planArchives is the plan's archives (those tagged with the plan) in
// restic's order, from the repository's list in the archive cache; a
// restic run that fills it takes a read call's slot (one the caller
// holds already, or a new one).
func (d *Daemon) planArchives(ctx context.Context, cfg *config.Config, plan *config.Plan) ([]restic.Archive, error) {
	runner, err := planstore.NewRunner(cfg, plan, d.log.With("plan", plan.Name))
	if err != nil {
		return nil, err
	}
	all, err := d.archives.get(ctx, runner.Repo.URL, func(ctx context.Context) ([]restic.Archive, error) {
		ctx, release, err := d.reads.acquire(ctx)
		if err != nil {
			return nil, err
		}
		defer release()
		return runner.Snapshots(ctx, restic.SnapshotFilter{})
	})
	if err != nil {
		return nil, err
	}
	tag := planstore.Tag(plan.Name)
	var out []restic.Archive
	for _, a := range all {
		if slices.Contains(a.Tags, tag) {
			out = append(out, a)
		}
	}
	return out, nil
}

// repositoryURL is the URL of plan's repository in the configuration in
// force, "" when the plan or its repository is gone.
func (d *Daemon) repositoryURL(plan string) string {
	cfg := d.Config()
	if p, ok := cfg.Plans[plan]; ok {
		if r, ok := cfg.Repositories[p.Repository]; ok {
			return r.URL
		}
	}
	return ""
}

// archiveCacheListener drops a repository's archive list when a job on it
// ends: a backup adds an archive, a prune removes some, and a job of any
// kind may have been one of them under another name. A job of a plan no
// longer configured drops every list.
type archiveCacheListener struct{ d *Daemon }

func (l archiveCacheListener) JobQueued(queue.Job)    {}
func (l archiveCacheListener) JobChanged(queue.Job)   {}
func (l archiveCacheListener) JobForgotten(queue.Job) {}
func (l archiveCacheListener) JobFinished(j queue.Job) {
	l.d.archives.invalidate(l.d.repositoryURL(j.Plan))
}

func isHexPrefix(s string) bool {
	if len(s) < 4 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

// checkNewTarget checks a path subvault is asked to create: absolute,
// clean, not inside the plan's snapshot directories, and either missing or
// (when emptyDirOK) an empty directory; its parent must exist.
func checkNewTarget(plan *config.Plan, target string, emptyDirOK bool) error {
	if !filepath.IsAbs(target) || filepath.Clean(target) != target || strings.ContainsRune(target, 0) || target == "/" {
		return fmt.Errorf("%w: target %q must be an absolute, clean path (no \"..\", no trailing \"/\")", ErrInvalidArgument, target)
	}
	for _, sv := range plan.Subvolumes {
		dir := planstore.SnapshotDir(plan, sv)
		if target == dir || strings.HasPrefix(target, dir+"/") {
			return fmt.Errorf("%w: target %s is inside the plan's snapshot directory %s", ErrInvalidArgument, target, dir)
		}
	}
	fi, err := os.Lstat(target)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if _, err := os.Stat(filepath.Dir(target)); err != nil {
			return fmt.Errorf("%w: the directory of target %s does not exist", ErrInvalidArgument, target)
		}
		return nil
	case err != nil:
		return fmt.Errorf("%w: target %s: %w", ErrInvalidArgument, target, err)
	case !emptyDirOK:
		return fmt.Errorf("%w: target %s exists; name a path that does not", ErrInvalidArgument, target)
	case !fi.IsDir():
		return fmt.Errorf("%w: target %s exists and is not a directory", ErrInvalidArgument, target)
	}
	entries, err := os.ReadDir(target)
	if err != nil {
		return fmt.Errorf("%w: target %s: %w", ErrInvalidArgument, target, err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("%w: target %s is not empty; restore into a new or empty directory", ErrInvalidArgument, target)
	}
	return nil
}

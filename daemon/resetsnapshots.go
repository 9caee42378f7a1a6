package daemon

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/reset"
	"github.com/subvault/subvault/daemon/rollback"
	"github.com/subvault/subvault/daemon/safefs"
)

// The reset's snapshots (docs/reset.md) carry the plan name "reset", which
// no plan may have while the configuration has a reset section: for
// ListSnapshots and Rollback that name is the reset.

// IsReset reports whether name is the reset's while the configuration in
// force has a reset section.
func (d *Daemon) IsReset(name string) bool {
	cfg := d.Config()
	return name == config.ResetPlan && cfg.Reset != nil && cfg.Plans[name] == nil
}

// ResetSnapshots lists the reset's snapshots, oldest first: the clean ones
// (pinned, always kept) and the previous states, kept when the keep of
// their subvolume keeps them. They are on no path the host sees (the top
// level of the root filesystem); Path says where on it. It takes a read
// slot of ctx's caller: listing mounts the top level, for a moment, where
// only the daemon sees it.
func (d *Daemon) ResetSnapshots(ctx context.Context) ([]SnapshotInfo, error) {
	cfg := d.Config()
	if cfg.Reset == nil {
		return nil, fmt.Errorf("%w: %q: the configuration has no reset section", ErrNoSuchPlan, config.ResetPlan)
	}
	ctx, release, err := d.reads.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	states, err := reset.States(ctx, cfg)
	if err != nil {
		return nil, err
	}
	kept := map[string]bool{}
	for _, sv := range cfg.Reset.Subvolumes {
		var of []btrfs.Snapshot
		for _, s := range states {
			if s.Subvolume == sv.Path {
				of = append(of, s)
			}
		}
		k := sv.Keep
		keep, _, _ := btrfs.SelectKeep(of, btrfs.KeepPolicy{Last: k.Last, Hourly: k.Hourly, Daily: k.Daily, Weekly: k.Weekly, Monthly: k.Monthly}, time.Now(), time.Local)
		for _, s := range keep {
			kept[s.Name()] = true
		}
	}
	out := make([]SnapshotInfo, len(states))
	for i, s := range states {
		out[i] = SnapshotInfo{Name: s.Name(), Path: s.Path, Time: s.Time, Kept: kept[s.Name()] || s.Pinned}
	}
	return out, nil
}

// rollbackReset is a rollback of a subvolume the reset manages: it cannot
// be replaced under the running system, and the next boot's reset would
// throw a prepared subvolume away. So the next reset makes it from the
// state asked for instead of from clean, with nothing copied over
// (reset.PrepareNext).
func (d *Daemon) rollbackReset(r RollbackRequest) (rollback.Result, error) {
	cfg := d.Config()
	sv := cfg.ResetSubvolume(r.Subvolume)
	if sv == nil || sv.Path != r.Subvolume {
		return rollback.Result{}, fmt.Errorf("%w: %s is not a subvolume the reset manages (reset.subvolumes: %s)",
			ErrInvalidArgument, r.Subvolume, strings.Join(resetPaths(cfg), ", "))
	}
	s, err := btrfs.ParseName(r.Snapshot)
	if err != nil || s.Plan != config.ResetPlan || s.Subvolume != sv.Path {
		return rollback.Result{}, fmt.Errorf("%w: %q is not a reset snapshot of %s (subvault snapshots reset lists them)",
			ErrNoSuchSnapshot, r.Snapshot, sv.Path)
	}
	if r.Options.SetDefault {
		return rollback.Result{}, fmt.Errorf("%w: set_default does not apply to a subvolume the reset manages: the reset puts the state in place at the next boot itself",
			ErrInvalidArgument)
	}
	msg := fmt.Sprintf("The next boot comes up in %s: its reset of %s makes the subvolume from that snapshot instead of the clean one, with nothing copied over.\n"+
		"The state %s is in now is kept as a previous state at that boot (subvault snapshots reset), as at every reset.\n"+
		"Reboot to use it. It lasts one boot: the reset at the boot after goes back to the clean snapshot as usual, keeping the persisted paths only.",
		r.Snapshot, sv.Path, sv.Path)
	if r.Options.DryRun {
		return rollback.Result{Message: "Would prepare: " + msg}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := reset.PrepareNext(ctx, cfg, sv.Path, r.Snapshot); err != nil {
		d.log.Error("cannot prepare the next boot's reset", "plan", config.ResetPlan, "subvolume", sv.Path, "snapshot", r.Snapshot, "err", err)
		return rollback.Result{}, err
	}
	d.log.Info(fmt.Sprintf("the next boot's reset of %s comes up in %s", sv.Path, r.Snapshot),
		"plan", config.ResetPlan, "subvolume", sv.Path, "snapshot", r.Snapshot)
	return rollback.Result{Prepared: true, Message: msg}, nil
}

func resetPaths(cfg *config.Config) []string {
	var out []string
	for _, sv := range cfg.Reset.Subvolumes {
		out = append(out, sv.Path)
	}
	return out
}

// ResetPlan is the reset as a plan, for the callers that authorize by
// plan: plan "reset" with the reset's subvolumes, which nobody is allowed
// by allow_users. Nil without a reset section.
func (d *Daemon) ResetPlan() *config.Plan {
	if !d.IsReset(config.ResetPlan) {
		return nil
	}
	return &config.Plan{Name: config.ResetPlan, Subvolumes: resetPaths(d.Config())}
}

// cloneResetState is CloneSnapshot of one of the reset's snapshots: a
// writable snapshot of it at target, which must be on the root filesystem
// (a btrfs snapshot stays on its filesystem).
func (d *Daemon) cloneResetState(name, target string) (string, error) {
	plan := d.ResetPlan()
	if err := checkNewTarget(plan, target, false); err != nil {
		return "", err
	}
	src, s, err := reset.OpenState(d.Config(), name)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoSuchSnapshot, err)
	}
	defer src.Close() //nolint:errcheck // a directory
	parent, err := safefs.OpenDir(filepath.Dir(target))
	if err != nil {
		return "", fmt.Errorf("%w: target %s: %w", ErrInvalidArgument, target, err)
	}
	defer parent.Close() //nolint:errcheck // a directory
	clone, _, err := btrfs.SnapshotAt(src, parent, filepath.Base(target), false)
	if errors.Is(err, unix.EXDEV) {
		return "", fmt.Errorf("%w: %s is not on the root filesystem, which holds the reset's snapshots: a clone is a btrfs snapshot, made on the filesystem of what it clones; name a path there",
			ErrInvalidArgument, target)
	}
	if err != nil {
		return "", err
	}
	clone.Close() //nolint:errcheck,gosec // a directory
	d.log.Info("snapshot cloned", "plan", config.ResetPlan, "snapshot", s.Name(), "clone", target)
	return target, nil
}

package planstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/safefs"
)

// Snapshots lists the local snapshots subvault made for the plan, in
// every snapshot directory of its subvolumes, oldest first.
func Snapshots(plan *config.Plan) ([]btrfs.Snapshot, error) {
	var all []btrfs.Snapshot
	seen := map[string]bool{}
	for _, sv := range plan.Subvolumes {
		dir := SnapshotDir(plan, sv)
		if seen[dir] {
			continue
		}
		seen[dir] = true
		f, err := OpenSnapshotDir(plan, sv, false)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		list, err := btrfs.ListSnapshotsAt(f)
		f.Close() //nolint:errcheck,gosec // a directory
		if err != nil {
			return nil, err
		}
		for _, s := range list {
			if s.Plan == plan.Name {
				all = append(all, s)
			}
		}
	}
	return all, nil
}

// ApplyKeepSnapshots deletes the plan's local snapshots that keep_snapshots
// does not keep, except those of the jobs in running, and returns the ones it
// keeps. Each deletion is logged. It goes on past a failed deletion and
// returns the first error.
//
// A plan with send_to keeps, besides, the snapshots its send pins name (the
// parents of the next incremental sends; a pin older than target_pin_for is
// dropped first, logged send-pin-dropped, and the next send to that target
// is full) and its newest snapshot of each subvolume (the next send's
// source).
func ApplyKeepSnapshots(cfg *config.Config, plan *config.Plan, log *slog.Logger, now time.Time, loc *time.Location, running map[uint32]bool) ([]btrfs.Snapshot, error) {
	all, err := Snapshots(plan)
	if err != nil {
		return nil, err
	}
	pinned, newest, err := sendHeld(cfg, plan, all, log, now)
	if err != nil {
		return nil, err
	}
	var candidates, busy []btrfs.Snapshot
	for _, s := range all {
		if running[s.JobID] || pinned[s.Name()] {
			busy = append(busy, s)
		} else {
			candidates = append(candidates, s)
		}
	}
	k := plan.KeepSnapshots
	keep, remove, reasons := btrfs.SelectKeep(candidates, btrfs.KeepPolicy{
		Last: k.Last, Hourly: k.Hourly, Daily: k.Daily, Weekly: k.Weekly, Monthly: k.Monthly,
	}, now, loc)
	var firstErr error
	for _, s := range remove {
		if newest[s.Name()] {
			keep = append(keep, s)
			log.Debug("snapshot kept: the next send's source", "snapshot", s.Path)
			continue
		}
		if err := DeleteSnapshot(plan, s); err != nil {
			log.Error("cannot delete snapshot", "snapshot", s.Path, "err", err)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		log.Info("snapshot deleted", journal.Event(journal.EventSnapshotDeleted), "snapshot", s.Path, "snapshot_job", s.JobID, "why", "not kept by keep_snapshots")
	}
	for _, s := range keep {
		log.Debug("snapshot kept", "snapshot", s.Path, "reasons", reasons[s.Name()])
	}
	return append(keep, busy...), firstErr
}

// OpenSnapshotDir opens the plan's snapshot directory of the subvolume sv,
// making it (root's, mode 0700) when create is set and it is missing. It
// is reached without following a link another user could have planted
// (safefs.OpenTrustedDir) and checked through the open descriptor: a
// directory owned by another user, or that others may enter, or a link or
// file in its place, is refused with an error that says what to do, since
// whoever controls it could swap a snapshot for a link to root's files. A
// missing one, without create, is an error wrapping os.ErrNotExist.
func OpenSnapshotDir(plan *config.Plan, sv string, create bool) (*os.File, error) {
	path := SnapshotDir(plan, sv)
	parent, err := safefs.OpenTrustedDir(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("cannot open the snapshot directory %s: %w", path, err)
	}
	defer parent.Close() //nolint:errcheck // a directory
	var dir *os.File
	if create {
		dir, err = safefs.MakePrivateDir(parent, filepath.Base(path), false)
	} else {
		dir, err = safefs.OpenPrivateDir(parent, filepath.Base(path))
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot directory of plan %s: %w", plan.Name, err)
	}
	return dir, nil
}

// OpenSubvolume opens the plan's subvolume sv through safefs.OpenTrustedDir
// and checks that it is a btrfs subvolume.
func OpenSubvolume(plan *config.Plan, sv string) (*os.File, btrfs.Subvolume, error) {
	f, err := safefs.OpenTrustedDir(sv)
	if err != nil {
		return nil, btrfs.Subvolume{}, fmt.Errorf("cannot open subvolume %s: %w", sv, err)
	}
	info, err := btrfs.InfoOf(f)
	if err != nil {
		f.Close() //nolint:errcheck,gosec // refused
		return nil, btrfs.Subvolume{}, fmt.Errorf("%w (name those in plans.%s.subvolumes that \"btrfs subvolume list /\" lists)", err, plan.Name)
	}
	return f, info, nil
}

// TakeSnapshot snapshots the plan's subvolume sv read-only as s (its Path is
// set) in the plan's snapshot directory, and returns the snapshot opened:
// the subvolume, the directory and the new snapshot are all reached through
// checked descriptors, and the snapshot is the one this call made (its
// parent UUID is the subvolume's), so it can be mounted from the descriptor
// whatever happened to the paths since.
func TakeSnapshot(plan *config.Plan, sv string, s *btrfs.Snapshot) (*os.File, error) {
	src, _, err := OpenSubvolume(plan, sv)
	if err != nil {
		return nil, err
	}
	defer src.Close() //nolint:errcheck // a directory
	dir, err := OpenSnapshotDir(plan, sv, true)
	if err != nil {
		return nil, err
	}
	defer dir.Close() //nolint:errcheck // a directory
	s.Path = filepath.Join(dir.Name(), s.Name())
	f, _, err := btrfs.SnapshotAt(src, dir, s.Name(), true)
	return f, err
}

// DeleteSnapshot deletes the plan's snapshot s in its checked snapshot
// directory (btrfs.DeleteSnapshotAt: a subvault name, a subvolume, nothing
// nested).
func DeleteSnapshot(plan *config.Plan, s btrfs.Snapshot) error {
	dir, err := snapshotDirOf(plan, s)
	if err != nil {
		return fmt.Errorf("cannot delete snapshot %s: %w", s.Path, err)
	}
	defer dir.Close() //nolint:errcheck // a directory
	return btrfs.DeleteSnapshotAt(dir, filepath.Base(s.Path))
}

// OpenSnapshot opens the plan's snapshot s (one Snapshots listed)
// through its checked snapshot directory, and checks that it is a
// subvolume.
func OpenSnapshot(plan *config.Plan, s btrfs.Snapshot) (*os.File, error) {
	dir, err := snapshotDirOf(plan, s)
	if err != nil {
		return nil, fmt.Errorf("cannot open snapshot %s: %w", s.Name(), err)
	}
	defer dir.Close() //nolint:errcheck // a directory
	f, err := btrfs.OpenAt(dir, filepath.Base(s.Path))
	if err != nil {
		return nil, fmt.Errorf("cannot open snapshot %s: %w", s.Name(), err)
	}
	if _, err := btrfs.InfoOf(f); err != nil {
		f.Close() //nolint:errcheck,gosec // refused
		return nil, fmt.Errorf("cannot open snapshot %s: %w", s.Name(), err)
	}
	return f, nil
}

// snapshotDirOf opens the directory the plan's snapshot s was listed in:
// one of the plan's snapshot directories, or, for a snapshot made with an
// older configuration, the one of the subvolume its name records.
func snapshotDirOf(plan *config.Plan, s btrfs.Snapshot) (*os.File, error) {
	sv := s.Subvolume
	for _, p := range plan.Subvolumes {
		if SnapshotDir(plan, p) == filepath.Dir(s.Path) {
			sv = p
			break
		}
	}
	return OpenSnapshotDir(plan, sv, false)
}

// sendHeld names the snapshots the plan's sends need kept: the pinned
// parents still within target_pin_for (kept and not counted), and the
// newest of each subvolume when the plan has send_to (counted, never
// deleted). Pins too old are dropped here, each logged.
func sendHeld(cfg *config.Config, plan *config.Plan, all []btrfs.Snapshot, log *slog.Logger, now time.Time) (pinned, newest map[string]bool, err error) {
	pinned, newest = map[string]bool{}, map[string]bool{}
	if cfg == nil {
		return pinned, newest, nil
	}
	left, dropped, err := dropOldPins(cfg, plan, now)
	if err != nil {
		return nil, nil, fmt.Errorf("keep_snapshots: %w", err)
	}
	for _, p := range dropped {
		why := fmt.Sprintf("pinned for longer than target_pin_for (%v) while the target was away", pinFor(plan))
		if !slices.Contains(plan.SendTo, p.Target) {
			why = "the target is no longer in send_to"
		}
		log.Warn("send pin dropped: the next send to the target will be full", journal.Event(journal.EventSendPinDropped),
			"plan", plan.Name, "target", p.Target, "subvolume", p.Subvolume, "snapshot", p.Snapshot, "since", p.Since, "why", why)
	}
	for _, p := range left {
		pinned[p.Snapshot] = true
	}
	if len(plan.SendTo) > 0 {
		last := map[string]btrfs.Snapshot{}
		for _, s := range all {
			if l, ok := last[s.Subvolume]; !ok || s.Time.After(l.Time) || (s.Time.Equal(l.Time) && s.JobID > l.JobID) {
				last[s.Subvolume] = s
			}
		}
		for _, s := range last {
			newest[s.Name()] = true
		}
	}
	return pinned, newest, nil
}

func pinFor(plan *config.Plan) time.Duration {
	if plan.TargetPinFor > 0 {
		return plan.TargetPinFor
	}
	return config.DefaultTargetPinFor
}

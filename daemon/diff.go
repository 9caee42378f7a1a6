package daemon

import (
	"context"
	"fmt"
	"strings"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon/compare"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/restic"
)

// DiffLive names the plan's subvolumes as they are now, as a side of Diff.
const DiffLive = "live"

// Change is one path that differs between the two sides of a Diff: its
// kind (contract.ChangeAdded, ...) and path, a directory's ending in "/".
type Change = contract.Change

// diffSide is a side of a Diff as the caller named it, and what it names.
type diffSide struct {
	arg string
	compare.Side
}

// Diff lists what differs from a to b in the plan (compare.Diff.Run says
// how each pair is compared). Each side is an archive of the plan (an id
// as ListArchives shows it, or "latest", the plan's newest), "live" (the
// plan's subvolumes now), the name of one of its local snapshots, or a
// copy of one on an onsite target reachable in the host (TARGET:NAME); at
// least one side is an archive.
func (d *Daemon) Diff(ctx context.Context, planName, a, b string) ([]Change, error) {
	cfg, plan, err := d.plan(planName)
	if err != nil {
		return nil, err
	}
	sa, err := d.diffSide(cfg, plan, a)
	if err != nil {
		return nil, err
	}
	sb, err := d.diffSide(cfg, plan, b)
	if err != nil {
		if sa.Open != nil {
			sa.Open.Close() //nolint:errcheck,gosec // a directory
		}
		return nil, err
	}
	// A target's copy, opened, is closed by compare.Diff.Run; before it,
	// here.
	ran := false
	defer func() {
		for _, s := range []diffSide{sa, sb} {
			if s.Open != nil && !ran {
				s.Open.Close() //nolint:errcheck,gosec // a directory
			}
		}
	}()
	if !sa.IsArchive() && !sb.IsArchive() {
		return nil, fmt.Errorf("%w: neither %q nor %q is an archive; compare an archive (an id or \"latest\") with another, with \"live\" or with a snapshot", ErrInvalidArgument, a, b)
	}
	// One slot for the whole call: its restic runs one after the other,
	// then the walk.
	ctx, release, err := d.reads.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	runner, err := planstore.NewRunner(cfg, plan, d.log.With("plan", planName))
	if err != nil {
		return nil, err
	}
	archives, err := d.planArchives(ctx, cfg, plan)
	if err != nil {
		return nil, err
	}
	for _, s := range []*diffSide{&sa, &sb} {
		if s.IsArchive() {
			if s.Archive, err = resolveArchive(plan.Name, s.arg, archives); err != nil {
				return nil, err
			}
		}
	}
	ran = true
	return compare.Diff{Config: cfg, Plan: plan, Runner: runner, A: sa.Side, B: sb.Side}.Run(ctx)
}

func (d *Daemon) diffSide(cfg *config.Config, plan *config.Plan, arg string) (diffSide, error) {
	if target, name, ok := splitTargetCopy(arg); ok {
		c, err := openTargetCopy(cfg, plan, target, name)
		return diffSide{arg: arg, Side: compare.Side{Snapshot: c.Snapshot, Open: c.Open}}, err
	}
	switch {
	case arg == DiffLive:
		return diffSide{arg: arg, Side: compare.Side{Live: true}}, nil
	case arg == "latest" || isHexPrefix(arg):
		return diffSide{arg: arg}, nil
	case strings.Contains(arg, "@"):
		s, err := d.findSnapshot(plan, arg)
		return diffSide{arg: arg, Side: compare.Side{Snapshot: s}}, err
	}
	return diffSide{}, fmt.Errorf("%w: %q is neither an archive (an id as ListArchives shows it, or \"latest\"), nor \"live\", nor a snapshot name of plan %s, nor a target's copy (TARGET:NAME)", ErrInvalidArgument, arg, plan.Name)
}

// resolveArchive finds the plan's archive arg (an id or a prefix of one,
// or "latest") among its archives and returns its full id.
func resolveArchive(plan, arg string, archives []restic.Archive) (string, error) {
	var found []restic.Archive
	for _, a := range archives {
		switch {
		case arg == "latest":
			if len(found) == 0 || a.Time.After(found[0].Time) {
				found = []restic.Archive{a}
			}
		case strings.HasPrefix(a.ID, arg):
			found = append(found, a)
		}
	}
	switch {
	case len(found) == 0 && arg == "latest":
		return "", fmt.Errorf("%w: plan %s has no archive yet", ErrNoSuchArchive, plan)
	case len(found) == 0:
		return "", fmt.Errorf("%w: plan %s has no archive %s (subvault archives %s lists them)", ErrNoSuchArchive, plan, arg, plan)
	case len(found) > 1:
		return "", fmt.Errorf("%w: %s is the start of %d archive ids of plan %s; give more of it", ErrInvalidArgument, arg, len(found), plan)
	}
	return found[0].ID, nil
}

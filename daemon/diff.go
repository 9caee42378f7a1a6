package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/compare"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/safefs"
	"github.com/subvault/subvault/restic"
)

// DiffLive names the plan's subvolumes as they are now, as a side of Diff.
const DiffLive = "live"

// Change is one path that differs between the two sides of a Diff: its
// kind (restic.ChangeAdded, ...) and path, a directory's ending in "/".
type Change = restic.Change

// diffSide is one side of a Diff: an archive (its full id), the live
// subvolumes, or a local snapshot.
type diffSide struct {
	arg      string
	archive  string
	live     bool
	snapshot btrfs.Snapshot
}

func (s diffSide) isArchive() bool { return !s.live && s.snapshot.Path == "" }

// Diff lists what differs from a to b in the plan. Each side is an archive
// of the plan (an id as ListArchives shows it, or "latest", the plan's
// newest), "live" (the plan's subvolumes now) or the name of one of its
// local snapshots; at least one side is an archive.
//
// Two archives are compared by restic diff (content, type, added,
// removed) and by their listings (mode, owner, modification time). An
// archive and a tree on disk are compared by metadata, as restic decides what to read again (type,
// size, modification time, mode, owner), leaving out what the plan's
// backups leave out; contents are not read. Directories above the plan's
// subvolumes are left out either way: they are not the plan's data.
func (d *Daemon) Diff(ctx context.Context, planName, a, b string) ([]Change, error) {
	cfg, plan, err := d.plan(planName)
	if err != nil {
		return nil, err
	}
	sa, err := d.diffSide(plan, a)
	if err != nil {
		return nil, err
	}
	sb, err := d.diffSide(plan, b)
	if err != nil {
		return nil, err
	}
	if !sa.isArchive() && !sb.isArchive() {
		return nil, fmt.Errorf("%w: neither %q nor %q is an archive; compare an archive (an id or \"latest\") with another, with \"live\" or with a snapshot", ErrInvalidArgument, a, b)
	}
	// One slot for the whole call: its restic runs one after the other,
	// then the walk.
	ctx, release, err := d.reads.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	log := d.log.With("plan", planName)
	runner, err := planstore.NewRunner(cfg, plan, log)
	if err != nil {
		return nil, err
	}
	archives, err := d.planArchives(ctx, cfg, plan)
	if err != nil {
		return nil, err
	}
	for _, s := range []*diffSide{&sa, &sb} {
		if s.isArchive() {
			if s.archive, err = resolveArchive(plan.Name, s.arg, archives); err != nil {
				return nil, err
			}
		}
	}
	if sa.isArchive() && sb.isArchive() {
		return archivesDiff(ctx, runner, sa.archive, sb.archive, plan.Subvolumes)
	}

	archive, tree := sa, sb
	if !sa.isArchive() {
		archive, tree = sb, sa
	}
	nodes, err := runner.List(ctx, archive.archive)
	if err != nil {
		return nil, err
	}
	// Each root is opened as the daemon opens what it backs up: a
	// subvolume as root's own paths are, a snapshot through its checked
	// snapshot directory.
	var roots []compare.Root
	defer func() {
		for _, r := range roots {
			if r.Open != nil {
				r.Open.Close() //nolint:errcheck,gosec // a directory
			}
		}
	}()
	if tree.live {
		for _, sv := range plan.Subvolumes {
			f, err := safefs.OpenTrustedDir(sv)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("cannot compare %s: %w", sv, err)
			}
			roots = append(roots, compare.Root{Path: sv, Dir: sv, Open: f})
		}
	} else {
		f, err := planstore.OpenSnapshot(plan, tree.snapshot)
		if err != nil {
			return nil, err
		}
		roots = []compare.Root{{Path: tree.snapshot.Subvolume, Dir: tree.snapshot.Path, Open: f}}
	}
	excluder, err := planExcluder(cfg, plan)
	if err != nil {
		return nil, err
	}
	return compare.Trees(ctx, nodes, compare.Options{Roots: roots, Exclude: excluder, ArchiveFirst: sa.isArchive()})
}

func (d *Daemon) diffSide(plan *config.Plan, arg string) (diffSide, error) {
	switch {
	case arg == DiffLive:
		return diffSide{arg: arg, live: true}, nil
	case arg == "latest" || isHexPrefix(arg):
		return diffSide{arg: arg}, nil
	case strings.Contains(arg, "@"):
		s, err := d.findSnapshot(plan, arg)
		return diffSide{arg: arg, snapshot: s}, err
	}
	return diffSide{}, fmt.Errorf("%w: %q is neither an archive (an id as ListArchives shows it, or \"latest\"), nor \"live\", nor a snapshot name of plan %s", ErrInvalidArgument, arg, plan.Name)
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

// archivesDiff compares two archives: restic diff for what came, went,
// changed type or content, and their listings for metadata (restic's own
// --metadata would mark nearly every entry).
func archivesDiff(ctx context.Context, runner *restic.Runner, a, b string, subvolumes []string) ([]Change, error) {
	changes, err := runner.Diff(ctx, a, b)
	if err != nil {
		return nil, err
	}
	changes = withoutAncestors(changes, subvolumes)
	first, err := runner.List(ctx, a)
	if err != nil {
		return nil, err
	}
	second, err := runner.List(ctx, b)
	if err != nil {
		return nil, err
	}
	reported := map[string]bool{}
	for _, c := range changes {
		p := c.Path
		if p != "/" {
			p = strings.TrimSuffix(p, "/")
		}
		reported[restic.JSONPath(p)] = true
	}
	changes = append(changes, compare.Listings(first, second, subvolumes, reported)...)
	slices.SortStableFunc(changes, func(a, b Change) int { return strings.Compare(a.Path, b.Path) })
	return changes, nil
}

// withoutAncestors drops the changes of the directories above the
// subvolumes: restic keeps their metadata in every archive, but they are
// not the plan's data.
func withoutAncestors(changes []Change, subvolumes []string) []Change {
	out := changes[:0]
	for _, c := range changes {
		p := strings.TrimSuffix(c.Path, "/")
		above := false
		for _, sv := range subvolumes {
			if sv != "/" && (p == "" || strings.HasPrefix(sv, p+"/")) {
				above = true
			}
		}
		if !above {
			out = append(out, c)
		}
	}
	return out
}

// planExcluder is what the plan's backups leave out: its exclude
// patterns and exclude_file, exclude_if_present, the same options among
// extra_args, and what every backup leaves out (planstore.AlwaysExcluded).
func planExcluder(cfg *config.Config, plan *config.Plan) (*compare.Excluder, error) {
	b := plan.Backup
	patterns := append(append([]string(nil), b.Exclude...), planstore.AlwaysExcluded(cfg, plan)...)
	ifPresent := append([]string(nil), b.ExcludeIfPresent...)
	files := []string{}
	if b.ExcludeFile != "" {
		files = append(files, b.ExcludeFile)
	}
	args := b.ExtraArgs
	for i := 0; i < len(args); i++ {
		name, value, hasValue := strings.Cut(args[i], "=")
		if !hasValue && i+1 < len(args) {
			value = args[i+1]
		}
		switch name {
		case "--exclude", "-e":
			patterns = append(patterns, value)
		case "--exclude-file":
			files = append(files, value)
		case "--exclude-if-present":
			ifPresent = append(ifPresent, value)
		case "--exclude-caches":
			ifPresent = append(ifPresent, "CACHEDIR.TAG:Signature: 8a477f597d28d172789f06886806bc55")
			continue
		default:
			continue
		}
		if !hasValue {
			i++
		}
	}
	for _, f := range files {
		lines, err := excludeFileLines(f)
		if err != nil {
			return nil, err
		}
		patterns = append(patterns, lines...)
	}
	return compare.NewExcluder(patterns, ifPresent), nil
}

// excludeFileLines reads an exclude file as restic does: one pattern a
// line, blank lines and lines starting with # skipped, $VARIABLES
// expanded.
func excludeFileLines(file string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("cannot read the exclude file %s: %w", file, err)
	}
	defer f.Close() //nolint:errcheck // read only
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, os.ExpandEnv(line))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cannot read the exclude file %s: %w", file, err)
	}
	return out, nil
}

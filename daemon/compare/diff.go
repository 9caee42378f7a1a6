package compare

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/safefs"
	"github.com/subvault/subvault/restic"
)

// Side is one side of a Diff: an archive (its full id), the plan's
// subvolumes as they are now (Live), or one of its local snapshots.
type Side struct {
	Archive  string
	Live     bool
	Snapshot btrfs.Snapshot
	// Open, when set, is the snapshot's tree, opened and checked by the
	// caller (a copy on an onsite target, which is not in the plan's
	// snapshot directories); Run closes it.
	Open *os.File
}

// IsArchive reports whether the side is an archive.
func (s Side) IsArchive() bool { return !s.Live && s.Snapshot.Path == "" }

// Diff is one comparison of two sides of a plan, A the older, at least one
// of them an archive; Runner is the plan's restic runner.
type Diff struct {
	Config *config.Config
	Plan   *config.Plan
	Runner *restic.Runner
	A, B   Side
}

// Run lists what differs from A to B, sorted by path; a directory's path
// ends in "/".
//
// Two archives are compared by restic diff (content, type, added,
// removed) and by their listings (mode, owner, modification time). An
// archive and a tree on disk are compared by metadata, as restic decides
// what to read again (type, size, modification time, mode, owner), leaving
// out what the plan's backups leave out; contents are not read.
// Directories above the plan's subvolumes are left out either way: they are
// not the plan's data.
func (d Diff) Run(ctx context.Context) ([]contract.Change, error) {
	plan := d.Plan
	for _, s := range []Side{d.A, d.B} {
		if s.Open != nil {
			defer s.Open.Close() //nolint:errcheck // a directory (closed once more below: os.File allows it)
		}
	}
	if d.A.IsArchive() && d.B.IsArchive() {
		return archivesDiff(ctx, d.Runner, d.A.Archive, d.B.Archive, plan.Subvolumes)
	}
	archive, tree := d.A, d.B
	if !d.A.IsArchive() {
		archive, tree = d.B, d.A
	}
	if !archive.IsArchive() {
		return nil, errors.New("neither side of the comparison is an archive")
	}
	nodes, err := d.Runner.List(ctx, archive.Archive)
	if err != nil {
		return nil, err
	}
	// Each root is opened as the daemon opens what it backs up: a
	// subvolume as root's own paths are, a snapshot through its checked
	// snapshot directory.
	var roots []Root
	defer func() {
		for _, r := range roots {
			if r.Open != nil {
				r.Open.Close() //nolint:errcheck,gosec // a directory
			}
		}
	}()
	if tree.Live {
		for _, sv := range plan.Subvolumes {
			f, err := safefs.OpenTrustedDir(sv)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("cannot compare %s: %w", sv, err)
			}
			roots = append(roots, Root{Path: sv, Dir: sv, Open: f})
		}
	} else {
		f := tree.Open
		if f == nil {
			if f, err = planstore.OpenSnapshot(plan, tree.Snapshot); err != nil {
				return nil, err
			}
		}
		roots = []Root{{Path: tree.Snapshot.Subvolume, Dir: tree.Snapshot.Path, Open: f}}
	}
	excluder, err := planExcluder(d.Config, plan)
	if err != nil {
		return nil, err
	}
	return Trees(ctx, nodes, Options{Roots: roots, Exclude: excluder, ArchiveFirst: d.A.IsArchive()})
}

// archivesDiff compares two archives: restic diff for what came, went,
// changed type or content, and their listings for metadata (restic's own
// --metadata would mark nearly every entry).
func archivesDiff(ctx context.Context, runner *restic.Runner, a, b string, subvolumes []string) ([]contract.Change, error) {
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
	changes = append(changes, Listings(first, second, subvolumes, reported)...)
	slices.SortStableFunc(changes, func(a, b contract.Change) int { return strings.Compare(a.Path, b.Path) })
	return changes, nil
}

// withoutAncestors drops the changes of the directories above the
// subvolumes: restic keeps their metadata in every archive, but they are
// not the plan's data.
func withoutAncestors(changes []contract.Change, subvolumes []string) []contract.Change {
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
func planExcluder(cfg *config.Config, plan *config.Plan) (*Excluder, error) {
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
	return NewExcluder(patterns, ifPresent), nil
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

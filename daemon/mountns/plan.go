package mountns

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// stepKind says what a step mounts and how a failure of it is treated.
type stepKind int

const (
	// stepSnapshot mounts a snapshot read-only over its Target.
	stepSnapshot stepKind = iota
	// stepSubmount binds a host mount that a snapshot covered back onto its
	// own path; a mount point missing from the snapshot is skipped, not fatal.
	stepSubmount
	// stepKeepHost binds a KeepHost path back from the host view.
	stepKeepHost
)

// step is one mount of the namespace, in the order the plan gives.
type step struct {
	kind stepKind
	// source is the path opened before any mount: the snapshot, or the host
	// path itself for the other kinds.
	source string
	// path is where it is mounted: the Target, the submount's mount point
	// or the KeepHost path.
	path string
	// under is the Target a submount or KeepHost path lies below, for messages.
	under string
	// dir and writable are the snapshot Bind's; clone is the mount
	// cloned from dir before the namespace was made.
	dir      *os.File
	writable bool
	clone    int
}

// leftOut is a host mount below a Target that the namespace leaves out on
// purpose, so that the snapshot shows its path.
type leftOut struct {
	path, under, reason string
}

// plan orders the mounts of one namespace: snapshots and the host mounts they
// cover, shallowest path first, so that a mount never lands on a path a later
// one hides; then the KeepHost paths.
//
// mountPoints are the mount points of the namespace before any change (field
// 5 of mountinfo, unescaped), in any order and with repeats. leaveOut, if not
// nil, is asked about each host mount below a Target that no shallower host
// mount it brings back carries, shallowest first: a reason leaves it out (and
// what is below it is then asked about in turn), "" brings it back.
func plan(binds []Bind, keepHost []string, mountPoints []string, leaveOut func(mountPoint, target string) string) ([]step, []leftOut, error) {
	if err := validate(binds, keepHost); err != nil {
		return nil, nil, err
	}
	targets := make(map[string]bool, len(binds))
	for _, b := range binds {
		targets[b.Target] = true
	}
	keep := slices.Compact(slices.Sorted(slices.Values(keepHost)))

	// The host mounts a snapshot hides: below a Target, with no deeper
	// Target between, not a Target themselves, and not already carried by
	// a shallower one's recursive bind or by a KeepHost path.
	candidates := map[string]string{} // mount point -> Target above it
	for _, m := range mountPoints {
		if targets[m] || underAny(m, keep, true) {
			continue
		}
		if t, ok := deepestAbove(m, targets); ok {
			candidates[m] = t
		}
	}
	var steps []step
	for _, b := range binds {
		steps = append(steps, step{kind: stepSnapshot, source: b.Source, path: b.Target, under: b.Target, dir: b.Dir, writable: b.Writable})
	}
	// Shallowest first, so that whether a mount is carried depends only on
	// the mounts above it that are brought back: one below a mount left out
	// is decided on its own.
	order := slices.SortedFunc(maps.Keys(candidates), func(a, b string) int {
		return cmp.Or(cmp.Compare(depth(a), depth(b)), strings.Compare(a, b))
	})
	brought := map[string]string{} // mount point -> Target above it
	var left []leftOut
	for _, m := range order {
		t := candidates[m]
		carried := false
		for p, pt := range brought {
			if pt == t && under(m, p) {
				carried = true
				break
			}
		}
		if carried {
			continue
		}
		if leaveOut != nil {
			if reason := leaveOut(m, t); reason != "" {
				left = append(left, leftOut{path: m, under: t, reason: reason})
				continue
			}
		}
		brought[m] = t
		steps = append(steps, step{kind: stepSubmount, source: m, path: m, under: t})
	}
	slices.SortFunc(steps, func(a, b step) int {
		return cmp.Or(cmp.Compare(depth(a.path), depth(b.path)), cmp.Compare(a.kind, b.kind), strings.Compare(a.path, b.path))
	})

	// A KeepHost path needs a mount only where a snapshot, not the host,
	// is what its nearest mounted ancestor shows.
	kept := map[string]bool{}
	for _, s := range steps {
		if s.kind == stepSubmount {
			kept[s.path] = true
		}
	}
	var keepSteps []step
	for _, k := range keep {
		best, bestIsTarget := "", false
		consider := func(p string, isTarget bool) {
			if under(k, p) && (best == "" || depth(p) > depth(best)) {
				best, bestIsTarget = p, isTarget
			}
		}
		for t := range targets {
			consider(t, true)
		}
		for m := range kept {
			consider(m, false)
		}
		for _, other := range keep {
			consider(other, false)
		}
		if bestIsTarget {
			keepSteps = append(keepSteps, step{kind: stepKeepHost, source: k, path: k, under: best})
		}
	}
	slices.SortFunc(keepSteps, func(a, b step) int {
		return cmp.Or(cmp.Compare(depth(a.path), depth(b.path)), strings.Compare(a.path, b.path))
	})
	return append(steps, keepSteps...), left, nil
}

func validate(binds []Bind, keepHost []string) error {
	if len(binds) == 0 && len(keepHost) == 0 {
		return nil // Options.Empty; Run refuses it otherwise
	}
	if len(binds) == 0 {
		return errors.New("cannot run in a backup's namespace: no snapshot to mount")
	}
	seen := map[string]string{}
	for _, b := range binds {
		if !clean(b.Source) || !clean(b.Target) {
			return fmt.Errorf("cannot mount snapshot %q over %q in the backup's namespace: both paths must be absolute and clean", b.Source, b.Target)
		}
		if prev, ok := seen[b.Target]; ok {
			return fmt.Errorf("cannot mount snapshot %s over %s in the backup's namespace: snapshot %s is already mounted there", b.Source, b.Target, prev)
		}
		seen[b.Target] = b.Source
	}
	for _, k := range keepHost {
		if !clean(k) {
			return fmt.Errorf("cannot keep %q as on the host in the backup's namespace: the path must be absolute and clean", k)
		}
		for _, b := range binds {
			if k == b.Target || under(b.Target, k) {
				return fmt.Errorf("cannot keep %s as on the host in the backup's namespace: it would hide snapshot %s mounted over %s", k, b.Source, b.Target)
			}
		}
	}
	return nil
}

// clean reports whether p is absolute and in the form filepath.Clean gives.
func clean(p string) bool {
	return filepath.IsAbs(p) && filepath.Clean(p) == p
}

// under reports whether p lies strictly below dir.
func under(p, dir string) bool {
	if dir == "/" {
		return p != "/" && strings.HasPrefix(p, "/")
	}
	return strings.HasPrefix(p, dir+"/")
}

// underAny reports whether p lies below one of dirs, or is one if orEqual.
func underAny(p string, dirs []string, orEqual bool) bool {
	for _, d := range dirs {
		if under(p, d) || (orEqual && p == d) {
			return true
		}
	}
	return false
}

// deepestAbove returns the deepest of dirs that p lies strictly below.
func deepestAbove(p string, dirs map[string]bool) (string, bool) {
	best, found := "", false
	for d := range dirs {
		if under(p, d) && (!found || depth(d) > depth(best)) {
			best, found = d, true
		}
	}
	return best, found
}

// depth counts the components of a clean absolute path: 0 for "/".
func depth(p string) int {
	if p == "/" {
		return 0
	}
	return strings.Count(p, "/")
}

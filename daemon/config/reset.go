package config

import (
	"fmt"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/subvault/subvault/btrfs"
)

// The reset section (docs/configuration.md, "Reset"): subvolumes that go
// back to a clean snapshot at every boot, with chosen paths kept.

var (
	resetKeys          = []string{"subvolumes"}
	resetSubvolumeKeys = []string{"path", "clean", "persist", "keep"}
)

// ResetLatest is a reset subvolume's clean when it sets none: the newest
// clean snapshot `subvault reset init PATH` made.
const ResetLatest = "latest"

const (
	resetExpected          = "a mapping with subvolumes: a list of {path, clean, persist, keep}"
	resetSubvolumesExpect  = "a list of subvolumes to reset at boot, such as [{path: /, persist: [/etc/machine-id, /var/lib/subvault]}]"
	resetSubvolumeExpected = "a mapping with path (required), clean, persist and keep"
	resetPathExpected      = `"/" or the absolute clean path where a subvolume of the root filesystem is mounted, such as /home`
	resetCleanExpected     = `"latest" (the default: the newest clean snapshot subvault reset init made) or the exact name of one, such as subvault-pinned@reset@20260101T120000Z@0@-`
	persistExpected        = "a list of absolute clean paths under the subvolume's path (files or directories), such as [/etc/machine-id, /var/lib/subvault]"
)

// reset decodes the reset section into cfg.Reset.
func (p *parser) reset(e pair, path string, cfg *Config) {
	cfg.Reset = &Reset{}
	m := p.mapping(e.key, e.value, path, resetExpected, resetKeys)
	if m == nil {
		return
	}
	se, spath, ok := m.get("subvolumes")
	if !ok {
		p.missing(m, "subvolumes", resetSubvolumesExpect+"; or no reset section")
		return
	}
	items, ok := p.list(se.value, spath, resetSubvolumesExpect)
	if !ok {
		return
	}
	if len(items) == 0 {
		p.fail(resolve(se.value), spath, "is empty", resetSubvolumesExpect+"; or no reset section to reset nothing")
		return
	}
	seen := map[string]int{}
	var at []*yaml.Node // where each entry's path is, for the checks across entries
	for i, item := range items {
		ipath := index(spath, i)
		sv, node := p.resetSubvolume(item, ipath)
		if sv == nil {
			continue
		}
		if first, dup := seen[sv.Path]; dup {
			p.fail(node, join(ipath, "path"), fmt.Sprintf("%q is listed twice (also at index %d)", sv.Path, first),
				"each subvolume once, with all its persisted paths in one persist list")
			continue
		}
		seen[sv.Path] = i
		cfg.Reset.Subvolumes = append(cfg.Reset.Subvolumes, sv)
		at = append(at, node)
	}
	// A persisted path under a deeper reset subvolume is in that subvolume,
	// not in the one whose persist lists it: the reset of the outer one
	// would not find it (and fail), and the inner one would throw it away.
	for i, sv := range cfg.Reset.Subvolumes {
		for _, other := range cfg.Reset.Subvolumes {
			if other == sv || !under(other.Path, sv.Path) {
				continue
			}
			for _, keep := range sv.Persist {
				if keep == other.Path || under(keep, other.Path) {
					p.fail(at[i], join(index(spath, seen[sv.Path]), "persist"),
						fmt.Sprintf("%q is in %s, another subvolume the reset manages", keep, other.Path),
						"each persisted path in the persist list of the subvolume it is in (here the one with path: "+other.Path+")")
				}
			}
		}
	}
}

// resetSubvolume decodes one entry of reset.subvolumes. It returns nil
// when the entry has no usable path, and the node of its path (or the
// entry) for later messages.
func (p *parser) resetSubvolume(n *yaml.Node, path string) (*ResetSubvolume, *yaml.Node) {
	m := p.mapping(nil, n, path, resetSubvolumeExpected, resetSubvolumeKeys)
	if m == nil {
		return nil, resolve(n)
	}
	sv := &ResetSubvolume{Clean: ResetLatest, Keep: DefaultResetKeep}
	e, ppath, ok := m.get("path")
	if !ok {
		p.missing(m, "path", resetPathExpected)
		return nil, m.at
	}
	v, ok := p.absPath(e.value, ppath, resetPathExpected, true)
	if !ok {
		return nil, resolve(e.value)
	}
	sv.Path = v
	node := resolve(e.value)
	if e, cpath, ok := m.get("clean"); ok {
		sv.Clean = p.resetClean(e.value, cpath, sv.Path)
	}
	if e, kpath, ok := m.get("persist"); ok {
		sv.Persist = p.persist(e.value, kpath, sv.Path)
	}
	if e, kpath, ok := m.get("keep"); ok {
		sv.Keep = KeepSnapshots{}
		before := len(p.errs.List)
		p.keepSnapshots(e, kpath, &sv.Keep)
		if len(p.errs.List) == before && sv.Keep == (KeepSnapshots{}) {
			p.fail(e.key, kpath, "keeps no previous state, so nothing a boot throws away could be brought back",
				"at least one count above 0, such as {last: 5} (the default)")
		}
	}
	return sv, node
}

// resetClean decodes clean: "latest" or the exact name of a clean snapshot
// of the subvolume at subvol (pinned, plan reset).
func (p *parser) resetClean(n *yaml.Node, path, subvol string) string {
	v, ok := p.str(n, path, resetCleanExpected)
	if !ok {
		return ResetLatest
	}
	if v == ResetLatest {
		return v
	}
	n = resolve(n)
	s, err := btrfs.ParseName(v)
	switch {
	case err != nil:
		p.fail(n, path, fmt.Sprintf("%q is not a snapshot name", v), resetCleanExpected)
	case !s.Pinned || s.Plan != ResetPlan:
		p.fail(n, path, fmt.Sprintf("%q is not a clean snapshot (those are named subvault-pinned@reset@...)", v), resetCleanExpected)
	case s.Subvolume != subvol:
		p.fail(n, path, fmt.Sprintf("%q is a clean snapshot of %s, not of %s", v, s.Subvolume, subvol), resetCleanExpected)
	default:
		return v
	}
	return ResetLatest
}

// persist decodes a reset subvolume's persist list: absolute clean paths
// strictly under subvol, each once, none under another.
func (p *parser) persist(n *yaml.Node, path, subvol string) []string {
	items, ok := p.list(n, path, persistExpected)
	if !ok {
		return nil
	}
	var out []string
	seen := map[string]int{}
	for i, item := range items {
		ipath := index(path, i)
		v, ok := p.absPath(item, ipath, persistExpected, true)
		if !ok {
			continue
		}
		item = resolve(item)
		if first, dup := seen[v]; dup {
			p.fail(item, ipath, fmt.Sprintf("%q is listed twice (also at index %d)", v, first), "each path once")
			continue
		}
		if !under(v, subvol) {
			what := fmt.Sprintf("%q is not under %s, the subvolume's path", v, subvol)
			if v == subvol {
				what = fmt.Sprintf("%q is the subvolume itself: persisting all of it is no reset", v)
			}
			p.fail(item, ipath, what, persistExpected)
			continue
		}
		bad := false
		for j, other := range out {
			var inner, outer string
			switch {
			case under(v, other):
				inner, outer = v, other
			case under(other, v):
				inner, outer = other, v
			default:
				continue
			}
			p.fail(item, ipath, fmt.Sprintf("%q is under %q (index %d): the outer one is persisted whole",
				inner, outer, seen[out[j]]), "only the outer path")
			bad = true
			break
		}
		if bad {
			continue
		}
		seen[v] = i
		out = append(out, v)
	}
	return out
}

// under reports whether the clean absolute path p is strictly below dir.
func under(p, dir string) bool {
	if dir == "/" {
		return p != "/"
	}
	return strings.HasPrefix(p, dir+"/")
}

// resetReservesPlan refuses a plan named like the reset's snapshots while
// there is a reset section: its snapshots and the reset's would be one set.
func (p *parser) resetReservesPlan(cfg *Config, planAt map[string]*yaml.Node) {
	if cfg.Reset == nil || cfg.Plans[ResetPlan] == nil {
		return
	}
	p.fail(planAt[ResetPlan], join("plans", ResetPlan), fmt.Sprintf("the plan name %q is reserved for the reset's snapshots while the file has a reset section", ResetPlan),
		"another plan name")
}

// ResetSubvolume returns the reset entry of the subvolume at path, or nil.
func (c *Config) ResetSubvolume(path string) *ResetSubvolume {
	if c.Reset == nil {
		return nil
	}
	path = filepath.Clean(path)
	for _, sv := range c.Reset.Subvolumes {
		if sv.Path == path {
			return sv
		}
	}
	return nil
}

// ResetWarnings are what check-config warns about a reset section without
// refusing it: a reset of / that does not persist the state directory
// (where the reset's record and the daemon's state live) or
// /etc/machine-id (a new one at every boot confuses the journal and DHCP).
// A path is fine when the reset subvolume it is in persists it.
func (c *Config) ResetWarnings() []string {
	if c.ResetSubvolume("/") == nil {
		return nil
	}
	var out []string
	for _, want := range []struct{ path, why string }{
		{c.Settings.StateDir, "the state directory (settings.state_dir): the reset's result record, the job history and the daemon's state would be lost at every boot"},
		{"/etc/machine-id", "the machine id: every boot would come up as a new machine to the journal, DHCP and systemd"},
	} {
		sv := c.resetSubvolumeOf(want.path)
		if !persisted(sv.Persist, want.path) {
			out = append(out, fmt.Sprintf("the reset of %s does not persist %s, %s (add it to that subvolume's persist, unless it is on a subvolume of its own that no reset touches)",
				sv.Path, want.path, want.why))
		}
	}
	return out
}

// resetSubvolumeOf is the reset subvolume the absolute path p is in: the
// one with the longest path above it (there is one, as / is reset).
func (c *Config) resetSubvolumeOf(p string) *ResetSubvolume {
	var best *ResetSubvolume
	for _, sv := range c.Reset.Subvolumes {
		if (sv.Path == p || under(p, sv.Path)) && (best == nil || len(sv.Path) > len(best.Path)) {
			best = sv
		}
	}
	return best
}

// persisted reports whether p is one of the paths in list or under one.
func persisted(list []string, p string) bool {
	for _, keep := range list {
		if keep == p || under(p, keep) {
			return true
		}
	}
	return false
}

package config

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The onsite tier's keys: "targets" (local btrfs destinations) and a plan's
// send_to, target_retention, send_schedule and target_pin_for
// (docs/configuration.md, "Targets").

var fsUUIDRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

var daysRE = regexp.MustCompile(`^([0-9]+)d$`)

const (
	targetExpected  = "a mapping with either path (a directory on a mounted btrfs) or uuid (a btrfs filesystem UUID, with an optional subdir)"
	targetPathHint  = "an absolute clean directory on a mounted btrfs, such as /mnt/usb/subvault"
	uuidExpected    = "a btrfs filesystem UUID as blkid or btrfs filesystem show print it, such as 0f6c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
	subdirExpected  = `a relative clean directory under the filesystem's top level, such as subvault (the default) or backups/laptop`
	pinForExpected  = `a number of days such as "90d" (the default) or a Go duration of at least an hour such as "2160h"`
	sendSchedExpect = `a cron spec (` + cronExpected + `), or "" (the default) for a send to each target after every backup that made snapshots`
)

// targets decodes the "targets" block into cfg.Targets; at gets each
// target's node (its path's value, else its key), for messages about it
// once the plans are known.
func (p *parser) targets(e pair, path string, cfg *Config, at map[string]*yaml.Node) {
	entries, _ := p.pairs(e.value, path, "a mapping of target names to targets ({} for none)")
	// Where each place is already a target: two names for one place would
	// apply two retentions to the same copies.
	places := map[string]string{}
	for _, te := range entries {
		tpath := join(path, te.name)
		p.name(te, tpath, "target")
		t, node := p.target(te, tpath)
		cfg.Targets[te.name] = t
		at[te.name] = node
		place := "path " + t.Path
		if t.UUID != "" {
			place = "uuid " + t.UUID + " subdir " + t.Subdir
		} else if t.Path == "" {
			continue
		}
		if other, dup := places[place]; dup {
			p.fail(node, tpath, fmt.Sprintf("is the same place as target %s", other), "each target a place of its own (one name per directory)")
			continue
		}
		places[place] = te.name
	}
}

// target decodes one target. It returns the node its messages point at
// later: its path's value, or its key.
func (p *parser) target(e pair, path string) (*Target, *yaml.Node) {
	t := &Target{Name: e.name}
	m := p.mapping(e.key, e.value, path, targetExpected, targetKeys)
	if m == nil {
		return t, e.key
	}
	node := e.key
	pathE, _, hasPath := m.get("path")
	uuidE, _, hasUUID := m.get("uuid")
	switch {
	case hasPath && hasUUID:
		p.fail(uuidE.key, path, fmt.Sprintf("both path (line %d) and uuid (line %d) are set", pathE.key.Line, uuidE.key.Line),
			"exactly one of path (a directory on a mounted btrfs) or uuid (a filesystem that may be absent)")
	case !hasPath && !hasUUID:
		p.fail(m.at, path, "neither path nor uuid is set", "exactly one of path (a directory on a mounted btrfs, such as /mnt/usb/subvault) or uuid (a btrfs filesystem UUID)")
	}
	if e, kpath, ok := m.get("path"); ok {
		if v, good := p.absPath(e.value, kpath, targetPathHint, true); good {
			if v == "/" {
				p.fail(resolve(e.value), kpath, `"/" is the root directory`, targetPathHint+" (a directory of subvault's own)")
			} else {
				t.Path = v
				node = resolve(e.value)
				// Root makes and writes the plans' directories in it.
				p.names(e.value, kpath, v, roleDirectory)
			}
		}
		if e, kpath, ok := m.get("subdir"); ok {
			p.fail(e.key, kpath, "is only for a uuid target (a path target's copies are in path itself)",
				"no subdir with path; write the whole directory in path")
		}
	}
	if e, kpath, ok := m.get("uuid"); ok && !hasPath {
		if v, good := p.str(e.value, kpath, uuidExpected); good {
			if fsUUIDRE.MatchString(v) {
				t.UUID = strings.ToLower(v)
			} else {
				p.fail(resolve(e.value), kpath, fmt.Sprintf("%q is not a filesystem UUID", v), uuidExpected)
			}
		}
		t.Subdir = DefaultTargetSubdir
		if e, kpath, ok := m.get("subdir"); ok {
			if v, good := p.str(e.value, kpath, subdirExpected); good {
				n := resolve(e.value)
				switch {
				case v == "" || v == ".":
					p.fail(n, kpath, "is empty", subdirExpected+": the copies never go at the top level itself")
				case filepath.IsAbs(v):
					p.fail(n, kpath, fmt.Sprintf("%q is an absolute path", v), subdirExpected)
				case slices.Contains(strings.Split(v, "/"), ".."):
					p.fail(n, kpath, fmt.Sprintf("%q contains \"..\"", v), subdirExpected)
				case filepath.Clean(v) != v:
					p.fail(n, kpath, fmt.Sprintf("%q is not a clean path (write %q)", v, filepath.Clean(v)), subdirExpected)
				default:
					t.Subdir = v
				}
			}
		}
	}
	return t, node
}

// planSends decodes a plan's send_to, target_retention, send_schedule and
// target_pin_for. The last three are refused without send_to: they would
// do nothing.
func (p *parser) planSends(m *mapping, plan *Plan, cfg *Config) {
	if e, path, ok := m.get("send_to"); ok {
		plan.SendTo = p.sendTo(e.value, path, cfg)
	}
	if e, path, ok := m.get("target_retention"); ok {
		plan.TargetRetention = KeepSnapshots{}
		p.keepSnapshots(e, path, &plan.TargetRetention)
	}
	if e, path, ok := m.get("send_schedule"); ok {
		if spec, ok := p.str(e.value, path, sendSchedExpect); ok && spec != "" {
			plan.SendSchedule, plan.SendSpec, _ = p.schedule(e.value, path)
		}
	}
	if e, path, ok := m.get("target_pin_for"); ok {
		plan.TargetPinFor, _ = p.pinFor(e.value, path)
	}
	if _, _, has := m.get("send_to"); has {
		return
	}
	for _, key := range []string{"target_retention", "send_schedule", "target_pin_for"} {
		if e, path, ok := m.get(key); ok {
			p.fail(e.key, path, "is set but the plan sends to no target (it has no send_to)",
				"send_to with the targets to send to, such as send_to: [usb], or no "+key)
		}
	}
}

// sendTo decodes a plan's send_to: names of defined targets, each once.
func (p *parser) sendTo(n *yaml.Node, path string, cfg *Config) []string {
	expected := "a list of names of targets defined under targets" + definedTargets(cfg) + ", such as [usb]"
	items, ok := p.list(n, path, expected)
	if !ok {
		return nil
	}
	var out []string
	seen := map[string]int{}
	for i, item := range items {
		ipath := index(path, i)
		v, ok := p.str(item, ipath, expected)
		if !ok {
			continue
		}
		item = resolve(item)
		switch first, dup := seen[v]; {
		case dup:
			p.fail(item, ipath, fmt.Sprintf("%q is listed twice (also at index %d)", v, first), "each target once")
		case cfg.Targets[v] == nil:
			p.fail(item, ipath, fmt.Sprintf("%q is not a defined target", v), expected)
		default:
			seen[v] = i
			out = append(out, v)
		}
	}
	return out
}

func definedTargets(cfg *Config) string {
	names := cfg.TargetNames()
	if len(names) == 0 {
		return " (none is defined)"
	}
	return " (defined: " + strings.Join(names, ", ") + ")"
}

// pinFor decodes target_pin_for: days ("90d") or a Go duration of at least
// an hour. Never 0: the pins' code reads an unset (zero) one as the
// default.
func (p *parser) pinFor(n *yaml.Node, path string) (time.Duration, bool) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == tagInt {
		p.fail(n, path, "got the number "+n.Value+", which has no unit", pinForExpected+` (days: "`+n.Value+`d")`)
		return 0, false
	}
	v, ok := p.str(n, path, pinForExpected)
	if !ok {
		return 0, false
	}
	if m := daysRE.FindStringSubmatch(v); m != nil {
		days, err := strconv.Atoi(m[1])
		switch {
		case err != nil || days > 100*365:
			p.fail(n, path, fmt.Sprintf("%q is more than 100 years", v), pinForExpected)
			return 0, false
		case days == 0:
			p.fail(n, path, fmt.Sprintf("%q is no time at all", v), pinForExpected)
			return 0, false
		}
		return time.Duration(days) * 24 * time.Hour, true
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		p.fail(n, path, fmt.Sprintf("%q is neither days nor a Go duration", v), pinForExpected)
		return 0, false
	case d < 0:
		p.fail(n, path, fmt.Sprintf("%q is negative", v), pinForExpected)
		return 0, false
	case d < time.Hour:
		p.fail(n, path, fmt.Sprintf("%q is shorter than an hour", v), pinForExpected)
		return 0, false
	}
	return d, true
}

// targetsOutsideSnapshots refuses a path target inside a plan's snapshot
// directory: the copies would be taken for snapshots, and deleted by
// keep_snapshots.
func (p *parser) targetsOutsideSnapshots(cfg *Config, at map[string]*yaml.Node) {
	for _, name := range cfg.TargetNames() {
		t := cfg.Targets[name]
		if t.Path == "" {
			continue
		}
	plans:
		for _, pname := range cfg.PlanNames() {
			for _, dir := range snapshotDirs(cfg.Plans[pname]) {
				if t.Path == dir || strings.HasPrefix(t.Path, dir+"/") {
					p.fail(at[name], join(join("targets", name), "path"),
						fmt.Sprintf("%q is inside %s, the snapshot directory of plan %s", t.Path, dir, pname),
						targetPathHint+", outside every plan's snapshot directory")
					break plans
				}
			}
		}
	}
}

// snapshotDirs are where a plan keeps its snapshots: its snapshot_dir, or
// .subvault-snapshots at the top of each subvolume.
func snapshotDirs(plan *Plan) []string {
	if plan.SnapshotDir != "" {
		return []string{plan.SnapshotDir}
	}
	dirs := make([]string, 0, len(plan.Subvolumes))
	for _, sv := range plan.Subvolumes {
		dirs = append(dirs, filepath.Join(sv, ".subvault-snapshots"))
	}
	return dirs
}

// Package onsite is the onsite tier: a plan's read-only snapshots sent to a
// local btrfs target (a directory on a mounted btrfs, or a disk found by its
// filesystem UUID) with btrfs send and receive, incrementally from a parent
// both sides have, received safely under a temporary name, and kept there
// per the plan's target_retention. docs/configuration.md#targets has the
// rules a user sees.
//
// On the target, a plan's copies are <root>/<plan>/<snapshot name>, where
// <plan> is a btrfs subvolume subvault makes (root's, 0700): btrfs receive
// runs in a private mount namespace with that subvolume bound at
// state_dir/onsite/receive, a path no other user can redirect, and finds a
// parent below the root of the mount it writes into only when that root
// is a subvolume. A stream is received under .subvault-receiving-<job id>
// (its name changed in the stream, btrfs.RenameInStream: a read-only
// subvolume cannot be moved to another directory afterwards, only
// renamed within its own), checked, and renamed into place. A UUID
// target's top level is mounted at state_dir/onsite/mnt in the same
// namespace, never in the host's. btrfs receive is the only program run.
package onsite

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/mountns"
	"github.com/subvault/subvault/daemon/planstore"
	"golang.org/x/sys/unix"
)

// ErrAbsent is wrapped by the error of a job or a listing whose target is not
// there (a UUID target whose disk is not plugged in, a path target whose
// filesystem is not mounted): the job ends skipped, not failed.
var ErrAbsent = errors.New("target is absent")

// Options are one send's inputs.
type Options struct {
	Config *config.Config // state_dir, the targets
	Plan   *config.Plan   // its subvolumes, snapshot_dir, target_retention, target_pin_for
	Target string         // a key of Config.Targets, one of Plan.SendTo
	JobID  uint32
	Log    *slog.Logger
	// Progress, if set, is told the stream's bytes so far (all subvolumes),
	// at most every second.
	Progress func(bytes uint64)
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Sent is what one subvolume's send did.
type Sent struct {
	Subvolume string // the plan's subvolume path
	Snapshot  string // the snapshot's name, the copy's name on the target
	Parent    string // the -p parent's name; "" for a full send
	Clones    []string
	// FullReason says why a send was full ("first send to the target",
	// "the pinned parent was dropped after 90 days", ...); "" when incremental.
	FullReason string
	Bytes      uint64 // the stream's length
}

// Result is what a send job did.
type Result struct {
	Target   string
	Where    string // the target directory as found (for a UUID target: the device)
	Sent     []Sent // one per subvolume that needed a send
	UpToDate bool   // the newest snapshots were on the target already
	Removed  []string
}

// Copy is one copy on a target.
type Copy struct {
	btrfs.Snapshot     // parsed from its name; Path is where it is reachable, if it is
	UUID, ReceivedUUID string
	ReadOnly           bool
}

// maxClones bounds the -c clone sources of one send.
const maxClones = 16

// source is a local snapshot of the plan, opened, with its UUID.
type source struct {
	btrfs.Snapshot
	f    *os.File
	uuid string
}

func closeSources(list []source) {
	for _, s := range list {
		s.f.Close() //nolint:errcheck,gosec // a directory
	}
}

func compareSnap(a, b btrfs.Snapshot) int {
	return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.JobID, b.JobID))
}

// sources opens the plan's local snapshots, by subvolume, oldest first.
func sources(plan *config.Plan) (map[string][]source, error) {
	all, err := planstore.Snapshots(plan)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(all, compareSnap)
	out := map[string][]source{}
	for _, s := range all {
		if !slices.Contains(plan.Subvolumes, s.Subvolume) || s.Pinned {
			continue
		}
		f, err := planstore.OpenSnapshot(plan, s)
		if err != nil {
			for _, l := range out {
				closeSources(l)
			}
			return nil, err
		}
		info, err := btrfs.InfoOf(f)
		if err != nil || !info.ReadOnly {
			f.Close() //nolint:errcheck,gosec // not sendable
			continue
		}
		out[s.Subvolume] = append(out[s.Subvolume], source{Snapshot: s, f: f, uuid: info.UUID})
	}
	return out, nil
}

// listCopies lists the plan's copies in its target subvolume pd, oldest
// first.
func listCopies(pd *os.File, plan string) ([]Copy, error) {
	snaps, err := btrfs.ListSnapshotsAt(pd)
	if err != nil {
		return nil, err
	}
	var out []Copy
	for _, s := range snaps {
		if s.Plan != plan || s.Pinned {
			continue
		}
		f, err := btrfs.OpenAt(pd, s.Name())
		if err != nil {
			return nil, err
		}
		info, err := btrfs.InfoOf(f)
		f.Close() //nolint:errcheck,gosec // read only
		if err != nil {
			return nil, err
		}
		out = append(out, Copy{Snapshot: s, UUID: info.UUID, ReceivedUUID: info.ReceivedUUID, ReadOnly: info.ReadOnly})
	}
	slices.SortFunc(out, func(a, b Copy) int { return compareSnap(a.Snapshot, b.Snapshot) })
	return out, nil
}

// valid reports whether the copy is a complete one of the snapshot whose
// UUID is uuid: read-only, received from it.
func (c Copy) valid(uuid string) bool {
	return c.ReadOnly && c.ReceivedUUID != "" && c.ReceivedUUID == uuid
}

// removeLeftovers removes the .subvault-receiving-* subvolumes a receive
// that died left in the plan subvolume pd, each logged.
func removeLeftovers(pd *os.File, target, plan string, log *slog.Logger) ([]string, error) {
	dup, err := unix.Openat(int(pd.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	d := os.NewFile(uintptr(dup), pd.Name())
	names, err := d.Readdirnames(-1)
	d.Close() //nolint:errcheck,gosec // read only
	if err != nil {
		return nil, fmt.Errorf("cannot list %s: %w", pd.Name(), err)
	}
	var removed []string
	var firstErr error
	for _, name := range names {
		rest, ok := strings.CutPrefix(name, receivePrefix)
		if !ok {
			continue
		}
		if _, err := strconv.ParseUint(rest, 10, 32); err != nil {
			continue // not a name subvault makes
		}
		path := pd.Name() + "/" + name
		var st unix.Stat_t
		if err := unix.Fstatat(int(pd.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Ino != 256 {
			log.Warn("left alone: not a subvolume a receive made", "target", target, "plan", plan, "path", path)
			continue
		}
		err := removeTemp(pd, name)
		if err != nil {
			log.Error("cannot remove an interrupted receive", "target", target, "plan", plan, "path", path, "err", err)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		log.Info("interrupted receive removed", journal.Event(journal.EventSendLeftoverRemoved), "target", target, "plan", plan, "path", path)
		removed = append(removed, path)
	}
	return removed, firstErr
}

// removeTemp deletes the receiving subvolume name in pd (a subvolume, and
// only that one); a missing one is no error.
func removeTemp(pd *os.File, name string) error {
	f, err := btrfs.OpenAt(pd, name)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	info, err := btrfs.InfoOf(f)
	f.Close() //nolint:errcheck,gosec // read only
	if err != nil {
		return fmt.Errorf("refusing to remove %s/%s: %w", pd.Name(), name, err)
	}
	return btrfs.DeleteSubvolumeAt(pd, name, info.UUID)
}

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// Send sends the plan's newest snapshot of each subvolume to the target:
// incrementally from the newest snapshot the target has a complete copy
// of (-p; the other common ones are -c), fully when there is none (logged
// send-full with the reason). Each stream is received under a temporary
// name in the plan's subvolume on the target, checked (read-only, received
// from the snapshot) and only then renamed to the snapshot's name. Before
// that, what interrupted receives left there is removed; after, the
// target's copies beyond target_retention (never the newest of a
// subvolume), and the plan's send pins for the target are updated. An
// absent target is an error wrapping ErrAbsent. The target side runs in a
// private mount namespace: a UUID target is mounted there only.
func Send(ctx context.Context, o Options) (Result, error) {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	t, ok := o.Config.Targets[o.Target]
	if !ok {
		return Result{}, fmt.Errorf("target %q is not configured", o.Target)
	}
	if !slices.Contains(o.Plan.SendTo, o.Target) {
		return Result{}, fmt.Errorf("plan %s does not send to target %s (its send_to: %s)", o.Plan.Name, o.Target, strings.Join(o.Plan.SendTo, ", "))
	}
	res := Result{Target: o.Target}
	src, err := sources(o.Plan)
	if err != nil {
		return res, err
	}
	defer func() {
		for _, l := range src {
			closeSources(l)
		}
	}()
	if len(src) == 0 {
		return res, fmt.Errorf("plan %s has no snapshot to send yet: a backup makes them", o.Plan.Name)
	}
	mnt, recv, err := privatePaths(o.Config)
	if err != nil {
		return res, err
	}
	pins, err := planstore.SendPins(o.Config, o.Plan.Name)
	if err != nil {
		return res, err
	}
	err = mountns.Run(ctx, mountns.Options{Logger: log, Empty: true}, func() error {
		return send(ctx, o, log, t, mnt, recv, src, pins, &res)
	})
	return res, err
}

// send is Send on the namespace's thread.
func send(ctx context.Context, o Options, log *slog.Logger, t *config.Target, mnt, recv string, src map[string][]source, oldPins []planstore.SendPin, res *Result) error {
	p, err := openTarget(t, mnt, true)
	if err != nil {
		return err
	}
	defer p.root.Close() //nolint:errcheck // a directory
	res.Where = p.where
	if err := notSourceFS(t, p.root, src); err != nil {
		return err
	}
	pd, err := openPlanDir(p.root, o.Plan.Name, true)
	if err != nil {
		return fmt.Errorf("target %s: %w", t.Name, err)
	}
	defer pd.Close() //nolint:errcheck // a directory
	removed, err := removeLeftovers(pd, t.Name, o.Plan.Name, log)
	res.Removed = append(res.Removed, removed...)
	if err != nil {
		return fmt.Errorf("target %s: %w", t.Name, err)
	}
	if err := bindPlanDir(pd, recv); err != nil {
		return err
	}
	copies, err := listCopies(pd, o.Plan.Name)
	if err != nil {
		return fmt.Errorf("target %s: %w", t.Name, err)
	}
	pinned := map[string]planstore.SendPin{}
	for _, pin := range oldPins {
		if pin.Target == t.Name {
			pinned[pin.Subvolume] = pin
		}
	}
	tmp := receivePrefix + strconv.FormatUint(uint64(o.JobID), 10)
	var total uint64
	upToDate := true
	var firstErr error
	for _, sv := range o.Plan.Subvolumes {
		list := src[sv]
		if len(list) == 0 {
			log.Warn("no snapshot of the subvolume to send", "plan", o.Plan.Name, "target", t.Name, "subvolume", sv)
			continue
		}
		newest := list[len(list)-1]
		if i := slices.IndexFunc(copies, func(c Copy) bool { return c.Name() == newest.Name() }); i >= 0 {
			if copies[i].valid(newest.uuid) {
				continue
			}
			err := fmt.Errorf("target %s: %s is there but is not a complete copy of snapshot %s (received UUID %q, read-only %t): move it away",
				t.Name, copies[i].Path, newest.Name(), copies[i].ReceivedUUID, copies[i].ReadOnly)
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		upToDate = false
		sent := Sent{Subvolume: sv, Snapshot: newest.Name()}
		var parent *os.File
		var clones []*os.File
		for i := len(list) - 2; i >= 0; i-- {
			s := list[i]
			if !slices.ContainsFunc(copies, func(c Copy) bool { return c.valid(s.uuid) }) {
				continue
			}
			if parent == nil {
				parent, sent.Parent = s.f, s.Name()
			} else if len(clones) < maxClones {
				clones = append(clones, s.f)
				sent.Clones = append(sent.Clones, s.Name())
			}
		}
		if parent == nil {
			sent.FullReason = fullReason(copies, sv, pinned[sv], t.Name)
			log.Warn("full send: "+sent.FullReason, journal.Event(journal.EventSendFull),
				"plan", o.Plan.Name, "target", t.Name, "subvolume", sv, "snapshot", sent.Snapshot, "why", sent.FullReason)
		}
		base := total
		st := &stream{snap: newest.f, parent: parent, clones: clones, name: newest.Name(), tmp: tmp, recv: recv, target: t.Name}
		if o.Progress != nil {
			st.progress = func(n uint64) { o.Progress(base + n) }
		}
		started := time.Now()
		n, err := st.run(ctx)
		sent.Bytes = n
		total += n
		if err == nil {
			err = place1(pd, tmp, newest)
		}
		if err != nil {
			if rerr := removeTemp(pd, tmp); rerr != nil {
				log.Warn("cannot remove the interrupted receive now; the next send removes it", "target", t.Name, "path", pd.Name()+"/"+tmp, "err", rerr)
			}
			return err
		}
		log.Info("snapshot sent", journal.Event(journal.EventSendDone), "plan", o.Plan.Name, "target", t.Name, "subvolume", sv,
			"snapshot", sent.Snapshot, "parent", sent.Parent, "clones", len(sent.Clones), "bytes", n, "full", sent.Parent == "",
			"seconds", time.Since(started).Seconds())
		res.Sent = append(res.Sent, sent)
		copies = append(copies, Copy{Snapshot: newest.Snapshot, ReceivedUUID: newest.uuid, ReadOnly: true})
	}
	if o.Progress != nil && total > 0 {
		o.Progress(total)
	}
	res.UpToDate = upToDate && firstErr == nil
	if copies, err = listCopies(pd, o.Plan.Name); err != nil {
		return cmp.Or(firstErr, fmt.Errorf("target %s: %w", t.Name, err))
	}
	// The pins: per subvolume, the newest copy on the target of a local
	// snapshot; a subvolume without one keeps its old pin.
	var pins []planstore.SendPin
	for _, sv := range o.Plan.Subvolumes {
		pin, ok := pinned[sv]
		for _, s := range slices.Backward(src[sv]) {
			if slices.ContainsFunc(copies, func(c Copy) bool { return c.valid(s.uuid) }) {
				pin, ok = planstore.SendPin{Subvolume: sv, Snapshot: s.Name(), UUID: s.uuid, Since: o.now()}, true
				break
			}
		}
		if ok {
			pins = append(pins, pin)
		}
	}
	if err := planstore.SetSendPins(o.Config, o.Plan.Name, t.Name, pins); err != nil {
		return cmp.Or(firstErr, err)
	}
	deleted, err := applyRetention(pd, copies, o.Plan, t.Name, log, o.now())
	res.Removed = append(res.Removed, deleted...)
	return cmp.Or(firstErr, err)
}

// place1 checks the received subvolume tmp (read-only, received from the
// snapshot) and renames it, in its directory, to the snapshot's name,
// never over anything.
func place1(pd *os.File, tmp string, s source) error {
	f, err := btrfs.OpenAt(pd, tmp)
	if err != nil {
		return fmt.Errorf("btrfs receive left no %s: %w", tmp, err)
	}
	info, err := btrfs.InfoOf(f)
	f.Close() //nolint:errcheck,gosec // read only
	if err != nil {
		return err
	}
	if !info.ReadOnly || info.ReceivedUUID != s.uuid {
		return fmt.Errorf("the received %s/%s is not a complete copy of %s (read-only %t, received UUID %q, want %q)", pd.Name(), tmp, s.Name(), info.ReadOnly, info.ReceivedUUID, s.uuid)
	}
	return btrfs.RenameNoReplace(pd, tmp, pd, s.Name())
}

// fullReason says why no parent could be found.
func fullReason(copies []Copy, sv string, pin planstore.SendPin, target string) string {
	n := 0
	for _, c := range copies {
		if c.Subvolume == sv && c.ReadOnly && c.ReceivedUUID != "" {
			n++
		}
	}
	switch {
	case n == 0:
		return fmt.Sprintf("first send of %s to target %s (no copy of it there)", sv, target)
	case pin.Snapshot != "":
		return fmt.Sprintf("the pinned parent %s is no longer on the source", pin.Snapshot)
	default:
		return fmt.Sprintf("none of the %d copies of %s on target %s is of a snapshot still on the source (the pin was dropped after target_pin_for, or they were sent from elsewhere)", n, sv, target)
	}
}

// applyRetention deletes the plan's complete copies on the target that
// target_retention does not keep, never the newest of a subvolume (the
// next send's parent). A zero target_retention keeps every copy.
func applyRetention(pd *os.File, copies []Copy, plan *config.Plan, target string, log *slog.Logger, now time.Time) ([]string, error) {
	k := plan.TargetRetention
	policy := btrfs.KeepPolicy{Last: k.Last, Hourly: k.Hourly, Daily: k.Daily, Weekly: k.Weekly, Monthly: k.Monthly}
	if policy == (btrfs.KeepPolicy{}) {
		return nil, nil
	}
	newest := map[string]string{}
	var candidates []btrfs.Snapshot
	for _, c := range copies { // oldest first
		if c.ReadOnly && c.ReceivedUUID != "" {
			newest[c.Subvolume] = c.Name()
			candidates = append(candidates, c.Snapshot)
		}
	}
	_, remove, _ := btrfs.SelectKeep(candidates, policy, now, time.Local)
	var deleted []string
	var firstErr error
	for _, s := range remove {
		if newest[s.Subvolume] == s.Name() {
			continue
		}
		if err := btrfs.DeleteSnapshotAt(pd, s.Name()); err != nil {
			log.Error("cannot delete a copy on the target", "target", target, "copy", s.Path, "err", err)
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		log.Info("copy deleted on the target", journal.Event(journal.EventTargetCopyDeleted), "plan", plan.Name, "target", target,
			"copy", s.Path, "why", "not kept by target_retention")
		deleted = append(deleted, s.Path)
	}
	return deleted, firstErr
}

// TargetStatus is what Status found of a target.
type TargetStatus struct {
	Name    string
	Present bool
	Where   string
	Err     string
	Copies  map[string][]Copy // plan → oldest first
}

// Status lists the plans' copies on the target without changing anything
// there (a UUID target not mounted in the host is mounted in a private
// namespace for the listing). An absent target gives Present false, its
// reason in Err, and no error. Copy paths are the host's where the target
// is reachable there, else empty.
func Status(ctx context.Context, cfg *config.Config, target string, plans []string) (TargetStatus, error) {
	st := TargetStatus{Name: target, Copies: map[string][]Copy{}}
	t, ok := cfg.Targets[target]
	if !ok {
		return st, fmt.Errorf("target %q is not configured", target)
	}
	mnt, _, err := privatePaths(cfg)
	if err != nil {
		return st, err
	}
	host, _ := HostDir(cfg, target)
	err = mountns.Run(ctx, mountns.Options{Empty: true}, func() error {
		p, err := openTarget(t, mnt, false)
		if err != nil {
			return err
		}
		defer p.root.Close() //nolint:errcheck // a directory
		st.Present, st.Where = true, p.where
		for _, plan := range plans {
			pd, err := openPlanDir(p.root, plan, false)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			copies, err := listCopies(pd, plan)
			pd.Close() //nolint:errcheck,gosec // a directory
			if err != nil {
				return err
			}
			for i := range copies {
				copies[i].Path = ""
				if host != "" {
					copies[i].Path = host + "/" + plan + "/" + copies[i].Name()
				}
			}
			st.Copies[plan] = copies
		}
		return nil
	})
	switch {
	case errors.Is(err, ErrAbsent):
		st.Present, st.Err = false, err.Error()
		return st, nil
	case errors.Is(err, os.ErrNotExist) && st.Where == "":
		// a UUID target with no subdir yet: present, nothing sent
		st.Present = true
		return st, nil
	case err != nil:
		st.Err = err.Error()
	}
	return st, err
}

// RemoveLeftovers removes, on every present target, what interrupted
// receives left in each plan's subvolume (.subvault-receiving-*), each
// logged; at the daemon's start. An absent target is passed over.
func RemoveLeftovers(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	names := make([]string, 0, len(cfg.Targets))
	for n := range cfg.Targets {
		names = append(names, n)
	}
	slices.Sort(names)
	if len(names) == 0 {
		return nil
	}
	mnt, _, err := privatePaths(cfg)
	if err != nil {
		return err
	}
	var firstErr error
	for _, name := range names {
		t := cfg.Targets[name]
		var plans []string
		for _, p := range cfg.Plans {
			if slices.Contains(p.SendTo, name) {
				plans = append(plans, p.Name)
			}
		}
		slices.Sort(plans)
		err := mountns.Run(ctx, mountns.Options{Logger: log, Empty: true}, func() error {
			p, err := openTarget(t, mnt, false)
			if err != nil {
				return err
			}
			defer p.root.Close() //nolint:errcheck // a directory
			var first error
			for _, plan := range plans {
				pd, err := openPlanDir(p.root, plan, false)
				if errors.Is(err, os.ErrNotExist) {
					continue
				}
				if err == nil {
					_, err = removeLeftovers(pd, name, plan, log)
					pd.Close() //nolint:errcheck,gosec // a directory
				}
				first = cmp.Or(first, err)
			}
			return first
		})
		if errors.Is(err, ErrAbsent) || errors.Is(err, os.ErrNotExist) {
			log.Debug("target absent: no leftovers looked for", "target", name, "err", err)
			continue
		}
		if err != nil {
			log.Error("cannot remove the leftovers of interrupted receives", "target", name, "err", err)
			firstErr = cmp.Or(firstErr, err)
		}
	}
	return firstErr
}

// notSourceFS refuses a target on the filesystem of one of the plan's
// snapshots: most often a path target whose disk is not mounted, its
// mount point's directory found on the system's own btrfs. The copies
// would fill the disk they are meant to outlive; the target is taken for
// absent.
func notSourceFS(t *config.Target, root *os.File, src map[string][]source) error {
	fsid, err := btrfs.FilesystemUUIDOf(root)
	if err != nil {
		return fmt.Errorf("target %s: %w", t.Name, err)
	}
	for sv, list := range src {
		if len(list) == 0 {
			continue
		}
		if id, err := btrfs.FilesystemUUIDOf(list[0].f); err == nil && id == fsid {
			return absent(t, "%s is on the filesystem of subvolume %s, not on a disk of its own (is the target's disk mounted?)", root.Name(), sv)
		}
	}
	return nil
}

// Package reset is the impermanence of docs/configuration.md#reset: at boot,
// in the initrd, each configured subvolume goes back to its clean snapshot
// with the persisted paths copied over from the state it leaves, which is
// kept as a read-only snapshot first.
//
// Everything it keeps lives at the top level of the root filesystem (subvolid
// 5), in .subvault-reset (root's, 0700): the clean snapshots
// (subvault-pinned@reset@TIME@0@PATH, made by Init), the previous states
// (subvault@reset@TIME@0@PATH, one per reset), subvolumes.json (where each
// path's subvolume is, from the top level) and next.json (a rollback's
// state the next reset comes up in). The top level is reached through a
// detached mount (fsopen, fsmount): it is in no mount table and no path
// leads to it, inside the initrd or out.
package reset

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/safefs"
	"github.com/subvault/subvault/daemon/shell"
)

// Change is one path that differs between a live subvolume and its clean
// snapshot and is not persisted: what the next boot throws away.
type Change struct {
	Path string `json:"path"`
	Kind string `json:"kind"` // added, changed or removed
	Type string `json:"type"` // file, dir, symlink, fifo, socket, device
	Size int64  `json:"size"` // bytes; a directory's: everything in it
}

// RunOptions are a reset's inputs besides the configuration.
type RunOptions struct {
	Cmdline string // the kernel command line (/proc/cmdline)
	Now     func() time.Time
	Log     *slog.Logger
}

// Results of a PathResult.
const (
	ResultDone    = "done"
	ResultSkipped = "skipped"
	ResultFailed  = "failed"
)

// PathResult is what the reset did to one subvolume.
type PathResult struct {
	Path      string `json:"path"`
	Result    string `json:"result"` // done, skipped or failed
	Reason    string `json:"reason,omitempty"`
	State     string `json:"state,omitempty"` // the previous state's snapshot name
	Persisted int    `json:"persisted"`       // entries copied: files, links, directories, fifos, devices
	Bytes     int64  `json:"bytes"`           // bytes of the files copied (shared, with reflinks)
}

// Record is the result of one reset run, as <state_dir>/reset/last.json keeps it.
type Record struct {
	Time    time.Time    `json:"time"`
	Results []PathResult `json:"results"`
}

// Init takes the clean snapshot of the subvolume mounted at path (one of
// the reset section's): a pinned read-only snapshot in .subvault-reset, and
// records where the subvolume is from the top level (subvolumes.json), which
// the initrd, where nothing is mounted yet, needs.
func Init(ctx context.Context, cfg *config.Config, path string, log *slog.Logger) (btrfs.Snapshot, error) {
	if log == nil {
		log = slog.Default()
	}
	fail := func(err error) (btrfs.Snapshot, error) {
		return btrfs.Snapshot{}, fmt.Errorf("cannot take the clean snapshot of %s: %w", path, err)
	}
	if _, err := resetSubvolume(cfg, path); err != nil {
		return fail(err)
	}
	live, err := safefs.OpenTrustedDir(path)
	if err != nil {
		return fail(err)
	}
	defer live.Close() //nolint:errcheck // a directory
	if _, err := btrfs.InfoOf(live); err != nil {
		return fail(err)
	}
	fsPath, m, err := btrfs.FSPath(path)
	if err != nil {
		return fail(err)
	}
	if fsPath == "/" {
		return fail(errors.New("it is the top level of its filesystem (subvolid 5), which cannot be swapped for another subvolume; reset a subvolume of it (subvol=)"))
	}
	t, err := openTop(m.Device, true)
	if err != nil {
		return fail(err)
	}
	defer t.Close()
	var known subvolumes
	if err := readMeta(t.dir, subvolumesFile, &known); err != nil {
		return fail(err)
	}
	if known.Subvolumes == nil {
		known.Subvolumes = map[string]string{}
	}
	known.Subvolumes[path] = strings.TrimPrefix(fsPath, "/")
	if err := writeMeta(t.dir, subvolumesFile, known, 0o600); err != nil {
		return fail(err)
	}
	snap := btrfs.Snapshot{Plan: config.ResetPlan, Time: time.Now().UTC().Truncate(time.Second), Subvolume: path, Pinned: true}
	f, _, err := btrfs.SnapshotAt(live, t.dir, snap.Name(), true)
	if err != nil {
		return fail(err)
	}
	f.Close() //nolint:errcheck,gosec // a directory
	snap.Path = filepath.Join(t.dir.Name(), snap.Name())
	log.Info("clean snapshot taken", "subvolume", path, "snapshot", snap.Name(), "device", m.Device, "fs_path", fsPath)
	return snap, nil
}

// Run resets every configured subvolume (in the initrd, before the root is
// mounted): see the package's documentation and docs/configuration.md#reset.
// Each subvolume's result is in the record, which is also written into the
// root that boots (<state_dir>/reset/last.json); the error is set when the
// reset could not start at all (no root device) or a subvolume failed.
func Run(ctx context.Context, cfg *config.Config, o RunOptions) (Record, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	now := o.Now().UTC().Truncate(time.Second)
	rec := Record{Time: now}
	if cfg.Reset == nil || len(cfg.Reset.Subvolumes) == 0 {
		return rec, nil
	}
	all := func(result, reason string) {
		rec.Results = rec.Results[:0]
		for _, s := range cfg.Reset.Subvolumes {
			rec.Results = append(rec.Results, PathResult{Path: s.Path, Result: result, Reason: reason})
		}
	}
	boot := parseCmdline(o.Cmdline)
	device, err := resolveDevice(boot.root)
	if err != nil {
		err = fmt.Errorf("cannot find the root device (root=%s on the kernel command line): %w", boot.root, err)
		all(ResultFailed, err.Error())
		o.Log.Error("reset failed", "err", err)
		return rec, err
	}
	t, err := openTop(device, false)
	if err != nil {
		err = fmt.Errorf("cannot reach the top level of %s: %w", device, err)
		all(ResultFailed, err.Error())
		o.Log.Error("reset failed", "err", err)
		return rec, err
	}
	defer t.Close()

	var known subvolumes
	var nexts next
	switch {
	case boot.off:
		all(ResultSkipped, "subvault.reset=0 is on the kernel command line")
	case t.dir == nil:
		all(ResultSkipped, fmt.Sprintf("no clean snapshot: %s has no %s (run subvault reset init PATH)", device, resetDirName))
	default:
		if image, dev, err := hibernated(boot); err != nil || image {
			reason := fmt.Sprintf("the resume device %s holds a hibernation image: a reset now would change the filesystem under the resumed system", dev)
			if err != nil {
				reason = fmt.Sprintf("cannot tell whether the machine resumes from hibernation, so nothing is changed: %v", err)
			}
			all(ResultSkipped, reason)
			break
		}
		if err := readMeta(t.dir, subvolumesFile, &known); err != nil {
			all(ResultFailed, err.Error())
			break
		}
		if err := readMeta(t.dir, nextFile, &nexts); err != nil {
			all(ResultFailed, err.Error())
			break
		}
		for _, sub := range cfg.Reset.Subvolumes {
			if sub.Path == "/" && boot.subvol == "" && boot.subvolID != "" {
				rec.Results = append(rec.Results, PathResult{Path: sub.Path, Result: ResultFailed,
					Reason: "the root is mounted by rootflags=subvolid=" + boot.subvolID + ", which stays the old subvolume after a swap by name; boot with rootflags=subvol= instead"})
				continue
			}
			if err := ctx.Err(); err != nil {
				rec.Results = append(rec.Results, PathResult{Path: sub.Path, Result: ResultFailed, Reason: err.Error()})
				continue
			}
			rec.Results = append(rec.Results, resetOne(t, sub, subvolumePath(sub.Path, known, boot), device, now, &nexts, o.Log))
		}
	}
	var errs []error
	for _, r := range rec.Results {
		log := o.Log.With("subvolume", r.Path)
		switch r.Result {
		case ResultDone:
			log.Info("subvolume reset", "state", r.State, "persisted", r.Persisted, "bytes", r.Bytes)
		case ResultSkipped:
			log.Warn("reset skipped", "reason", r.Reason)
		default:
			log.Error("reset failed", "reason", r.Reason)
			errs = append(errs, fmt.Errorf("%s: %s", r.Path, r.Reason))
		}
	}
	if err := writeRecord(t, cfg, known, boot, rec); err != nil {
		o.Log.Warn("cannot write the reset's record", "err", err)
	}
	if len(errs) > 0 {
		return rec, fmt.Errorf("reset failed: %w", errors.Join(errs...))
	}
	return rec, nil
}

// subvolumePath is where path's subvolume is from the top level: for /, the
// kernel command line's rootflags=subvol= (what boots) when it has one;
// otherwise what reset init recorded.
func subvolumePath(path string, known subvolumes, boot bootArgs) string {
	if path == "/" && boot.subvol != "" {
		return strings.Trim(boot.subvol, "/")
	}
	return known.Subvolumes[path]
}

// resetOne resets one subvolume; any failure before the swap deletes what
// it made and leaves the subvolume as it was.
func resetOne(t *top, sub *config.ResetSubvolume, fsRel, device string, now time.Time, nexts *next, log *slog.Logger) PathResult {
	res := PathResult{Path: sub.Path}
	failed := func(err error) PathResult {
		res.Result, res.Reason = ResultFailed, err.Error()
		return res
	}
	if fsRel == "" || fsRel == "." {
		return failed(fmt.Errorf("where %s's subvolume is on %s is not known: run subvault reset init %s", sub.Path, device, sub.Path))
	}
	snaps, err := t.snapshots()
	if err != nil {
		return failed(err)
	}
	from, ok := clean(snaps, sub)
	if !ok {
		res.Result = ResultSkipped
		if sub.Clean == "" || sub.Clean == "latest" {
			res.Reason = fmt.Sprintf("no clean snapshot of %s (run subvault reset init %s)", sub.Path, sub.Path)
		} else {
			res.Reason = fmt.Sprintf("no clean snapshot %s of %s in %s", sub.Clean, sub.Path, resetDirName)
		}
		return res
	}
	nextIndex := slices.IndexFunc(nexts.Next, func(e nextEntry) bool { return e.Path == sub.Path })
	if nextIndex >= 0 {
		i := slices.IndexFunc(snaps, func(s btrfs.Snapshot) bool { return s.Name() == nexts.Next[nextIndex].State && s.Subvolume == sub.Path })
		if i < 0 {
			return failed(fmt.Errorf("the state a rollback chose, %s, is not in %s any more", nexts.Next[nextIndex].State, resetDirName))
		}
		from = snaps[i]
	}

	parent, err := openBeneath(t.root, filepath.Dir(fsRel))
	if err != nil {
		return failed(fmt.Errorf("cannot open the directory of %s: %w", fsRel, err))
	}
	defer parent.Close() //nolint:errcheck // a directory
	if err := rootsOnly(parent); err != nil {
		return failed(err)
	}
	base := filepath.Base(fsRel)
	cur, err := btrfs.OpenAt(parent, base)
	if err != nil {
		return failed(fmt.Errorf("cannot open the subvolume %s of %s: %w", fsRel, sub.Path, err))
	}
	defer cur.Close() //nolint:errcheck // a directory
	curInfo, err := btrfs.InfoOf(cur)
	if err != nil {
		return failed(err)
	}
	if curInfo.ReadOnly {
		return failed(fmt.Errorf("the subvolume %s is read-only", fsRel))
	}
	if where, err := mountedAt(device, curInfo.ID); err != nil {
		return failed(err)
	} else if where != "" {
		res.Result, res.Reason = ResultSkipped, fmt.Sprintf("the subvolume %s is mounted at %s: a reset happens before it is mounted (in the initrd)", fsRel, where)
		return res
	}
	nested, err := btrfs.NestedSubvolumesAt(cur)
	if err != nil {
		return failed(err)
	}
	state := btrfs.Snapshot{Plan: config.ResetPlan, Time: now, Subvolume: sub.Path}
	newName := newPrefix + escaped(sub.Path)
	for _, taken := range []struct {
		dir        *os.File
		name, from string // from: its path from the top level
	}{{t.dir, state.Name(), filepath.Join(resetDirName, state.Name())}, {parent, newName, filepath.Join(filepath.Dir(fsRel), newName)}} {
		var st unix.Stat_t
		if err := unix.Fstatat(int(taken.dir.Fd()), taken.name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
			at := shell.Quote(filepath.Join("/mnt", taken.from))
			return failed(fmt.Errorf("%s is already there (a reset that was stopped half way, or the clock went back); nothing was changed. Once you have looked at it, remove it: mount -o subvolid=5 %s /mnt && btrfs subvolume delete %s && umount /mnt (rm -r for a directory)",
				filepath.Join(taken.dir.Name(), taken.name), shell.Quote(device), at))
		} else if !errors.Is(err, unix.ENOENT) {
			return failed(err)
		}
	}
	var rels []string
	for _, p := range sub.Persist {
		rel, ok := relUnder(p, sub.Path)
		if !ok || rel == "." {
			return failed(fmt.Errorf("persisted path %s is not below %s", p, sub.Path))
		}
		if !slices.ContainsFunc(nested, func(n btrfs.Nested) bool { _, in := relUnder(rel, n.Rel); return in }) {
			rels = append(rels, rel) // a nested subvolume moves over whole
		}
	}

	// 1. The previous state, read-only.
	prev, prevInfo, err := btrfs.SnapshotAt(cur, t.dir, state.Name(), true)
	if err != nil {
		return failed(err)
	}
	defer prev.Close() //nolint:errcheck // a directory
	res.State = state.Name()
	undoState := func() {
		if err := btrfs.DeleteSubvolumeAt(t.dir, state.Name(), prevInfo.UUID); err != nil {
			log.Error("cannot delete the previous state after a failed reset", "snapshot", state.Name(), "err", err)
		}
		res.State = ""
	}
	// 2. The new subvolume, from clean (or the rollback's state).
	src, err := btrfs.OpenAt(t.dir, from.Name())
	if err != nil {
		undoState()
		return failed(err)
	}
	fresh, freshInfo, err := btrfs.SnapshotAt(src, parent, newName, false)
	src.Close() //nolint:errcheck,gosec // a directory
	if err != nil {
		undoState()
		return failed(err)
	}
	defer fresh.Close() //nolint:errcheck // a directory
	undo := func(err error) PathResult {
		if derr := btrfs.DeleteSubvolumeAt(parent, newName, freshInfo.UUID); derr != nil {
			log.Error("cannot delete the new subvolume after a failed reset", "subvolume", newName, "err", derr)
		}
		undoState()
		return failed(fmt.Errorf("%w; nothing was changed, %s stays as it was", err, sub.Path))
	}
	// 3. The persisted paths, unless a rollback's state comes back whole.
	if nextIndex < 0 {
		c := newCopier(prev, fresh)
		for _, rel := range rels {
			if err := c.copyPath(rel); err != nil {
				return undo(err)
			}
		}
		res.Persisted, res.Bytes = c.files, c.bytes
	}
	// 4. The nested subvolumes move into the new one.
	moved, err := moveNested(cur, fresh, nested)
	if err != nil {
		if _, berr := moveNested(fresh, cur, moved); berr != nil {
			log.Error("cannot move nested subvolumes back after a failed reset", "err", berr)
		}
		return undo(err)
	}
	// 5. The swap.
	if err := btrfs.ExchangeAt(parent, newName, parent, base); err != nil {
		if _, berr := moveNested(fresh, cur, moved); berr != nil {
			log.Error("cannot move nested subvolumes back after a failed reset", "err", berr)
		}
		return undo(err)
	}
	res.Result = ResultDone
	if err := btrfs.DeleteSubvolumeAt(parent, newName, curInfo.UUID); err != nil {
		res.Reason = fmt.Sprintf("the old subvolume stays at %s: %v", newName, err)
	}
	if nextIndex >= 0 {
		nexts.Next = slices.Delete(nexts.Next, nextIndex, nextIndex+1)
		if err := writeMeta(t.dir, nextFile, nexts, 0o600); err != nil {
			res.Reason = strings.TrimPrefix(res.Reason+"; "+err.Error(), "; ")
		}
		log.Info("came up in a previous state", "subvolume", sub.Path, "state", from.Name())
	}
	// 6. keep.
	if err := applyKeep(t, sub, now, log); err != nil {
		res.Reason = strings.TrimPrefix(res.Reason+"; "+err.Error(), "; ")
	}
	return res
}

// rootsOnly refuses a directory another user may change: the reset
// renames subvolumes in it, and they could rename them first.
func rootsOnly(dir *os.File) error {
	st, err := safefs.Stat(dir)
	if err != nil {
		return err
	}
	if st.Uid != uint32(os.Geteuid()) || st.Mode&0o022 != 0 {
		return fmt.Errorf("%s is owned by uid %d with mode %04o, so another user could rename the subvolumes in it; the reset works only where root alone may: chown root and chmod go-w it", dir.Name(), st.Uid, st.Mode&0o7777)
	}
	return nil
}

// moveNested moves each nested subvolume from one subvolume into the same
// place in another, making missing directories on the way with the source's
// owner and mode. It returns those it moved.
func moveNested(from, to *os.File, nested []btrfs.Nested) ([]btrfs.Nested, error) {
	var moved []btrfs.Nested
	for _, n := range nested {
		dir := filepath.Dir(n.Rel)
		srcDir, err := openBeneath(from, dir)
		if err != nil {
			return moved, fmt.Errorf("cannot move the nested subvolume %s: %w", n.Rel, err)
		}
		dstDir, err := makeParents(from, to, dir)
		if err != nil {
			srcDir.Close() //nolint:errcheck,gosec // a directory
			return moved, fmt.Errorf("cannot move the nested subvolume %s: %w", n.Rel, err)
		}
		err = btrfs.MoveSubvolumeAt(srcDir, filepath.Base(n.Rel), dstDir, filepath.Base(n.Rel))
		srcDir.Close() //nolint:errcheck,gosec // a directory
		dstDir.Close() //nolint:errcheck,gosec // a directory
		if err != nil {
			return moved, err
		}
		moved = append(moved, n)
	}
	return moved, nil
}

// makeParents opens dir below to, making what is missing with the owner
// and mode of the same directory below from.
func makeParents(from, to *os.File, dir string) (*os.File, error) {
	d, err := dupDir(to)
	if err != nil {
		return nil, err
	}
	s, err := dupDir(from)
	if err != nil {
		d.Close() //nolint:errcheck,gosec // a directory
		return nil, err
	}
	defer func() { s.Close() }() //nolint:errcheck // a directory
	if dir == "." {
		return d, nil
	}
	for _, name := range strings.Split(dir, "/") {
		ns, err := openDirNoFollow(s, name)
		if err != nil {
			d.Close() //nolint:errcheck,gosec // a directory
			return nil, err
		}
		s.Close() //nolint:errcheck,gosec // a directory
		s = ns
		nd, err := openDirNoFollow(d, name)
		if errors.Is(err, unix.ENOENT) {
			var st unix.Stat_t
			if err = unix.Fstat(int(s.Fd()), &st); err == nil {
				if err = unix.Mkdirat(int(d.Fd()), name, 0o700); err == nil {
					if nd, err = openDirNoFollow(d, name); err == nil {
						err = setMeta(nd, nil, &st)
					}
				}
			}
		}
		d.Close() //nolint:errcheck,gosec // a directory
		if err != nil {
			return nil, err
		}
		d = nd
	}
	return d, nil
}

// applyKeep deletes the previous states of sub beyond its keep; clean
// snapshots (pinned) are never deleted.
func applyKeep(t *top, sub *config.ResetSubvolume, now time.Time, log *slog.Logger) error {
	snaps, err := t.snapshots()
	if err != nil {
		return err
	}
	var states []btrfs.Snapshot
	for _, s := range snaps {
		if !s.Pinned && s.Subvolume == sub.Path {
			states = append(states, s)
		}
	}
	k := sub.Keep
	if k == (config.KeepSnapshots{}) {
		k = config.DefaultResetKeep
	}
	_, remove, _ := btrfs.SelectKeep(states, btrfs.KeepPolicy{Last: k.Last, Hourly: k.Hourly, Daily: k.Daily, Weekly: k.Weekly, Monthly: k.Monthly}, now, time.UTC)
	var errs []error
	for _, s := range remove {
		if err := btrfs.DeleteSnapshotAt(t.dir, s.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		log.Info("previous state deleted (keep)", "subvolume", sub.Path, "snapshot", s.Name())
	}
	return errors.Join(errs...)
}

// mountedAt returns where the subvolume id of the filesystem on device is
// mounted in this thread's view ("" when nowhere).
func mountedAt(device string, id uint64) (string, error) {
	entries, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("btrfs"))
	if err != nil {
		return "", fmt.Errorf("cannot list the mounts: %w", err)
	}
	want := fmt.Sprint(id)
	for _, e := range entries {
		source, err := filepath.EvalSymlinks(e.Source)
		if err != nil || source != device {
			continue
		}
		for _, opt := range strings.Split(e.VFSOptions, ",") {
			if opt == "subvolid="+want {
				return e.Mountpoint, nil
			}
		}
	}
	return "", nil
}

// relUnder returns p relative to dir when p is dir or below it.
func relUnder(p, dir string) (string, bool) {
	if p == dir {
		return ".", true
	}
	if dir == "/" && strings.HasPrefix(p, "/") {
		return strings.TrimPrefix(p, "/"), true
	}
	if rel, ok := strings.CutPrefix(p, dir+"/"); ok {
		return rel, true
	}
	return "", false
}

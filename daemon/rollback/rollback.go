// Package rollback makes a plan's subvolume hold the content of one of its
// snapshots again. An unmounted subvolume is swapped for a writable copy of
// the snapshot at once; a mounted one (/, /home) is left as it is, and a
// copy waits beside it for the next boot, with the steps to boot it, read
// from /etc/fstab and the kernel command line, and to undo it.
//
// A rollback does not go through the queue: it runs while its caller
// waits, under the plan's lock, so a job of the plan that runs refuses it.
package rollback

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/safefs"
	"github.com/subvault/subvault/daemon/shell"
	"github.com/subvault/subvault/daemon/state"
)

// rollbackSuffix is what a prepared rollback adds to a subvolume's name.
var rollbackSuffix = regexp.MustCompile(`\.subvault-rollback-\d{8}T\d{6}Z-\d+$`)

// Options change what a rollback does.
type Options struct {
	// DryRun says what would happen and changes nothing.
	DryRun bool
	// SetDefault, for a mounted subvolume, makes the prepared subvolume the
	// filesystem's default one (what a mount without subvol= mounts).
	SetDefault bool
}

// Result is what a rollback did, or would do.
type Result struct {
	// Kept is where the state before the rollback is: the name of a pinned
	// snapshot of the plan (a second rollback to it undoes the first), or,
	// for a mounted subvolume, its own path from the filesystem's top level
	// (subvol=), which is left as it is. Empty for a dry run of an
	// unmounted one.
	Kept string
	// Prepared is set for a mounted subvolume: the new subvolume waits for
	// the next boot.
	Prepared bool
	// Message says, in lines a person reads, what was done (or will be)
	// and, for a mounted subvolume, what to run and how to undo it.
	Message string
}

// Job is one rollback of Subvolume, one of Plan's subvolumes, to Snapshot,
// one of the plan's snapshots of it (planstore.Snapshots).
type Job struct {
	Config    *config.Config
	Plan      *config.Plan
	Snapshot  btrfs.Snapshot
	Subvolume string
	Options   Options
	Logger    *slog.Logger

	// What a failed rollback leaves, for its journal entry: the pinned
	// snapshot's name (swap), the new subvolume's path from the top level
	// (prepare).
	kept, made string
}

// Check says why the rollback cannot be asked for: a subvolume that is not
// an absolute, clean path, not one of the plan's, or not the snapshot's.
func (r *Job) Check() error {
	switch {
	case !filepath.IsAbs(r.Subvolume) || filepath.Clean(r.Subvolume) != r.Subvolume:
		return fmt.Errorf("subvolume %q must be an absolute, clean path", r.Subvolume)
	case !slices.Contains(r.Plan.Subvolumes, r.Subvolume):
		return fmt.Errorf("%s is not a subvolume of plan %s (it has %s)", r.Subvolume, r.Plan.Name, strings.Join(r.Plan.Subvolumes, ", "))
	case r.Snapshot.Subvolume != r.Subvolume:
		return fmt.Errorf("snapshot %s is of %s, not of %s", r.Snapshot.Name(), r.Snapshot.Subvolume, r.Subvolume)
	}
	return nil
}

// Run makes the plan's subvolume hold the content of the snapshot again.
//
// An unmounted subvolume nobody uses is replaced at once: its current state
// is first kept as a pinned read-only snapshot (keep_snapshots never deletes
// it), a writable snapshot of the snapshot is made next to it and swapped in
// atomically (renameat2 RENAME_EXCHANGE), the subvolumes nested in the old
// one (its .subvault-snapshots among them) are moved into the new one, and
// the old one is deleted.
//
// A subvolume that is mounted (subvol=, like / or /home) is not touched: a
// writable snapshot of the snapshot is made next to it at the top level,
// and the message says how to boot it (the default subvolume or the subvol=
// of /etc/fstab and of the boot loader) and how to undo that.
//
// It holds the plan's lock, so a job of the plan that runs refuses it. The
// caller has checked the arguments (Check).
//
// The journal gets a rollback-done or rollback-prepared event, or a
// rollback-failed one (a dry run logs none).
func (r *Job) Run() (Result, error) {
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	res, err := r.run()
	if err != nil && !r.Options.DryRun {
		attrs := []any{journal.Event(journal.EventRollbackFailed), "plan", r.Plan.Name, "subvolume", r.Subvolume, "snapshot", r.Snapshot.Path, "err", err}
		if r.kept != "" {
			attrs = append(attrs, "kept", r.kept)
		}
		if r.made != "" {
			attrs = append(attrs, "new", r.made)
		}
		r.Logger.Error("rollback failed", attrs...)
	}
	return res, err
}

// run takes the plan's lock, then swaps an unmounted subvolume or prepares
// a mounted one.
func (r *Job) run() (Result, error) {
	lock, err := state.LockPlan(r.Config.Settings.StateDir, r.Plan.Name)
	if err != nil {
		return Result{}, fmt.Errorf("cannot roll back %s now: %w", r.Subvolume, err)
	}
	defer lock.Unlock()
	if _, err := btrfs.Info(r.Subvolume); err != nil {
		return Result{}, fmt.Errorf("cannot roll back %s: %w", r.Subvolume, err)
	}
	mounted, err := btrfs.MountedAt(r.Subvolume)
	if err != nil {
		return Result{}, fmt.Errorf("cannot roll back %s: %w", r.Subvolume, err)
	}
	if len(mounted) > 0 {
		return r.prepare(mounted)
	}
	return r.swap()
}

// names returns the pinned snapshot that keeps the current state and the
// temporary name the new subvolume is made under, with a fresh job id so
// that they never meet an existing name.
func (r *Job) names() (pinned btrfs.Snapshot, temp btrfs.Snapshot, err error) {
	id, err := state.NextJobID(r.Config.Settings.StateDir)
	if err != nil {
		return btrfs.Snapshot{}, btrfs.Snapshot{}, err
	}
	at := time.Now().UTC().Truncate(time.Second)
	pinned = btrfs.Snapshot{Plan: r.Plan.Name, Time: at, JobID: id, Subvolume: r.Subvolume, Pinned: true}
	pinned.Path = filepath.Join(planstore.SnapshotDir(r.Plan, r.Subvolume), pinned.Name())
	temp = btrfs.Snapshot{Plan: r.Plan.Name, Time: at, JobID: id, Subvolume: r.Subvolume}
	temp.Path = filepath.Join(filepath.Dir(r.Subvolume), temp.Name())
	return pinned, temp, nil
}

// copySnapshot makes the writable copy of the snapshot rolled back to at
// temp.Path, beside the subvolume, from the snapshot's checked descriptor.
func (r *Job) copySnapshot(temp btrfs.Snapshot) error {
	src, err := planstore.OpenSnapshot(r.Plan, r.Snapshot)
	if err != nil {
		return err
	}
	defer src.Close() //nolint:errcheck // a directory
	parent, err := safefs.OpenTrustedDir(filepath.Dir(temp.Path))
	if err != nil {
		return err
	}
	defer parent.Close() //nolint:errcheck // a directory
	f, _, err := btrfs.SnapshotAt(src, parent, filepath.Base(temp.Path), false)
	if err != nil {
		return err
	}
	return f.Close()
}

// swap replaces an unmounted subvolume.
func (r *Job) swap() (Result, error) {
	sv, snapDir := r.Subvolume, planstore.SnapshotDir(r.Plan, r.Subvolume)
	fail := func(err error) (Result, error) {
		return Result{}, fmt.Errorf("cannot roll back %s: %w", sv, err)
	}
	under, err := btrfs.MountPointsUnder(sv)
	if err != nil {
		return fail(err)
	}
	if len(under) > 0 {
		return fail(fmt.Errorf("something is mounted inside it (%s); unmount it first, so that nothing is pulled from under a program", strings.Join(under, ", ")))
	}
	users, err := processesUsing(sv)
	if err != nil {
		return fail(err)
	}
	if len(users) > 0 {
		return fail(fmt.Errorf("it is in use by %s (a working directory, an open file or a mapped library in it); stop them first", strings.Join(users, ", ")))
	}
	nested, err := btrfs.NestedSubvolumes(sv)
	if err != nil {
		return fail(err)
	}
	// Every nested subvolume must find its place in the snapshot's tree
	// (the new one is a copy of it) before anything changes.
	snapRel, snapDirInside := relUnder(snapDir, sv)
	for _, n := range nested {
		if snapDirInside && filepath.Dir(n.Rel) == snapRel {
			if _, err := os.Stat(filepath.Join(r.Snapshot.Path, snapRel)); err != nil {
				continue // the snapshot directory is made when the snapshot lacks it
			}
		}
		if err := btrfs.CheckSlot(filepath.Join(r.Snapshot.Path, n.Rel)); err != nil {
			return fail(fmt.Errorf("it holds the subvolume %s, which has no place in snapshot %s (%w); move it out of %s first", filepath.Join(sv, n.Rel), r.Snapshot.Name(), err, sv))
		}
	}
	what := fmt.Sprintf("%s is replaced by a writable copy of snapshot %s (taken %s); its current state is kept first as a pinned read-only snapshot in %s",
		sv, r.Snapshot.Name(), r.Snapshot.Time.Local().Format(time.RFC3339), snapDir)
	if len(nested) > 0 {
		var rels []string
		for _, n := range nested {
			rels = append(rels, n.Rel)
		}
		if len(nested) == 1 {
			what += fmt.Sprintf("; the subvolume inside it (%s) moves into the new one unchanged", rels[0])
		} else {
			what += fmt.Sprintf("; the %d subvolumes inside it (%s) move into the new one unchanged", len(nested), strings.Join(rels, ", "))
		}
	}
	if r.Options.DryRun {
		return Result{Message: what + "."}, nil
	}

	pinned, temp, err := r.names()
	if err != nil {
		return fail(err)
	}
	log := r.Logger.With("plan", r.Plan.Name, "subvolume", sv, "rollback_to", r.Snapshot.Path)
	pinnedDir, err := planstore.TakeSnapshot(r.Plan, sv, &pinned)
	if err != nil {
		return fail(err)
	}
	pinnedDir.Close() //nolint:errcheck,gosec // a directory
	r.kept = pinned.Name()
	log.Info("snapshot created", journal.Event(journal.EventSnapshotCreated), "snapshot", pinned.Path, "why", "the state before a rollback")
	if err := r.copySnapshot(temp); err != nil {
		return fail(fmt.Errorf("%w (nothing changed; the pinned snapshot %s stays)", err, pinned.Name()))
	}
	if err := btrfs.Exchange(temp.Path, sv); err != nil {
		if derr := btrfs.Delete(temp.Path); derr != nil {
			log.Error("cannot delete the new subvolume after a failed swap", "path", temp.Path, "err", derr)
		}
		return fail(fmt.Errorf("%w (nothing changed; the pinned snapshot %s stays)", err, pinned.Name()))
	}
	// temp.Path now holds the old subvolume, sv the new one.
	log.Info("subvolume swapped", "old", temp.Path)
	nested, err = btrfs.NestedSubvolumes(temp.Path)
	if err != nil {
		return fail(fmt.Errorf("swapped, but cannot list the subvolumes in the old one, %s: %w; move them into %s by hand, then delete it", temp.Path, err, sv))
	}
	for _, n := range nested {
		dst := filepath.Join(sv, n.Rel)
		if snapDirInside && filepath.Dir(n.Rel) == snapRel {
			if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
				return fail(fmt.Errorf("swapped, but %w; move %s to %s by hand, then delete %s", err, filepath.Join(temp.Path, n.Rel), dst, temp.Path))
			}
		}
		if err := btrfs.MoveSubvolume(filepath.Join(temp.Path, n.Rel), dst); err != nil {
			return fail(fmt.Errorf("swapped, but %w; move it and the other subvolumes still in %s by hand (mv), then delete %s", err, temp.Path, temp.Path))
		}
	}
	if snapDirInside {
		removePlaceholders(snapDir, log)
	}
	if err := btrfs.Delete(temp.Path); err != nil {
		return fail(fmt.Errorf("rolled back, but the old subvolume stays at %s: %w", temp.Path, err))
	}
	// kept is the name Rollback returns, the one a second rollback takes.
	log.Info("subvolume rolled back", journal.Event(journal.EventRollbackDone), "snapshot", r.Snapshot.Path, "kept", pinned.Name())
	msg := strings.Replace(what, " is replaced ", " was replaced ", 1)
	msg = strings.Replace(msg, " is kept first ", " was kept first ", 1)
	msg = strings.Replace(msg, ") move into ", ") moved into ", 1)
	msg = strings.Replace(msg, ") moves into ", ") moved into ", 1)
	msg += fmt.Sprintf(".\nThe state before is the pinned snapshot %s; to undo: subvault rollback %s %s %s",
		pinned.Name(), r.Plan.Name, shell.Quote(pinned.Name()), shell.Quote(sv))
	return Result{Kept: pinned.Name(), Message: msg}, nil
}

// removePlaceholders removes, from a snapshot directory of a new
// subvolume, the empty directories a snapshot shows where a snapshot was
// that no longer is (subvault names only).
func removePlaceholders(dir string, log *slog.Logger) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if _, err := btrfs.ParseName(e.Name()); err != nil || !e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if ok, err := btrfs.IsSubvolume(p); err != nil || ok {
			continue
		}
		if err := os.Remove(p); err != nil { // only an empty directory goes
			log.Warn("cannot remove the placeholder of a gone snapshot", "path", p, "err", err)
		}
	}
}

// prepare makes the new subvolume of a mounted one for the next boot.
func (r *Job) prepare(mounted []string) (Result, error) {
	sv := r.Subvolume
	fail := func(err error) (Result, error) {
		return Result{}, fmt.Errorf("cannot prepare a rollback of %s: %w", sv, err)
	}
	mountPoint := mounted[0]
	if slices.Contains(mounted, sv) {
		mountPoint = sv
	}
	oldPath, m, err := btrfs.FSPath(sv)
	if err != nil {
		return fail(err)
	}
	if oldPath == "/" {
		return fail(errors.New("it is the top level of its filesystem (subvolid 5), which cannot be swapped for another subvolume; copy what you need out of the snapshot instead (subvault clone)"))
	}
	old, err := btrfs.Info(sv)
	if err != nil {
		return fail(err)
	}
	nested, err := btrfs.NestedSubvolumes(sv)
	if err != nil {
		return fail(err)
	}
	readOnly, placeholder, noDir := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, n := range nested {
		if info, err := btrfs.Info(filepath.Join(sv, n.Rel)); err == nil && info.ReadOnly {
			readOnly[n.Rel] = true
		}
		// The copy is the snapshot's tree: what stands where the subvolume
		// goes is what the snapshot shows there.
		if _, err := os.Lstat(filepath.Join(r.Snapshot.Path, n.Rel)); err == nil {
			placeholder[n.Rel] = true
		} else if _, err := os.Stat(filepath.Join(r.Snapshot.Path, filepath.Dir(n.Rel))); err != nil {
			noDir[n.Rel] = true
		}
	}
	id, err := state.NextJobID(r.Config.Settings.StateDir)
	if err != nil {
		return fail(err)
	}
	at := time.Now().UTC().Format("20060102T150405Z")
	// A rollback of a rolled-back subvolume is named after the original.
	base := rollbackSuffix.ReplaceAllString(filepath.Base(oldPath), "")
	newName := fmt.Sprintf("%s.subvault-rollback-%s-%d", base, at, id)
	newPath := filepath.Join(filepath.Dir(oldPath), newName)
	b := bootSetup(mountPoint)

	var created btrfs.Sibling
	if r.Options.DryRun {
		created = btrfs.Sibling{FSPath: newPath}
	} else {
		created, err = btrfs.SnapshotBeside(r.Snapshot.Path, sv, newName)
		if err != nil {
			return fail(err)
		}
		r.made = created.FSPath
		if r.Options.SetDefault {
			if err := btrfs.SetDefault(sv, created.ID); err != nil {
				return fail(fmt.Errorf("prepared %s (id %d), but %w", created.FSPath, created.ID, err))
			}
			r.Logger.Info("default subvolume set", "device", m.Device, "id", created.ID, "was", "see btrfs subvolume get-default")
		}
	}
	msg := prepareMessage(prepareFacts{
		subvolume: sv, mountPoint: mountPoint, device: m.Device, snapshot: r.Snapshot.Name(),
		oldPath: oldPath, oldID: old.ID, newPath: created.FSPath, newID: created.ID,
		nested: nested, readOnly: readOnly, placeholder: placeholder, noDir: noDir, boot: b, dryRun: r.Options.DryRun, setDefault: r.Options.SetDefault,
	})
	if !r.Options.DryRun {
		// steps is the message: what to run before the reboot, and how to
		// undo it, where journalctl -o verbose finds it again.
		r.Logger.Info("subvolume prepared for a rollback at the next boot", journal.Event(journal.EventRollbackPrepared),
			"plan", r.Plan.Name, "subvolume", sv, "snapshot", r.Snapshot.Path, "kept", oldPath, "kept_id", old.ID, "new", created.FSPath, "new_id", created.ID,
			"device", m.Device, "mount_point", mountPoint, "default_set", r.Options.SetDefault, "steps", msg)
	}
	return Result{Kept: oldPath, Prepared: true, Message: msg}, nil
}

// relUnder returns p relative to dir when p is dir or below it.
func relUnder(p, dir string) (string, bool) {
	if p == dir {
		return ".", true
	}
	if rel, ok := strings.CutPrefix(p, dir+"/"); ok {
		return rel, true
	}
	return "", false
}

// Package restore runs one restore of a plan's archive: into a new or empty
// directory, into a new btrfs subvolume, or in place over the plan's
// subvolumes after a pinned read-only snapshot of each (the restore's undo
// point).
//
// In every mode restic restores into a staging directory the restore makes
// in the destination (root's, 0700), mounted over the state directory's
// restore directory in a private mount namespace, and the restored tree is
// then moved into place by renames through O_NOFOLLOW directory
// descriptors: a symbolic link already in the destination is replaced,
// never followed (restic 0.14 follows it and writes outside the target;
// 0.14 also fails on existing symbolic links and loses hard links, and 0.18
// zeroes hard-linked files it overwrites), and a 1 GiB file costs a rename,
// not a copy. docs/architecture.md has the flow, docs/security.md what it
// guarantees.
package restore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/mountns"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/safefs"
	"github.com/subvault/subvault/restic"
)

// Job is one restore.
type Job struct {
	ID     uint32
	Config *config.Config
	Plan   *config.Plan
	Logger *slog.Logger
	// Archive is an archive id (a prefix of one) or "latest": the plan's
	// newest archive.
	Archive string
	Target  string
	Include []string
	// Mode is IntoDirectory, IntoSubvolume or InPlace.
	Mode string
	// Verify has restic read every restored file back (restore --verify);
	// a difference fails the job.
	Verify   bool
	OnStatus func(restic.RestoreStatus)
	// OnMade, when set, is told what the restore has made that it removes
	// itself when it ends, each time that grows: a staging directory just
	// before it is made, the new subvolume just after, and where the move
	// into place begins and ends. The daemon keeps it in the job's record,
	// so that its next start removes what a daemon killed mid-restore left
	// (see Interrupted).
	OnMade func(Made)
	Now    func() time.Time

	made Made
}

// Result is what a restore did.
type Result struct {
	// Archive is the archive restored ("latest" resolved).
	Archive restic.Archive
	// Undo are the pinned snapshots an in-place restore took before it
	// wrote anything: the state it replaced.
	Undo []btrfs.Snapshot
	// Summary is for the job's Summary property.
	Summary map[string]any
}

// stageName is the staging directory of job id, in the destination's top
// directory.
func stageName(id uint32) string { return fmt.Sprintf(".subvault-restore-%d", id) }

// Run runs the restore. It checks the target again (it may have changed
// since the job was queued), resolves the archive among the plan's, and
// restores. A failed restore into a new subvolume deletes the subvolume; a
// failed in-place restore keeps its undo snapshots and names them in its
// error.
//
// In every mode restic writes only into a staging directory the restore
// makes in the destination, root's and 0700, which restic reaches through
// a path of root's own directories (the state directory's restore
// directory, over which the staging directory is mounted in restic's
// private mount namespace). Everything else goes through descriptors taken
// once and checked: the target's directory opened with no symbolic link on
// the way, the destination made or opened in it without following one, and
// the restored tree moved in by renames relative to those descriptors. So
// whatever another user does to the paths meanwhile (renaming the target
// away, planting links), nothing outside the destination is written.
func (j *Job) Run(ctx context.Context) (Result, error) {
	if j.Now == nil {
		j.Now = time.Now
	}
	if j.Logger == nil {
		j.Logger = slog.Default()
	}
	log := j.Logger.With("plan", j.Plan.Name, "job", j.ID, "kind", "restore")
	var res Result
	if err := CheckTarget(j.Plan, j.Target, j.Mode); err != nil {
		return res, fmt.Errorf("cannot restore: %w", err)
	}
	runner, err := planstore.NewRunner(j.Config, j.Plan, log)
	if err != nil {
		return res, err
	}
	res.Archive, err = runner.Archive(ctx, j.Archive, restic.SnapshotFilter{Tags: []string{planstore.Tag(j.Plan.Name)}})
	if errors.Is(err, restic.ErrNoSuchArchive) {
		return res, fmt.Errorf("%w; \"subvault archives %s\" lists the plan's archives", err, j.Plan.Name)
	}
	if err != nil {
		return res, err
	}
	res.Summary = map[string]any{"archive": res.Archive.ShortID, "target": j.Target, "mode": j.Mode, "verified": false}
	opts := restic.RestoreOptions{ArchiveID: res.Archive.ID, Include: j.Include, Verify: j.Verify, Sparse: true}
	log.Info("restore started", "archive", res.Archive.ShortID, "paths", res.Archive.Paths, "target", j.Target, "mode", j.Mode, "verify", j.Verify)

	switch j.Mode {
	case IntoDirectory:
		err = j.intoDirectory(ctx, log, runner, opts, &res)
	case IntoSubvolume:
		err = j.intoSubvolume(ctx, log, runner, opts, &res)
	case InPlace:
		err = j.inPlace(ctx, log, runner, opts, &res)
	}
	if err != nil {
		return res, err
	}
	log.Info("restore done", "archive", res.Archive.ShortID, "target", j.Target, "mode", j.Mode)
	return res, nil
}

// openTargetParent opens the directory of the target, with no symbolic
// link anywhere on the way.
func (j *Job) openTargetParent() (*os.File, error) {
	parent, err := safefs.OpenDir(filepath.Dir(j.Target))
	if err != nil {
		return nil, fmt.Errorf("cannot restore into %s: %w", j.Target, err)
	}
	return parent, nil
}

// intoDirectory restores into the target, an empty directory or one the
// restore makes (root's, 0700, as restic would make it): the archive's
// paths below it.
func (j *Job) intoDirectory(ctx context.Context, log *slog.Logger, runner *restic.Runner, opts restic.RestoreOptions, res *Result) error {
	parent, err := j.openTargetParent()
	if err != nil {
		return err
	}
	defer parent.Close() //nolint:errcheck // a directory
	name := filepath.Base(j.Target)
	made := true
	if err := unix.Mkdirat(int(parent.Fd()), name, 0o700); errors.Is(err, unix.EEXIST) {
		made = false
	} else if err != nil {
		return fmt.Errorf("cannot make the target %s: %w", j.Target, err)
	}
	dst, err := btrfs.OpenAt(parent, name)
	if err != nil {
		return fmt.Errorf("cannot restore into %s: %w (it must be a directory, not a symbolic link)", j.Target, err)
	}
	defer dst.Close() //nolint:errcheck // a directory
	st, err := safefs.Stat(dst)
	if err != nil {
		return err
	}
	if made && st.Uid != uint32(os.Geteuid()) {
		return fmt.Errorf("cannot restore into %s: the directory made there was replaced by one of uid %d", j.Target, st.Uid)
	}
	if empty, err := safefs.IsEmpty(dst); err != nil || !empty {
		return fmt.Errorf("cannot restore into %s: it is not empty (any more); restore into a new or empty directory", j.Target)
	}
	return j.restoreInto(ctx, log, runner, opts, res, dst, "")
}

// intoSubvolume creates the subvolume, restores into a staging directory in
// it and moves the tree up: the content of the archive's one path to the
// subvolume's root, or the archive's paths below it.
func (j *Job) intoSubvolume(ctx context.Context, log *slog.Logger, runner *restic.Runner, opts restic.RestoreOptions, res *Result) (err error) {
	parent, err := j.openTargetParent()
	if err != nil {
		return err
	}
	defer parent.Close() //nolint:errcheck // a directory
	name := filepath.Base(j.Target)
	dst, sv, err := btrfs.CreateSubvolumeAt(parent, name)
	if err != nil {
		return err
	}
	defer dst.Close() //nolint:errcheck // a directory
	j.record(func(m *Made) { m.SubvolumeUUID = sv.UUID })
	log.Info("subvolume created for the restore", "subvolume", j.Target, "subvolume_uuid", sv.UUID)
	defer func() {
		if err == nil {
			return
		}
		// Through the directory it was made in, and only if it is still
		// the one made (its UUID).
		if derr := btrfs.DeleteSubvolumeAt(parent, name, sv.UUID); derr != nil {
			log.Error("cannot delete the half-restored subvolume", "subvolume", j.Target, "err", derr)
			err = fmt.Errorf("%w; the half-restored subvolume %s could not be deleted (%w): delete it with \"btrfs subvolume delete %s\"", err, j.Target, derr, j.Target)
			return
		}
		log.Info("half-restored subvolume deleted", "subvolume", j.Target)
	}()
	root := ""
	if len(res.Archive.Paths) == 1 {
		root = res.Archive.Paths[0]
		res.Summary["subvolume_root"] = root
	}
	return j.restoreInto(ctx, log, runner, opts, res, dst, root)
}

// inPlace snapshots every subvolume the archive covers (pinned: kept until
// a person deletes them), then restores each over itself.
func (j *Job) inPlace(ctx context.Context, log *slog.Logger, runner *restic.Runner, opts restic.RestoreOptions, res *Result) error {
	paths := res.Archive.Paths
	for _, p := range paths {
		if !slices.Contains(j.Plan.Subvolumes, p) {
			return fmt.Errorf("archive %s holds %s, which is not a subvolume of plan %s (%s): an in-place restore can only write over the plan's subvolumes, after a snapshot of each; restore into a directory instead",
				res.Archive.ShortID, p, j.Plan.Name, strings.Join(j.Plan.Subvolumes, ", "))
		}
	}
	at := j.Now().UTC().Truncate(time.Second)
	for _, p := range paths {
		s := btrfs.Snapshot{Plan: j.Plan.Name, Time: at, JobID: j.ID, Subvolume: p, Pinned: true}
		f, err := planstore.TakeSnapshot(j.Plan, p, &s)
		if err != nil {
			for _, u := range res.Undo {
				if derr := planstore.DeleteSnapshot(j.Plan, u); derr != nil {
					log.Error("cannot delete an undo snapshot of the restore that did not start", "snapshot", u.Path, "err", derr)
				}
			}
			res.Undo = nil
			return fmt.Errorf("nothing was restored: cannot take the undo snapshot of %s: %w", p, err)
		}
		f.Close() //nolint:errcheck,gosec // a directory
		log.Info("snapshot created", journal.Event(journal.EventSnapshotCreated), "snapshot", s.Path, "subvolume", p, "why", "undo point of an in-place restore")
		res.Undo = append(res.Undo, s)
	}
	names := make([]string, len(res.Undo))
	for i, s := range res.Undo {
		names[i] = s.Name()
	}
	res.Summary["undo_snapshot"] = strings.Join(names, " ")
	undo := func(err error) error {
		return fmt.Errorf("%w; what was there before the restore is kept in snapshot %s (subvault snapshots %s)", err, strings.Join(names, ", "), j.Plan.Name)
	}
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return undo(fmt.Errorf("canceled: %w", err))
		}
		o := opts
		if len(o.Include) == 0 && len(paths) > 1 {
			// One restic run per subvolume, each into a staging directory
			// inside it: renames do not cross subvolumes.
			o.Include = []string{p}
		}
		dst, _, err := planstore.OpenSubvolume(j.Plan, p)
		if err != nil {
			return undo(err)
		}
		err = j.restoreInto(ctx, log, runner, o, res, dst, p)
		dst.Close() //nolint:errcheck,gosec // a directory
		if err != nil {
			return undo(err)
		}
	}
	return nil
}

// restoreInto has restic restore into a staging directory in dst and moves
// the restored tree into dst: the archive's path root ("" for all its
// paths, with their full names).
func (j *Job) restoreInto(ctx context.Context, log *slog.Logger, runner *restic.Runner, opts restic.RestoreOptions, res *Result, dst *os.File, root string) error {
	name := stageName(j.ID)
	j.record(func(m *Made) { m.Staging = append(m.Staging, filepath.Join(dst.Name(), name)) })
	stage, err := safefs.MakePrivateDir(dst, name, true)
	if err != nil {
		return fmt.Errorf("cannot make the staging directory: %w (a leftover of a restore that died can be removed)", err)
	}
	defer stage.Close() //nolint:errcheck // a directory
	// Whatever happens, the staging directory goes, with what the restore
	// replaced.
	removed := false
	defer func() {
		if removed {
			return
		}
		if left, err := removeStaging(dst, stage); err != nil || len(left) > 0 {
			log.Error("cannot remove the restore's staging directory", "dir", stage.Name(), "err", err, "left", left)
		}
	}()
	same, err := safefs.SameMount(dst, stage)
	if err != nil {
		return fmt.Errorf("cannot check the staging directory %s: %w", stage.Name(), err)
	}
	if !same {
		return fmt.Errorf("cannot use the staging directory %s: something is mounted on it, so it is not on the mount of %s", stage.Name(), dst.Name())
	}
	mountPoint, err := j.restoreMountPoint()
	if err != nil {
		return err
	}
	opts.Target = mountPoint
	var r restic.RestoreResult
	err = mountns.Run(ctx, mountns.Options{
		Binds:  []mountns.Bind{{Source: stage.Name(), Dir: stage, Target: mountPoint, Writable: true}},
		Logger: log,
	}, func() error {
		var rerr error
		r, rerr = runner.RestoreArchive(ctx, opts, j.OnStatus)
		return rerr
	})
	res.add(r, opts.Verify)
	if err != nil {
		return err
	}
	src := stage
	if root != "" {
		src, err = safefs.OpenBeneath(stage, strings.TrimPrefix(root, "/"))
		if errors.Is(err, unix.ENOENT) {
			log.Info("nothing of the archive matched here", "dir", dst.Name(), "root", root)
			return nil
		}
		if err != nil {
			return fmt.Errorf("restored %s: %w", root, err)
		}
		defer src.Close() //nolint:errcheck // a directory
	}
	var rootMeta *meta
	if root != "" {
		md, err := readMeta(int(src.Fd()))
		if err != nil {
			return fmt.Errorf("restored %s: %w", root, err)
		}
		rootMeta = &md
	}
	m := &merger{skip: name}
	j.record(func(m *Made) { m.Merging = append(m.Merging, dst.Name()) })
	if err := m.merge(src, dst); err != nil {
		return fmt.Errorf("cannot move the restored files into %s: %w", dst.Name(), err)
	}
	j.record(func(m *Made) { m.Merged = append(m.Merged, dst.Name()) })
	if len(m.skipped) > 0 {
		log.Warn("left alone: other filesystems or subvolumes under the restore's destination", "dir", dst.Name(), "paths", m.skipped)
		res.count("skipped_mounts", uint64(len(m.skipped)))
	}
	res.count("entries_moved", uint64(m.moved))
	// The staging directory goes now, so that the top directory's times
	// set below stay.
	removed = true
	left, err := removeStaging(dst, stage)
	if err != nil {
		return fmt.Errorf("cannot remove the staging directory %s: %w", stage.Name(), err)
	}
	if len(left) > 0 {
		return fmt.Errorf("the files are restored, but the staging directory %s could not be removed: %s", stage.Name(), strings.Join(left, ", "))
	}
	if rootMeta != nil {
		if err := rootMeta.apply(int(dst.Fd())); err != nil {
			return fmt.Errorf("cannot give %s the restored owner, mode and times: %w", dst.Name(), err)
		}
	}
	return nil
}

// restoreMountPointName is the directory in the state directory over which
// a restore's staging directory is mounted in restic's namespace: restic's
// --target, a path no other user can change.
const restoreMountPointName = "restore"

// restoreMountPoint makes (or checks) the state directory's restore
// directory, root's and 0700, and returns its path.
func (j *Job) restoreMountPoint() (string, error) {
	state, err := safefs.OpenTrustedDir(j.Config.Settings.StateDir)
	if err != nil {
		return "", fmt.Errorf("cannot open the state directory: %w", err)
	}
	defer state.Close() //nolint:errcheck // a directory
	st, err := safefs.Stat(state)
	if err != nil {
		return "", err
	}
	if st.Mode&0o022 != 0 || (st.Uid != 0 && st.Uid != uint32(os.Geteuid())) {
		return "", fmt.Errorf("the state directory %s is owned by uid %d with mode %04o: it must be root's and writable by root only (chown root: %s && chmod 0700 %s)",
			state.Name(), st.Uid, st.Mode&0o7777, state.Name(), state.Name())
	}
	dir, err := safefs.MakePrivateDir(state, restoreMountPointName, false)
	if err != nil {
		return "", err
	}
	return dir.Name(), dir.Close()
}

// add folds one restic restore into the summary: restic's own counts
// (summed over several runs), whether the files were verified and written
// sparse.
func (res *Result) add(r restic.RestoreResult, verify bool) {
	if res.Summary == nil {
		return
	}
	for k, v := range r.Summary {
		n, ok := v.(json.Number)
		if !ok {
			res.Summary[k] = v
			continue
		}
		if u, err := strconv.ParseUint(n.String(), 10, 64); err == nil {
			res.count(k, u)
		} else {
			res.Summary[k] = v
		}
	}
	res.Summary["verified"] = verify
	res.Summary["sparse"] = r.Sparse
	if r.FilesVerified > 0 {
		res.count("files_verified", r.FilesVerified)
	}
}

func (res *Result) count(key string, n uint64) {
	var have uint64
	if v, ok := res.Summary[key].(json.Number); ok {
		have, _ = strconv.ParseUint(v.String(), 10, 64)
	}
	res.Summary[key] = json.Number(strconv.FormatUint(have+n, 10))
}

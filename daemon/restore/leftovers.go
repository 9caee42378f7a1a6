package restore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/journal"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/safefs"
	"github.com/subvault/subvault/daemon/shell"
)

// Made is what a restore has made that it removes itself when it ends
// (done, failed or canceled), and how far its move into place got: the
// record a start after a crash goes by. It is kept in the job's JSON, so
// its fields must stay readable by later versions.
type Made struct {
	// Staging are the staging directories, each recorded before it is
	// made (so one may not exist).
	Staging []string `json:"staging,omitempty"`
	// SubvolumeUUID is the UUID of the subvolume a restore into a new
	// subvolume created at its target, recorded right after it was.
	SubvolumeUUID string `json:"subvolume_uuid,omitempty"`
	// Merging are the destinations into which the restored tree began to
	// be moved; Merged, those where the move ended.
	Merging []string `json:"merging,omitempty"`
	Merged  []string `json:"merged,omitempty"`
}

// Clone is a copy that shares nothing with m.
func (m Made) Clone() Made {
	m.Staging = slices.Clone(m.Staging)
	m.Merging = slices.Clone(m.Merging)
	m.Merged = slices.Clone(m.Merged)
	return m
}

func (j *Job) record(f func(*Made)) {
	f(&j.made)
	if j.OnMade != nil {
		j.OnMade(j.made.Clone())
	}
}

// Interrupted is a restore that a daemon killed mid-way (SIGKILL, a power
// cut) could not clean up after, as its job's record has it.
type Interrupted struct {
	ID uint32
	// Plan is the plan's configuration now; nil when the plan is gone from
	// it.
	Plan   *config.Plan
	Target string
	Mode   string
	Made   Made
	Logger *slog.Logger
}

// CleanUp removes what the restore left and says, for the job's error, what
// state it left things in:
//
//   - a restore into a directory: its staging directory in the target is
//     removed; what had been moved into the target stays for the user to
//     look at or remove;
//   - a restore into a new subvolume: the subvolume at the target is
//     deleted, with the staging directory in it, if it is still the one
//     the restore created (its UUID, from the record); anything else there
//     is left alone, and why is logged;
//   - in place: the staging directories are removed; each subvolume is
//     unchanged, restored, or part restored if the move into place had
//     begun; the pinned undo snapshots stay and are named.
//
// Each removal is logged as restore-leftover-removed.
func (in Interrupted) CleanUp() string {
	log := in.Logger
	if log == nil {
		log = slog.Default()
	}
	switch in.Mode {
	case IntoSubvolume:
		return in.removeSubvolume(log)
	case InPlace:
		return in.inPlace(log)
	}
	notes := []string{fmt.Sprintf("the restore into %s is incomplete: nothing of the archive had been moved into it yet", in.Target)}
	if len(in.Made.Merging) > 0 {
		notes[0] = fmt.Sprintf("the restore into %s is incomplete: what had been moved into it stays as it was (look at it, remove it, or restore again into an empty directory)", in.Target)
	}
	for _, stage := range in.Made.Staging {
		if note := in.removeStage(log, stage); note != "" {
			notes = append(notes, note)
		}
	}
	return strings.Join(notes, "; ")
}

func (in Interrupted) removeSubvolume(log *slog.Logger) string {
	uuid := in.Made.SubvolumeUUID
	if _, err := os.Lstat(in.Target); errors.Is(err, os.ErrNotExist) {
		return fmt.Sprintf("nothing is left at %s (the restore had created no subvolume there, or it is gone)", in.Target)
	}
	if uuid == "" {
		log.Warn("left alone: the restore died before it recorded the UUID of a subvolume it created, so nothing tells that this is the one", "subvolume", in.Target)
		return fmt.Sprintf("%s is left alone: the restore died before it recorded the UUID of the subvolume it was creating there, so nothing tells that this is the one; if it is, delete it with \"btrfs subvolume delete %s\"", in.Target, in.Target)
	}
	parent, err := safefs.OpenDir(filepath.Dir(in.Target))
	if err == nil {
		err = btrfs.DeleteSubvolumeAt(parent, filepath.Base(in.Target), uuid)
		parent.Close() //nolint:errcheck,gosec // a directory
	}
	if err != nil {
		log.Warn("left alone: not the half-restored subvolume, or it cannot be deleted", "subvolume", in.Target, "subvolume_uuid", uuid, "err", err)
		return fmt.Sprintf("%s is left alone: %v (the restore created subvolume %s there; if that is this one, delete it with \"btrfs subvolume delete %s\")", in.Target, err, uuid, in.Target)
	}
	log.Warn("half-restored subvolume removed", journal.Event(journal.EventRestoreLeftoverRemoved),
		"path", in.Target, "what", "the half-restored subvolume", "subvolume_uuid", uuid)
	return fmt.Sprintf("the half-restored subvolume %s was deleted", in.Target)
}

func (in Interrupted) inPlace(log *slog.Logger) string {
	var notes []string
	stages := in.Made.Staging
	if len(stages) == 0 && in.Plan != nil {
		// None recorded: none made yet, or a record from before the daemon
		// kept one. A staging directory can only be in a subvolume of the
		// plan, and its name holds the job's id.
		for _, sv := range in.Plan.Subvolumes {
			if _, err := os.Lstat(filepath.Join(sv, stageName(in.ID))); err == nil {
				stages = append(stages, filepath.Join(sv, stageName(in.ID)))
			}
		}
	}
	for _, stage := range stages {
		dst := filepath.Dir(stage)
		switch {
		case slices.Contains(in.Made.Merged, dst):
			notes = append(notes, fmt.Sprintf("%s was restored", dst))
		case slices.Contains(in.Made.Merging, dst):
			notes = append(notes, fmt.Sprintf("%s is part restored: the daemon died while it moved the restored files in, so some entries are the archive's and the others what was there before (run the restore again, or roll back to the undo snapshot)", dst))
		case len(in.Made.Staging) == 0:
			notes = append(notes, fmt.Sprintf("%s may be part restored (this restore's record predates the daemon's note of how far it got)", dst))
		default:
			notes = append(notes, fmt.Sprintf("%s is unchanged: the restored files had not been moved in", dst))
		}
		if note := in.removeStage(log, stage); note != "" {
			notes = append(notes, note)
		}
	}
	if len(stages) == 0 {
		notes = append(notes, "nothing had been restored in place yet")
	}
	if in.Plan != nil {
		var undo, back []string
		snaps, err := planstore.Snapshots(in.Plan)
		if err != nil {
			log.Warn("cannot list the plan's snapshots to name the restore's undo snapshots", "err", err)
		}
		for _, s := range snaps {
			if s.Pinned && s.JobID == in.ID {
				undo = append(undo, s.Name())
				back = append(back, fmt.Sprintf("subvault rollback %s %s %s", shell.Quote(in.Plan.Name), shell.Quote(s.Name()), shell.Quote(s.Subvolume)))
			}
		}
		switch {
		case len(undo) > 0 && len(in.Made.Merging) == 0 && len(in.Made.Staging) > 0:
			notes = append(notes, fmt.Sprintf("what was there before the restore is kept in snapshot %s (subvault snapshots %s); nothing was moved in, so nothing needs undoing",
				strings.Join(undo, ", "), in.Plan.Name))
		case len(undo) > 0:
			notes = append(notes, fmt.Sprintf("what was there before the restore is kept in snapshot %s (subvault snapshots %s); to put it back: %s",
				strings.Join(undo, ", "), in.Plan.Name, strings.Join(back, "; ")))
		}
	}
	return strings.Join(notes, "; ")
}

// removeStage removes a staging directory of the restore, and says so when
// it cannot. Only a name this job's staging directories have is removed.
func (in Interrupted) removeStage(log *slog.Logger, stage string) string {
	if filepath.Base(stage) != stageName(in.ID) || !filepath.IsAbs(stage) || filepath.Clean(stage) != stage {
		log.Error("left alone: not a staging directory of the restore", "path", stage)
		return fmt.Sprintf("%s is left alone: it is not named as the restore's staging directory", stage)
	}
	// The directory it is in, reached as root's own paths are, and the
	// staging directory itself only if it is still root's and private: a
	// directory another user put under its name is not this restore's.
	dst, err := safefs.OpenTrustedDir(filepath.Dir(stage))
	if errors.Is(err, unix.ENOENT) {
		return ""
	}
	var left []string
	if err == nil {
		var f *os.File
		f, err = safefs.OpenOwnedDir(dst, filepath.Base(stage))
		if errors.Is(err, os.ErrNotExist) {
			dst.Close() //nolint:errcheck,gosec // a directory
			return ""
		}
		if err == nil {
			left, err = removeStaging(dst, f)
			f.Close() //nolint:errcheck,gosec // a directory
		}
		dst.Close() //nolint:errcheck,gosec // a directory
	}
	if err != nil || len(left) > 0 {
		log.Error("cannot remove the staging directory of a restore that died", "path", stage, "err", err, "left", left)
		return fmt.Sprintf("its staging directory %s could not be removed (%v; left: %s): remove it with \"rm -rf --one-file-system %s\"", stage, err, strings.Join(left, ", "), stage)
	}
	log.Warn("staging directory of a restore that died removed", journal.Event(journal.EventRestoreLeftoverRemoved),
		"path", stage, "what", "the restore's staging directory")
	return fmt.Sprintf("its staging directory %s was removed", stage)
}

package daemon

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
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

// Where a rollback of a mounted subvolume reads how the machine mounts it;
// tests point them elsewhere.
var (
	fstabPath   = "/etc/fstab"
	cmdlinePath = "/proc/cmdline"
	procPath    = "/proc"
)

// rollbackSuffix is what a prepared rollback adds to a subvolume's name.
var rollbackSuffix = regexp.MustCompile(`\.subvault-rollback-\d{8}T\d{6}Z-\d+$`)

// RollbackOptions change what Rollback does.
type RollbackOptions struct {
	// DryRun says what would happen and changes nothing.
	DryRun bool
	// SetDefault, for a mounted subvolume, makes the prepared subvolume the
	// filesystem's default one (what a mount without subvol= mounts).
	SetDefault bool
}

// RollbackResult is what a rollback did, or would do.
type RollbackResult struct {
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

// Rollback makes the plan's subvolume hold the content of one of its
// snapshots again.
//
// An unmounted subvolume nobody uses is replaced at once: its current state
// is first kept as a pinned read-only snapshot (keep_snapshots never deletes
// it), a writable snapshot of snapshot is made next to it and swapped in
// atomically (renameat2 RENAME_EXCHANGE), the subvolumes nested in the old
// one (its .subvault-snapshots among them) are moved into the new one, and
// the old one is deleted.
//
// A subvolume that is mounted (subvol=, like / or /home) is not touched: a
// writable snapshot of snapshot is made next to it at the top level, and the
// message says how to boot it (the default subvolume or the subvol= of
// /etc/fstab and of the boot loader) and how to undo that.
//
// It holds the plan's lock, so a job of the plan that runs refuses it.
//
// The journal gets a rollback-done or rollback-prepared event, or, once the
// arguments are right, a rollback-failed one (a dry run logs none).
func (d *Daemon) Rollback(planName, snapshot, subvolume string, opts RollbackOptions) (RollbackResult, error) {
	cfg, plan, err := d.plan(planName)
	if err != nil {
		return RollbackResult{}, err
	}
	s, err := d.findSnapshot(plan, snapshot)
	if err != nil {
		return RollbackResult{}, err
	}
	if !filepath.IsAbs(subvolume) || filepath.Clean(subvolume) != subvolume {
		return RollbackResult{}, fmt.Errorf("%w: subvolume %q must be an absolute, clean path", ErrInvalidArgument, subvolume)
	}
	if !slices.Contains(plan.Subvolumes, subvolume) {
		return RollbackResult{}, fmt.Errorf("%w: %s is not a subvolume of plan %s (it has %s)", ErrInvalidArgument, subvolume, planName, strings.Join(plan.Subvolumes, ", "))
	}
	if s.Subvolume != subvolume {
		return RollbackResult{}, fmt.Errorf("%w: snapshot %s is of %s, not of %s", ErrInvalidArgument, snapshot, s.Subvolume, subvolume)
	}
	r := &rollback{d: d, cfg: cfg, plan: plan, snap: s, subvolume: subvolume, opts: opts}
	res, err := r.run()
	if err != nil && !opts.DryRun {
		attrs := []any{journal.Event(journal.EventRollbackFailed), "plan", planName, "subvolume", subvolume, "snapshot", s.Path, "err", err}
		if r.kept != "" {
			attrs = append(attrs, "kept", r.kept)
		}
		if r.made != "" {
			attrs = append(attrs, "new", r.made)
		}
		d.log.Error("rollback failed", attrs...)
	}
	return res, err
}

type rollback struct {
	d         *Daemon
	cfg       *config.Config
	plan      *config.Plan
	snap      btrfs.Snapshot
	subvolume string
	opts      RollbackOptions

	// What a failed rollback leaves, for its journal entry: the pinned
	// snapshot's name (swap), the new subvolume's path from the top level
	// (prepare).
	kept, made string
}

// run takes the plan's lock, then swaps an unmounted subvolume or prepares
// a mounted one.
func (r *rollback) run() (RollbackResult, error) {
	lock, err := state.LockPlan(r.cfg.Settings.StateDir, r.plan.Name)
	if err != nil {
		return RollbackResult{}, fmt.Errorf("cannot roll back %s now: %w", r.subvolume, err)
	}
	defer lock.Unlock()
	if _, err := btrfs.Info(r.subvolume); err != nil {
		return RollbackResult{}, fmt.Errorf("cannot roll back %s: %w", r.subvolume, err)
	}
	mounted, err := btrfs.MountedAt(r.subvolume)
	if err != nil {
		return RollbackResult{}, fmt.Errorf("cannot roll back %s: %w", r.subvolume, err)
	}
	if len(mounted) > 0 {
		return r.prepare(mounted)
	}
	return r.swap()
}

// names returns the pinned snapshot that keeps the current state and the
// temporary name the new subvolume is made under, with a fresh job id so
// that they never meet an existing name.
func (r *rollback) names() (pinned btrfs.Snapshot, temp btrfs.Snapshot, err error) {
	id, err := state.NextJobID(r.cfg.Settings.StateDir)
	if err != nil {
		return btrfs.Snapshot{}, btrfs.Snapshot{}, err
	}
	at := time.Now().UTC().Truncate(time.Second)
	pinned = btrfs.Snapshot{Plan: r.plan.Name, Time: at, JobID: id, Subvolume: r.subvolume, Pinned: true}
	pinned.Path = filepath.Join(planstore.SnapshotDir(r.plan, r.subvolume), pinned.Name())
	temp = btrfs.Snapshot{Plan: r.plan.Name, Time: at, JobID: id, Subvolume: r.subvolume}
	temp.Path = filepath.Join(filepath.Dir(r.subvolume), temp.Name())
	return pinned, temp, nil
}

// copySnapshot makes the writable copy of the snapshot rolled back to at
// temp.Path, beside the subvolume, from the snapshot's checked descriptor.
func (r *rollback) copySnapshot(temp btrfs.Snapshot) error {
	src, err := planstore.OpenSnapshot(r.plan, r.snap)
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
func (r *rollback) swap() (RollbackResult, error) {
	sv, snapDir := r.subvolume, planstore.SnapshotDir(r.plan, r.subvolume)
	fail := func(err error) (RollbackResult, error) {
		return RollbackResult{}, fmt.Errorf("cannot roll back %s: %w", sv, err)
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
			if _, err := os.Stat(filepath.Join(r.snap.Path, snapRel)); err != nil {
				continue // the snapshot directory is made when the snapshot lacks it
			}
		}
		if err := btrfs.CheckSlot(filepath.Join(r.snap.Path, n.Rel)); err != nil {
			return fail(fmt.Errorf("it holds the subvolume %s, which has no place in snapshot %s (%w); move it out of %s first", filepath.Join(sv, n.Rel), r.snap.Name(), err, sv))
		}
	}
	what := fmt.Sprintf("%s is replaced by a writable copy of snapshot %s (taken %s); its current state is kept first as a pinned read-only snapshot in %s",
		sv, r.snap.Name(), r.snap.Time.Local().Format(time.RFC3339), snapDir)
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
	if r.opts.DryRun {
		return RollbackResult{Message: what + "."}, nil
	}

	pinned, temp, err := r.names()
	if err != nil {
		return fail(err)
	}
	log := r.d.log.With("plan", r.plan.Name, "subvolume", sv, "rollback_to", r.snap.Path)
	pinnedDir, err := planstore.TakeSnapshot(r.plan, sv, &pinned)
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
	log.Info("subvolume rolled back", journal.Event(journal.EventRollbackDone), "snapshot", r.snap.Path, "kept", pinned.Name())
	msg := strings.Replace(what, " is replaced ", " was replaced ", 1)
	msg = strings.Replace(msg, " is kept first ", " was kept first ", 1)
	msg = strings.Replace(msg, ") move into ", ") moved into ", 1)
	msg = strings.Replace(msg, ") moves into ", ") moved into ", 1)
	msg += fmt.Sprintf(".\nThe state before is the pinned snapshot %s; to undo: subvault rollback %s %s %s",
		pinned.Name(), r.plan.Name, shell.Quote(pinned.Name()), shell.Quote(sv))
	return RollbackResult{Kept: pinned.Name(), Message: msg}, nil
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
func (r *rollback) prepare(mounted []string) (RollbackResult, error) {
	sv := r.subvolume
	fail := func(err error) (RollbackResult, error) {
		return RollbackResult{}, fmt.Errorf("cannot prepare a rollback of %s: %w", sv, err)
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
		if _, err := os.Lstat(filepath.Join(r.snap.Path, n.Rel)); err == nil {
			placeholder[n.Rel] = true
		} else if _, err := os.Stat(filepath.Join(r.snap.Path, filepath.Dir(n.Rel))); err != nil {
			noDir[n.Rel] = true
		}
	}
	id, err := state.NextJobID(r.cfg.Settings.StateDir)
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
	if r.opts.DryRun {
		created = btrfs.Sibling{FSPath: newPath}
	} else {
		created, err = btrfs.SnapshotBeside(r.snap.Path, sv, newName)
		if err != nil {
			return fail(err)
		}
		r.made = created.FSPath
		if r.opts.SetDefault {
			if err := btrfs.SetDefault(sv, created.ID); err != nil {
				return fail(fmt.Errorf("prepared %s (id %d), but %w", created.FSPath, created.ID, err))
			}
			r.d.log.Info("default subvolume set", "device", m.Device, "id", created.ID, "was", "see btrfs subvolume get-default")
		}
	}
	msg := prepareMessage(prepareFacts{
		subvolume: sv, mountPoint: mountPoint, device: m.Device, snapshot: r.snap.Name(),
		oldPath: oldPath, oldID: old.ID, newPath: created.FSPath, newID: created.ID,
		nested: nested, readOnly: readOnly, placeholder: placeholder, noDir: noDir, boot: b, dryRun: r.opts.DryRun, setDefault: r.opts.SetDefault,
	})
	if !r.opts.DryRun {
		// steps is the message: what to run before the reboot, and how to
		// undo it, where journalctl -o verbose finds it again.
		r.d.log.Info("subvolume prepared for a rollback at the next boot", journal.Event(journal.EventRollbackPrepared),
			"plan", r.plan.Name, "subvolume", sv, "snapshot", r.snap.Path, "kept", oldPath, "kept_id", old.ID, "new", created.FSPath, "new_id", created.ID,
			"device", m.Device, "mount_point", mountPoint, "default_set", r.opts.SetDefault, "steps", msg)
	}
	return RollbackResult{Kept: oldPath, Prepared: true, Message: msg}, nil
}

type prepareFacts struct {
	subvolume, mountPoint, device, snapshot string
	oldPath, newPath                        string
	oldID, newID                            uint64
	nested                                  []btrfs.Nested
	readOnly                                map[string]bool // nested ones, by Rel
	placeholder                             map[string]bool // an empty directory waits for it in the copy
	noDir                                   map[string]bool // its directory is not in the copy
	boot                                    bootConfig
	dryRun, setDefault                      bool
}

// prepareMessage says what was prepared, what to run to boot it, and how
// to undo it.
func prepareMessage(f prepareFacts) string {
	var b strings.Builder
	id := func(n uint64) string {
		if n == 0 {
			return "NEWID" // a dry run made nothing, so has no id
		}
		return strconv.FormatUint(n, 10)
	}
	verb := "Made"
	if f.dryRun {
		verb = "Would make"
	}
	fmt.Fprintf(&b, "%s is mounted at %s, so it is not replaced under the programs that use it: it stays as it is (%s, id %d on %s), and is the way back.\n",
		f.subvolume, f.mountPoint, f.oldPath, f.oldID, f.device)
	fmt.Fprintf(&b, "%s %s (id %s), a writable copy of snapshot %s, next to it; it is mounted nowhere.\n", verb, f.newPath, id(f.newID), f.snapshot)
	b.WriteString("To boot it:\n")
	oldValue := f.oldPath
	switch {
	case f.boot.fstabSubvol != "" || f.boot.fstabSubvolID != "" || f.boot.cmdlineSubvol != "" || f.boot.cmdlineSubvolID != "":
		if f.boot.fstabSubvol != "" {
			oldValue = f.boot.fstabSubvol
			fmt.Fprintf(&b, "  in %s, on the line of %s, change subvol=%s to subvol=%s\n", f.boot.fstab, f.mountPoint, oldValue, styleLike(oldValue, f.newPath))
		}
		if f.boot.fstabSubvolID != "" {
			fmt.Fprintf(&b, "  in %s, on the line of %s, change subvolid=%s to subvolid=%s\n", f.boot.fstab, f.mountPoint, f.boot.fstabSubvolID, id(f.newID))
		}
		if f.boot.cmdlineSubvol != "" {
			fmt.Fprintf(&b, "  in the boot loader's kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub; or /boot/loader/entries/*.conf), change rootflags=...subvol=%s to subvol=%s\n",
				f.boot.cmdlineSubvol, styleLike(f.boot.cmdlineSubvol, f.newPath))
		}
		if f.boot.cmdlineSubvolID != "" {
			fmt.Fprintf(&b, "  in the boot loader's kernel command line, change rootflags=...subvolid=%s to subvolid=%s\n", f.boot.cmdlineSubvolID, id(f.newID))
		}
		b.WriteString("  (on NixOS: fileSystems.\"" + f.mountPoint + "\".options in the configuration, then nixos-rebuild boot)\n")
	case f.boot.inFstab:
		if f.setDefault && !f.dryRun {
			fmt.Fprintf(&b, "  done: %s is mounted without subvol=, so it mounts the default subvolume, and %s (id %s) is the default now\n", f.mountPoint, f.newPath, id(f.newID))
		} else {
			fmt.Fprintf(&b, "  %s is mounted without subvol=, so it mounts the default subvolume: btrfs subvolume set-default %s %s (or subvault rollback --set-default)\n", f.mountPoint, id(f.newID), f.mountPoint)
		}
	default:
		fmt.Fprintf(&b, "  %s is not in %s: wherever it is mounted from (a systemd mount unit, a script), mount subvol=%s (subvolid=%s) instead of subvol=%s;\n",
			f.mountPoint, f.boot.fstab, f.newPath, id(f.newID), f.oldPath)
		fmt.Fprintf(&b, "  if it is mounted without subvol=, make it the default instead: btrfs subvolume set-default %s %s\n", id(f.newID), f.mountPoint)
	}
	b.WriteString("  then reboot.\n")
	if len(f.nested) > 0 {
		fmt.Fprintf(&b, "The subvolumes inside %s are not in the copy (it shows empty directories there); after the reboot, move those you want over from the top level:\n", f.oldPath)
		fmt.Fprintf(&b, "  mount -o subvolid=5 %s /mnt\n", shell.Quote(f.device))
		for _, n := range f.nested {
			src, dst := shell.Quote(filepath.Join("/mnt", f.oldPath, n.Rel)), shell.Quote(filepath.Join("/mnt", f.newPath, n.Rel))
			b.WriteString("  ")
			switch {
			case f.placeholder[n.Rel]:
				fmt.Fprintf(&b, "rmdir %s && ", dst)
			case f.noDir[n.Rel]:
				fmt.Fprintf(&b, "mkdir -p %s && ", shell.Quote(filepath.Dir(filepath.Join("/mnt", f.newPath, n.Rel))))
			}
			if f.readOnly[n.Rel] {
				// A read-only subvolume cannot change directories.
				fmt.Fprintf(&b, "btrfs property set %s ro false && mv %s %s && btrfs property set %s ro true\n", src, src, dst, dst)
			} else {
				fmt.Fprintf(&b, "mv %s %s\n", src, dst)
			}
		}
		b.WriteString("  umount /mnt\n")
	}
	fmt.Fprintf(&b, "To undo before the reboot: ")
	switch {
	case f.dryRun:
		b.WriteString("nothing to undo, nothing was made.\n")
	default:
		if f.setDefault {
			fmt.Fprintf(&b, "btrfs subvolume set-default %d %s; ", f.oldID, f.mountPoint)
		}
		fmt.Fprintf(&b, "mount -o subvolid=5 %s /mnt && btrfs subvolume delete %s && umount /mnt\n", shell.Quote(f.device), shell.Quote("/mnt"+f.newPath))
	}
	fmt.Fprintf(&b, "To go back after the reboot: point the boot at %s again (subvol=%s, subvolid=%d, or btrfs subvolume set-default %d %s), and reboot.",
		f.oldPath, oldValue, f.oldID, f.oldID, f.mountPoint)
	return b.String()
}

// styleLike writes fsPath the way the configuration wrote its subvol=
// value: "@" or "/@".
func styleLike(configured, fsPath string) string {
	if strings.HasPrefix(configured, "/") {
		return fsPath
	}
	return strings.TrimPrefix(fsPath, "/")
}

// bootConfig is how the machine mounts a mount point at boot.
type bootConfig struct {
	fstab                          string
	inFstab                        bool
	fstabSubvol, fstabSubvolID     string
	cmdlineSubvol, cmdlineSubvolID string
}

// bootSetup reads /etc/fstab's line of mountPoint and, for /, the kernel
// command line's rootflags=.
func bootSetup(mountPoint string) bootConfig {
	b := bootConfig{fstab: fstabPath}
	if data, err := os.ReadFile(fstabPath); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 3 || strings.HasPrefix(fields[0], "#") || btrfs.UnescapeOctal(fields[1]) != mountPoint {
				continue
			}
			b.inFstab = true
			if len(fields) >= 4 {
				b.fstabSubvol, b.fstabSubvolID = subvolOptions(fields[3])
			}
		}
	}
	if mountPoint == "/" {
		if data, err := os.ReadFile(cmdlinePath); err == nil {
			for _, arg := range strings.Fields(string(data)) {
				if v, ok := strings.CutPrefix(arg, "rootflags="); ok {
					b.cmdlineSubvol, b.cmdlineSubvolID = subvolOptions(v)
				}
			}
		}
	}
	return b
}

func subvolOptions(options string) (subvol, subvolID string) {
	for _, opt := range strings.Split(options, ",") {
		if v, ok := strings.CutPrefix(opt, "subvol="); ok {
			subvol = v
		}
		if v, ok := strings.CutPrefix(opt, "subvolid="); ok {
			subvolID = v
		}
	}
	return subvol, subvolID
}

// processesUsing lists the processes whose working directory, root,
// executable, open files or mapped files are in dir, as "PID (NAME)".
func processesUsing(dir string) ([]string, error) {
	entries, err := os.ReadDir(procPath)
	if err != nil {
		return nil, err
	}
	self := strconv.Itoa(os.Getpid())
	inDir := func(p string) bool {
		p = strings.TrimSuffix(p, " (deleted)")
		return p == dir || strings.HasPrefix(p, dir+"/")
	}
	var out []string
	for _, e := range entries {
		pid := e.Name()
		if _, err := strconv.Atoi(pid); err != nil || pid == self {
			continue
		}
		base := filepath.Join(procPath, pid)
		links := []string{filepath.Join(base, "cwd"), filepath.Join(base, "root"), filepath.Join(base, "exe")}
		if fds, err := os.ReadDir(filepath.Join(base, "fd")); err == nil {
			for _, fd := range fds {
				links = append(links, filepath.Join(base, "fd", fd.Name()))
			}
		}
		using := false
		for _, l := range links {
			if target, err := os.Readlink(l); err == nil && inDir(target) {
				using = true
				break
			}
		}
		if !using {
			if maps, err := os.ReadFile(filepath.Join(base, "maps")); err == nil {
				for _, line := range strings.Split(string(maps), "\n") {
					if i := strings.Index(line, " /"); i >= 0 && inDir(strings.TrimSpace(line[i:])) {
						using = true
						break
					}
				}
			}
		}
		if using {
			comm, _ := os.ReadFile(filepath.Join(base, "comm"))
			out = append(out, fmt.Sprintf("%s (%s)", pid, strings.TrimSpace(string(comm))))
		}
	}
	slices.Sort(out)
	return out, nil
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

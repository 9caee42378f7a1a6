package planstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/state"
	"golang.org/x/sys/unix"
)

// A send pin keeps a plan's local snapshot from keep_snapshots while a
// target's newest copy is of it: it is the parent of the next incremental
// send to that target, however long the target stays away (up to the
// plan's target_pin_for). docs/configuration.md#targets says it for users.

// SendPinsDir is the directory under state_dir that holds one pin file per
// plan (<plan>.json).
const SendPinsDir = "send-pins"

// maxPinsFile bounds what is read of a pin file.
const maxPinsFile = 1 << 20

// SendPin says that Target's newest copy of the plan's Subvolume is of
// the local snapshot Snapshot (its name; UUID its subvolume UUID), sent or
// found there at Since.
type SendPin struct {
	Target    string    `json:"target"`
	Subvolume string    `json:"subvolume"`
	Snapshot  string    `json:"snapshot"`
	UUID      string    `json:"uuid"`
	Since     time.Time `json:"since"`
}

type pinsFile struct {
	Version int       `json:"version"`
	Pins    []SendPin `json:"pins"`
}

// pinsMu keeps two writers of one process from losing each other's pins
// (a plan's sends to two targets).
var pinsMu sync.Mutex

func pinsFileName(plan string) (string, error) {
	if !btrfs.ValidPlanName(plan) {
		return "", fmt.Errorf("plan name %q is not valid", plan)
	}
	return plan + ".json", nil
}

// SendPins returns the plan's send pins, none when it has no pin file. The
// file is read through the directory's descriptor, and refused when the
// directory or the file is not root's or others may write it, or it is a
// link, not a regular file, too long, or not exactly a pin file.
func SendPins(cfg *config.Config, plan string) ([]SendPin, error) {
	pinsMu.Lock()
	defer pinsMu.Unlock()
	return readPins(cfg, plan)
}

func readPins(cfg *config.Config, plan string) ([]SendPin, error) {
	name, err := pinsFileName(plan)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cfg.Settings.StateDir, SendPinsDir)
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot open the send pins directory %s: %w", dir, err)
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil {
		return nil, fmt.Errorf("cannot check %s: %w", dir, err)
	}
	if int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		return nil, fmt.Errorf("the send pins directory %s is owned by uid %d with mode %04o: it must be root's and writable by no one else; nothing in it is read (chown root: %s; chmod 700 %s)",
			dir, st.Uid, st.Mode&0o7777, dir, dir)
	}
	path := filepath.Join(dir, name)
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, nil
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("the send pins file %s is a symbolic link; subvault writes it itself: remove it", path)
	case err != nil:
		return nil, fmt.Errorf("cannot open the send pins file %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path) //nolint:gosec // a descriptor this function opened
	defer f.Close()                    //nolint:errcheck // read only
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("cannot check %s: %w", path, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return nil, fmt.Errorf("the send pins file %s is not a regular file; subvault writes it itself: remove it", path)
	case int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0:
		return nil, fmt.Errorf("the send pins file %s is owned by uid %d with mode %04o, not root's 0600; subvault writes it itself: remove it", path, st.Uid, st.Mode&0o7777)
	case st.Size > maxPinsFile:
		return nil, fmt.Errorf("the send pins file %s is %d bytes long, at most %d", path, st.Size, maxPinsFile)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPinsFile+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	if len(data) > maxPinsFile {
		return nil, fmt.Errorf("the send pins file %s is more than %d bytes long", path, maxPinsFile)
	}
	var pf pinsFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pf); err != nil {
		return nil, fmt.Errorf("the send pins file %s is not one subvault wrote: %w (remove it: the next send to each target finds its parent on the target)", path, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) || pf.Version != 1 {
		return nil, fmt.Errorf("the send pins file %s is not one subvault wrote (remove it: the next send to each target finds its parent on the target)", path)
	}
	return pf.Pins, nil
}

// SetSendPins replaces the plan's pins for target with pins (none: the
// target's pins go), written atomically, root's and 0600.
func SetSendPins(cfg *config.Config, plan, target string, pins []SendPin) error {
	pinsMu.Lock()
	defer pinsMu.Unlock()
	all, err := readPins(cfg, plan)
	if err != nil {
		return err
	}
	all = slices.DeleteFunc(all, func(p SendPin) bool { return p.Target == target })
	for _, p := range pins {
		p.Target = target
		all = append(all, p)
	}
	return writePins(cfg, plan, all)
}

func writePins(cfg *config.Config, plan string, pins []SendPin) error {
	name, err := pinsFileName(plan)
	if err != nil {
		return err
	}
	if err := state.EnsureDir(cfg.Settings.StateDir); err != nil {
		return err
	}
	dir := filepath.Join(cfg.Settings.StateDir, SendPinsDir)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("cannot create the send pins directory %s: %w", dir, err)
	}
	if pins == nil {
		pins = []SendPin{}
	}
	data, err := json.MarshalIndent(pinsFile{Version: 1, Pins: pins}, "", "  ")
	if err != nil {
		return err
	}
	if err := state.WriteFileAtomic(filepath.Join(dir, name), data, 0o600); err != nil {
		return fmt.Errorf("cannot write the send pins of plan %s: %w", plan, err)
	}
	return nil
}

// dropOldPins removes the plan's pins older than its target_pin_for and
// returns the ones left and the ones dropped.
func dropOldPins(cfg *config.Config, plan *config.Plan, now time.Time) (left, dropped []SendPin, err error) {
	pinsMu.Lock()
	defer pinsMu.Unlock()
	all, err := readPins(cfg, plan.Name)
	if err != nil {
		return nil, nil, err
	}
	for _, p := range all {
		if !slices.Contains(plan.SendTo, p.Target) || now.Sub(p.Since) > pinFor(plan) {
			dropped = append(dropped, p)
		} else {
			left = append(left, p)
		}
	}
	if len(dropped) > 0 {
		if err := writePins(cfg, plan.Name, left); err != nil {
			return nil, nil, err
		}
	}
	return left, dropped, nil
}

// Package reset is the impermanence of docs/configuration.md#reset: at boot,
// in the initrd, each configured subvolume goes back to its clean snapshot
// with the persisted paths copied over from the state it leaves, which is
// kept as a read-only snapshot first.
package reset

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
)

// Change is one path that differs between a live subvolume and its clean
// snapshot and is not persisted: what the next boot throws away.
type Change struct {
	Path string
	Kind string // added, changed or removed
	Type string // file, dir, symlink, ...
	Size int64
}

// RunOptions are a reset's inputs besides the configuration.
type RunOptions struct {
	Cmdline string // the kernel command line (/proc/cmdline)
	Now     func() time.Time
	Log     *slog.Logger
}

// PathResult is what the reset did to one subvolume.
type PathResult struct {
	Path      string `json:"path"`
	Result    string `json:"result"` // done, skipped or failed
	Reason    string `json:"reason,omitempty"`
	State     string `json:"state,omitempty"` // the previous state's snapshot name
	Persisted int    `json:"persisted"`
	Bytes     int64  `json:"bytes"`
}

// Record is the result of one reset run, as <state_dir>/reset/last.json keeps it.
type Record struct {
	Time    time.Time    `json:"time"`
	Results []PathResult `json:"results"`
}

var errTodo = errors.New("reset: not built yet")

// Init takes the clean snapshot of the subvolume mounted at path.
func Init(ctx context.Context, cfg *config.Config, path string, log *slog.Logger) (btrfs.Snapshot, error) {
	return btrfs.Snapshot{}, errTodo
}

// Run resets every configured subvolume (in the initrd).
func Run(ctx context.Context, cfg *config.Config, o RunOptions) (Record, error) {
	return Record{}, errTodo
}

// Diff lists what the next reset of path throws away.
func Diff(ctx context.Context, cfg *config.Config, path string) ([]Change, error) {
	return nil, errTodo
}

// States lists the reset's snapshots: the clean ones and the previous states.
func States(ctx context.Context, cfg *config.Config) ([]btrfs.Snapshot, error) { return nil, errTodo }

// ReadRecord reads the last reset's record from the state directory.
func ReadRecord(cfg *config.Config) (Record, error) { return Record{}, errTodo }

// PrepareNext makes the next reset of path come up in state instead of clean.
func PrepareNext(ctx context.Context, cfg *config.Config, path, state string) error { return errTodo }

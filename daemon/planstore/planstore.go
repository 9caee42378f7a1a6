// Package planstore reaches the places where a plan keeps its backups: its
// local snapshots, one snapshot directory per subvolume, each reached and
// checked through descriptors; and its archives, in its restic repository,
// tagged with the plan. Backup, restore, maintenance, rollback, diff and the
// daemon's own calls all find, open, take and delete a plan's snapshots
// here, one way, and build its restic runner here.
package planstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/restic"
)

// DefaultSnapshotDirName is the directory at the top of each subvolume that
// holds its snapshots when the plan sets no snapshot_dir.
const DefaultSnapshotDirName = ".subvault-snapshots"

// SnapshotDir is where the snapshots of one subvolume of the plan go.
func SnapshotDir(plan *config.Plan, subvolume string) string {
	if plan.SnapshotDir != "" {
		return plan.SnapshotDir
	}
	return filepath.Join(subvolume, DefaultSnapshotDirName)
}

// Tag is the restic tag every archive of the plan carries.
func Tag(plan string) string { return "subvault:" + plan }

// NewRunner builds the restic runner for the plan's repository. A systemd
// credential is looked up in $CREDENTIALS_DIRECTORY.
func NewRunner(cfg *config.Config, plan *config.Plan, log *slog.Logger) (*restic.Runner, error) {
	if _, ok := cfg.Repositories[plan.Repository]; !ok {
		return nil, fmt.Errorf("plan %s names repository %q, which is not configured", plan.Name, plan.Repository)
	}
	r, err := NewRepositoryRunner(cfg, plan.Repository, log)
	if err != nil {
		return nil, err
	}
	r.StallTimeout = plan.StallTimeout
	return r, nil
}

// NewRepositoryRunner builds the restic runner for the repository named
// name (a plan's copy_to names others than its own).
func NewRepositoryRunner(cfg *config.Config, name string, log *slog.Logger) (*restic.Runner, error) {
	repo, ok := cfg.Repositories[name]
	if !ok {
		return nil, fmt.Errorf("repository %q is not configured", name)
	}
	r, err := Repository(repo)
	if err != nil {
		return nil, err
	}
	if repo.Credential != "" {
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return nil, fmt.Errorf("repository %s: credential %q needs $CREDENTIALS_DIRECTORY, which is not set (run subvault under systemd with LoadCredential=%s:PATH, or use password_file)", repo.Name, repo.Credential, repo.Credential)
		}
		r.CredentialFile = filepath.Join(dir, repo.Credential)
	}
	host, _ := os.Hostname()
	// restic's temporary files go under the repository's cache directory,
	// which every backup excludes and keeps as on the host.
	return &restic.Runner{Binary: cfg.Settings.Restic, Repo: r, Logger: log, Hostname: host,
		TempDir: filepath.Join(repo.CacheDir, "tmp")}, nil
}

// TimeoutError is why a job of a plan was stopped when it ran longer than
// the plan's timeout: the cause of JobContext's context.
type TimeoutError struct {
	Plan    string
	Timeout time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("stopped after running longer than plan %s's timeout of %v; if the job is only slow, raise timeout in the plan, else see in the job's log what it waited for", e.Plan, e.Timeout)
}

// JobContext is ctx, ended after the plan's timeout (with a *TimeoutError
// as its cause) when the plan has one. Every job of the plan runs in it.
func JobContext(ctx context.Context, plan *config.Plan) (context.Context, context.CancelFunc) {
	if plan.Timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, plan.Timeout, &TimeoutError{Plan: plan.Name, Timeout: plan.Timeout})
}

// TimedOut is the *TimeoutError that ended ctx, or nil when ctx did not end
// for the plan's timeout (it runs, or was canceled).
func TimedOut(ctx context.Context) *TimeoutError {
	var e *TimeoutError
	if ctx.Err() != nil && errors.As(context.Cause(ctx), &e) {
		return e
	}
	return nil
}

// Repository is how restic reaches the configured repository: its location,
// password source (a credential is the caller's to resolve), env_file and
// cache, and what every restic command against it gets (Options,
// LimitUpload, LimitDownload): the options, connections (as the backend's
// BACKEND.connections) and the ssh command (sftp.command).
func Repository(repo *config.Repository) (restic.Repository, error) {
	r := restic.Repository{
		URL:             repo.URL,
		PasswordFile:    repo.PasswordFile,
		PasswordCommand: repo.PasswordCommand,
		EnvFile:         repo.EnvFile,
		CacheDir:        repo.CacheDir,
		Options:         slices.Clone(repo.Options),
		LimitUpload:     repo.LimitUpload,
		LimitDownload:   repo.LimitDownload,
	}
	if repo.Connections > 0 {
		r.Options = append(r.Options, restic.Option{Key: restic.Backend(repo.URL) + ".connections", Value: strconv.Itoa(repo.Connections)})
	}
	switch {
	case repo.SSH.Command != "":
		r.Options = append(r.Options, restic.Option{Key: "sftp.command", Value: repo.SSH.Command})
	case !repo.SSH.IsZero():
		cmd, err := restic.SFTPCommand(repo.URL, repo.SSHFiles())
		if err != nil {
			return r, fmt.Errorf("repository %s: ssh: %w", repo.Name, err)
		}
		r.Options = append(r.Options, restic.Option{Key: "sftp.command", Value: cmd})
	}
	return r, nil
}

// AlwaysExcluded are the paths every backup of the plan leaves out besides
// its own exclude rules: subvault's snapshots, restic's cache and a local
// repository, should they lie inside a subvolume. (subvault diff leaves
// out the same.)
func AlwaysExcluded(cfg *config.Config, plan *config.Plan) []string {
	var paths []string
	seen := map[string]bool{}
	for _, sv := range plan.Subvolumes {
		dir := SnapshotDir(plan, sv)
		if !seen[dir] {
			seen[dir] = true
			paths = append(paths, dir)
		}
	}
	repo := cfg.Repositories[plan.Repository]
	paths = append(paths, repo.CacheDir)
	if p := LocalRepositoryPath(repo.URL); p != "" {
		paths = append(paths, p)
	}
	return paths
}

// LocalRepositoryPath is the directory of a repository on a local path
// ("/srv/restic" or "local:/srv/restic"), or "".
func LocalRepositoryPath(url string) string {
	url = strings.TrimPrefix(url, "local:")
	if filepath.IsAbs(url) {
		return filepath.Clean(url)
	}
	return ""
}

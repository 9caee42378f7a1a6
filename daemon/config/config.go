// Package config loads subvault's configuration file: strict YAML, defaults,
// and validation whose every message names the file, the line and the full
// key path, and says what is expected.
//
// docs/configuration.md is the reference of the file's shape (subvault.yaml(5)
// is generated from it). Load reads the one file and, besides, only the
// owner, type and mode of the files it names and of the directories above
// them (strict.go: like sshd's StrictModes, a file another user may change
// is refused); Parse does no I/O at all. Neither looks up users, groups or
// time zones.
package config

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/subvault/subvault/restic"
)

// DefaultPath is where the daemon and check-config look without --config.
const DefaultPath = "/etc/subvault/config.yaml"

// Defaults applied to absent keys.
const (
	DefaultPruneSchedule       = "@weekly"
	DefaultCheckSchedule       = "@monthly"
	DefaultCheckReadDataSubset = "5%"
	// DefaultStallTimeout is a plan's stall_timeout: longer than any
	// phase in which restic reads nothing and reports nothing on a
	// healthy repository, shorter than the 15 minutes restic 0.17+ retries
	// a dead backend. docs/configuration.md says why.
	DefaultStallTimeout      = 10 * time.Minute
	DefaultMaxConcurrentJobs = 1
	DefaultJobHistory        = 200
	DefaultStateDir          = "/var/lib/subvault"
	DefaultCacheDir          = "/var/cache/subvault"
	DefaultRestic            = "restic"
)

// CronParser parses every schedule in the configuration. The scheduler must
// use this same parser so that what check-config accepts is what runs.
var CronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Config is one loaded and validated configuration file.
type Config struct {
	File         string // the path given to Load or Parse
	Repositories map[string]*Repository
	Plans        map[string]*Plan
	// Targets are the local btrfs destinations plans send their snapshots
	// to (send_to), by name.
	Targets map[string]*Target
	// Reset is the subvolumes reset at every boot (impermanence); nil when
	// the file has no reset section.
	Reset    *Reset
	Settings Settings

	files []fileRef // what Load checks (strict.go), in file order
}

// Repository is one entry of "repositories". Exactly one of PasswordFile,
// PasswordCommand and Credential is set.
type Repository struct {
	Name            string // its key under "repositories"
	URL             string
	PasswordFile    string // absolute path
	PasswordCommand string // run by restic (RESTIC_PASSWORD_COMMAND)
	Credential      string // a systemd credential name, read from $CREDENTIALS_DIRECTORY
	EnvFile         string // absolute path or ""
	Init            bool
	CacheDir        string // absolute; defaults to Settings.CacheDir/Name
	// AppendOnly: the server keeps this host from deleting (rest-server or
	// rclone serve restic --append-only, a bucket with object lock); this
	// host never forgets or prunes there, retention is the server's
	// owner's (docs/configuration.md).
	AppendOnly bool
	// Options are restic's backend options (-o KEY=VALUE) for every restic
	// command, in file order; each key is an option of the url's backend.
	Options []restic.Option
	// SSH is how restic's ssh logs in; only for an sftp url.
	SSH SSH
	// LimitUpload and LimitDownload are KiB/s (restic's --limit-upload and
	// --limit-download); 0 for no limit.
	LimitUpload, LimitDownload int
	// Connections is the url's backend's BACKEND.connections option; 0
	// for restic's default.
	Connections int
}

// SSH is the "ssh" block of an sftp repository: either Command, the whole
// command restic runs (its sftp.command), or any of the files from which
// subvault builds that command (restic.SFTPCommand). Paths are absolute.
type SSH struct {
	Command    string
	ConfigFile string
	Key        string
	KnownHosts string
}

// IsZero reports whether the block is absent.
func (s SSH) IsZero() bool { return s == SSH{} }

// Plan is one entry of "plans".
type Plan struct {
	Name                string   // its key under "plans"
	Subvolumes          []string // absolute, clean, no duplicates; at least one
	Repository          string   // a key of Config.Repositories
	Schedule            string   // "" for manual only
	CatchUp             bool
	SnapshotDir         string // "" for .subvault-snapshots at the top of each subvolume
	KeepSnapshots       KeepSnapshots
	Backup              Backup
	Retention           Retention
	PruneSchedule       string // "" for manual only; always "" on an append-only repository
	CheckSchedule       string // "" for manual only
	CheckReadDataSubset string // "" for a metadata-only check
	// Timeout ends any job of the plan that runs longer (failed); 0: none.
	Timeout time.Duration
	// StallTimeout ends a job whose restic made no progress for that long
	// (stalled), or marks it stalled (OnStall); 0: never.
	StallTimeout time.Duration
	// OnStall is what a stall does to the job: end it (cancel, the
	// default) or only mark it (report).
	OnStall     OnStall
	Hooks       Hooks
	AllowUsers  []string // user names or numeric uids, as written
	AllowGroups []string // group names or numeric gids, as written
	// OnBattery and Metered say whether a scheduled job runs while the
	// machine is on battery (UPower) or on a metered connection
	// (NetworkManager); a job a caller asks for runs either way.
	OnBattery Condition
	Metered   Condition
	// CopyTo names other repositories each new archive of the plan is
	// copied to (restic copy) after its backup: defined, not Repository,
	// no duplicates.
	CopyTo []string
	// SendTo names the targets (keys of Config.Targets) the plan's
	// snapshots are sent to with btrfs send and receive.
	SendTo []string
	// TargetRetention is which copies each target keeps (keep_snapshots
	// keys); the newest copy, the parent of the next incremental send, is
	// always kept.
	TargetRetention KeepSnapshots
	// SendSchedule is a cron spec for the plan's sends; "" (the default):
	// a send to each target follows every backup that made snapshots.
	SendSchedule string
	// TargetPinFor is how long a snapshot stays pinned as a target's
	// parent while the target is away; after that keep_snapshots may
	// delete it and the next send to the target is a full one.
	TargetPinFor time.Duration
	// Notify are the plan's own pings and webhooks; settings.notify's go
	// with them (Config.NotifyFor).
	Notify []Notify

	// The parsed Schedule, PruneSchedule and CheckSchedule (by CronParser);
	// nil when the schedule is "" (manual only).
	ScheduleSpec cron.Schedule
	PruneSpec    cron.Schedule
	CheckSpec    cron.Schedule
	SendSpec     cron.Schedule
}

// DefaultTargetPinFor is a plan's target_pin_for when it sets none.
const DefaultTargetPinFor = 90 * 24 * time.Hour

// DefaultTargetRetention is a plan's target_retention when it sets none:
// the last 10 copies on each target. keep_snapshots' own default keeps no
// snapshot, which on a target would leave only the newest copy; an onsite
// disk is there to hold a history (docs/configuration.md).
func DefaultTargetRetention() KeepSnapshots { return KeepSnapshots{Last: 10} }

// TargetNames returns the names of all targets, sorted.
func (c *Config) TargetNames() []string {
	return slices.Sorted(maps.Keys(c.Targets))
}

// Target is one local btrfs destination (a key under "targets"): a
// directory on a mounted btrfs, or a filesystem by UUID that may be absent.
type Target struct {
	Name string // its key under "targets"
	// Path is an absolute directory on a mounted btrfs, or "".
	Path string
	// UUID is a btrfs filesystem UUID (lowercase, dashed), or "".
	UUID string
	// Subdir is, for a UUID target, the directory under the filesystem's
	// top level that holds the copies ("subvault" by default).
	Subdir string
}

// Reset is the reset section: subvolumes that go back to a clean snapshot at
// every boot, with chosen paths kept (docs/configuration.md#reset).
type Reset struct {
	Subvolumes []*ResetSubvolume
}

// ResetSubvolume is one subvolume the reset returns to its clean snapshot.
type ResetSubvolume struct {
	// Path is where the subvolume is mounted in the running system
	// (absolute, clean; on the root filesystem).
	Path string
	// Clean is the clean snapshot's name, or "latest" (the default): the
	// newest one `subvault reset init PATH` made.
	Clean string
	// Persist are the absolute paths (as the running system sees them,
	// under Path) copied from the previous state into the new one.
	Persist []string
	// Keep is how many previous states are kept (keep_snapshots keys).
	Keep KeepSnapshots
}

// ResetPlan is the plan name the reset's snapshots carry; no plan may be
// named so while the configuration has a reset section.
const ResetPlan = "reset"

// DefaultResetKeep is a reset subvolume's keep when it sets none.
var DefaultResetKeep = KeepSnapshots{Last: 5}

// DefaultTargetSubdir is a UUID target's subdir when it sets none.
const DefaultTargetSubdir = "subvault"

// Condition is what a plan's scheduled jobs do while a condition holds
// (on_battery, metered).
type Condition string

// The choices of on_battery and metered.
const (
	ConditionRun  Condition = "run"  // run as usual (the default)
	ConditionSkip Condition = "skip" // wait until the condition clears
)

// OnStall is what happens to a job whose restic made no progress for the
// plan's stall_timeout (on_stall).
type OnStall string

// The choices of on_stall.
const (
	// OnStallCancel stops the job, which ends stalled (the default).
	OnStallCancel OnStall = "cancel"
	// OnStallReport marks the running job stalled (queue.Job.StalledSince)
	// until it moves again, and lets it go on: it ends by itself, by a
	// cancel or by the plan's timeout.
	OnStallReport OnStall = "report"
)

// KeepSnapshots says which local btrfs snapshots survive a successful
// backup. All zero: the snapshot is deleted as soon as its backup is done.
type KeepSnapshots struct {
	Last, Hourly, Daily, Weekly, Monthly int
}

// Retention is the plan's restic forget policy (--keep-*).
type Retention struct {
	Last, Hourly, Daily, Weekly, Monthly, Yearly int
	Within                                       string // a restic duration such as "2d", or ""
}

// DefaultRetention is the policy of a plan without a "retention" block.
func DefaultRetention() Retention {
	return Retention{Daily: 7, Weekly: 4, Monthly: 12, Yearly: 1}
}

// KeepsNothing reports whether the policy would keep no archive at all.
func (r Retention) KeepsNothing() bool {
	return r == Retention{}
}

// Backup holds the options passed to `restic backup`.
type Backup struct {
	Exclude          []string
	ExcludeFile      string // absolute path or ""
	ExcludeIfPresent []string
	OneFileSystem    bool
	Tags             []string
	ExtraArgs        []string // never set options subvault controls (repository, password, --json, cache)
}

// Hooks are commands run as root around a backup. Each hook is a list of
// argv lists; the file may give one argv (["/usr/bin/psql", "-c", "CHECKPOINT"])
// or several ([[...], [...]]), and both load as [][]string. Every argv has
// at least one element and a non-empty program.
type Hooks struct {
	BeforeSnapshot [][]string
	AfterSnapshot  [][]string
	OnSuccess      [][]string
	OnFailure      [][]string
}

// Settings are the daemon-wide settings.
type Settings struct {
	MaxConcurrentJobs int
	JobHistory        int
	InhibitSleep      bool
	StateDir          string // absolute
	CacheDir          string // absolute; repositories' caches default below it
	Restic            string // a program name looked up in PATH, or an absolute path
	// Metrics is where the daemon publishes its Prometheus metrics
	// (docs/monitoring.md); both empty: nowhere.
	Metrics Metrics
	// Notify are the pings and webhooks told of every plan's jobs.
	Notify []Notify
}

// Metrics is the settings.metrics block.
type Metrics struct {
	// Textfile is a directory (node_exporter's textfile collector's) the
	// daemon writes subvault.prom into; "" for none.
	Textfile string
	// Listen is where the daemon serves GET /metrics over HTTP: a
	// loopback "HOST:PORT" (127.0.0.1, [::1] or localhost), or
	// "unix:" and the absolute path of a socket; "" for nowhere.
	Listen string
}

// ListenUnix is the socket path of a "unix:/path" Listen, "" otherwise.
func (m Metrics) ListenUnix() string {
	path, ok := strings.CutPrefix(m.Listen, "unix:")
	if !ok {
		return ""
	}
	return path
}

// DefaultSettings are the settings of a file without a "settings" block.
func DefaultSettings() Settings {
	return Settings{
		MaxConcurrentJobs: DefaultMaxConcurrentJobs,
		JobHistory:        DefaultJobHistory,
		InhibitSleep:      true,
		StateDir:          DefaultStateDir,
		CacheDir:          DefaultCacheDir,
		Restic:            DefaultRestic,
	}
}

// Load reads the file at path and parses it with Parse, then checks that
// nobody but root (or the uid this process runs as) can change the file,
// the programs it runs, the files restic reads and the directories root
// writes into, or read its secrets (strict.go). A problem is refused as an
// *Errors whose entries name the file, the key and the chmod or chown that
// fixes it.
func Load(path string) (*Config, error) {
	data, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	cfg, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	if err := cfg.checkFiles(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Parse decodes and validates a configuration. file is used only in
// messages. When the configuration is refused the error is an *Errors
// listing every problem found, in line order.
func Parse(file string, data []byte) (*Config, error) {
	if file == "" {
		file = "<config>"
	}
	p := &parser{file: file}
	cfg := p.parse(data)
	if len(p.errs.List) > 0 {
		p.errs.sort()
		return nil, &p.errs
	}
	cfg.File = file
	cfg.files = p.files
	return cfg, nil
}

// NotifyFor is where the jobs of plan are told of: settings.notify, then
// the plan's own notify.
func (c *Config) NotifyFor(plan string) []Notify {
	out := slices.Clone(c.Settings.Notify)
	if p, ok := c.Plans[plan]; ok {
		out = append(out, p.Notify...)
	}
	return out
}

// PlanNames returns the names of all plans, sorted.
func (c *Config) PlanNames() []string {
	return slices.Sorted(maps.Keys(c.Plans))
}

// RepositoryNames returns the names of all repositories, sorted.
func (c *Config) RepositoryNames() []string {
	return slices.Sorted(maps.Keys(c.Repositories))
}

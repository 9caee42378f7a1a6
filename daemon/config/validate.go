package config

import (
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"
)

var (
	topKeys        = []string{"repositories", "targets", "plans", "reset", "settings"}
	repositoryKeys = []string{"url", "password_file", "password_command", "credential", "env_file", "init", "cache_dir", "append_only",
		"options", "ssh", "limit_upload", "limit_download", "connections"}
	sshKeys  = []string{"command", "config_file", "key", "known_hosts"}
	planKeys = []string{"subvolumes", "repository", "schedule", "catch_up", "snapshot_dir", "keep_snapshots", "backup",
		"retention", "prune_schedule", "check_schedule", "check_read_data_subset", "hooks", "allow_users", "allow_groups",
		"on_battery", "metered", "timeout", "stall_timeout", "on_stall", "copy_to", "send_to", "target_retention",
		"send_schedule", "target_pin_for", "notify"}
	keepSnapshotsKeys = []string{"last", "hourly", "daily", "weekly", "monthly"}
	retentionKeys     = []string{"last", "hourly", "daily", "weekly", "monthly", "yearly", "within"}
	backupKeys        = []string{"exclude", "exclude_file", "exclude_if_present", "one_file_system", "tags", "extra_args"}
	hookKeys          = []string{"before_snapshot", "after_snapshot", "on_success", "on_failure"}
	settingsKeys      = []string{"max_concurrent_jobs", "job_history", "inhibit_sleep", "state_dir", "cache_dir", "restic", "metrics", "notify"}
	metricsKeys       = []string{"textfile", "listen"}
	targetKeys        = []string{"path", "uuid", "subdir"}
	passwordKeys      = []string{"password_file", "password_command", "credential"}
)

var (
	nameRE          = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	withinRE        = regexp.MustCompile(`^([0-9]+[ymdh])+$`)
	subsetFraction  = regexp.MustCompile(`^([0-9]+)/([0-9]+)$`)
	subsetPercent   = regexp.MustCompile(`^([0-9]+(\.[0-9]+)?)%$`)
	subsetSize      = regexp.MustCompile(`^([0-9]+)[bBkKmMgGtT]?$`)
	accountNameRE   = regexp.MustCompile(`^[a-z_][a-z0-9_-]*\$?$`)
	numericIDRE     = regexp.MustCompile(`^[0-9]+$`)
	cronFieldsTrail = regexp.MustCompile(`: \[.*\]$`)
)

const (
	nameExpected     = `1 to 64 letters, digits, "_", "." or "-", starting with a letter or digit`
	cronExpected     = `5 fields "minute hour day-of-month month day-of-week" or @hourly/@daily/@weekly/@monthly/@yearly/@every DURATION`
	scheduleExpected = `a cron spec (` + cronExpected + `), or "" for manual only`
	withinExpected   = `a restic duration such as "2d", "12h" or "1y6m" (numbers each followed by y, m, d or h), or "" for none`
	subsetExpected   = `"" for a metadata-only check, n/t with 1 <= n <= t (such as "1/10"), a percentage above 0 and at most 100 (such as "5%" or "2.5%"), or a size (such as "500M", "2G", "1T")`
	argvExpected     = `one command as a list of strings, such as ["/usr/bin/psql", "-c", "CHECKPOINT"], or a list of such commands`
)

// controlledFlags are restic options subvault sets itself; extra_args must not override them.
var controlledFlags = []string{"--repo", "-r", "--repository-file", "--password-file", "-p", "--password-command",
	"--insecure-no-password", "--json", "--cache-dir", "--no-cache"}

func (p *parser) parse(data []byte) *Config {
	top := p.document(data)
	if top == nil {
		return nil
	}
	m := p.mapping(nil, top, "", "a mapping with the keys repositories, plans and settings", topKeys)
	if m == nil {
		return nil
	}
	cfg := &Config{
		Repositories: map[string]*Repository{},
		Plans:        map[string]*Plan{},
		Targets:      map[string]*Target{},
		Settings:     DefaultSettings(),
	}
	// Settings first: repositories' cache directories default below settings.cache_dir.
	settingsAt := map[string]*yaml.Node{}
	if e, path, ok := m.get("settings"); ok {
		p.settings(e, path, &cfg.Settings, settingsAt)
	}
	p.names(settingsAt["state_dir"], "settings.state_dir", cfg.Settings.StateDir, roleDirectory)
	p.names(settingsAt["cache_dir"], "settings.cache_dir", cfg.Settings.CacheDir, roleDirectory)
	p.names(settingsAt["restic"], "settings.restic", cfg.Settings.Restic, roleProgram)
	if n := settingsAt["metrics.textfile"]; n != nil {
		p.names(n, "settings.metrics.textfile", cfg.Settings.Metrics.Textfile, roleMetricsDir)
	}
	if n := settingsAt["metrics.listen"]; n != nil {
		p.names(n, "settings.metrics.listen", filepath.Dir(cfg.Settings.Metrics.ListenUnix()), roleDirectory)
	}
	if e, path, ok := m.get("repositories"); ok {
		entries, _ := p.pairs(e.value, path, "a mapping of repository names to repositories ({} for none)")
		for _, r := range entries {
			rpath := join(path, r.name)
			p.name(r, rpath, "repository")
			cfg.Repositories[r.name] = p.repository(r, rpath, cfg.Settings)
		}
	}
	// Targets before plans: a plan's send_to names them.
	targetsAt := map[string]*yaml.Node{}
	if e, path, ok := m.get("targets"); ok {
		p.targets(e, path, cfg, targetsAt)
	}
	planAt := map[string]*yaml.Node{}
	if e, path, ok := m.get("plans"); ok {
		entries, _ := p.pairs(e.value, path, "a mapping of plan names to plans ({} for none)")
		for _, pl := range entries {
			ppath := join(path, pl.name)
			p.name(pl, ppath, "plan")
			cfg.Plans[pl.name] = p.plan(pl, ppath, cfg)
			planAt[pl.name] = pl.key
		}
	}
	p.targetsOutsideSnapshots(cfg, targetsAt)
	if e, path, ok := m.get("reset"); ok {
		p.reset(e, path, cfg)
		p.resetReservesPlan(cfg, planAt)
	}
	return cfg
}

func (p *parser) name(e pair, path, what string) {
	if !nameRE.MatchString(e.name) {
		p.fail(e.key, path, fmt.Sprintf("%q is not a valid %s name", e.name, what), nameExpected)
	}
}

// settings decodes the settings block; at gets the value node of each key
// that names a file.
func (p *parser) settings(e pair, path string, s *Settings, at map[string]*yaml.Node) {
	m := p.mapping(e.key, e.value, path, "a mapping of daemon settings", settingsKeys)
	if m == nil {
		return
	}
	if e, path, ok := m.get("max_concurrent_jobs"); ok {
		s.MaxConcurrentJobs, _ = p.count(e.value, path, 1)
	}
	if e, path, ok := m.get("job_history"); ok {
		s.JobHistory, _ = p.count(e.value, path, 1)
	}
	if e, path, ok := m.get("inhibit_sleep"); ok {
		s.InhibitSleep, _ = p.boolean(e.value, path)
	}
	if e, path, ok := m.get("state_dir"); ok {
		s.StateDir, _ = p.absPath(e.value, path, "an absolute directory such as "+DefaultStateDir, false)
		at["state_dir"] = e.value
	}
	if e, path, ok := m.get("cache_dir"); ok {
		s.CacheDir, _ = p.absPath(e.value, path, "an absolute directory such as "+DefaultCacheDir, false)
		at["cache_dir"] = e.value
	}
	if e, path, ok := m.get("notify"); ok {
		s.Notify = p.notifyList(e.value, path)
	}
	if e, path, ok := m.get("restic"); ok {
		const expected = "a program name looked up in PATH (such as restic) or an absolute path (such as /usr/bin/restic)"
		if v, ok := p.str(e.value, path, expected); ok {
			switch {
			case strings.TrimSpace(v) == "":
				p.fail(resolve(e.value), path, "is empty", expected)
			case strings.Contains(v, "/") && !filepath.IsAbs(v):
				p.fail(resolve(e.value), path, fmt.Sprintf("%q is a relative path", v), expected)
			default:
				s.Restic = v
				at["restic"] = e.value
			}
		}
	}
	if e, path, ok := m.get("metrics"); ok {
		p.metrics(e, path, &s.Metrics, at)
	}
}

// maxSocketPath is the longest path a unix socket's address holds
// (sun_path, with its NUL).
const maxSocketPath = 107

// metrics decodes settings.metrics (docs/monitoring.md).
func (p *parser) metrics(e pair, path string, s *Metrics, at map[string]*yaml.Node) {
	m := p.mapping(e.key, e.value, path, "a mapping with textfile and/or listen", metricsKeys)
	if m == nil {
		return
	}
	if e, path, ok := m.get("textfile"); ok {
		const expected = `the absolute path of node_exporter's textfile directory, such as /var/lib/prometheus/node-exporter, or "" for none`
		if n := resolve(e.value); n.Kind != yaml.ScalarNode || n.Tag != tagStr || n.Value != "" { // "": none
			if v, ok := p.absPath(e.value, path, expected, true); ok {
				s.Textfile = v
				at["metrics.textfile"] = e.value
			}
		}
	}
	if e, path, ok := m.get("listen"); ok {
		const expected = `a loopback address and port (127.0.0.1:9835, [::1]:9835 or localhost:9835), "unix:" and the absolute path of a socket (unix:/run/subvault/metrics.sock), or "" for none`
		v, ok := p.str(e.value, path, expected)
		if !ok || v == "" {
			return
		}
		n := resolve(e.value)
		if sock, isUnix := strings.CutPrefix(v, "unix:"); isUnix {
			switch {
			case !filepath.IsAbs(sock) || filepath.Clean(sock) != sock || sock == "/":
				p.fail(n, path, fmt.Sprintf("%q is not an absolute, clean path", sock), expected)
			case len(sock) > maxSocketPath:
				p.fail(n, path, fmt.Sprintf("the socket path is %d bytes long, longer than a unix socket's %d", len(sock), maxSocketPath), expected)
			default:
				s.Listen = v
				at["metrics.listen"] = e.value
			}
			return
		}
		host, port, err := net.SplitHostPort(v)
		if err != nil {
			p.fail(n, path, fmt.Sprintf("%q is not HOST:PORT", v), expected)
			return
		}
		if pn, err := strconv.Atoi(port); err != nil || pn < 1 || pn > 65535 {
			p.fail(n, path, fmt.Sprintf("port %q is not a number from 1 to 65535", port), expected)
			return
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			p.fail(n, path, fmt.Sprintf("%q is not a loopback address: the metrics are served to this machine only (scrape them from elsewhere through node_exporter's textfile collector, or a proxy of your own)", host), expected)
			return
		}
		s.Listen = v
	}
}

func (p *parser) repository(e pair, path string, settings Settings) *Repository {
	repo := &Repository{Name: e.name, CacheDir: filepath.Join(settings.CacheDir, e.name)}
	m := p.mapping(e.key, e.value, path, "a mapping with url and one of password_file, password_command or credential", repositoryKeys)
	if m == nil {
		return repo
	}
	if e, path, ok := m.get("url"); ok {
		const expected = "a restic repository such as sftp:user@host:/srv/restic or /srv/restic-repo"
		if v, ok := p.str(e.value, path, expected); ok {
			if strings.TrimSpace(v) == "" {
				p.fail(resolve(e.value), path, "is empty", expected)
			}
			repo.URL = v
			if dir, local := localRepository(v); local {
				p.names(e.value, path, dir, roleDirectory)
			}
		}
	} else {
		p.missing(m, "url", "a restic repository such as sftp:user@host:/srv/restic")
	}

	var sources []pair
	for _, k := range passwordKeys {
		if e, _, ok := m.get(k); ok {
			sources = append(sources, e)
		}
	}
	switch len(sources) {
	case 0:
		p.fail(m.at, path, "no password source is set",
			"exactly one of password_file (an absolute path), password_command or credential (a systemd credential name)")
	case 1:
	default:
		names := make([]string, len(sources))
		for i, s := range sources {
			names[i] = fmt.Sprintf("%s (line %d)", s.name, s.key.Line)
		}
		last := sources[len(sources)-1]
		p.fail(last.key, path, "more than one password source is set: "+strings.Join(names, ", "),
			"exactly one of password_file, password_command or credential")
	}
	if e, path, ok := m.get("password_file"); ok {
		var good bool
		repo.PasswordFile, good = p.absPath(e.value, path, "an absolute path to the file holding the password, such as /etc/subvault/offsite.pass", false)
		if good {
			p.names(e.value, path, repo.PasswordFile, roleSecret)
		}
	}
	if e, path, ok := m.get("password_command"); ok {
		const expected = "a command printing the password, such as \"/usr/bin/pass show restic\""
		if v, ok := p.str(e.value, path, expected); ok {
			if strings.TrimSpace(v) == "" {
				p.fail(resolve(e.value), path, "is empty", expected)
			} else if program := firstWord(v); program != "" {
				p.names(e.value, path, program, roleProgram)
			}
			repo.PasswordCommand = v
		}
	}
	if e, path, ok := m.get("credential"); ok {
		const expected = "a systemd credential name (LoadCredential=), such as restic-offsite, without \"/\""
		if v, ok := p.str(e.value, path, expected); ok {
			switch {
			case v == "":
				p.fail(resolve(e.value), path, "is empty", expected)
			case strings.Contains(v, "/") || v == "." || v == "..":
				p.fail(resolve(e.value), path, fmt.Sprintf("%q is not a credential name", v), expected)
			}
			repo.Credential = v
		}
	}
	if e, path, ok := m.get("env_file"); ok {
		var good bool
		repo.EnvFile, good = p.absPath(e.value, path, "an absolute path to a file of KEY=VALUE lines, such as /etc/subvault/offsite.env", false)
		if good {
			p.names(e.value, path, repo.EnvFile, roleSecret)
		}
	}
	if e, path, ok := m.get("init"); ok {
		repo.Init, _ = p.boolean(e.value, path)
	}
	if e, path, ok := m.get("append_only"); ok {
		repo.AppendOnly, _ = p.boolean(e.value, path)
	}
	if e, path, ok := m.get("cache_dir"); ok {
		var good bool
		repo.CacheDir, good = p.absPath(e.value, path, "an absolute directory such as "+filepath.Join(DefaultCacheDir, repo.Name), false)
		if good {
			p.names(e.value, path, repo.CacheDir, roleDirectory)
		}
	} else {
		// The default, below settings.cache_dir: reported at the repository.
		p.names(m.at, join(m.path, "cache_dir"), repo.CacheDir, roleDirectory)
	}
	p.repositoryOptions(m, repo)
	return repo
}

func (p *parser) plan(e pair, path string, cfg *Config) *Plan {
	plan := &Plan{
		Name:                e.name,
		CatchUp:             true,
		PruneSchedule:       DefaultPruneSchedule,
		CheckSchedule:       DefaultCheckSchedule,
		CheckReadDataSubset: DefaultCheckReadDataSubset,
		Retention:           DefaultRetention(),
		Backup:              Backup{OneFileSystem: true},
		OnBattery:           ConditionRun,
		Metered:             ConditionRun,
		StallTimeout:        DefaultStallTimeout,
		OnStall:             OnStallCancel,
		TargetRetention:     DefaultTargetRetention(),
		TargetPinFor:        DefaultTargetPinFor,
	}
	plan.PruneSpec, _ = CronParser.Parse(DefaultPruneSchedule)
	plan.CheckSpec, _ = CronParser.Parse(DefaultCheckSchedule)
	m := p.mapping(e.key, e.value, path, "a mapping with at least subvolumes and repository", planKeys)
	if m == nil {
		return plan
	}

	if e, path, ok := m.get("subvolumes"); ok {
		plan.Subvolumes = p.subvolumes(e, path)
	} else {
		p.missing(m, "subvolumes", "a list of absolute subvolume paths such as [/home]")
	}
	if e, path, ok := m.get("repository"); ok {
		plan.Repository = p.repositoryRef(e, path, cfg)
	} else {
		p.missing(m, "repository", "the name of a repository defined under repositories"+definedRepositories(cfg))
	}
	if e, path, ok := m.get("schedule"); ok {
		plan.Schedule, plan.ScheduleSpec, _ = p.schedule(e.value, path)
	}
	if e, path, ok := m.get("catch_up"); ok {
		plan.CatchUp, _ = p.boolean(e.value, path)
	}
	if e, path, ok := m.get("on_battery"); ok {
		plan.OnBattery = p.condition(e.value, path, plan.OnBattery)
	}
	if e, path, ok := m.get("metered"); ok {
		plan.Metered = p.condition(e.value, path, plan.Metered)
	}
	if e, path, ok := m.get("snapshot_dir"); ok {
		const expected = `"" (.subvault-snapshots at the top of each subvolume) or an absolute clean path on the same filesystem`
		if v, ok := p.str(e.value, path, expected); ok && v != "" {
			plan.SnapshotDir, _ = p.absPath(e.value, path, expected, true)
		}
	}
	if e, path, ok := m.get("keep_snapshots"); ok {
		p.keepSnapshots(e, path, &plan.KeepSnapshots)
	}
	if e, path, ok := m.get("backup"); ok {
		p.backup(e, path, &plan.Backup)
	}
	retention, retentionPath, haveRetention := m.get("retention")
	if haveRetention {
		plan.Retention = Retention{}
		before := len(p.errs.List)
		p.retention(retention, retentionPath, &plan.Retention)
		// A block with a bad value is reported as that, not also as keeping nothing.
		haveRetention = len(p.errs.List) == before
	}
	appendOnly := false
	if r := cfg.Repositories[plan.Repository]; r != nil && r.AppendOnly {
		// This host never prunes there: no default prune either.
		appendOnly = true
		plan.PruneSchedule, plan.PruneSpec = "", nil
	}
	if e, path, ok := m.get("prune_schedule"); ok {
		spec, sched, good := p.schedule(e.value, path)
		if good && appendOnly && sched != nil {
			p.fail(resolve(e.value), path, fmt.Sprintf("%q prunes repository %s, which is append_only: this host never forgets or prunes there (retention belongs to the server's owner, who prunes on the server)", spec, plan.Repository),
				`prune_schedule: "" or no prune_schedule (or append_only: false if this host may delete there)`)
		} else if !appendOnly {
			plan.PruneSchedule, plan.PruneSpec = spec, sched
		}
	}
	if e, path, ok := m.get("check_schedule"); ok {
		plan.CheckSchedule, plan.CheckSpec, _ = p.schedule(e.value, path)
	}
	if haveRetention && plan.PruneSpec != nil && plan.Retention.KeepsNothing() {
		p.fail(retention.key, retentionPath, "keeps no archive, so a scheduled prune would delete them all",
			`at least one keep count above 0 or a within duration, or prune_schedule: "" to prune only by hand`)
	}
	if e, path, ok := m.get("check_read_data_subset"); ok {
		plan.CheckReadDataSubset, _ = p.readDataSubset(e.value, path)
	}
	if e, path, ok := m.get("hooks"); ok {
		p.hooks(e, path, &plan.Hooks)
	}
	if e, path, ok := m.get("timeout"); ok {
		plan.Timeout, _ = p.duration(e.value, path, `a Go duration such as "6h" or "90m" that bounds every job of the plan, or "0" for no bound`)
	}
	if e, path, ok := m.get("stall_timeout"); ok {
		plan.StallTimeout, _ = p.duration(e.value, path, `a Go duration such as "10m" (the default) after which a job whose restic makes no progress is stopped, or "0" never to stop one`)
	}
	if e, path, ok := m.get("on_stall"); ok {
		plan.OnStall = p.onStall(e.value, path)
	}
	if e, path, ok := m.get("allow_users"); ok {
		plan.AllowUsers = p.accounts(e.value, path, "user", "uid")
	}
	if e, path, ok := m.get("allow_groups"); ok {
		plan.AllowGroups = p.accounts(e.value, path, "group", "gid")
	}
	if e, path, ok := m.get("copy_to"); ok {
		plan.CopyTo = p.copyTo(e.value, path, plan.Repository, cfg)
	}
	p.planSends(m, plan, cfg)
	if e, path, ok := m.get("notify"); ok {
		plan.Notify = p.notifyList(e.value, path)
	}
	return plan
}

// copyTo decodes a plan's copy_to: names of repositories other than the
// plan's own, each once.
func (p *parser) copyTo(n *yaml.Node, path, own string, cfg *Config) []string {
	expected := "a list of names of other repositories defined under repositories" + definedRepositories(cfg) +
		", such as [offsite]; not the plan's own repository"
	return p.nameList(n, path, expected, "each repository once", func(v string) string {
		switch {
		case cfg.Repositories[v] == nil:
			return fmt.Sprintf("%q is not a defined repository", v)
		case v == own:
			return fmt.Sprintf("%q is the plan's own repository", v)
		}
		return ""
	})
}

// nameList decodes a list of names, each once (once says so when one is
// listed twice) and each one that refused finds no fault with; refused
// says what is wrong with a name, "" when nothing is.
func (p *parser) nameList(n *yaml.Node, path, expected, once string, refused func(v string) string) []string {
	items, ok := p.list(n, path, expected)
	if !ok {
		return nil
	}
	var out []string
	seen := map[string]int{}
	for i, item := range items {
		ipath := index(path, i)
		v, ok := p.str(item, ipath, expected)
		if !ok {
			continue
		}
		item = resolve(item)
		if first, dup := seen[v]; dup {
			p.fail(item, ipath, fmt.Sprintf("%q is listed twice (also at index %d)", v, first), once)
			continue
		}
		if why := refused(v); why != "" {
			p.fail(item, ipath, why, expected)
			continue
		}
		seen[v] = i
		out = append(out, v)
	}
	return out
}

// definedNames is what an error says of the names defined: " (defined:
// a, b)" or " (none is defined)".
func definedNames(names []string) string {
	if len(names) == 0 {
		return " (none is defined)"
	}
	return " (defined: " + strings.Join(names, ", ") + ")"
}

func definedRepositories(cfg *Config) string { return definedNames(cfg.RepositoryNames()) }

func (p *parser) repositoryRef(e pair, path string, cfg *Config) string {
	expected := "the name of a repository defined under repositories" + definedRepositories(cfg)
	v, ok := p.str(e.value, path, expected)
	if !ok {
		return ""
	}
	if _, defined := cfg.Repositories[v]; !defined {
		p.fail(resolve(e.value), path, fmt.Sprintf("%q is not a defined repository", v), expected)
	}
	return v
}

func (p *parser) subvolumes(e pair, path string) []string {
	const expected = "a list of absolute subvolume paths such as [/home]"
	items, ok := p.list(e.value, path, expected)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		p.fail(resolve(e.value), path, "is empty", expected)
		return nil
	}
	var out []string
	seen := map[string]int{}
	for i, item := range items {
		ipath := index(path, i)
		v, ok := p.absPath(item, ipath, "an absolute clean path to a btrfs subvolume, such as /home", true)
		if !ok {
			continue
		}
		if first, dup := seen[v]; dup {
			p.fail(resolve(item), ipath, fmt.Sprintf("%q is listed twice (also at index %d)", v, first), "each subvolume once")
			continue
		}
		seen[v] = i
		out = append(out, v)
	}
	return out
}

// absPath decodes an absolute path; clean also requires it to be in
// filepath.Clean form with no "..".
func (p *parser) absPath(n *yaml.Node, path, expected string, clean bool) (string, bool) {
	v, ok := p.str(n, path, expected)
	if !ok {
		return "", false
	}
	n = resolve(n)
	switch {
	case v == "":
		p.fail(n, path, "is empty", expected)
	case !filepath.IsAbs(v):
		p.fail(n, path, fmt.Sprintf("%q is a relative path", v), expected)
	case clean && slices.Contains(strings.Split(v, "/"), ".."):
		p.fail(n, path, fmt.Sprintf("%q contains \"..\"", v), expected)
	case clean && filepath.Clean(v) != v:
		p.fail(n, path, fmt.Sprintf("%q is not a clean path (write %q)", v, filepath.Clean(v)), expected)
	default:
		return v, true
	}
	return "", false
}

// schedule decodes and parses a cron spec; "" is manual only (nil schedule).
func (p *parser) schedule(n *yaml.Node, path string) (string, cron.Schedule, bool) {
	spec, ok := p.str(n, path, scheduleExpected)
	if !ok {
		return "", nil, false
	}
	if spec == "" {
		return "", nil, true
	}
	n = resolve(n)
	trimmed := strings.TrimSpace(spec)
	// A time zone prefix would make the parser load tzdata (I/O) and
	// would disagree with the wall-clock catch-up of the scheduler.
	if strings.HasPrefix(trimmed, "TZ=") || strings.HasPrefix(trimmed, "CRON_TZ=") {
		p.fail(n, path, fmt.Sprintf("%q sets a time zone, which subvault does not support (schedules follow the system's local time)", spec), cronExpected)
		return "", nil, false
	}
	if rest, every := strings.CutPrefix(trimmed, "@every "); every {
		if d, err := time.ParseDuration(strings.TrimSpace(rest)); err == nil && d < time.Minute {
			p.fail(n, path, fmt.Sprintf("%q is more often than once a minute", spec), "@every with a duration of at least 1m, or "+cronExpected)
			return "", nil, false
		}
	}
	sched, err := CronParser.Parse(spec)
	if err != nil {
		why := cronFieldsTrail.ReplaceAllString(err.Error(), "")
		p.fail(n, path, fmt.Sprintf("%q is not a cron spec (%s)", spec, why), cronExpected)
		return "", nil, false
	}
	return spec, sched, true
}

func (p *parser) keepSnapshots(e pair, path string, k *KeepSnapshots) {
	m := p.mapping(e.key, e.value, path, "a mapping of snapshot counts: "+strings.Join(keepSnapshotsKeys, ", "), keepSnapshotsKeys)
	if m == nil {
		return
	}
	for name, dst := range map[string]*int{"last": &k.Last, "hourly": &k.Hourly, "daily": &k.Daily, "weekly": &k.Weekly, "monthly": &k.Monthly} {
		if e, path, ok := m.get(name); ok {
			*dst, _ = p.count(e.value, path, 0)
		}
	}
}

func (p *parser) retention(e pair, path string, r *Retention) {
	m := p.mapping(e.key, e.value, path, "a mapping of restic forget --keep-* values: "+strings.Join(retentionKeys, ", "), retentionKeys)
	if m == nil {
		return
	}
	for name, dst := range map[string]*int{"last": &r.Last, "hourly": &r.Hourly, "daily": &r.Daily, "weekly": &r.Weekly, "monthly": &r.Monthly, "yearly": &r.Yearly} {
		if e, path, ok := m.get(name); ok {
			*dst, _ = p.count(e.value, path, 0)
		}
	}
	if e, path, ok := m.get("within"); ok {
		if v, ok := p.str(e.value, path, withinExpected); ok {
			if v != "" && !withinRE.MatchString(v) {
				p.fail(resolve(e.value), path, fmt.Sprintf("%q is not a restic duration", v), withinExpected)
				return
			}
			r.Within = v
		}
	}
}

func (p *parser) backup(e pair, path string, b *Backup) {
	m := p.mapping(e.key, e.value, path, "a mapping of restic backup options: "+strings.Join(backupKeys, ", "), backupKeys)
	if m == nil {
		return
	}
	if e, path, ok := m.get("exclude"); ok {
		b.Exclude = p.stringList(e.value, path, `a list of restic exclude patterns such as ["*.tmp", "/home/*/.cache"]`,
			"a non-empty exclude pattern", nonEmpty)
	}
	if e, path, ok := m.get("exclude_file"); ok {
		const expected = `"" or an absolute path to a file of exclude patterns`
		if v, ok := p.str(e.value, path, expected); ok && v != "" {
			var good bool
			if b.ExcludeFile, good = p.absPath(e.value, path, expected, false); good {
				p.names(e.value, path, b.ExcludeFile, roleRead)
			}
		}
	}
	if e, path, ok := m.get("exclude_if_present"); ok {
		b.ExcludeIfPresent = p.stringList(e.value, path, `a list of file names such as [".nobackup"]`,
			`a file name (optionally "NAME:HEADER"), not a path`, func(s string) string {
				name, _, _ := strings.Cut(s, ":")
				switch {
				case name == "":
					return "has an empty file name"
				case strings.Contains(name, "/"):
					return fmt.Sprintf("%q is a path", s)
				}
				return ""
			})
	}
	if e, path, ok := m.get("one_file_system"); ok {
		b.OneFileSystem, _ = p.boolean(e.value, path)
	}
	if e, path, ok := m.get("tags"); ok {
		b.Tags = p.stringList(e.value, path, `a list of restic tags such as ["laptop"]`, `a non-empty tag without ","`, func(s string) string {
			switch {
			case s == "":
				return "is empty"
			case strings.Contains(s, ","):
				return fmt.Sprintf("%q contains \",\"", s)
			}
			return ""
		})
	}
	if e, path, ok := m.get("extra_args"); ok {
		b.ExtraArgs = p.stringList(e.value, path, `a list of restic backup arguments such as ["--exclude-larger-than", "2G"]`,
			"restic backup options other than "+strings.Join(controlledFlags, ", ")+
				" (subvault sets the repository, password, output format and cache itself)",
			func(s string) string {
				if flag := controlledFlag(s); flag != "" {
					return fmt.Sprintf("%q sets %s, which subvault controls", s, flag)
				}
				return ""
			})
	}
}

// localRepository is the directory of a repository on a local path
// ("/srv/restic" or "local:/srv/restic"), which restic writes as root.
func localRepository(url string) (string, bool) {
	url = strings.TrimPrefix(url, "local:")
	if filepath.IsAbs(url) {
		return filepath.Clean(url), true
	}
	return "", false
}

// firstWord is the program of a password_command, as restic splits the
// command line: words separated by spaces, with '...' and "..." quoting
// and backslash escapes.
func firstWord(command string) string {
	command = strings.TrimLeft(command, " \t")
	var b strings.Builder
	var quote rune
	escaped := false
	for _, r := range command {
		switch {
		case escaped:
			b.WriteRune(r)
			escaped = false
		case r == '\\' && quote != '\'':
			escaped = true
		case quote != 0 && r == quote:
			quote = 0
		case quote == 0 && (r == '"' || r == '\''):
			quote = r
		case quote == 0 && (r == ' ' || r == '\t'):
			return b.String()
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func nonEmpty(s string) string {
	if s == "" {
		return "is empty"
	}
	return ""
}

// controlledFlag returns the controlled option arg sets, or "". Short
// options may be clustered ("-vr REPO"): restic's boolean shorthands are
// skipped, and the first shorthand taking a value ends the cluster.
func controlledFlag(arg string) string {
	if strings.HasPrefix(arg, "--") {
		name, _, _ := strings.Cut(arg, "=")
		if slices.Contains(controlledFlags, name) {
			return name
		}
		return ""
	}
	if !strings.HasPrefix(arg, "-") {
		return ""
	}
	for _, c := range arg[1:] {
		switch c {
		case 'r', 'p':
			return "-" + string(c)
		case 'v', 'q', 'x', 'n', 'f': // --verbose, --quiet, --one-file-system, --dry-run, --force
			continue
		}
		return ""
	}
	return ""
}

// readDataSubset decodes check_read_data_subset. A bare size may be
// written unquoted (check_read_data_subset: 1024).
// duration decodes a Go duration ("90m", "1h30m"), 0 (off) or at least a
// second; never negative, never a bare number (of what?), never restic's
// or systemd's "1d".
func (p *parser) duration(n *yaml.Node, path, expected string) (time.Duration, bool) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && (n.Tag == tagInt || n.Tag == tagFloat) {
		if n.Value == "0" {
			return 0, true
		}
		p.fail(n, path, "got the number "+n.Value+", which has no unit", expected+` (seconds: "`+n.Value+`s")`)
		return 0, false
	}
	v, ok := p.str(n, path, expected)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil && strings.HasSuffix(v, "d"):
		p.fail(n, path, fmt.Sprintf("%q is not a Go duration (it has no unit d)", v), expected+"; a day is 24h")
		return 0, false
	case err != nil:
		p.fail(n, path, fmt.Sprintf("%q is not a Go duration", v), expected)
		return 0, false
	case d < 0:
		p.fail(n, path, fmt.Sprintf("%q is negative", v), expected)
		return 0, false
	case d > 0 && d < time.Second:
		p.fail(n, path, fmt.Sprintf("%q is shorter than a second", v), expected)
		return 0, false
	}
	return d, true
}

func (p *parser) readDataSubset(n *yaml.Node, path string) (string, bool) {
	n = resolve(n)
	var v string
	if n.Kind == yaml.ScalarNode && n.Tag == tagInt {
		v = n.Value
	} else if s, ok := p.str(n, path, subsetExpected); ok {
		v = s
	} else {
		return "", false
	}
	if v == "" {
		return "", true
	}
	bad := func(why string) (string, bool) {
		p.fail(n, path, fmt.Sprintf("%q %s", v, why), subsetExpected)
		return "", false
	}
	if m := subsetFraction.FindStringSubmatch(v); m != nil {
		num, err1 := strconv.Atoi(m[1])
		den, err2 := strconv.Atoi(m[2])
		if err1 != nil || err2 != nil || num < 1 || num > den {
			return bad("is not a subset n/t with 1 <= n <= t")
		}
		return v, true
	}
	if m := subsetPercent.FindStringSubmatch(v); m != nil {
		pct, err := strconv.ParseFloat(m[1], 64)
		if err != nil || pct <= 0 || pct > 100 {
			return bad("is not a percentage above 0 and at most 100")
		}
		return v, true
	}
	if m := subsetSize.FindStringSubmatch(v); m != nil {
		size, err := strconv.ParseUint(m[1], 10, 63)
		if err != nil || size == 0 {
			return bad("is not a size above 0")
		}
		return v, true
	}
	return bad("is not a read-data subset")
}

func (p *parser) hooks(e pair, path string, h *Hooks) {
	m := p.mapping(e.key, e.value, path, "a mapping of hooks: "+strings.Join(hookKeys, ", "), hookKeys)
	if m == nil {
		return
	}
	for name, dst := range map[string]*[][]string{"before_snapshot": &h.BeforeSnapshot, "after_snapshot": &h.AfterSnapshot,
		"on_success": &h.OnSuccess, "on_failure": &h.OnFailure} {
		if e, path, ok := m.get(name); ok {
			*dst = p.commands(e.value, path)
		}
	}
}

// commands decodes a hook: one argv (a list of strings) or a list of
// argvs. The first element decides which: a string starts one argv, a
// list starts a list of argvs. [] is no command.
func (p *parser) commands(n *yaml.Node, path string) [][]string {
	items, ok := p.list(n, path, argvExpected)
	if !ok || len(items) == 0 {
		return nil
	}
	if resolve(items[0]).Kind != yaml.SequenceNode {
		if argv := p.argv(n, path); argv != nil {
			return [][]string{argv}
		}
		return nil
	}
	var out [][]string
	for i, item := range items {
		if argv := p.argv(item, index(path, i)); argv != nil {
			out = append(out, argv)
		}
	}
	return out
}

func (p *parser) argv(n *yaml.Node, path string) []string {
	const expected = `a command as a list of strings, such as ["/usr/bin/psql", "-c", "CHECKPOINT"]`
	items, ok := p.list(n, path, expected)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		p.fail(resolve(n), path, "is an empty command", expected)
		return nil
	}
	argv := make([]string, 0, len(items))
	good := true
	for i, item := range items {
		if resolve(item).Kind == yaml.SequenceNode {
			p.fail(resolve(item), index(path, i), "got a list inside a single command",
				`a string; to give several commands, make every entry a list: [["/bin/a"], ["/bin/b", "arg"]]`)
			good = false
			continue
		}
		s, ok := p.str(item, index(path, i), "a string (an argument of the command)")
		if !ok {
			good = false
			continue
		}
		if i == 0 && strings.TrimSpace(s) == "" {
			p.fail(resolve(item), index(path, i), "the program is empty", "the program to run, such as /usr/bin/psql")
			good = false
			continue
		}
		if i == 0 {
			p.names(item, index(path, i), s, roleProgram)
		}
		argv = append(argv, s)
	}
	if !good {
		return nil
	}
	return argv
}

// accounts decodes allow_users or allow_groups: names or numeric ids, kept
// as written (the daemon resolves them when a caller asks).
func (p *parser) accounts(n *yaml.Node, path, kind, id string) []string {
	expected := fmt.Sprintf("a %s name (lower case, at most 32 characters, such as backup) or a numeric %s", kind, id)
	items, ok := p.list(n, path, "a list of "+kind+" names or numeric "+id+"s")
	if !ok {
		return nil
	}
	var out []string
	for i, item := range items {
		ipath := index(path, i)
		item = resolve(item)
		var v string
		if item.Kind == yaml.ScalarNode && item.Tag == tagInt {
			v = item.Value
		} else if s, ok := p.str(item, ipath, expected); ok {
			v = s
		} else {
			continue
		}
		if numericIDRE.MatchString(v) {
			if n, err := strconv.ParseUint(v, 10, 32); err != nil || n == 1<<32-1 {
				p.fail(item, ipath, fmt.Sprintf("%s is not a valid %s", v, id), expected)
				continue
			}
		} else if len(v) > 32 || !accountNameRE.MatchString(v) {
			p.fail(item, ipath, fmt.Sprintf("%q is not a valid %s name", v, kind), expected)
			continue
		}
		out = append(out, v)
	}
	return out
}

// onStall decodes on_stall: cancel or report.
func (p *parser) onStall(n *yaml.Node, path string) OnStall {
	return choice(p, n, path, OnStallCancel,
		"cancel (end a job whose restic made no progress for stall_timeout, the default) or report (mark it stalled and let it go on)",
		OnStallCancel, OnStallReport)
}

// condition decodes on_battery or metered: skip or run.
func (p *parser) condition(n *yaml.Node, path string, def Condition) Condition {
	return choice(p, n, path, def, "skip (a scheduled job waits until it clears) or run", ConditionSkip, ConditionRun)
}

// choice decodes a string that must be one of choices; anything else is
// refused as expected says, and def stands in.
func choice[T ~string](p *parser, n *yaml.Node, path string, def T, expected string, choices ...T) T {
	v, ok := p.str(n, path, expected)
	if !ok {
		return def
	}
	if slices.Contains(choices, T(v)) {
		return T(v)
	}
	p.fail(n, path, fmt.Sprintf("%q is not a choice", v), expected)
	return def
}

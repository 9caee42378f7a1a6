// Package emergencykit builds subvault's emergency kit: one document, to be
// printed, with everything a person needs to restore the backups on a bare
// machine without subvault (the case it is for: a repository whose only
// copy of the credentials was on a phone that had just been wiped). For each repository it holds the
// location, the password (and a QR code of it), the backend keys of the
// env_file, the files of an sftp repository's ssh block (its key,
// known_hosts, ssh configuration), and the exact restic commands, with the
// repository's options and limits, that list and restore each plan's
// archives; plus how to get restic and the version that wrote the archives.
//
// The kit reads the configuration and the secrets directly, as root, never
// over D-Bus. Rendering is in text.go (plain text, the QR code in Unicode
// half blocks) and html.go (A4 print layout, the QR code as inline SVG).
package emergencykit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/planstore"
	"github.com/subvault/subvault/daemon/shell"
	"github.com/subvault/subvault/restic"
)

// RestoreTarget is where the kit's restore commands write: the new root
// filesystem, mounted on the rescue system.
const RestoreTarget = "/mnt/new"

// CommandPrefix starts every line of the text kit that is a command to
// type (after the indentation): the lines a script can pick out.
const CommandPrefix = "$ "

// checkTimeout bounds the check of each repository: restic 0.17 and later
// retry an unreachable backend for minutes, and the kit is still worth
// writing without the check.
const checkTimeout = 90 * time.Second

// Kit is the content of one emergency kit.
type Kit struct {
	Host            string // this machine's host name: the archives' --host
	Made            time.Time
	ConfigFile      string
	SubvaultVersion string
	// Restic is the first line of `restic version` of the configured
	// binary (the one that wrote the archives), or why it is unknown.
	Restic       string
	ResticBinary string
	Repositories []Repository
}

// Repository is one repository of the kit and the plans that back up to it.
type Repository struct {
	Name string
	// URL is the location as configured: with any credentials it holds,
	// since a restore needs them.
	URL               string
	URLHasCredentials bool
	// Password is "" when it could not be read; PasswordProblem says why.
	Password        string
	PasswordSource  string // where subvault reads it from, in words
	PasswordProblem string
	QR              *QRCode // of Password; nil when it is unknown
	QRNote          string  // a warning about reading QR back, or ""
	EnvFile         string
	Env             []restic.EnvVar
	EnvProblem      string // why EnvFile could not be read, or ""
	// Files are the files an sftp repository's ssh block names (its key,
	// known_hosts and ssh configuration), which a rescue machine needs at
	// the same paths: OpenCommands writes them back.
	Files []File
	// Flags are what every restic command against the repository gets
	// (restic.Repository.GlobalArgs): the backend options, the ssh command
	// of an sftp repository and the bandwidth limits, as the daemon gives
	// them.
	Flags []string
	// Checked says, in a sentence, what happened when the kit opened the
	// repository with Password (listing the plans' archives); Opened is
	// true when it worked.
	Checked string
	Opened  bool
	Notes   []string // what else this kind of repository needs
	Plans   []Plan
}

// File is a file the repository's configuration names that the kit
// carries.
type File struct {
	Key     string // the configuration key: "ssh.key"
	Path    string // absolute
	Content string // "" when it could not be read
	Secret  bool   // written back readable by root alone
	Problem string // why it could not be read, or ""
}

// maxFileSize bounds a file the kit carries: an ssh key, known_hosts or
// configuration is a few KiB.
const maxFileSize = 64 << 10

// Plan is one plan of a repository.
type Plan struct {
	Name       string
	Subvolumes []string
	Tag        string // subvault:PLAN, on every archive of the plan
	// Archives is how many archives of the plan (tag and host) the check
	// found, and Latest the newest; both zero when not checked.
	Archives int
	Latest   *restic.Archive
}

// Options are the choices of the caller.
type Options struct {
	Plan            string // "" for every plan
	SubvaultVersion string
	Hostname        string    // "" for os.Hostname(), as a backup records it
	Now             time.Time // zero for time.Now()
	Logger          *slog.Logger
}

// Build reads the configuration's secrets and checks each repository with
// them. Only a plan that does not exist is an error: a secret that cannot be
// read is written down as where it is kept, and a repository that cannot be
// opened as why.
func Build(ctx context.Context, cfg *config.Config, opts Options) (*Kit, error) {
	names := cfg.PlanNames()
	if opts.Plan != "" {
		if _, ok := cfg.Plans[opts.Plan]; !ok {
			return nil, fmt.Errorf("no plan %q in %s (plans: %s)", opts.Plan, cfg.File, strings.Join(names, ", "))
		}
		names = []string{opts.Plan}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s has no plans: the kit would be empty", cfg.File)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k := &Kit{Host: opts.Hostname, Made: opts.Now, ConfigFile: cfg.File,
		SubvaultVersion: opts.SubvaultVersion, ResticBinary: cfg.Settings.Restic}
	if abs, err := filepath.Abs(cfg.File); err == nil {
		k.ConfigFile = abs
	}
	if k.Host == "" {
		k.Host, _ = os.Hostname()
	}
	if k.Made.IsZero() {
		k.Made = time.Now()
	}
	versionRunner := &restic.Runner{Binary: cfg.Settings.Restic, Logger: log}
	if v, err := versionRunner.Version(ctx); err != nil {
		k.Restic = fmt.Sprintf("unknown: %s does not run (%v)", cfg.Settings.Restic, err)
	} else {
		k.Restic = v.Raw
	}

	byRepo := map[string]*Repository{}
	for _, name := range names {
		plan := cfg.Plans[name]
		// The repositories of copy_to hold copies of the plan's archives,
		// with its tag: the second copy to restore from (3-2-1).
		for _, repo := range append([]string{plan.Repository}, plan.CopyTo...) {
			r := byRepo[repo]
			if r == nil {
				conf, ok := cfg.Repositories[repo]
				if !ok {
					return nil, fmt.Errorf("plan %s names repository %q, which is not configured", name, repo)
				}
				r = newRepository(ctx, conf)
				byRepo[repo] = r
			}
			r.Plans = append(r.Plans, Plan{Name: name, Subvolumes: plan.Subvolumes, Tag: planstore.Tag(name)})
		}
	}
	for _, n := range slices.Sorted(maps.Keys(byRepo)) {
		r := byRepo[n]
		r.check(ctx, cfg, cfg.Repositories[n], k.Host, k.Made, log)
		k.Repositories = append(k.Repositories, *r)
	}
	return k, nil
}

func newRepository(ctx context.Context, conf *config.Repository) *Repository {
	r := &Repository{Name: conf.Name, URL: conf.URL, URLHasCredentials: restic.RedactURL(conf.URL) != conf.URL, EnvFile: conf.EnvFile}
	src := restic.Repository{PasswordFile: conf.PasswordFile, PasswordCommand: conf.PasswordCommand}
	switch {
	case conf.PasswordFile != "":
		r.PasswordSource = "password_file " + conf.PasswordFile
	case conf.PasswordCommand != "":
		// The command line is kept in the kit as it is: it may say where
		// the password lives (pass show backup/restic).
		r.PasswordSource = "the output of password_command: " + conf.PasswordCommand
	default:
		r.PasswordSource = fmt.Sprintf("systemd credential %q of subvault.service (LoadCredential= or SetCredentialEncrypted= in its drop-in; see systemctl cat subvault.service)", conf.Credential)
		if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" {
			src.CredentialFile = filepath.Join(dir, conf.Credential)
		}
	}
	if src.PasswordFile == "" && src.PasswordCommand == "" && src.CredentialFile == "" {
		r.PasswordProblem = "a systemd credential is only readable by the service itself ($CREDENTIALS_DIRECTORY is not set here)"
	} else if pw, err := src.ReadPassword(ctx); err != nil {
		r.PasswordProblem = err.Error()
	} else {
		r.Password = pw
	}
	if r.Password != "" {
		if qr, err := NewQRCode(r.Password); err == nil {
			r.QR = qr
		}
		if !isASCII(r.Password) {
			// The code holds the UTF-8 bytes without an ECI header, as
			// most encoders write it; some readers guess another charset
			// (zbar: Shift JIS).
			r.QRNote = "The password has letters outside ASCII: some readers show them wrongly. Compare what the phone shows with the password printed here."
		}
	}
	if conf.EnvFile != "" {
		vars, err := restic.ParseEnvFile(conf.EnvFile)
		if err != nil {
			r.EnvProblem = err.Error()
		}
		r.Env = vars
	}
	for _, f := range []File{{Key: "ssh.key", Path: conf.SSH.Key, Secret: true},
		{Key: "ssh.known_hosts", Path: conf.SSH.KnownHosts}, {Key: "ssh.config_file", Path: conf.SSH.ConfigFile}} {
		if f.Path == "" {
			continue
		}
		f.Content, f.Problem = readCarried(f.Path)
		r.Files = append(r.Files, f)
	}
	if repo, err := planstore.Repository(conf); err != nil {
		r.Notes = append(r.Notes, "The repository's options could not be written down: "+err.Error())
	} else {
		r.Flags = repo.GlobalArgs()
	}
	r.Notes = append(r.Notes, backendNotes(conf, r.URLHasCredentials)...)
	return r
}

// check opens the repository with the password the kit holds (not through
// the configured source: the point is to prove the written-down password
// works) and lists each plan's archives.
func (r *Repository) check(ctx context.Context, cfg *config.Config, conf *config.Repository, host string, now time.Time, log *slog.Logger) {
	if r.Password == "" {
		r.Checked = "Not checked: the password could not be read."
		return
	}
	if r.EnvProblem != "" {
		r.Checked = "Not checked: the env_file could not be read."
		return
	}
	dir, err := os.MkdirTemp("", "subvault-kit-")
	if err != nil {
		r.Checked = "Not checked: " + err.Error() + "."
		return
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			log.Warn("cannot remove the kit's temporary password file; remove it by hand", "dir", dir, "err", err)
		}
	}()
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte(r.Password+"\n"), 0o600); err != nil {
		r.Checked = "Not checked: " + err.Error() + "."
		return
	}
	repo, err := planstore.Repository(conf)
	if err != nil {
		r.Checked = "Not checked: " + err.Error() + "."
		return
	}
	repo.PasswordFile, repo.PasswordCommand, repo.CredentialFile = pwFile, "", ""
	runner := &restic.Runner{Binary: cfg.Settings.Restic, Logger: log, Grace: 5 * time.Second, Repo: repo}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	archives, err := runner.Snapshots(ctx, restic.SnapshotFilter{Hosts: []string{host}})
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s", checkTimeout)
		}
		r.Checked = "NOT OPENED when this kit was made: " + err.Error() + "."
		return
	}
	r.Opened = true
	r.Checked = fmt.Sprintf("Checked: the password above opened it on %s (%d archives of host %s).", now.Format("2006-01-02 15:04"), len(archives), host)
	for i := range r.Plans {
		p := &r.Plans[i]
		for j := range archives {
			a := archives[j]
			if !slices.Contains(a.Tags, p.Tag) {
				continue
			}
			p.Archives++
			if p.Latest == nil || a.Time.After(p.Latest.Time) {
				p.Latest = &a
			}
		}
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// IsLocal reports whether the repository is a path on a disk.
func (r Repository) IsLocal() bool {
	return strings.HasPrefix(r.URL, "/") || strings.HasPrefix(r.URL, "local:")
}

// readCarried reads a file the kit carries, or says why it cannot: it must
// be text of at most maxFileSize.
func readCarried(path string) (content, problem string) {
	// Non-blocking, and then only a regular file: a FIFO or a device put
	// in its place is not read.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", err.Error()
	}
	defer f.Close() //nolint:errcheck // read only
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return "", path + " is not a regular file"
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	switch {
	case err != nil:
		return "", err.Error()
	case len(data) > maxFileSize:
		return "", fmt.Sprintf("%s is larger than %d KiB", path, maxFileSize>>10)
	case bytes.IndexByte(data, 0) >= 0 || !utf8.Valid(data):
		return "", path + " is not text"
	case len(bytes.TrimSpace(data)) == 0:
		return "", path + " is empty"
	}
	return string(data), ""
}

func backendNotes(conf *config.Repository, urlCredentials bool) []string {
	url, envFile := conf.URL, conf.EnvFile != ""
	scheme, _, _ := strings.Cut(url, ":")
	switch {
	case strings.HasPrefix(url, "/") || scheme == "local":
		return []string{"A path on a disk: attach and mount the disk that holds it. Mounted somewhere else, or copied? Put the new path in RESTIC_REPOSITORY; nothing else changes."}
	case scheme == "sftp" && conf.SSH.Command != "":
		return []string{"sftp logs in with SSH, through the command in --option=sftp.command below: the keys and files it names are NOT in this kit. Keep a copy of them with the kit, at the same paths on the rescue machine."}
	case scheme == "sftp" && !conf.SSH.IsZero():
		note := "sftp logs in with SSH, as --option=sftp.command below says, with the files the commands below write back at the same paths"
		if conf.SSH.ConfigFile != "" {
			note += "; the files the ssh configuration names (IdentityFile, UserKnownHostsFile, ...) are NOT in this kit unless listed here: keep a copy of them with the kit, at the same paths"
		}
		return []string{note + "."}
	case scheme == "sftp":
		return []string{"sftp logs in with SSH: the key (and known_hosts entry) that root of this machine uses for that server is NOT in this kit. Keep a copy of it with the kit, or make sure the server also accepts a password."}
	case scheme == "rest" && !urlCredentials:
		return []string{"A rest-server: if it asks for a user and password (or a client certificate), they are not in subvault's configuration."}
	case scheme == "rclone":
		return []string{"rclone: the rescue machine needs rclone and root's rclone configuration (~/.config/rclone/rclone.conf), which is NOT in this kit."}
	case (scheme == "s3" || scheme == "b2" || scheme == "azure" || scheme == "gs" || scheme == "swift") && !envFile:
		return []string{"This backend needs its access keys in the environment (AWS_*, B2_*, ...); the configuration has no env_file, so they are NOT in this kit."}
	}
	return nil
}

// OpenCommands are the lines that point restic at the repository: its
// location, the env_file's keys, and the password typed once (read is a
// shell built-in, so this works on any rescue system).
func (k *Kit) OpenCommands(r Repository) []string {
	cmds := []string{"export RESTIC_REPOSITORY=" + shell.Quote(r.URL)}
	for _, v := range r.Env {
		cmds = append(cmds, "export "+v.Key+"="+shell.Quote(v.Value))
	}
	made := map[string]bool{}
	for _, f := range r.Files {
		if f.Content == "" {
			continue
		}
		if dir := filepath.Dir(f.Path); !made[dir] {
			made[dir] = true
			cmds = append(cmds, "mkdir -p "+shell.Quote(dir))
		}
		write := "printf '%s\\n' " + shell.Join(strings.Split(strings.TrimSuffix(f.Content, "\n"), "\n")) + " > " + shell.Quote(f.Path)
		if f.Secret {
			write = "(umask 077 && " + write + ")"
		}
		cmds = append(cmds, write)
	}
	return append(cmds, "read -r RESTIC_PASSWORD", "export RESTIC_PASSWORD")
}

// PlanCommands are the lines that list the plan's archives of repository r
// and restore the latest one under RestoreTarget, with the repository's
// flags. --verify has restic read every restored file back and compare it
// with the archive (restic 0.14 and later): on a rescue disk that is quick
// next to the download, and it is the proof.
func (k *Kit) PlanCommands(r Repository, p Plan) []string {
	restic := "restic"
	if len(r.Flags) > 0 {
		restic += " " + shell.Join(r.Flags)
	}
	filter := "--tag " + shell.Quote(p.Tag) + " --host " + shell.Quote(k.Host)
	return []string{
		restic + " snapshots " + filter,
		restic + " restore latest " + filter + " --target " + RestoreTarget + " --verify",
	}
}

// Title is the kit's heading.
func (k *Kit) Title() string {
	return fmt.Sprintf("subvault emergency kit: %s, %s", k.Host, k.Made.Format("2006-01-02"))
}

// restoreNotes are the same in both renderings.
func restoreNotes() []string {
	return []string{
		"Archives keep the original paths: /home/alice comes back as " + RestoreTarget + "/home/alice.",
		"One file or folder: add --include /home/alice/notes.txt to restic restore.",
		"An older archive: put its ID (from restic snapshots) in place of latest.",
		"Restore somewhere else: change --target. A repository that moved: change RESTIC_REPOSITORY only.",
		"Check the result against the archive: restic diff, or after reinstalling subvault, subvault diff.",
		"Owners, modes, times, extended attributes and ACLs come back when restic restores as root.",
	}
}

// getRestic are the ways to get restic on a machine without subvault.
func getRestic() [][2]string {
	return [][2]string{
		{"Debian or Ubuntu (live USB too)", "apt update && apt install restic"},
		{"NixOS installer", "nix-shell -p restic"},
		{"Anywhere else", "the static binary restic_VERSION_linux_amd64.bz2 from https://github.com/restic/restic/releases, then bunzip2 it and chmod +x it"},
	}
}

package restic

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Repository says where a restic repository is and how to open it. Its
// secrets reach restic only through the environment: the URL through
// RESTIC_REPOSITORY (it may hold credentials, rest:https://user:pass@host/),
// the password through a file or a command, the backend keys through
// EnvFile.
type Repository struct {
	URL string
	// Exactly one of PasswordFile, PasswordCommand and CredentialFile.
	PasswordFile    string
	PasswordCommand string
	// CredentialFile is a systemd credential, already resolved to a path by
	// the caller; restic reads it as RESTIC_PASSWORD_FILE.
	CredentialFile string
	// EnvFile holds KEY=VALUE lines for the backend (AWS_*, B2_*, ...). It is
	// read at each run, so a rotated key needs no restart; its values are
	// never logged.
	EnvFile  string
	CacheDir string
	// Options are restic's backend options (-o), given to every command
	// (GlobalArgs); never secrets, since they are on the command line.
	Options []Option
	// LimitUpload and LimitDownload are restic's --limit-upload and
	// --limit-download in KiB/s, for every command; 0: no limit.
	LimitUpload, LimitDownload int
}

// Redacted is the URL with any password replaced by ***, for logs and
// messages.
func (repo Repository) Redacted() string { return RedactURL(repo.URL) }

// RedactURL hides the password of a URL-shaped repository location:
// rest:https://user:secret@host/ becomes rest:https://user:***@host/. Other
// forms (local paths, sftp:user@host:/path, s3:host/bucket) hold no password
// and are returned as they are.
func RedactURL(u string) string {
	i := strings.Index(u, "://")
	if i < 0 {
		return u
	}
	rest := u[i+3:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority := rest[:end]
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return u
	}
	userinfo := authority[:at]
	user, _, hasPassword := strings.Cut(userinfo, ":")
	if !hasPassword {
		return u
	}
	return u[:i+3] + user + ":***" + rest[at:]
}

// urlPassword is the password part of the URL's userinfo, or "".
func urlPassword(u string) string {
	i := strings.Index(u, "://")
	if i < 0 {
		return ""
	}
	rest := u[i+3:]
	if end := strings.IndexAny(rest, "/?#"); end >= 0 {
		rest = rest[:end]
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ""
	}
	_, pw, _ := strings.Cut(rest[:at], ":")
	return pw
}

// passwordSource names the configured password source for messages, without
// any secret: the command line of password_command may hold one, so it is
// not repeated.
func (repo Repository) passwordSource() string {
	switch {
	case repo.PasswordFile != "":
		return "password_file " + repo.PasswordFile
	case repo.CredentialFile != "":
		return "credential " + repo.CredentialFile
	case repo.PasswordCommand != "":
		return "the output of password_command"
	}
	return "the password"
}

func (repo Repository) validate() error {
	if repo.URL == "" {
		return fmt.Errorf("repository has no url")
	}
	n := 0
	for _, s := range []string{repo.PasswordFile, repo.PasswordCommand, repo.CredentialFile} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("repository %s: set exactly one of password_file, password_command and credential (%d set)", repo.Redacted(), n)
	}
	for _, f := range []struct{ what, path string }{{"password_file", repo.PasswordFile}, {"credential", repo.CredentialFile}} {
		if f.path == "" {
			continue
		}
		fh, err := os.Open(f.path)
		if err != nil {
			return fmt.Errorf("repository %s: cannot read %s: %w", repo.Redacted(), f.what, err)
		}
		fh.Close() //nolint:errcheck,gosec // opened only to prove it is readable
	}
	return nil
}

// reservedEnv are the variables only Repository's own fields may set: an
// env file that sets one would silently override them.
var reservedEnv = map[string]string{
	"RESTIC_REPOSITORY":       "url",
	"RESTIC_REPOSITORY_FILE":  "url",
	"RESTIC_PASSWORD":         "password_file, password_command or credential",
	"RESTIC_PASSWORD_FILE":    "password_file, password_command or credential",
	"RESTIC_PASSWORD_COMMAND": "password_file, password_command or credential",
	// restic copy's source repository: the one a copy reads from.
	"RESTIC_FROM_REPOSITORY":       "url",
	"RESTIC_FROM_REPOSITORY_FILE":  "url",
	"RESTIC_FROM_PASSWORD":         "password_file, password_command or credential",
	"RESTIC_FROM_PASSWORD_FILE":    "password_file, password_command or credential",
	"RESTIC_FROM_PASSWORD_COMMAND": "password_file, password_command or credential",
}

var envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// EnvVar is one KEY=VALUE of an env file.
type EnvVar struct{ Key, Value string }

// ParseEnvFile reads KEY=VALUE lines: blank lines and lines starting with #
// are skipped, a leading "export " is allowed, and a value wholly in single
// or double quotes loses them (double quotes also take Go escapes such as
// \" and \n). Errors name the file and line but never the value.
func ParseEnvFile(path string) ([]EnvVar, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read env_file: %w", err)
	}
	return parseEnv(path, data)
}

func parseEnv(name string, data []byte) ([]EnvVar, error) {
	var vars []EnvVar
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: expected KEY=VALUE", name, n)
		}
		key = strings.TrimSpace(key)
		if !envKeyRE.MatchString(key) {
			return nil, fmt.Errorf("%s:%d: %q is not a valid variable name", name, n, key)
		}
		if field, ok := reservedEnv[key]; ok {
			return nil, fmt.Errorf("%s:%d: %s may not be set in an env_file: it comes from the repository's %s setting", name, n, key, field)
		}
		if prev, dup := seen[key]; dup {
			return nil, fmt.Errorf("%s:%d: %s is already set on line %d", name, n, key, prev)
		}
		seen[key] = n
		value = strings.TrimSpace(value)
		quoted := func(q byte) bool { return len(value) >= 2 && value[0] == q && value[len(value)-1] == q }
		switch {
		case quoted('\''):
			value = value[1 : len(value)-1]
		case quoted('"'):
			uq, err := strconv.Unquote(value)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: the double-quoted value of %s is not valid (unescaped quote or bad escape)", name, n, key)
			}
			value = uq
		case strings.ContainsAny(value[:min(1, len(value))], `"'`):
			return nil, fmt.Errorf("%s:%d: the value of %s has an unmatched quote", name, n, key)
		}
		vars = append(vars, EnvVar{Key: key, Value: value})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return vars, nil
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// environment builds restic's whole environment: a minimal base (not the
// daemon's own environment), the env file, then the repository's settings;
// with from (restic copy and init --copy-chunker-params), the source
// repository as RESTIC_FROM_* and its env file too. It also returns the
// strings that must never appear in logs or errors.
func (r *Runner) environment(withRepo bool, deviceIDFlag bool, from ...Repository) (env []string, secrets []string, err error) {
	path := os.Getenv("PATH")
	if path == "" {
		path = defaultPath
	}
	set := map[string]string{"PATH": path, "LANG": "C.UTF-8"}
	for _, k := range []string{"HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok && v != "" {
			set[k] = v
		}
	}
	if r.TempDir != "" {
		if err := os.MkdirAll(r.TempDir, 0o700); err != nil {
			return nil, nil, fmt.Errorf("restic's temporary directory: %w", err)
		}
		set["TMPDIR"] = r.TempDir
	}
	if withRepo {
		repo := r.Repo
		if err := repo.validate(); err != nil {
			return nil, nil, err
		}
		fromFile := map[string]bool{}
		if pw := urlPassword(repo.URL); pw != "" {
			secrets = append(secrets, pw)
		}
		if repo.EnvFile != "" {
			vars, err := ParseEnvFile(repo.EnvFile)
			if err != nil {
				return nil, nil, fmt.Errorf("repository %s: %w", repo.Redacted(), err)
			}
			for _, v := range vars {
				set[v.Key] = v.Value
				fromFile[v.Key] = true
				if len(v.Value) >= 4 {
					secrets = append(secrets, v.Value)
				}
			}
		}
		set["RESTIC_REPOSITORY"] = repo.URL
		switch {
		case repo.PasswordFile != "":
			set["RESTIC_PASSWORD_FILE"] = repo.PasswordFile
		case repo.CredentialFile != "":
			set["RESTIC_PASSWORD_FILE"] = repo.CredentialFile
		default:
			set["RESTIC_PASSWORD_COMMAND"] = repo.PasswordCommand
		}
		if repo.CacheDir != "" {
			set["RESTIC_CACHE_DIR"] = repo.CacheDir
		}
		for _, src := range from {
			fromSecrets, err := fromEnvironment(set, fromFile, repo, src)
			if err != nil {
				return nil, nil, err
			}
			secrets = append(secrets, fromSecrets...)
		}
	}
	if deviceIDFlag {
		// Each btrfs snapshot has its own device id; without this flag
		// restic >= 0.17 rewrites every directory's metadata on every run
		// (restic #3041).
		if f := set["RESTIC_FEATURES"]; f != "" {
			set["RESTIC_FEATURES"] = f + "," + featureDeviceID
		} else {
			set["RESTIC_FEATURES"] = featureDeviceID
		}
	}
	for _, k := range slices.Sorted(maps.Keys(set)) {
		env = append(env, k+"="+set[k])
	}
	return env, secrets, nil
}

// fromEnvironment adds the source repository of a copy to set, which holds
// the destination's environment already. restic has one environment for
// both, so the two env files may not give one variable two values.
func fromEnvironment(set map[string]string, dstFile map[string]bool, dst, src Repository) (secrets []string, err error) {
	if err := src.validate(); err != nil {
		return nil, err
	}
	if pw := urlPassword(src.URL); pw != "" {
		secrets = append(secrets, pw)
	}
	if src.EnvFile != "" {
		vars, err := ParseEnvFile(src.EnvFile)
		if err != nil {
			return nil, fmt.Errorf("repository %s: %w", src.Redacted(), err)
		}
		for _, v := range vars {
			if dstFile[v.Key] && set[v.Key] != v.Value {
				return nil, fmt.Errorf("repositories %s and %s both set %s in their env_file, to different values: restic copy has one environment for both; use one set of credentials for both or copy with another tool",
					src.Redacted(), dst.Redacted(), v.Key)
			}
			set[v.Key] = v.Value
			if len(v.Value) >= 4 {
				secrets = append(secrets, v.Value)
			}
		}
	}
	set["RESTIC_FROM_REPOSITORY"] = src.URL
	switch {
	case src.PasswordFile != "":
		set["RESTIC_FROM_PASSWORD_FILE"] = src.PasswordFile
	case src.CredentialFile != "":
		set["RESTIC_FROM_PASSWORD_FILE"] = src.CredentialFile
	default:
		set["RESTIC_FROM_PASSWORD_COMMAND"] = src.PasswordCommand
	}
	return secrets, nil
}

// scrub replaces every secret in s with ***.
func scrub(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "***")
		}
	}
	return s
}

package restic

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// Option is one of restic's backend options (-o KEY=VALUE): "rest.connections"
// = "4". Options reach restic on its command line, which every local user can
// read (/proc/PID/cmdline): they hold no secret.
type Option struct{ Key, Value string }

// OptionKeyRE is the shape of a backend option's key: the backend, a dot and
// the option's name, as `restic options` lists them.
var OptionKeyRE = regexp.MustCompile(`^[a-z0-9]+\.[a-z0-9][a-z0-9-]*$`)

// GlobalArgs are the flags every restic command against the repository gets,
// before the command's name: the backend options and the bandwidth limits.
// restic reads --option as a list of comma-separated values (pflag's
// StringSlice, CSV), so an option whose text has a comma or a quote is
// written as one CSV field.
func (repo Repository) GlobalArgs() []string {
	var args []string
	for _, o := range repo.Options {
		args = append(args, "--option="+csvField(o.Key+"="+o.Value))
	}
	if repo.LimitUpload > 0 {
		args = append(args, "--limit-upload="+strconv.Itoa(repo.LimitUpload))
	}
	if repo.LimitDownload > 0 {
		args = append(args, "--limit-download="+strconv.Itoa(repo.LimitDownload))
	}
	return args
}

// csvField quotes s as one field of a CSV line when it needs it.
func csvField(s string) string {
	if !strings.ContainsAny(s, ",\"\r\n") && strings.TrimLeft(s, " \t") == s {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// Backend is the restic backend a repository location names, as the prefix
// of its options: "local" for a path, else the scheme before the first
// colon ("sftp", "rest", "s3", "b2", "azure", "gs", "swift", "rclone").
func Backend(location string) string {
	if strings.HasPrefix(location, "/") || strings.HasPrefix(location, ".") || !strings.Contains(location, ":") {
		return "local"
	}
	scheme, _, _ := strings.Cut(location, ":")
	return scheme
}

// SSH says how restic's ssh logs in to an sftp repository's server: each
// field is an absolute path, or "" for ssh's default.
type SSH struct {
	ConfigFile string // an ssh_config(5) file: -F
	Key        string // the private key: -i, and no other identity
	KnownHosts string // the server's host keys: nothing else is trusted
}

// The bounds of the ssh command SFTPCommand builds. A server that does not
// answer the TCP connection or the handshake in SSHConnectTimeout, or that
// answers no keepalive for SSHAliveInterval*SSHAliveCountMax, ends ssh, and
// restic with it, instead of hanging.
const (
	SSHConnectTimeout = 30
	SSHAliveInterval  = 15
	SSHAliveCountMax  = 4
)

// SFTPCommand is the sftp.command that logs in to the server of the sftp
// repository at location (sftp:user@host:/path or
// sftp://user@host:port//path) as ssh's settings say: the user, host and port
// of the location, and ssh's options for the files. ssh never asks a
// question (BatchMode: there is no one to answer), and gives up on a server
// that stops answering. It is the command restic builds itself (`ssh HOST -p
// PORT -l USER -s sftp`) with those options added, written so that restic's
// own word splitting (quotes, no escapes) gives back each argument.
func SFTPCommand(location string, ssh SSH) (string, error) {
	user, host, port, err := sftpAddress(location)
	if err != nil {
		return "", err
	}
	args := []string{"ssh"}
	if ssh.ConfigFile != "" {
		args = append(args, "-F", ssh.ConfigFile)
	}
	if ssh.Key != "" {
		args = append(args, "-i", ssh.Key, "-o", "IdentitiesOnly=yes")
	}
	if ssh.KnownHosts != "" {
		args = append(args, "-o", "UserKnownHostsFile="+ssh.KnownHosts, "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes")
	}
	args = append(args, "-o", "BatchMode=yes",
		"-o", "ConnectTimeout="+strconv.Itoa(SSHConnectTimeout),
		"-o", "ServerAliveInterval="+strconv.Itoa(SSHAliveInterval),
		"-o", "ServerAliveCountMax="+strconv.Itoa(SSHAliveCountMax))
	if port != "" {
		args = append(args, "-p", port)
	}
	if user != "" {
		args = append(args, "-l", user)
	}
	args = append(args, host, "-s", "sftp")
	words := make([]string, len(args))
	for i, a := range args {
		w, err := splitterQuote(a)
		if err != nil {
			return "", err
		}
		words[i] = w
	}
	return strings.Join(words, " "), nil
}

// splitterQuote writes s so that restic's SplitShellStrings reads it back as
// one word: in single quotes when it has white space. restic's splitter has
// no escapes (a backslash outside quotes splits words), so quotes and
// backslashes cannot be written at all.
func splitterQuote(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("an empty word cannot be passed to ssh through restic")
	}
	if strings.ContainsAny(s, "'\"\\") {
		return "", fmt.Errorf("%q has a quote or a backslash, which restic's sftp.command cannot carry", s)
	}
	if strings.ContainsAny(s, "\n\r") {
		return "", fmt.Errorf("%q has a line break", s)
	}
	if strings.IndexFunc(s, func(r rune) bool { return r == ' ' || r == '\t' || r == '\v' || r == '\f' || r == 0x85 || r == 0xA0 }) >= 0 {
		return "'" + s + "'", nil
	}
	return s, nil
}

// sftpAddress reads the user, host and port of an sftp location as restic
// does (internal/backend/sftp ParseConfig in 0.14 to 0.18).
func sftpAddress(location string) (user, host, port string, err error) {
	switch {
	case strings.HasPrefix(location, "sftp://"):
		u, err := url.Parse(location)
		if err != nil {
			return "", "", "", fmt.Errorf("%s is not a valid sftp:// location: %w", RedactURL(location), err)
		}
		if u.User != nil {
			user = u.User.Username()
		}
		host, port = u.Hostname(), u.Port()
		if u.Path == "" {
			return "", "", "", fmt.Errorf("%s names no directory (sftp://user@host:port//absolute/path)", location)
		}
	case strings.HasPrefix(location, "sftp:"):
		hostPart, dir, ok := strings.Cut(location[len("sftp:"):], ":")
		if !ok || dir == "" {
			return "", "", "", fmt.Errorf("%s names no directory (sftp:user@host:/path)", location)
		}
		host = hostPart
		if i := strings.LastIndex(hostPart, "@"); i >= 0 {
			user, host = hostPart[:i], hostPart[i+1:]
		}
	default:
		return "", "", "", fmt.Errorf("%s is not an sftp repository (sftp:user@host:/path or sftp://user@host:port//path)", RedactURL(location))
	}
	if host == "" {
		return "", "", "", fmt.Errorf("%s names no host", location)
	}
	if strings.HasPrefix(host, "-") || strings.HasPrefix(user, "-") {
		return "", "", "", fmt.Errorf("%s: a host or user starting with \"-\" would be read by ssh as an option", location)
	}
	return user, host, port, nil
}

// unknownOptionRE is restic's refusal of a backend option this version does
// not have ("Fatal: option sftp.args is not known", 0.14 to 0.18).
var unknownOptionRE = regexp.MustCompile(`option ([a-z0-9]+\.[A-Za-z0-9_-]+) is not known`)

func unknownOptionMessage(repo, text string) string {
	key := unknownOptionRE.FindStringSubmatch(text)[1]
	return fmt.Sprintf("repository %s: this restic has no backend option %s (set by the repository's options, connections or ssh; \"restic options\" lists the options it has): remove it, or install a restic that has it", repo, key)
}

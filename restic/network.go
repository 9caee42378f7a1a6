package restic

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// What a remote repository's server, or the way to it, can refuse, as restic
// 0.14 and 0.18 print it (testdata/<version>/rest-*, sftp-*, s3-*, recorded
// against real servers by testdata/record-remote.sh).
var (
	// networkRE is a server that could not be reached at all.
	networkRE = regexp.MustCompile(`(?i)connection refused|no such host|dial tcp|i/o timeout|network is unreachable|no route to host|tls handshake timeout|connect to host|temporary failure in name resolution|could not resolve hostname|connection timed out|server misbehaving|dial tcp: lookup `)
	// lostRE is a connection that broke after it was made.
	lostRE = regexp.MustCompile(`(?i)connection reset by peer|broken pipe|ssh command exited|connection lost|closed by remote host|unexpected EOF|server unexpectedly closed connection|use of closed network connection|client connection lost|connection closed`)
	// openedRE are the operations restic runs only once the repository is
	// open: a network error in one of them is a connection lost, not a
	// server never reached.
	openedRE = regexp.MustCompile(`(Save|Load|Remove|List|Stat|ReadAt|Write)\(<?(data|index|snapshot|lock|tree)|unable to save snapshot|error while unlocking|ssh command exited|Write: connection lost`)
	// openRetryRE is restic retrying while it opens the repository (0.17+
	// retries these for 15 minutes): the config file and the keys.
	openRetryRE = regexp.MustCompile(`^(Stat|Load|List|Open)\(<?(config|key)[^)]*\)[^:]* returned error, retrying after`)

	// credentialsRE is a server that refused who restic said it was.
	credentialsRE = regexp.MustCompile(`unexpected HTTP response \(401\)|401 Unauthorized|InvalidAccessKeyId|SignatureDoesNotMatch|(?i:access key id you provided does not exist)|request signature we calculated does not match|InvalidToken|ExpiredToken|Permission denied \((publickey|password|keyboard-interactive|gssapi)[^)]*\)|Too many authentication failures`)
	// forbiddenOpenRE is a refusal (HTTP 403, S3 AccessDenied) of the first
	// thing restic reads: at that point it is the credentials' rights, not an
	// append-only server refusing a delete.
	forbiddenOpenRE = regexp.MustCompile(`(unable to open config file|Stat\(<config/>\)|List\(keys?\)|Load\(<key/|unable to create repository|create repository at|unable to open repository at|create key in repository|config file already exists)[^\n]*(\(403\)|403 Forbidden|Access Denied|AccessDenied)`)
	httpStatusRE    = regexp.MustCompile(`unexpected HTTP response \((\d{3})\)(: \d{3} [A-Za-z ]+)?|\b(40[13]) (Unauthorized|Forbidden)\b`)
	// s3CodeRE is S3's error code, or the message servers send without it
	// (SeaweedFS, minio-go's rendering of it).
	s3CodeRE    = regexp.MustCompile(`InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|Access Denied|InvalidToken|ExpiredToken|(?i:access key id you provided does not exist)|request signature we calculated does not match`)
	sshDeniedRE = regexp.MustCompile(`Permission denied \([a-z,-]+\)`)

	hostKeyUnknownRE = regexp.MustCompile(`No [A-Z0-9-]+ host key is known for (\S+)`)
	hostKeyChangedRE = regexp.MustCompile(`Host key for (\S+) has changed|REMOTE HOST IDENTIFICATION HAS CHANGED`)
	hostKeyFailedRE  = regexp.MustCompile(`Host key verification failed`)
	fingerprintRE    = regexp.MustCompile(`(SHA256:[A-Za-z0-9+/=]+)`)
	keygenRemoveRE   = regexp.MustCompile(`ssh-keygen -f "[^"]*" -R "([^"]+)"`)

	// sftpOpenRE is restic's word for an sftp session that never started:
	// ssh's own reason is on the "subprocess ssh:" lines, when restic
	// copied them before it exited.
	sftpOpenRE = regexp.MustCompile(`unable to start the sftp session`)
)

// sshPrefixes are the prefixes of ssh's own lines in the stderr subvault
// keeps: relayed by restic, or from subvault's own run of the ssh command
// (diagnoseSSH).
var sshPrefixes = []string{"subprocess ssh: ", sshRerunPrefix}

const sshRerunPrefix = "ssh (run again by subvault): "

// Host is the server a repository location names, for messages: "nas:2222",
// "s3.example.com", "127.0.0.1:8000"; the service for b2, azure, gs and
// swift; "" for a local path. It never holds credentials.
func (repo Repository) Host() string { return locationHost(repo.URL) }

func locationHost(loc string) string {
	scheme, rest, ok := strings.Cut(loc, ":")
	if !ok || strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, ".") {
		return ""
	}
	switch scheme {
	case "rest", "s3":
		if strings.Contains(rest, "://") {
			if u, err := url.Parse(rest); err == nil {
				return u.Host
			}
			return ""
		}
		h, _, _ := strings.Cut(rest, "/")
		return h
	case "sftp":
		if strings.HasPrefix(loc, "sftp://") {
			if u, err := url.Parse(loc); err == nil {
				return u.Host
			}
			return ""
		}
		h, _, _ := strings.Cut(rest, ":")
		if i := strings.LastIndex(h, "@"); i >= 0 {
			h = h[i+1:]
		}
		return h
	case "rclone":
		r, _, _ := strings.Cut(rest, ":")
		return "rclone remote " + r
	case "b2", "azure", "gs", "swift":
		return scheme
	}
	return ""
}

// isLocal reports whether a location is a directory on this machine.
func isLocal(loc string) bool {
	return strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, ".") || strings.HasPrefix(loc, "local:") || !strings.Contains(loc, ":")
}

// sftpUser is the user of an sftp location, "" when it names none.
func sftpUser(loc string) string {
	if strings.HasPrefix(loc, "sftp://") {
		if u, err := url.Parse(loc); err == nil && u.User != nil {
			return u.User.Username()
		}
		return ""
	}
	rest, ok := strings.CutPrefix(loc, "sftp:")
	if !ok {
		return ""
	}
	h, _, _ := strings.Cut(rest, ":")
	if i := strings.LastIndex(h, "@"); i >= 0 {
		return h[:i]
	}
	return ""
}

// sshLines are ssh's own lines in text, without restic's prefix.
func sshLines(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, p := range sshPrefixes {
			if i := strings.Index(l, p); i >= 0 {
				if s := strings.TrimSpace(l[i+len(p):]); s != "" {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// sshCommand is the ssh command line restic runs for an sftp repository:
// sftp.command from the options in args, else the one restic builds (`ssh
// HOST [-p PORT] [-l USER] -s sftp`), with BatchMode and a ConnectTimeout so
// that subvault's own run of it never waits for a person or a dead host.
func sshCommand(loc string, args []string) []string {
	for i := 0; i < len(args); i++ {
		var v string
		switch a := args[i]; {
		case (a == "-o" || a == "--option") && i+1 < len(args):
			v = args[i+1]
			i++
		case strings.HasPrefix(a, "--option="):
			v = a[len("--option="):]
		case strings.HasPrefix(a, "-o") && len(a) > 2:
			v = a[2:]
		default:
			continue
		}
		if strings.HasPrefix(v, `"`) {
			// restic reads -o as CSV fields.
			if rec, err := csv.NewReader(strings.NewReader(v)).Read(); err == nil && len(rec) > 0 {
				v = rec[0]
			}
		}
		if cmd, ok := strings.CutPrefix(v, "sftp.command="); ok {
			return splitShell(cmd)
		}
	}
	host := locationHost(loc)
	port := ""
	if strings.HasPrefix(loc, "sftp://") {
		if u, err := url.Parse(loc); err == nil {
			host, port = u.Hostname(), u.Port()
		}
	}
	if host == "" {
		return nil
	}
	cmd := []string{"ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", host}
	if port != "" {
		cmd = append(cmd, "-p", port)
	}
	if u := sftpUser(loc); u != "" {
		cmd = append(cmd, "-l", u)
	}
	return append(cmd, "-s", "sftp")
}

// splitShell splits a command line as restic's sftp backend does: words
// separated by white space, single or double quotes around a word with
// spaces, no escapes.
func splitShell(s string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, c := range s {
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteRune(c)
			}
		case c == '\'' || c == '"':
			quote = c
			inWord = true
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// sshOption is the value of ssh's option in an ssh command line: flag "-i"
// for the key, or name "UserKnownHostsFile" given as -o NAME=VALUE.
func sshOption(cmd []string, flag, name string) string {
	for i := 0; i < len(cmd); i++ {
		a := cmd[i]
		if flag != "" && a == flag && i+1 < len(cmd) {
			return cmd[i+1]
		}
		if flag != "" && strings.HasPrefix(a, flag) && len(a) > len(flag) {
			return a[len(flag):]
		}
		if name == "" {
			continue
		}
		o := ""
		if a == "-o" && i+1 < len(cmd) {
			o = cmd[i+1]
		} else if strings.HasPrefix(a, "-o") {
			o = a[2:]
		}
		if k, v, ok := strings.Cut(o, "="); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// sshDiagnosisTimeout bounds subvault's own run of the ssh command.
const sshDiagnosisTimeout = 20 * time.Second

// diagnoseSSH runs the sftp repository's ssh command once, with nothing on
// its stdin, and returns what ssh said, each line prefixed. restic relays
// ssh's stderr only when it copied it before it exited (not always, the
// recordings show): without ssh's line, a refused key, an unknown host key
// and a refused connection all read "unable to start the sftp session". It
// runs in the calling goroutine, so in the caller's mount namespace, like
// restic.
func diagnoseSSH(ctx context.Context, loc string, args, env []string) []string {
	cmd := sshCommand(loc, args)
	if len(cmd) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, sshDiagnosisTimeout)
	defer cancel()
	c := exec.CommandContext(ctx, cmd[0], cmd[1:]...) //nolint:gosec // the repository's own ssh command, as restic runs it
	c.Env = env
	c.Stdin = nil // /dev/null: the sftp subsystem ends at once
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.WaitDelay = time.Second
	var stderr strings.Builder
	c.Stderr = &limitedWriter{w: &stderr, n: 16 << 10}
	if err := c.Run(); err == nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, sshRerunPrefix+l)
		}
	}
	return out
}

type limitedWriter struct {
	w interface{ WriteString(string) (int, error) }
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		q := p
		if len(q) > l.n {
			q = q[:l.n]
		}
		l.n -= len(q)
		l.w.WriteString(string(q)) //nolint:errcheck,gosec // a strings.Builder
	}
	return len(p), nil
}

// networkKind tells a server never reached (ErrUnreachable) from a
// connection lost once the repository was open (ErrConnectionLost), or nil
// when text shows neither.
func networkKind(text string) error {
	switch {
	case sftpOpenRE.MatchString(text):
		// An sftp session that never started: never reached, whatever
		// words the broken pipe had.
		return ErrUnreachable
	case lostRE.MatchString(text) && openedRE.MatchString(text):
		return ErrConnectionLost
	case networkRE.MatchString(text) && openedRE.MatchString(text):
		return ErrConnectionLost
	case networkRE.MatchString(text):
		return ErrUnreachable
	case lostRE.MatchString(text):
		return ErrConnectionLost
	}
	return nil
}

// classifyRemote classifies what a remote server or the way to it refused:
// host keys, credentials, the network. It returns false when text shows
// none of them.
func classifyRemote(e *Error, op string, repo Repository, args []string, text string) bool {
	if isLocal(repo.URL) {
		// "unexpected EOF" from a truncated file is no network's doing.
		return false
	}
	name, host := e.Repository, e.Host
	if host == "" {
		host = "the server"
	}
	isSFTP := strings.HasPrefix(repo.URL, "sftp:")
	var ssh []string
	if isSFTP {
		ssh = sshCommand(repo.URL, args)
		if p := sshOption(ssh, "-p", "Port"); p != "" && e.Host != "" && !strings.Contains(e.Host, ":") {
			// sftp:user@host:/path names no port: the ssh command's is
			// the one ssh used.
			e.Host = e.Host + ":" + p
			host = e.Host
		}
	}
	sshText := strings.Join(sshLines(text), "\n")
	knownHosts := sshOption(ssh, "", "UserKnownHostsFile")
	if knownHosts == "" {
		knownHosts = "root's ~/.ssh/known_hosts"
	}

	switch {
	case hostKeyChangedRE.MatchString(sshText):
		e.Kind = ErrHostKey
		who := hostKeyName(sshText, host)
		fp := ""
		if m := fingerprintRE.FindStringSubmatch(sshText); m != nil {
			fp = " (it now shows " + m[1] + ")"
		}
		e.Message = fmt.Sprintf("repository %s: the host key of %s has changed%s: if the server's key was replaced on purpose, remove the old one from %s (ssh-keygen -R %s) and add the new one after checking its fingerprint; otherwise someone may be intercepting the connection",
			name, who, fp, knownHosts, shellWord(who))
		return true
	case hostKeyUnknownRE.MatchString(sshText) || hostKeyFailedRE.MatchString(sshText):
		e.Kind = ErrHostKey
		who := hostKeyName(sshText, host)
		e.Message = fmt.Sprintf("repository %s: unknown host key for %s: add it to %s (%s), after checking its fingerprint with the server's owner",
			name, who, knownHosts, keyscan(who))
		return true
	case credentialsRE.MatchString(text) || forbiddenOpenRE.MatchString(text):
		e.Kind = ErrCredentials
		e.Message = credentialsMessage(name, host, repo, ssh, text)
		return true
	}

	kind := networkKind(text)
	if kind == nil {
		return false
	}
	e.Kind = kind
	cause := networkCause(text)
	if errors.Is(kind, ErrUnreachable) {
		e.Message = unreachableMessage(name, host, cause)
		return true
	}
	e.Message = fmt.Sprintf("restic %s on repository %s lost its connection to %s (%s): check the server and the network, then run it again", op, name, host, cause)
	return true
}

// unreachableMessage is the line for a server never reached.
func unreachableMessage(name, host, cause string) string {
	advice := "check that the server runs and listens there, the url, and the network"
	if dnsRE.MatchString(cause) {
		advice = "the name does not resolve: check the url's host name, and the network and its DNS"
	}
	return fmt.Sprintf("repository %s is unreachable: cannot connect to %s (%s): %s", name, firstNonEmpty(host, "the server"), cause, advice)
}

var dnsRE = regexp.MustCompile(`(?i)no such host|lookup \S+|could not resolve hostname|name resolution|server misbehaving`)

// hostOnly is host without its port: "nas" for "nas:2222" or "[nas]:2222".
func hostOnly(host string) string {
	if strings.HasPrefix(host, "[") {
		h, _, _ := strings.Cut(host[1:], "]")
		return h
	}
	if strings.Count(host, ":") == 1 {
		h, _, _ := strings.Cut(host, ":")
		return h
	}
	return host
}

// hostKeyName is the host as ssh names it in its message ("[nas]:2222"),
// else the repository's host.
func hostKeyName(sshText, host string) string {
	for _, re := range []*regexp.Regexp{hostKeyUnknownRE, hostKeyChangedRE} {
		if m := re.FindStringSubmatch(sshText); len(m) > 1 && m[1] != "" {
			return strings.TrimSuffix(m[1], ".")
		}
	}
	if m := keygenRemoveRE.FindStringSubmatch(sshText); m != nil {
		return m[1]
	}
	return host
}

// keyscan is the command that shows a host's keys: "ssh-keyscan -p 2222
// nas" for "[nas]:2222".
func keyscan(who string) string {
	if strings.HasPrefix(who, "[") {
		if h, p, ok := strings.Cut(strings.TrimPrefix(who, "["), "]:"); ok {
			return "ssh-keyscan -p " + p + " " + h
		}
	}
	return "ssh-keyscan " + who
}

func shellWord(s string) string {
	if strings.ContainsAny(s, "[]*? ") {
		return "'" + s + "'"
	}
	return s
}

func credentialsMessage(name, host string, repo Repository, ssh []string, text string) string {
	if m := sshDeniedRE.FindString(text); m != "" {
		key := sshOption(ssh, "-i", "IdentityFile")
		user := sshOption(ssh, "-l", "User")
		if user == "" {
			user = sftpUser(repo.URL)
		}
		if user == "" {
			user = "root"
		}
		server := hostOnly(host)
		if key == "" {
			return fmt.Sprintf("repository %s: the server %s refused this host's ssh keys (%s): add the public key of root's ssh key to ~%s/.ssh/authorized_keys on %s, or set the repository's ssh key",
				name, host, m, user, server)
		}
		return fmt.Sprintf("repository %s: the server %s refused the ssh key %s (%s): add its public key (%s.pub) to ~%s/.ssh/authorized_keys on %s",
			name, host, key, m, key, user, server)
	}
	if code := s3Code(text); code != "" && strings.HasPrefix(repo.URL, "s3:") {
		where := "the environment"
		if repo.EnvFile != "" {
			where = "env_file " + repo.EnvFile
		}
		return fmt.Sprintf("repository %s: the server %s refused the S3 credentials (%s): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in %s, and the key's rights on the bucket",
			name, host, code, where)
	}
	status := "refused"
	if m := httpStatusRE.FindStringSubmatch(text); m != nil {
		switch {
		case m[1] != "" && m[2] != "":
			status = "HTTP " + strings.TrimPrefix(m[2], ": ")
		case m[1] != "":
			status = "HTTP " + m[1]
		default:
			status = "HTTP " + m[3] + " " + m[4]
		}
	} else if code := s3Code(text); code != "" {
		status = code
	}
	if strings.HasPrefix(repo.URL, "rest:") {
		if strings.Contains(status, "403") {
			return fmt.Sprintf("repository %s: the server %s refused access (%s): check that the url's user may use this path on the server", name, host, status)
		}
		return fmt.Sprintf("repository %s: the server %s refused the credentials (%s): check the user and password in the url", name, host, status)
	}
	return fmt.Sprintf("repository %s: the server %s refused the credentials (%s): check the repository's credentials (url, env_file)", name, host, status)
}

// s3Code is S3's error code in text: "InvalidAccessKeyId" also for a server
// that sent only its message.
func s3Code(text string) string {
	code := s3CodeRE.FindString(text)
	switch {
	case strings.EqualFold(code, "access key id you provided does not exist"):
		return "InvalidAccessKeyId"
	case code == "request signature we calculated does not match":
		return "SignatureDoesNotMatch"
	case code == "Access Denied":
		return "AccessDenied"
	}
	return code
}

// networkCause is the innermost network error: "dial tcp 127.0.0.1:1:
// connect: connection refused", or ssh's own words for sftp.
func networkCause(text string) string {
	lines := strings.Split(text, "\n")
	for _, l := range lines {
		if i := strings.Index(l, "dial tcp"); i >= 0 {
			return strings.TrimSpace(l[i:])
		}
	}
	for _, l := range sshLines(text) {
		if networkRE.MatchString(l) || lostRE.MatchString(l) {
			return strings.TrimPrefix(l, "ssh: ")
		}
	}
	for _, re := range []*regexp.Regexp{lostRE, networkRE} {
		for i := len(lines) - 1; i >= 0; i-- {
			l := strings.TrimSpace(lines[i])
			if strings.HasPrefix(l, "{") || !re.MatchString(l) {
				continue
			}
			l = strings.TrimPrefix(l, "Fatal: ")
			if j := strings.Index(l, "returned error, retrying after"); j >= 0 {
				if k := strings.Index(l[j:], ": "); k >= 0 {
					l = l[j+k+2:]
				}
			}
			return l
		}
	}
	return "network error"
}

// needsSSHDiagnosis reports whether an sftp repository's session failed to
// start without ssh's reason in stderr.
func needsSSHDiagnosis(loc, stderr string) bool {
	if !strings.HasPrefix(loc, "sftp:") || !sftpOpenRE.MatchString(stderr) {
		return false
	}
	ssh := strings.Join(sshLines(stderr), "\n")
	return !hostKeyUnknownRE.MatchString(ssh) && !hostKeyChangedRE.MatchString(ssh) && !hostKeyFailedRE.MatchString(ssh) &&
		!credentialsRE.MatchString(ssh) && !networkRE.MatchString(ssh)
}

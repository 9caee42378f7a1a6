package restic

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Kinds of failure a caller acts on. Test with errors.Is; the error itself
// is an *Error whose message says what to do.
var (
	ErrWrongPassword = errors.New("wrong password")
	ErrNoRepository  = errors.New("repository does not exist")
	ErrLocked        = errors.New("repository is locked")
	ErrUnreachable   = errors.New("repository is unreachable")
	ErrInterrupted   = errors.New("restic was interrupted")
	// ErrFailed is every other failure of restic.
	ErrFailed = errors.New("restic failed")
)

// IsNoRepository reports whether err says the repository does not exist
// yet, the case for Init.
func IsNoRepository(err error) bool { return errors.Is(err, ErrNoRepository) }

// Error is a failed restic run: what failed, in one line a person can act
// on, and the evidence.
type Error struct {
	// Kind is one of the Err* values above.
	Kind error
	// Op is the restic command: "backup", "forget", ...
	Op string
	// Repository is the URL, redacted.
	Repository string
	// ExitCode is restic's exit status, -1 when it was killed by a signal.
	ExitCode int
	// Message is the one-line cause with its fix.
	Message string
	// Stderr is what restic said (bounded: first lines and last 64 KiB),
	// with secrets removed.
	Stderr string
	// Lock is the lock that blocked restic, when Kind is ErrLocked and it
	// could be read.
	Lock *Lock
}

func (e *Error) Error() string { return e.Message }

// Is makes errors.Is(err, ErrLocked) and the like work.
func (e *Error) Is(target error) bool { return target == e.Kind }

// UnreadableFile is a file restic could not read during a backup.
type UnreadableFile struct {
	Path string
	// During is restic's phase: "scan" or "archival".
	During string
	// Message is the cause, such as "open /x: permission denied".
	Message string
}

// PartialError is returned with a BackupResult when restic made the archive
// but could not read some files (exit code 3). It is a warning: the archive
// exists and holds everything else.
type PartialError struct {
	SnapshotID string
	Files      []UnreadableFile
}

func (e *PartialError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "archive %s is incomplete: restic could not read %d file(s)", e.SnapshotID, len(e.Files))
	for i, f := range e.Files {
		if i == 3 {
			fmt.Fprintf(&b, ", and %d more", len(e.Files)-3)
			break
		}
		sep := ": "
		if i > 0 {
			sep = ", "
		}
		b.WriteString(sep + f.Path)
		if f.Message != "" {
			cause := f.Message
			// "open /x: permission denied" says the path twice.
			if _, after, ok := strings.Cut(cause, f.Path+": "); ok {
				cause = after
			}
			b.WriteString(" (" + cause + ")")
		}
	}
	return b.String()
}

// The texts restic prints, recorded from 0.14 (exit code 1 for all of them)
// and 0.18 (which also has exit codes 10, 11, 12): see testdata/stderr-*.
var (
	wrongPasswordRE = regexp.MustCompile(`wrong password or no key found`)
	unreachableRE   = regexp.MustCompile(`(?i)connection refused|no such host|dial tcp|i/o timeout|network is unreachable|no route to host|connection reset|tls handshake timeout|connect to host|unable to start the sftp session|server unexpectedly closed connection|temporary failure in name resolution`)
	noRepositoryRE  = regexp.MustCompile(`repository does not exist|Is there a repository at the following location\?|unable to open config file|config: no such file or directory`)
	lockedRE        = regexp.MustCompile(`repository is already locked|unable to create lock in backend|Fatal: unable to create lock`)
	lockHolderRE    = regexp.MustCompile(`locked (exclusively )?by PID (\d+) on (\S+) by (\S+)`)
	lockTimeRE      = regexp.MustCompile(`lock was created at ([0-9-]+ [0-9:]+)`)
	fatalRE         = regexp.MustCompile(`^(Fatal: )?`)
	interruptedRE   = regexp.MustCompile(`signal interrupt received`)
)

// classify turns a finished run into nil (exit 0) or an *Error. Exit code 3
// (partial backup) is the caller's to handle; here it is a plain failure.
func (r *Runner) classify(op string, res *outcome) error {
	if res.exitCode == 0 && !res.canceled {
		return nil
	}
	return classifyOutcome(op, r.Repo, res)
}

// failure is classify for a run known to have failed.
func (r *Runner) failure(op string, res *outcome) error {
	return classifyOutcome(op, r.Repo, res)
}

func classifyOutcome(op string, repo Repository, res *outcome) *Error {
	stderr := scrub(res.stderr.String(), res.secrets)
	exitMsg := scrub(res.exitError, res.secrets)
	text := exitMsg + "\n" + stderr
	name := repo.Redacted()
	e := &Error{Op: op, Repository: name, ExitCode: res.exitCode, Stderr: stderr}
	if exitMsg != "" && !strings.Contains(stderr, exitMsg) {
		e.Stderr = exitMsg + "\n" + stderr
	}

	switch {
	case res.canceled || res.exitCode == 130 || res.signal == syscall.SIGINT || interruptedRE.MatchString(text):
		// 0.17+ exits 1, not 130, when SIGINT stops a backup ("unable to
		// save snapshot: context canceled").
		e.Kind = ErrInterrupted
		e.Message = fmt.Sprintf("restic %s on repository %s was interrupted", op, name)
		if unreachableRE.MatchString(stderr) {
			// restic >= 0.17 retries an unreachable backend for 15
			// minutes; say why it had not finished.
			e.Message += " while the repository was unreachable: " + unreachableCause(stderr)
		}
		if !res.canceled {
			e.Message += " (by a signal from outside subvault)"
		}
		return e
	case res.exitCode == 12 || wrongPasswordRE.MatchString(text):
		e.Kind = ErrWrongPassword
		e.Message = fmt.Sprintf("repository %s: wrong password (check %s)", name, repo.passwordSource())
		return e
	case res.exitCode == 11 || lockedRE.MatchString(text):
		e.Kind = ErrLocked
		e.Lock = lockFromText(text)
		e.Message = lockedMessage(name, e.Lock)
		return e
	case unreachableRE.MatchString(text):
		// Before "no repository": 0.14 says "Is there a repository at the
		// following location?" for a refused connection too.
		e.Kind = ErrUnreachable
		e.Message = fmt.Sprintf("repository %s is unreachable: %s (check the network, the server and the url)", name, unreachableCause(text))
		return e
	case res.exitCode == 10 || noRepositoryRE.MatchString(text):
		e.Kind = ErrNoRepository
		e.Message = fmt.Sprintf("repository %s does not exist (create it with \"restic init\", or set init: true for this repository)", name)
		return e
	}
	e.Kind = ErrFailed
	cause := firstFatal(text)
	switch {
	case res.signal != 0:
		e.Message = fmt.Sprintf("restic %s on repository %s was killed by %s", op, name, res.signal)
	case unknownOptionRE.MatchString(text):
		e.Message = unknownOptionMessage(name, text)
	case cause != "":
		e.Message = fmt.Sprintf("restic %s on repository %s failed: %s", op, name, cause)
	default:
		e.Message = fmt.Sprintf("restic %s on repository %s failed with exit code %d and no message", op, name, res.exitCode)
	}
	return e
}

// firstFatal picks the line that says why: restic's "Fatal: ..." line, or
// else the last non-JSON line.
func firstFatal(text string) string {
	var last string
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "{") || l == "[...]" {
			continue
		}
		if strings.HasPrefix(l, "Fatal: ") || strings.Contains(l, "Fatal: ") {
			_, after, _ := strings.Cut(l, "Fatal: ")
			return after
		}
		last = l
	}
	return fatalRE.ReplaceAllString(last, "")
}

// unreachableCause is the innermost network error: "dial tcp 127.0.0.1:1:
// connect: connection refused", or ssh's own words for sftp.
func unreachableCause(text string) string {
	lines := strings.Split(text, "\n")
	for _, l := range lines {
		if i := strings.Index(l, "dial tcp"); i >= 0 {
			return strings.TrimSpace(l[i:])
		}
	}
	for _, l := range lines {
		if i := strings.Index(l, "subprocess ssh: "); i >= 0 {
			return strings.TrimSpace(l[i+len("subprocess ssh: "):])
		}
	}
	for _, l := range lines {
		if unreachableRE.MatchString(l) {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "Fatal: "))
		}
	}
	return "network error"
}

// lockFromText reads the holder of a lock from restic's message: "repository
// is already locked exclusively by PID 20713 on vm by root (UID 0, GID 0)
// lock was created at 2026-11-21 21:29:48 (4.02s ago)".
func lockFromText(text string) *Lock {
	m := lockHolderRE.FindStringSubmatch(text)
	if m == nil {
		return nil
	}
	l := &Lock{Exclusive: m[1] != "", Hostname: m[3], Username: m[4]}
	l.PID, _ = strconv.Atoi(m[2]) // the pattern has matched digits
	if t := lockTimeRE.FindStringSubmatch(text); t != nil {
		if ts, err := time.ParseInLocation("2006-01-02 15:04:05", t[1], time.Local); err == nil {
			l.Time = ts
		}
	}
	return l
}

func lockedMessage(repo string, l *Lock) string {
	if l == nil {
		return fmt.Sprintf("repository %s is locked by another restic; if no restic uses it any more, run \"restic unlock\"", repo)
	}
	since := ""
	if !l.Time.IsZero() {
		since = ", since " + l.Time.Format("2006-01-02 15:04:05")
	}
	return fmt.Sprintf("repository %s is locked by another restic (host %s, pid %d%s); if that process is gone, run \"restic unlock\"", repo, l.Hostname, l.PID, since)
}

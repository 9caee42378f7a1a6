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
	// ErrCredentials is a server that refused restic's credentials: HTTP
	// 401 or 403 from a REST or S3 server, S3's InvalidAccessKeyId or
	// SignatureDoesNotMatch, ssh's "Permission denied (publickey)". The
	// repository may well exist: it is never to be initialized.
	ErrCredentials = errors.New("the server refused the credentials")
	// ErrHostKey is an sftp server whose ssh host key is unknown or has
	// changed.
	ErrHostKey = errors.New("unknown or changed ssh host key")
	// ErrConnectionLost is a connection to the repository's server that
	// broke after the repository was opened.
	ErrConnectionLost = errors.New("connection to the repository lost")
	ErrInterrupted    = errors.New("restic was interrupted")
	// ErrStalled: restic made no progress for the runner's StallTimeout
	// and was stopped.
	ErrStalled = errors.New("restic stalled")
	// ErrDeleteRefused: the server would not delete what forget or prune
	// removed (an append-only rest-server or rclone serve restic
	// --append-only answers 403), or the archives are still there after a
	// forget that said it removed them.
	ErrDeleteRefused = errors.New("the server refused to delete")
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
	// Host is the server the URL names ("nas:2222"), "" for a local path.
	Host string
	// Network is ErrUnreachable or ErrConnectionLost when restic was
	// interrupted (Kind ErrInterrupted) while it retried a server it could
	// not reach; errors.Is matches it too.
	Network error
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
	// Killed is set when restic, told to stop (a cancel, a stall), did not
	// end within the grace and was killed: it could not remove its lock,
	// most likely because its repository did not answer.
	Killed bool
}

func (e *Error) Error() string { return e.Message }

// Is makes errors.Is(err, ErrLocked) and the like work.
func (e *Error) Is(target error) bool {
	return target == e.Kind || e.Network != nil && target == e.Network
}

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
	noRepositoryRE  = regexp.MustCompile(`repository does not exist|Is there a repository at the following location\?|unable to open config file|config: no such file or directory`)
	lockedRE        = regexp.MustCompile(`repository is already locked|unable to create lock in backend|Fatal: unable to create lock`)
	lockHolderRE    = regexp.MustCompile(`locked (exclusively )?by PID (\d+) on (\S+) by (\S+)`)
	lockTimeRE      = regexp.MustCompile(`lock was created at ([0-9-]+ [0-9:]+)`)
	fatalRE         = regexp.MustCompile(`^(Fatal: )?`)
	interruptedRE   = regexp.MustCompile(`signal interrupt received`)
	// A delete the server refused: 0.18 "Remove(<snapshot/ae25276e47>)
	// failed: unexpected HTTP response (403): 403 Forbidden"; 0.14 retries
	// "Remove(<snapshot/6beb6bc2a7>) returned error, retrying after ...:
	// blob not removed, server response: 403 Forbidden (403)" for 44 s,
	// then prints a Go stack trace (testdata/*/forget-append-only.stderr,
	// recorded against rclone serve restic --append-only).
	deleteRefusedRE = regexp.MustCompile(`Remove\(<[^>]*>\) (failed|returned error).*\b40[13]\b|blob not removed, server response: 40[13]`)
)

// AppendOnlyAdvice is what to do about a server that refuses deletes.
const AppendOnlyAdvice = "is the repository append-only? then set append_only: true on it in the configuration, so that this host never prunes there, and leave retention to the server's owner"

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
	e := &Error{Op: op, Repository: name, Host: repo.Host(), ExitCode: res.exitCode, Stderr: stderr, Killed: res.killed}
	if exitMsg != "" && !strings.Contains(stderr, exitMsg) {
		e.Stderr = exitMsg + "\n" + stderr
	}

	if res.gaveUp != "" {
		// subvault stopped restic's retries of a server it never reached
		// (failFast in exec.go): classified on what restic had said.
		if !classifyRemote(e, op, repo, res.args, stderr) || errors.Is(e.Kind, ErrConnectionLost) {
			e.Kind = ErrUnreachable
			e.Message = unreachableMessage(name, e.Host, networkCause(stderr))
		}
		e.Message += " (" + res.gaveUp + ")"
		return e
	}

	switch {
	case res.stalled:
		e.Kind = ErrStalled
		e.Message = fmt.Sprintf("restic %s on repository %s made no progress for %v", op, name, res.stallTimeout)
		if retryRE.MatchString(stderr) && !isLocal(repo.URL) {
			// It retried a server it could not reach or lost: say which,
			// and let errors.Is see the network kind too.
			if e.Network = networkKind(stderr); e.Network != nil {
				what := "it lost its connection to " + firstNonEmpty(e.Host, "the server")
				if errors.Is(e.Network, ErrUnreachable) {
					what = firstNonEmpty(e.Host, "the server") + " was unreachable"
				}
				e.Message += " while " + what + ": " + networkCause(stderr)
			} else {
				e.Message += " while it retried the repository: " + retryCause(stderr)
			}
		}
		return e
	case !res.canceled && (op == "forget" || op == "prune") && deleteRefusedRE.MatchString(text):
		// Before "interrupted": the wrapper stops a restic that would only
		// retry the refused deletes (outcome.gaveUpOnLine).
		e.Kind = ErrDeleteRefused
		e.Message = fmt.Sprintf("restic %s on repository %s: the server refused to delete archives (%s): %s",
			op, name, deleteRefusedCause(text), AppendOnlyAdvice)
		return e
	case res.canceled || res.exitCode == 130 || res.signal == syscall.SIGINT || interruptedRE.MatchString(text):
		// 0.17+ exits 1, not 130, when SIGINT stops a backup ("unable to
		// save snapshot: context canceled").
		e.Kind = ErrInterrupted
		e.Message = fmt.Sprintf("restic %s on repository %s was interrupted", op, name)
		if retryRE.MatchString(stderr) && !isLocal(repo.URL) {
			// restic >= 0.17 retries an unreachable backend for 15
			// minutes; say why it had not finished.
			if e.Network = networkKind(stderr); e.Network != nil {
				what := "the connection to " + firstNonEmpty(e.Host, "the server") + " was lost"
				if errors.Is(e.Network, ErrUnreachable) {
					what = firstNonEmpty(e.Host, "the server") + " was unreachable"
				}
				e.Message += " while " + what + ": " + networkCause(stderr)
			}
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
	case classifyRemote(e, op, repo, res.args, text):
		// Before "no repository": restic says "Is there a repository at
		// the following location?" for a refused connection and for HTTP
		// 401 too, and a repository that refused the credentials must
		// never be initialized.
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
		// "killed", "terminated": the words of the signal, with its number.
		e.Message = fmt.Sprintf("restic %s on repository %s ended by signal %d (%s)", op, name, int(res.signal), res.signal)
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

// deleteRefusedCause is the server's answer to the first refused delete:
// "403 Forbidden".
func deleteRefusedCause(text string) string {
	if m := deleteStatusRE.FindStringSubmatch(text); m != nil {
		return "HTTP " + m[1]
	}
	return "the server said no"
}

var deleteStatusRE = regexp.MustCompile(`\b(40[13] [A-Z][a-z]+)\b`)

// retryCause is what the last of restic's "retrying" lines says went
// wrong: "Save(<data/1234>) returned error, retrying after 1.2s: <cause>".
func retryCause(text string) string {
	cause := "the backend keeps failing"
	for _, l := range strings.Split(text, "\n") {
		if _, after, ok := strings.Cut(l, "returned error, retrying after "); ok {
			if _, c, ok := strings.Cut(after, ": "); ok && strings.TrimSpace(c) != "" {
				cause = strings.TrimSpace(c)
			}
		}
	}
	if len(cause) > 200 {
		cause = cause[:200] + "..."
	}
	return cause
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

package restic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultGrace is how long a canceled restic gets to remove its lock after
// SIGINT before it is killed. restic that reaches its repository ends within
// a second of SIGINT; one that does not (a dead or hung server, which 0.17+
// retries for 15 minutes) cannot remove its lock however long it is given,
// and that lock is for RemoveStaleLocks once the repository answers again.
// A cancel must not wait on it: a few seconds, not the 30 s it once was.
const DefaultGrace = 3 * time.Second

// Runner runs one restic binary against one repository. Use it through a
// pointer; its methods may be called from several goroutines, but each
// restic process runs in the goroutine that called the method (see the
// package comment).
type Runner struct {
	// Binary is the restic program, a path or a name looked up in PATH.
	Binary string
	Repo   Repository
	// Logger gets one line when a restic process starts (its argv, which
	// holds no secret by construction) and one when it ends. Nil: no logs.
	Logger *slog.Logger
	// Hostname is passed to backup as --host when set. Lock ownership is
	// decided by the kernel hostname instead, since that is what restic
	// writes into its lock files.
	Hostname string
	// Grace is the time between SIGINT and SIGKILL when the context is
	// canceled; zero means DefaultGrace.
	Grace time.Duration
	// StallTimeout, when positive, stops a restic process that made no
	// progress for that long (progressMark says what progress is): SIGINT,
	// then SIGKILL after Grace, as for a cancel. The call then returns an
	// *Error of kind ErrStalled. Not in a context of WithoutStallStop.
	StallTimeout time.Duration
	// TempDir is restic's TMPDIR, made (0700) if missing; empty: the
	// caller's. A backup of / shows the snapshot's /tmp, not the host's, so
	// restic's temporary files belong somewhere a snapshot does not cover.
	TempDir string

	mu           sync.Mutex
	version      Version
	versionKnown bool
	deviceIDFlag bool

	// onStart, set by tests, sees each started process.
	onStart func(pid int)
}

// invocation is one restic command line and what to do with its output.
type invocation struct {
	op   string   // the restic command, for messages: "backup"
	args []string // after the binary; never a secret
	// bare runs without the repository's environment (version, features).
	bare bool
	// from is the source repository of a copy (RESTIC_FROM_*), or nil.
	from *Repository
	// giveUp, when it matches a line of stderr, stops restic with SIGINT:
	// a failure restic would only retry for a while (0.14 retries a
	// delete the server refused for 44 s). The outcome says so (gaveUpOnLine).
	giveUp *regexp.Regexp
	// stdout gets each line, without its newline. Nil: discarded.
	stdout func(line []byte)
	// message gets each JSON line of stderr that has a message_type other
	// than exit_error (restic prints backup errors there in 0.14 and 0.18).
	message func(kind string, line []byte)
	// progress, for a command whose output counts what it did (backup,
	// restore), is touched by its parser when the counts move. Nil: every
	// line on stdout is progress.
	progress *progressMark
}

// outcome is what the wrapper saw of a finished process.
type outcome struct {
	exitCode int // -1 when killed by a signal
	signal   syscall.Signal
	canceled bool // the context ended while restic ran
	// stalled: restic made no progress for the runner's StallTimeout and
	// was stopped for it.
	stalled      bool
	stallTimeout time.Duration
	// killed: restic did not end within the grace after SIGINT (a cancel
	// or a stall) and was killed; a lock it held is still there.
	killed bool
	// exitError is the message of 0.17's {"message_type":"exit_error"}.
	exitError string
	// gaveUpOnLine: the wrapper stopped restic on a line that matched
	// invocation.giveUp.
	gaveUpOnLine bool
	stderr       *stderrLog
	duration     time.Duration
	secrets      []string
	// args are restic's arguments as it got them (whatever put them
	// there: the command's, the repository's options), for the
	// classification (the ssh command in sftp.command); never a secret.
	args []string
	// gaveUp says why subvault stopped restic's retries itself (failFast),
	// "" when it did not.
	gaveUp string
}

// WithGrace is a runner like r whose restic gets grace between SIGINT and
// SIGKILL, for calls that must end close to their context's deadline (a
// lock check bounded in time: killing `restic list locks` or `restic
// unlock` loses nothing).
func (r *Runner) WithGrace(grace time.Duration) *Runner {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &Runner{Binary: r.Binary, Repo: r.Repo, Logger: r.Logger, Hostname: r.Hostname, Grace: grace,
		StallTimeout: r.StallTimeout, TempDir: r.TempDir,
		version: r.version, versionKnown: r.versionKnown, deviceIDFlag: r.deviceIDFlag, onStart: r.onStart}
}

func (r *Runner) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (r *Runner) grace() time.Duration {
	if r.Grace > 0 {
		return r.Grace
	}
	return DefaultGrace
}

// errGaveUp is the cause of a run ended because restic could only retry
// a repository it cannot open (failFast).
var errGaveUp = errors.New("restic cannot open the repository")

// exec is the one place a restic process is started. It builds argv and env
// explicitly, logs start and end, streams stdout by lines to inv.stdout,
// keeps a bounded stderr for error messages, and on ctx done sends SIGINT
// (restic then removes its lock; SIGTERM leaves one behind before 0.17),
// then SIGKILL after the grace period.
//
// Start and Wait run in the calling goroutine: the daemon calls from a
// thread inside a private mount namespace, and a child forked by another
// thread would not be in it.
//
// The child gets its own process group (Setpgid), so a Ctrl-C typed at a
// daemon running in a terminal reaches the daemon only, which then stops
// restic through ctx, in order, instead of both racing. Pdeathsig is SIGINT,
// not SIGKILL: if the daemon dies, restic still removes its lock. (Pdeathsig
// fires when the forking thread exits; that thread is waiting in Wait, so it
// cannot exit while restic runs.)
//
// A non-nil error means restic did not run or could not be waited for; a
// run that exited non-zero is reported in the outcome.
func (r *Runner) exec(ctx context.Context, inv invocation) (*outcome, error) {
	if r.Binary == "" {
		return nil, errors.New("no restic binary configured")
	}
	deviceID := false
	if !inv.bare {
		if _, err := r.Version(ctx); err != nil {
			return nil, err
		}
		r.mu.Lock()
		deviceID = r.deviceIDFlag
		r.mu.Unlock()
	}
	var from []Repository
	if inv.from != nil {
		from = append(from, *inv.from)
	}
	env, secrets, err := r.environment(!inv.bare, deviceID, from...)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return &outcome{exitCode: -1, canceled: true, stderr: newStderrLog(), secrets: secrets}, nil
	}

	args := inv.args
	if !inv.bare {
		// The repository's flags go before the command's name, where
		// they cannot fall after a "--" that ends the command's flags.
		args = append(r.Repo.GlobalArgs(), args...)
	}
	mark := inv.progress
	if mark == nil {
		mark = newProgressMark()
	}
	// A stall (watchProgress) and restic's own retries (failFast) end
	// runCtx, each with its cause; the caller's cancel ends ctx: only
	// that one is an interruption.
	runCtx, stopRun := context.WithCancelCause(ctx)
	defer stopRun(nil)
	cmd := exec.CommandContext(runCtx, r.Binary, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGINT}
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = r.grace()

	out := &outcome{stderr: newStderrLog(), secrets: secrets, args: cmd.Args[1:]}
	stdout := &lineWriter{fn: inv.stdout}
	if inv.progress == nil {
		stdout.fn = func(line []byte) {
			mark.touch()
			if inv.stdout != nil {
				inv.stdout(line)
			}
		}
	}
	var retrying atomic.Bool
	start := time.Now()
	var gaveUp atomicString
	stderr := &lineWriter{fn: func(line []byte) {
		text := out.stderrLine(line, inv.message)
		if text != nil && inv.giveUp != nil && !out.gaveUpOnLine && inv.giveUp.Match(text) && cmd.Process != nil {
			out.gaveUpOnLine = true
			r.logger().Warn("restic stopped: it would only retry", "op", inv.op, "repository", r.Repo.Redacted(), "message", scrub(string(text), secrets))
			cmd.Process.Signal(os.Interrupt) //nolint:errcheck,gosec // it may have ended meanwhile
			return
		}
		if text != nil && retryRE.Match(text) {
			retrying.Store(true)
			// A backend restic cannot reach: from 0.17 it retries for up
			// to 15 minutes, so say so now rather than at the end.
			r.logger().Warn("restic retries", "op", inv.op, "repository", r.Repo.Redacted(), "message", scrub(string(text), secrets))
			if why := failFast(text, time.Since(start)); why != "" && !inv.bare && gaveUp.set(why) {
				r.logger().Warn("restic cannot open the repository: stopping its retries", "op", inv.op,
					"repository", r.Repo.Redacted(), "host", r.Repo.Host(), "after", time.Since(start).Round(time.Millisecond))
				stopRun(errGaveUp)
			}
		}
	}}
	cmd.Stdout, cmd.Stderr = stdout, stderr

	log := r.logger().With("op", inv.op, "binary", r.Binary)
	if !inv.bare {
		log = log.With("repository", r.Repo.Redacted())
	}
	if err := cmd.Start(); err != nil {
		log.Error("restic did not start", "error", err)
		return nil, fmt.Errorf("cannot run %s: %w", r.Binary, err)
	}
	log.Debug("restic started", "pid", cmd.Process.Pid, "argv", cmd.Args)
	if r.onStart != nil {
		r.onStart(cmd.Process.Pid)
	}
	watched := make(chan struct{})
	idles := idleWatchesOf(ctx)
	stallTimeout := r.StallTimeout
	if stallStopOff(ctx) {
		stallTimeout = 0
	}
	told := make(chan []Idle, 1)
	if stallTimeout > 0 || len(idles) > 0 {
		mark.touch()
		go watchProgress(watched, cmd.Process.Pid, mark, &retrying, stallTimeout, stopRun, idles, told)
	} else {
		told <- nil
	}
	waitErr := cmd.Wait()
	close(watched)
	idleAtEnd := <-told
	stdout.flush()
	stderr.flush()
	out.duration = time.Since(start)
	out.canceled = ctx.Err() != nil
	out.stalled = !out.canceled && errors.Is(context.Cause(runCtx), errStalled)
	out.stallTimeout = stallTimeout
	for i, last := range idleAtEnd {
		if !last.Since.IsZero() && !out.canceled && !out.stalled {
			// It ended on its own, so it waits no more; a stall or a
			// cancel ends its job, which says so itself.
			idles[i].report(Idle{})
		}
	}
	if !out.canceled {
		out.gaveUp = gaveUp.get()
	}
	if !inv.bare && !out.canceled && cmd.ProcessState != nil && cmd.ProcessState.ExitCode() != 0 && needsSSHDiagnosis(r.Repo.URL, out.exitError+"\n"+out.stderr.String()) {
		// restic did not pass on ssh's reason: ask ssh (diagnoseSSH).
		for _, l := range diagnoseSSH(ctx, r.Repo.URL, out.args, env) {
			out.stderr.add([]byte(l))
		}
	}
	if cmd.ProcessState == nil {
		log.Error("restic could not be waited for", "error", waitErr)
		return nil, fmt.Errorf("cannot wait for %s: %w", r.Binary, waitErr)
	}
	out.exitCode = cmd.ProcessState.ExitCode()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		out.signal = ws.Signal()
	}
	out.killed = out.signal == syscall.SIGKILL && (out.canceled || out.stalled)
	attrs := []any{"pid", cmd.Process.Pid, "exit_code", out.exitCode, "duration", out.duration.Round(time.Millisecond)}
	if out.signal != 0 {
		attrs = append(attrs, "signal", out.signal.String())
	}
	if out.canceled {
		attrs = append(attrs, "canceled", true)
	}
	if out.stalled {
		attrs = append(attrs, "stalled", context.Cause(runCtx).Error())
	}
	if out.exitCode == 0 {
		log.Debug("restic ended", attrs...)
	} else {
		log.Info("restic ended", attrs...)
	}
	return out, nil
}

// stderrLine takes one line of restic's stderr: the exit_error message is
// kept apart, other JSON messages go to message, and everything but
// exit_error is kept in the bounded log. It returns the line when it was
// plain text.
func (out *outcome) stderrLine(line []byte, message func(kind string, line []byte)) []byte {
	line = cleanTerminal(line)
	if len(line) == 0 {
		return nil
	}
	if line[0] == '{' {
		var m struct {
			Type    string `json:"message_type"`
			Message string `json:"message"`
		}
		if json.Unmarshal(line, &m) == nil && m.Type != "" {
			if m.Type == "exit_error" {
				out.exitError = m.Message
				return nil
			}
			if message != nil {
				message(m.Type, line)
			}
			out.stderr.add(line)
			return nil
		}
	}
	out.stderr.add(line)
	return line
}

var retryRE = regexp.MustCompile(`returned error, retrying after`)

// OpenRetryWindow is how long restic may retry a server it has not reached
// yet (the repository's config file and keys) before subvault stops it:
// long enough for a network that is coming up (restic 0.17+ retries after
// about 1, 3 and 8 seconds), short enough that an unreachable repository
// ends the job in seconds instead of restic's 15 minutes.
const OpenRetryWindow = 5 * time.Second

var retryAfterRE = regexp.MustCompile(`retrying after ([0-9.]+[a-zµ]+)`)

// failFast says why restic's retry line should end it: a retry while it
// opens the repository, with a network or credentials error, whose next
// attempt would come after OpenRetryWindow. "" means let restic go on.
// Retries once the repository is open (a connection lost mid-backup) are
// left to restic and to the job's stall timeout.
func failFast(line []byte, elapsed time.Duration) string {
	if !openRetryRE.Match(line) {
		return ""
	}
	if !networkRE.Match(line) && !credentialsRE.Match(line) && !forbiddenOpenRE.Match(line) && !noBucketRE.Match(line) {
		return ""
	}
	next := elapsed
	if m := retryAfterRE.FindSubmatch(line); m != nil {
		if d, err := time.ParseDuration(string(m[1])); err == nil {
			next += d
		}
	}
	if next <= OpenRetryWindow {
		return ""
	}
	return fmt.Sprintf("subvault stopped restic's retries after %s instead of letting it retry for up to 15 minutes", elapsed.Round(100*time.Millisecond))
}

// atomicString is a string set once, from restic's stderr reader, and read
// after Wait.
type atomicString struct {
	mu sync.Mutex
	s  string
}

func (a *atomicString) set(s string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.s != "" {
		return false
	}
	a.s = s
	return true
}

func (a *atomicString) get() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.s
}

// ansiRE matches the terminal control sequences restic prints even when
// stderr is not a terminal ("\x1b[2K" before "signal interrupt received").
var ansiRE = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

func cleanTerminal(line []byte) []byte {
	if i := bytes.LastIndexByte(line, '\r'); i >= 0 {
		line = line[i+1:]
	}
	return bytes.TrimSpace(ansiRE.ReplaceAll(line, nil))
}

// lineWriter calls fn for each complete line written to it.
type lineWriter struct {
	fn  func([]byte)
	buf []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.buf = append(w.buf, p...)
			break
		}
		line := p[:i]
		if len(w.buf) > 0 {
			w.buf = append(w.buf, line...)
			line = w.buf
		}
		if w.fn != nil {
			w.fn(bytes.TrimSuffix(line, []byte{'\r'}))
		}
		w.buf = w.buf[:0]
		p = p[i+1:]
	}
	return n, nil
}

func (w *lineWriter) flush() {
	if len(w.buf) > 0 && w.fn != nil {
		w.fn(w.buf)
	}
	w.buf = nil
}

// stderrLog keeps the first lines and the last 64 KiB of stderr: the first
// "Fatal:" line and the final words are what an error message needs.
type stderrLog struct {
	head  []string
	tail  []byte
	total int
}

const (
	stderrHeadLines = 20
	stderrLineMax   = 2048
	stderrTailBytes = 64 << 10
)

func newStderrLog() *stderrLog { return &stderrLog{} }

func (s *stderrLog) add(line []byte) {
	s.total++
	if len(s.head) < stderrHeadLines {
		l := line
		if len(l) > stderrLineMax {
			l = l[:stderrLineMax]
		}
		s.head = append(s.head, string(l))
		return
	}
	s.tail = append(s.tail, line...)
	s.tail = append(s.tail, '\n')
	if len(s.tail) > 2*stderrTailBytes {
		s.tail = append([]byte(nil), s.tail[len(s.tail)-stderrTailBytes:]...)
	}
}

// String is the kept text: the head, a marker for what was dropped, the tail.
func (s *stderrLog) String() string {
	var b strings.Builder
	for _, l := range s.head {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	tail := s.tail
	if len(tail) > stderrTailBytes {
		tail = tail[len(tail)-stderrTailBytes:]
		if i := bytes.IndexByte(tail, '\n'); i >= 0 {
			tail = tail[i+1:]
		}
		b.WriteString("[...]\n")
	}
	b.Write(tail)
	return b.String()
}

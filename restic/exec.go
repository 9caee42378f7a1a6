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
	"syscall"
	"time"
)

// DefaultGrace is how long a canceled restic gets to remove its lock after
// SIGINT before it is killed.
const DefaultGrace = 30 * time.Second

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
	// stdout gets each line, without its newline. Nil: discarded.
	stdout func(line []byte)
	// message gets each JSON line of stderr that has a message_type other
	// than exit_error (restic prints backup errors there in 0.14 and 0.18).
	message func(kind string, line []byte)
}

// outcome is what the wrapper saw of a finished process.
type outcome struct {
	exitCode int // -1 when killed by a signal
	signal   syscall.Signal
	canceled bool // the context ended while restic ran
	// exitError is the message of 0.17's {"message_type":"exit_error"}.
	exitError string
	stderr    *stderrLog
	duration  time.Duration
	secrets   []string
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
	env, secrets, err := r.environment(!inv.bare, deviceID)
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
	cmd := exec.CommandContext(ctx, r.Binary, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGINT}
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = r.grace()

	out := &outcome{stderr: newStderrLog(), secrets: secrets}
	stdout := &lineWriter{fn: inv.stdout}
	stderr := &lineWriter{fn: func(line []byte) {
		if text := out.stderrLine(line, inv.message); text != nil && retryRE.Match(text) {
			// A backend restic cannot reach: from 0.17 it retries for up
			// to 15 minutes, so say so now rather than at the end.
			r.logger().Warn("restic retries", "op", inv.op, "repository", r.Repo.Redacted(), "message", scrub(string(text), secrets))
		}
	}}
	cmd.Stdout, cmd.Stderr = stdout, stderr

	log := r.logger().With("op", inv.op, "binary", r.Binary)
	if !inv.bare {
		log = log.With("repository", r.Repo.Redacted())
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		log.Error("restic did not start", "error", err)
		return nil, fmt.Errorf("cannot run %s: %w", r.Binary, err)
	}
	log.Debug("restic started", "pid", cmd.Process.Pid, "argv", cmd.Args)
	if r.onStart != nil {
		r.onStart(cmd.Process.Pid)
	}
	waitErr := cmd.Wait()
	stdout.flush()
	stderr.flush()
	out.duration = time.Since(start)
	out.canceled = ctx.Err() != nil
	if cmd.ProcessState == nil {
		log.Error("restic could not be waited for", "error", waitErr)
		return nil, fmt.Errorf("cannot wait for %s: %w", r.Binary, waitErr)
	}
	out.exitCode = cmd.ProcessState.ExitCode()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		out.signal = ws.Signal()
	}
	attrs := []any{"pid", cmd.Process.Pid, "exit_code", out.exitCode, "duration", out.duration.Round(time.Millisecond)}
	if out.signal != 0 {
		attrs = append(attrs, "signal", out.signal.String())
	}
	if out.canceled {
		attrs = append(attrs, "canceled", true)
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

package restic

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

// errStalled is the cause of the context that stops a restic process that
// made no progress for the runner's StallTimeout.
var errStalled = errors.New("restic made no progress")

// progressMark is when a restic process last made progress, on the
// monotonic clock (which stands still while the machine sleeps, so a
// laptop that resumes does not find its backup stalled).
//
// What counts as progress, for every command: restic read another 256 KiB
// (rchar of /proc/PID/io: files, its cache, the repository's answers)
// without printing that it retries the backend in the meantime (a restic
// waiting on a hung server still reads a few bytes now and then: 48 bytes
// every few seconds, measured with 0.18); restic
// computing (a quarter of a CPU or more: deriving its key, hashing,
// planning a prune), since a restic waiting on the network uses next to
// none; and, for
// the commands whose --json output counts what they did (backup, restore),
// a status line whose counters moved, or a message other than status;
// for the others, any line on stdout. A process that restic retries
// against a dead or hung server, or that is stopped, makes none.
type progressMark struct {
	base time.Time
	last atomic.Int64 // since base
}

func newProgressMark() *progressMark { return &progressMark{base: time.Now()} }

func (m *progressMark) touch() {
	if m != nil {
		m.last.Store(int64(time.Since(m.base)))
	}
}

// idle is how long ago the last progress was.
func (m *progressMark) idle() time.Duration {
	return time.Since(m.base) - time.Duration(m.last.Load())
}

// Idle is what an idle watch (WithIdleWatch) reports of a restic process
// that made no progress for the watch's After: Since is when it last made
// progress (wall clock), zero once it moves again or ends on its own.
type Idle struct {
	Since time.Time
	// Retrying: restic said, since its last progress, that it retries
	// the repository ("returned error, retrying after").
	Retrying bool
}

type idleWatchKey struct{}

type idleWatch struct {
	after  time.Duration
	report func(Idle)
}

// WithIdleWatch is ctx with a watch on every restic process run in it:
// when one makes no progress (progressMark) for after, report is called
// with Since set; when it moves again, or ends without being stopped for
// a stall or a cancel, with Since zero. report is called from one
// goroutine per process, only when what it would say changes (Retrying
// included), and must be quick. The daemon uses it to let a job whose
// repository does not answer give up its place in the queue
// (docs/daemon.md, "A job waiting on its repository"), and to mark a job
// stalled that its plan lets go on (on_stall: report), like
// net/http/httptrace's trace in a request's context. The watches of ctx's
// parents stay: each is told on its own.
func WithIdleWatch(ctx context.Context, after time.Duration, report func(Idle)) context.Context {
	if after <= 0 || report == nil {
		return ctx
	}
	watches := slices.Concat(idleWatchesOf(ctx), []*idleWatch{{after: after, report: report}})
	return context.WithValue(ctx, idleWatchKey{}, watches)
}

func idleWatchesOf(ctx context.Context) []*idleWatch {
	w, _ := ctx.Value(idleWatchKey{}).([]*idleWatch)
	return w
}

type stallStopOffKey struct{}

// WithoutStallStop is ctx in which no restic process is stopped for a
// stall, whatever its runner's StallTimeout: whoever made ctx watches its
// processes (WithIdleWatch) and decides what a stall means. The daemon
// uses it for the jobs of a plan that reports a stall and lets the job go
// on (docs/configuration.md, on_stall).
func WithoutStallStop(ctx context.Context) context.Context {
	return context.WithValue(ctx, stallStopOffKey{}, true)
}

func stallStopOff(ctx context.Context) bool {
	off, _ := ctx.Value(stallStopOffKey{}).(bool)
	return off
}

// watchProgress stops the process (stall, whose context runs it) when it
// made no progress for stallTimeout (when positive), and tells each of
// idles when it made none for the watch's after. It returns when done is
// closed, and sends on toldLast what each of idles was told last.
func watchProgress(done <-chan struct{}, pid int, mark *progressMark, retrying *atomic.Bool, stallTimeout time.Duration, stall context.CancelCauseFunc, idles []*idleWatch, toldLast chan<- []Idle) {
	tick := time.Second
	if stallTimeout > 0 {
		tick = min(tick, stallTimeout/4)
	}
	for _, idle := range idles {
		tick = min(tick, idle.after/4)
	}
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	read, _ := readBytes(pid) // at the last progress
	cpu, _ := cpuTime(pid)
	told := make([]Idle, len(idles)) // what each of idles was last told
	retried := false
	last := mark.last.Load()
	defer func() { toldLast <- told }()
	for {
		select {
		case <-done:
			return
		case <-ticker.C:
		}
		if n, ok := readBytes(pid); ok {
			switch {
			case retrying.Swap(false):
				read = n // reads of a retried backend are none
				retried = true
			case n >= read+readProgress:
				read = n
				mark.touch()
			}
		}
		if c, ok := cpuTime(pid); ok {
			if c-cpu >= tick/4 {
				mark.touch()
			}
			cpu = c
		}
		if now := mark.last.Load(); now != last {
			last, retried = now, false
		}
		since := mark.idle()
		if stallTimeout > 0 && since >= stallTimeout {
			stall(fmt.Errorf("%w for %v", errStalled, stallTimeout))
			return
		}
		for i, idle := range idles {
			var now Idle
			if since >= idle.after {
				now = Idle{Since: time.Now().Add(-since), Retrying: retried}
			}
			if now.Since.IsZero() != told[i].Since.IsZero() || now.Retrying != told[i].Retrying {
				told[i] = now
				idle.report(now)
			}
		}
	}
}

// cpuTime is the CPU time process pid has used (user and system, from
// /proc/PID/stat, in USER_HZ ticks of 10 ms, which Linux fixes at 100 a
// second for every program that reads it).
func cpuTime(pid int) (time.Duration, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// pid (comm) state ppid ...: utime and stime are the 14th and 15th
	// fields, the 12th and 13th after the comm, which may hold spaces.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, false
	}
	fields := bytes.Fields(data[i+1:])
	if len(fields) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseUint(string(fields[11]), 10, 64)
	stime, err2 := strconv.ParseUint(string(fields[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, true
}

// readProgress is how much restic must read to make progress.
const readProgress = 256 << 10

// readBytes is what process pid has read so far (rchar: every read, of
// files, pipes and sockets alike); false when the kernel does not say.
func readBytes(pid int) (uint64, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/io")
	if err != nil {
		return 0, false
	}
	for line := range bytes.SplitSeq(data, []byte{'\n'}) {
		if v, ok := bytes.CutPrefix(line, []byte("rchar: ")); ok {
			n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

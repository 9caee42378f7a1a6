package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/daemon/state"
)

// A `subvault run backup` records its job in the foreground spool of the
// state directory (state.Spool); the daemon imports the records into its
// queue's history: at its start, and while it runs as they appear
// (inotify on the spool). A running record is shown as a running job as
// long as its process lives; a finished one is imported and its file
// removed. docs/daemon.md ("Foreground runs") has the rules.

// ForegroundInterrupted is the error of a foreground job whose process
// ended (killed, the machine went down) without recording its result.
const ForegroundInterrupted = "interrupted: subvault run ended without recording its result"

// foregroundLiveness is how often the daemon looks whether the processes of
// the running foreground jobs it shows still run: a process killed with
// SIGKILL writes nothing, so nothing else would tell.
const foregroundLiveness = 5 * time.Second

// foregroundImporter imports the spool's records; one goroutine at a time
// uses it (New, then watchForeground).
type foregroundImporter struct {
	q     *queue.Queue
	log   *slog.Logger
	spool state.Spool
	// tracked are the running records shown as running jobs, by id.
	tracked map[uint32]state.ForegroundRecord
	lastErr string
}

func newForegroundImporter(q *queue.Queue, log *slog.Logger, stateDir string) *foregroundImporter {
	return &foregroundImporter{q: q, log: log, spool: state.Spool{Dir: filepath.Join(stateDir, state.ForegroundDir)},
		tracked: map[uint32]state.ForegroundRecord{}}
}

// importOnce reads the spool once: finished records (and running ones
// whose process is gone) go into the history and their files are removed;
// running ones are shown. It reports whether more records wait than one
// scan reads.
func (f *foregroundImporter) importOnce() bool {
	records, more, broken, err := f.spool.Scan(state.ScanLimit)
	for _, b := range broken {
		if b.Aside != "" {
			f.log.Error("a foreground job's record cannot be read; it is moved aside and not imported", "path", b.Name, "aside", b.Aside, "err", b.Err)
		} else {
			f.log.Error("a foreground job's record cannot be read; it is removed (too many are aside already)", "path", b.Name, "err", b.Err)
		}
	}
	if err != nil {
		if err.Error() != f.lastErr {
			f.log.Error("cannot import the foreground jobs (subvault run backup); their records wait", "err", err)
		}
		f.lastErr = err.Error()
		return false
	}
	f.lastErr = ""
	if more > 0 {
		f.log.Warn("the foreground job spool holds more records than one import takes; the rest follow at once",
			"spool", f.spool.Dir, "importing", len(records), "waiting", more)
	}
	seen := map[uint32]bool{}
	var finished []queue.Job
	now := time.Now()
	for _, r := range records {
		seen[r.ID] = true
		if r.State == contract.StateRunning {
			if r.Alive() {
				if _, ok := f.tracked[r.ID]; !ok {
					f.tracked[r.ID] = r
					f.q.TrackForeground(foregroundJob(r), r.PID)
				}
				continue
			}
			// Its process is gone: what it wrote last, read now that it
			// has ended, is its last word.
			if again, err := f.spool.Read(r.ID); err == nil {
				r = again
			}
			if r.State == contract.StateRunning {
				f.log.Warn("a foreground job's process ended without recording its result; the job is failed as interrupted",
					"job", r.ID, "plan", r.Plan, "pid", r.PID)
				r.State, r.Result, r.Error, r.FinishedAt = contract.StateFinished, contract.ResultFailed, ForegroundInterrupted, r.EndedBy(now)
			}
		}
		finished = append(finished, foregroundJob(r))
	}
	if len(finished) > 0 {
		if err := f.q.Import(finished...); err != nil {
			f.log.Error("cannot write the job history; the foreground jobs' records stay, to be imported again", "err", err)
			return false
		}
		for _, j := range finished {
			delete(f.tracked, j.ID)
			if err := f.spool.Remove(j.ID); err != nil {
				f.log.Error("cannot remove an imported foreground job's record", "job", j.ID, "err", err)
			}
		}
	}
	if more == 0 {
		for id, r := range f.tracked {
			if !seen[id] {
				f.log.Warn("a running foreground job's record is gone without its result; the job is no longer shown", "job", id, "plan", r.Plan)
				delete(f.tracked, id)
				f.q.ForgetForeground(id)
			}
		}
	}
	return more > 0
}

// foregroundJob is the queue's job of record r.
func foregroundJob(r state.ForegroundRecord) queue.Job {
	return queue.Job{
		ID: r.ID, Kind: r.Kind, Plan: r.Plan, State: r.State, Result: r.Result, Trigger: queue.TriggerForeground, Caller: -1,
		QueuedAt: r.StartedAt, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt,
		Error: r.Error, ArchiveID: r.ArchiveID, Summary: r.Summary,
	}
}

// watchForeground imports the spool's records as they appear until ctx
// ends: inotify tells of a record written, and while running records are
// shown their processes are looked at every foregroundLiveness. Without
// inotify the spool is read at that pace.
func (d *Daemon) watchForeground(ctx context.Context) {
	f := d.foreground
	wake := make(chan struct{}, 1)
	stop, err := watchDir(f.spool.Dir, wake)
	poll := err != nil
	if poll {
		d.log.Warn("cannot watch the foreground job spool; it is read every few seconds instead", "spool", f.spool.Dir,
			"every", foregroundLiveness, "err", err)
	} else {
		defer stop()
	}
	timer := time.NewTimer(foregroundLiveness)
	defer timer.Stop()
	for {
		// The watch is armed before the first read: a record written
		// between the start's import and here is read now.
		if f.importOnce() {
			select {
			case <-ctx.Done():
				return
			default:
				continue
			}
		}
		var tick <-chan time.Time
		if poll || len(f.tracked) > 0 {
			timer.Reset(foregroundLiveness)
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-tick:
		}
		timer.Stop()
	}
}

// watchDir tells wake when a file is written or moved into dir.
func watchDir(dir string, wake chan<- struct{}) (stop func(), err error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE|unix.IN_ONLYDIR|unix.IN_DONT_FOLLOW); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Non-blocking, so the runtime's poller waits for it and Close ends
	// the read.
	file := os.NewFile(uintptr(fd), "inotify:"+dir) //nolint:gosec // a descriptor this function made
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			if _, err := file.Read(buf); err != nil {
				return
			}
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}()
	return func() { file.Close(); <-done }, nil //nolint:errcheck,gosec // nothing was written
}

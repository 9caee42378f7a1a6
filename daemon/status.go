package daemon

import (
	"fmt"
	"strings"
	"time"

	"github.com/subvault/subvault/daemon/queue"
)

// markStatus asks Run to send systemd a new STATUS= line; Run sends at
// most four a second.
func (d *Daemon) markStatus() {
	select {
	case d.statusDirty <- struct{}{}:
	default:
	}
}

// updateStatus sends systemd a one-line summary: what runs, or what is next.
func (d *Daemon) updateStatus() {
	d.notify("STATUS=" + d.StatusLine())
}

// StatusLine is the daemon's state in one line: "backing up home: 42%, 1.2
// GiB of 2.9 GiB" or "idle · next: home at 03:00".
func (d *Daemon) StatusLine() string {
	var parts []string
	queued := 0
	for _, j := range d.queue.Active() {
		switch j.State {
		case queue.StateRunning:
			p := fmt.Sprintf("%s %s: %.0f%%", j.Kind.Doing(), j.Plan, j.Progress*100)
			if j.BytesTotal > 0 {
				p += fmt.Sprintf(", %s of %s", HumanBytes(j.BytesDone), HumanBytes(j.BytesTotal))
			}
			if j.Kind == queue.KindSend {
				// A send's stream has no known length: what went so far.
				p = fmt.Sprintf("%s %s to %s: %s", j.Kind.Doing(), j.Plan, j.SendTarget, HumanBytes(j.BytesDone))
			}
			parts = append(parts, p)
		case queue.StateQueued:
			queued++
		}
	}
	if queued > 0 {
		parts = append(parts, fmt.Sprintf("%d queued", queued))
	}
	if len(parts) > 0 {
		return strings.Join(parts, " · ")
	}
	plan, kind, at := d.sched.NextAny()
	if at.IsZero() {
		return "idle · nothing scheduled"
	}
	what := plan
	if queue.Kind(kind) != queue.KindBackup {
		what = kind + " " + plan
	}
	when := at.Local().Format("15:04")
	if y, m, dd := at.Local().Date(); !sameDay(y, m, dd, time.Now()) {
		when = at.Local().Format("Mon 2 Jan 15:04")
	}
	return fmt.Sprintf("idle · next: %s at %s", what, when)
}

func sameDay(y int, m time.Month, d int, t time.Time) bool {
	ty, tm, td := t.Local().Date()
	return y == ty && m == tm && d == td
}

// HumanBytes prints a size the way people read it: 1.2 GiB.
func HumanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// statusListener marks the STATUS line stale on every job change.
type statusListener struct{ d *Daemon }

func (l statusListener) JobQueued(queue.Job)    { l.d.markStatus() }
func (l statusListener) JobChanged(queue.Job)   { l.d.markStatus() }
func (l statusListener) JobFinished(queue.Job)  { l.d.markStatus() }
func (l statusListener) JobForgotten(queue.Job) {}

package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/subvault/subvault/api/contract"
)

// progressBar draws a job's progress: on a terminal one line redrawn in
// place, piped one line per phase (queued, running, and the end).
type progressBar struct {
	w     io.Writer
	out   output
	tty   bool
	shown bool           // a bar is on the terminal line
	phase contract.State // the last phase printed

	rate     float64 // bytes per second, smoothed
	lastAt   time.Time
	lastDone uint64
}

func (b *progressBar) update(j contract.Job) {
	if j.ID == 0 {
		return
	}
	if j.State.Rank() > b.phase.Rank() {
		b.clear()
		b.phase = j.State
		if j.State != contract.StateFinished {
			fmt.Fprintf(b.w, "job %d: %s of %s %s\n", j.ID, printable(j.Kind), printable(j.Plan), printable(j.State))
		}
	}
	if !b.tty || j.State != contract.StateRunning {
		return
	}
	now := time.Now()
	if !b.lastAt.IsZero() && now.After(b.lastAt) && j.BytesDone >= b.lastDone {
		r := float64(j.BytesDone-b.lastDone) / now.Sub(b.lastAt).Seconds()
		if b.rate == 0 {
			b.rate = r
		} else {
			b.rate = 0.7*b.rate + 0.3*r
		}
	}
	b.lastAt, b.lastDone = now, j.BytesDone
	fmt.Fprintf(b.w, "\r\033[K%s", progressText(b.out, j, b.rate))
	b.shown = true
}

func (b *progressBar) clear() {
	if b.shown {
		fmt.Fprint(b.w, "\r\033[K")
		b.shown = false
	}
}

// progressText is a running job's progress on one line of the terminal's
// width: bar, percent, bytes, files, rate, time left, the current file.
func progressText(o output, j contract.Job, rate float64) string {
	const barWidth = 20
	p := max(0, min(1, j.Progress))
	filled := int(p * barWidth)
	parts := []string{
		"[" + strings.Repeat("#", filled) + strings.Repeat(".", barWidth-filled) + "]",
		fmt.Sprintf("%3d%%", int(p*100)),
	}
	if w := stuck(o, j); w != "" {
		// First, so that a narrow terminal cuts the file name, not this.
		parts = append(parts, o.paint(colorYellow, w))
	}
	if j.BytesTotal == 0 && j.BytesDone == 0 && j.FilesTotal == 0 {
		// Before restic's first report: snapshots, namespace, restic
		// starting and scanning.
		return strings.Join(append(parts, "starting"), "  ")
	}
	parts = append(parts, humanBytes(j.BytesDone)+"/"+humanBytes(j.BytesTotal), fmt.Sprintf("%d/%d files", j.FilesDone, j.FilesTotal))
	if rate > 0 {
		parts = append(parts, humanBytes(uint64(rate))+"/s")
	}
	if j.SecondsRemaining > 0 {
		parts = append(parts, "ETA "+humanDuration(time.Duration(j.SecondsRemaining)*time.Second))
	}
	line := strings.Join(parts, "  ")
	if len(j.CurrentFiles) > 0 {
		line += "  " + printable(j.CurrentFiles[0])
	}
	width := o.width - 1
	if width < 20 {
		width = 79
	}
	if r := []rune(line); len(r) > width {
		line = string(r[:width-1]) + "…"
	}
	return line
}

// stuck is "stuck: no progress for 1m10s, restic retries the repository"
// for a running job that waits on its repository (contract.Job's
// WaitingSince), "stalled: no progress for 12m (stall_timeout 10m)" for
// one that counts as stalled and goes on (Stalled, on_stall: report),
// "" for one that moves.
func stuck(o output, j contract.Job) string {
	if j.State != contract.StateRunning {
		return ""
	}
	if j.Stalled && !j.StalledSince.IsZero() {
		s := "stalled: no progress for " + humanDuration(max(0, o.now().Sub(j.StalledSince)))
		if j.StallTimeout > 0 {
			s += " (stall_timeout " + configDuration(time.Duration(j.StallTimeout)*time.Second) + ")"
		}
		return s
	}
	if j.WaitingSince.IsZero() {
		return ""
	}
	s := "stuck: no progress for " + humanDuration(max(0, o.now().Sub(j.WaitingSince)))
	if j.Waiting != "" {
		s += ", " + printable(j.Waiting)
	}
	return s
}

// configDuration is d as subvault.yaml writes it: "10m", "1h30m", "90s"
// rather than time.Duration's "10m0s".
func configDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

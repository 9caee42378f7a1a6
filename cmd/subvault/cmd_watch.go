package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/api/client"
	"github.com/subvault/subvault/api/contract"
)

const watchAbout = `Follows every job live, like "journalctl -f" for backups: a line when a
job is queued, starts, passes each quarter of its progress, gets stuck
waiting on its repository (no progress from restic for 30 s: a server that
hangs or went away) or stalled (no progress for its plan's stall_timeout,
with on_stall: report) and moves again, and ends (with the cause when it
failed). On a terminal the running jobs' progress is also
drawn on the last line (with the file being read when the daemon names
files to you: root, or polkit's restore authorization without a password).
With --json, one JSON object per event. It follows
the daemon across restarts and runs until interrupted.`

func newWatchCommand() *cobra.Command {
	return newClientCommand(&cobra.Command{
		Use:     "watch [--json] [--bus BUS]",
		Short:   "follow every job live",
		Long:    watchAbout,
		GroupID: groupStatus,
		Args:    expects(0, 0, "no arguments"),
	}, withJSON, runWatch)
}

func runWatch(cc *clientCmd, _ []string) int {
	stdout, stderr := cc.stdout, cc.stderr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if code, ok := cc.dial(ctx); !ok {
		return code
	}
	defer cc.close()
	w, err := cc.c.Watch(ctx)
	if err != nil {
		return cc.fail(err)
	}
	defer w.Close()

	// What has been printed of each job: its phase and the last quarter
	// of its progress, so that a line goes out only when one of them moves.
	phase := map[uint32]contract.State{}
	quarter := map[uint32]int{}
	waiting := map[uint32]string{} // jobs shown waiting on their repository or stalled: stuckState
	bar := &progressBar{w: stdout, out: cc.out, tty: cc.out.tty}
	var files *jobFiles
	if cc.out.tty && !*cc.json {
		files = newJobFiles(cc.c) // only the progress line shows them
	}
	enc := json.NewEncoder(printableJSON{stdout})
	// what is escaped by its caller (it may be painted).
	line := func(j contract.Job, what string) {
		bar.clear()
		to := ""
		if j.SendTarget != "" {
			to = " to " + printable(j.SendTarget)
		}
		fmt.Fprintf(stdout, "%s job %d %s %s%s: %s\n", cc.out.stamp(), j.ID, printable(j.Kind), printable(j.Plan), to, what)
	}
	for _, j := range w.Jobs() {
		if j.Active() {
			phase[j.ID], quarter[j.ID] = j.State, int(j.Progress*4)
			line(j, printable(j.State))
			if w := stuck(cc.out, j); w != "" {
				waiting[j.ID] = stuckState(j)
				line(j, w)
			}
		}
	}
	for {
		var e client.Event
		var ok bool
		select {
		case <-ctx.Done():
			bar.clear()
			return exitOK
		case e, ok = <-w.C:
		}
		if !ok {
			bar.clear()
			fmt.Fprintf(stderr, "subvault watch: lost the connection to the bus\n")
			return exitFailure
		}
		j := e.Job
		newPhase, newQuarter, newWaiting := false, false, false
		if j.ID != 0 {
			q := int(j.Progress * 4)
			newPhase = phase[j.ID] != j.State
			newQuarter = j.State == contract.StateRunning && q > quarter[j.ID] && q < 4
			phase[j.ID], quarter[j.ID] = j.State, max(quarter[j.ID], q)
			w := stuckState(j)
			newWaiting = w != waiting[j.ID]
			waiting[j.ID] = w
			if e.Type == client.JobFinished || e.Type == client.JobForgotten {
				delete(phase, j.ID)
				delete(quarter, j.ID)
				delete(waiting, j.ID)
				newWaiting = false
			}
		}
		if *cc.json {
			if e.Type != client.JobChanged || newPhase || newQuarter || newWaiting {
				enc.Encode(watchEvent{Type: string(e.Type), Time: cc.out.now(), Job: jobOrNil(e), Plan: planOrNil(e)}) //nolint:errcheck // printing
			}
			continue
		}
		switch e.Type {
		case client.JobNew:
			line(j, "queued ("+printable(j.Trigger)+")")
		case client.JobChanged:
			switch {
			case newPhase && j.State == contract.StateRunning:
				line(j, "started")
			case newQuarter:
				line(j, fmt.Sprintf("%d%%  %s/%s", int(j.Progress*4)*25, humanBytes(j.BytesDone), humanBytes(j.BytesTotal)))
			}
			switch {
			case newWaiting && waiting[j.ID] == "stalled":
				line(j, cc.out.paint(colorRed, stuck(cc.out, j))+"; it goes on (on_stall: report)")
			case newWaiting && waiting[j.ID] != "":
				line(j, cc.out.paint(colorYellow, stuck(cc.out, j))+"; jobs on other repositories may start meanwhile")
			case newWaiting:
				line(j, "moves again")
			}
			if j.State == contract.StateRunning && cc.out.tty {
				files.fill(ctx, &j)
				fmt.Fprintf(stdout, "\r\033[Kjob %d %s: %s", j.ID, printable(j.Plan), progressText(cc.out, j, 0))
				bar.shown = true
			}
		case client.JobFinished:
			what := string(j.Result)
			if j.Error != "" {
				what += ": " + j.Error
			}
			line(j, cc.out.result(contract.Result(what)))
		case client.DaemonGone:
			bar.clear()
			fmt.Fprintf(stdout, "%s daemon stopped\n", cc.out.stamp())
		case client.DaemonStarted:
			fmt.Fprintf(stdout, "%s daemon started\n", cc.out.stamp())
		}
	}
}

// stamp is the time of an event line.
func (o output) stamp() string {
	if o.tty {
		return o.now().Format("15:04:05")
	}
	return o.now().Format(time.RFC3339)
}

type watchEvent struct {
	Type string         `json:"event"`
	Time time.Time      `json:"time"`
	Job  *contract.Job  `json:"job,omitempty"`
	Plan *contract.Plan `json:"plan,omitempty"`
}

func jobOrNil(e client.Event) *contract.Job {
	if e.Job.ID == 0 {
		return nil
	}
	return &e.Job
}

func planOrNil(e client.Event) *contract.Plan {
	if e.Plan.Name == "" {
		return nil
	}
	return &e.Plan
}

// stuckState is "stalled" for a running job that counts as stalled,
// "waiting" for one that waits on its repository, "" otherwise.
func stuckState(j contract.Job) string {
	switch {
	case j.State != contract.StateRunning:
		return ""
	case j.Stalled:
		return "stalled"
	case !j.WaitingSince.IsZero():
		return "waiting"
	}
	return ""
}

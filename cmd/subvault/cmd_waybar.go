package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/api/client"
	"github.com/subvault/subvault/api/contract"
)

const waybarAbout = `Prints the state of the backups as one JSON line for a status bar: a
waybar custom module ("return-type": "json") by default, i3blocks
("format=json") with --format i3blocks.

Waybar's line has four fields. text is short: "⟳ home 42%" while a job
runs, "⚠ home stalled" while a running job counts as stalled (no progress
for its plan's stall_timeout, on_stall: report), "✗ home" when a plan's last backup failed, "! home" when a plan is
overdue (its last successful backup is older than twice the interval of
its schedule, whatever was canceled since; a manual plan is never
overdue), "⏸ home" when a plan's scheduled jobs wait (for the network,
on battery, on a metered connection), "✓ 3h" (the age of the newest successful backup) when all is
well, "? subvault" when the daemon cannot be reached.
tooltip has one line per plan: what runs, the last backup's result and
age, the next run, what it waits for. class is stalled, running, failed,
overdue, waiting, ok or unreachable,
in that order of precedence, for the bar's style sheet. percentage is the
running job's progress, 0 to 100 (0 when none runs).

With --follow it runs until killed and prints a new line whenever the line
changes: on the daemon's signals (no polling), and once a minute for the
ages. When the daemon stops it prints the unreachable line and waits for
it to come back; a bar widget never has to be restarted.

Exit status: 0 whenever a line was printed (the unreachable one too, so
that the bar shows it), 2 wrong command line.`

// How often --follow tries to reach a daemon that is not there.
const barRetry = 5 * time.Second

// The classes of the bar line, for the bar's style sheet.
const (
	classStalled     = "stalled"
	classRunning     = "running"
	classFailed      = "failed"
	classOverdue     = "overdue"
	classWaiting     = "waiting"
	classOK          = "ok"
	classUnreachable = "unreachable"
)

// barLine is waybar's custom-module JSON.
type barLine struct {
	Text       string `json:"text"`
	Tooltip    string `json:"tooltip"`
	Class      string `json:"class"`
	Percentage int    `json:"percentage"`
}

// renderBar makes the line from the daemon's plans and jobs; what came from
// the daemon is escaped by printable (the bar shows it as text too).
func renderBar(plans []contract.Plan, jobs []contract.Job, now time.Time) barLine {
	// The job a plan's line shows: the running one, else the first queued.
	var active, stalled *contract.Job
	activeOf := map[string]contract.Job{}
	for i, j := range jobs {
		if !j.Active() {
			continue
		}
		if cur, ok := activeOf[j.Plan]; !ok || (cur.State != contract.StateRunning && j.State == contract.StateRunning) {
			activeOf[j.Plan] = j
		}
		if active == nil || (active.State != contract.StateRunning && j.State == contract.StateRunning) ||
			(active.State == j.State && j.ID < active.ID) {
			active = &jobs[i]
		}
		if j.State == contract.StateRunning && j.Stalled && (stalled == nil || j.ID < stalled.ID) {
			stalled = &jobs[i]
		}
	}
	if stalled != nil {
		// A job that counts as stalled (on_stall: report) is what the
		// line shows, whatever else runs.
		active = stalled
	}

	var failed, overdue, waiting []string
	var newest time.Time
	tooltip := make([]string, 0, len(plans))
	for _, p := range plans {
		name := printable(p.Name)
		switch p.Health {
		case contract.HealthFailed:
			failed = append(failed, name)
		case contract.HealthOverdue:
			overdue = append(overdue, name)
		}
		if p.Waiting != "" {
			waiting = append(waiting, name)
		}
		if p.LastSuccess.After(newest) {
			newest = p.LastSuccess
		}
		parts := []string{}
		if j, ok := activeOf[p.Name]; ok {
			parts = append(parts, jobPhrase(j))
		}
		// The daemon's verdict, then the age it leaves out so as not to go
		// stale.
		if p.HealthReason != "" {
			parts = append(parts, shorten(printable(p.HealthReason), 160))
		}
		if !p.LastBackup.IsZero() {
			parts = append(parts, relative(now, p.LastBackup))
		}
		if len(p.Targets) > 0 {
			parts = append(parts, "onsite "+onsiteAges(output{tty: true, now: func() time.Time { return now }}, p.Targets))
		}
		if p.NextRun.IsZero() {
			if p.Schedule == "" {
				parts = append(parts, "manual")
			}
		} else {
			parts = append(parts, "next "+relative(now, p.NextRun))
		}
		tooltip = append(tooltip, name+": "+strings.Join(parts, " · "))
	}
	if len(plans) == 0 {
		tooltip = append(tooltip, "no plans are configured")
	}

	line := barLine{Tooltip: strings.Join(tooltip, "\n")}
	switch {
	case active != nil:
		line.Class = classRunning
		line.Text = "⟳ " + printable(active.Plan)
		if stalled != nil {
			line.Class, line.Text = classStalled, "⚠ "+printable(active.Plan)
		}
		if active.Kind != "backup" {
			line.Text += " " + printable(active.Kind)
		}
		switch {
		case stalled != nil:
			line.Percentage = min(100, max(0, int(active.Progress*100)))
			line.Text += " stalled"
		case active.State == contract.StateQueued:
			line.Text += " queued"
		case active.Progress > 0 || active.Kind == "backup":
			line.Percentage = min(100, max(0, int(active.Progress*100)))
			line.Text += fmt.Sprintf(" %d%%", line.Percentage)
		}
	case len(failed) > 0:
		line.Class, line.Text = classFailed, "✗ "+names(failed)
	case len(overdue) > 0:
		line.Class, line.Text = classOverdue, "! "+names(overdue)
	case len(waiting) > 0:
		line.Class, line.Text = classWaiting, "⏸ "+names(waiting)
	default:
		line.Class, line.Text = classOK, "✓ –"
		if !newest.IsZero() {
			line.Text = "✓ " + shortAge(now.Sub(newest))
		}
	}
	return line
}

// unreachableBar is the line while the daemon cannot be reached.
func unreachableBar(why string) barLine {
	return barLine{Text: "? subvault", Tooltip: printable(why), Class: classUnreachable}
}

// jobPhrase is what a plan's active job is doing: "backing up 42% (job 7)",
// "backing up 42%, stuck (job 7)" while it waits on its repository, or
// "backing up 42%, stalled (no progress for over 10m) (job 7)" while it
// counts as stalled.
func jobPhrase(j contract.Job) string {
	kind := printable(j.Kind)
	verb := printable(j.Kind.Doing())
	if j.SendTarget != "" {
		kind += " to " + printable(j.SendTarget)
		verb += " to " + printable(j.SendTarget)
	}
	if j.State == contract.StateQueued {
		return fmt.Sprintf("%s queued (job %d)", kind, j.ID)
	}
	stuck := ""
	switch {
	case j.Stalled:
		stuck = ", stalled"
		if j.StallTimeout > 0 {
			stuck += fmt.Sprintf(" (no progress for over %s)", configDuration(time.Duration(j.StallTimeout)*time.Second))
		}
	case !j.WaitingSince.IsZero():
		stuck = ", stuck"
	}
	return fmt.Sprintf("%s %d%%%s (job %d)", verb, min(100, max(0, int(j.Progress*100))), stuck, j.ID)
}

// names is "home" or "home +2".
func names(list []string) string {
	if len(list) == 1 {
		return list[0]
	}
	return fmt.Sprintf("%s +%d", list[0], len(list)-1)
}

// shortAge is one unit: now, 45m, 3h, 2d.
func shortAge(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "now"
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours())/24)
	}
}

func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// barFormat turns a line into what the bar reads.
type barFormat func(barLine) ([]byte, error)

// waybarJSON is waybar's format. Waybar reads text and tooltip as Pango
// markup, so an error message's & or < is escaped.
func waybarJSON(l barLine) ([]byte, error) {
	l.Text, l.Tooltip = escapePango(l.Text), escapePango(l.Tooltip)
	return marshalLine(l)
}

// i3blocksJSON is i3blocks' format=json (the i3bar protocol's block
// fields): no classes there, so the colour says it.
func i3blocksJSON(l barLine) ([]byte, error) {
	block := struct {
		FullText  string `json:"full_text"`
		ShortText string `json:"short_text"`
		Color     string `json:"color,omitempty"`
		Urgent    bool   `json:"urgent,omitempty"`
	}{FullText: l.Text, ShortText: l.Text}
	switch l.Class {
	case classFailed:
		block.Color, block.Urgent = "#FF5555", true
	case classStalled:
		block.Color, block.Urgent = "#FFB86C", true
	case classOverdue:
		block.Color = "#FFB86C"
	case classWaiting:
		block.Color = "#8BE9FD"
	case classUnreachable:
		block.Color = "#888888"
	}
	return marshalLine(block)
}

func marshalLine(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(printableJSON{&b})
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func escapePango(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func newWaybarCommand() *cobra.Command {
	var follow bool
	var format string
	cmd := newClientCommand(&cobra.Command{
		Use:     "waybar [--follow] [--format waybar|i3blocks] [--bus BUS]",
		Short:   "print the backups' state as a status bar's JSON line (waybar, i3blocks)",
		Long:    waybarAbout,
		GroupID: groupDesktop,
		Args:    expects(0, 0, "no arguments"),
	}, withoutJSON, func(cc *clientCmd, _ []string) int { return runWaybar(cc, follow, format) })
	cmd.Flags().BoolVar(&follow, "follow", false, "keep running and print a new line on every change")
	cmd.Flags().StringVar(&format, "format", "waybar", "the bar's JSON: `waybar` or i3blocks")
	completeFlag(cmd, "format", fixed("waybar", "i3blocks"))
	return cmd
}

func runWaybar(cc *clientCmd, follow bool, format string) int {
	stdout, stderr := cc.stdout, cc.stderr
	var encode barFormat
	switch format {
	case "waybar":
		encode = waybarJSON
	case "i3blocks":
		encode = i3blocksJSON
	default:
		fmt.Fprintf(stderr, "subvault waybar: --format %q: expected waybar or i3blocks\n", format)
		return exitUsage
	}
	var last []byte
	show := func(l barLine) error {
		b, err := encode(l)
		if err != nil || bytes.Equal(b, last) {
			return err
		}
		last = b
		_, err = stdout.Write(b)
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if !follow {
		return cc.barOnce(ctx, show)
	}
	return cc.barFollow(ctx, show)
}

func (cc *clientCmd) barOnce(ctx context.Context, show func(barLine) error) int {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	line := func() barLine {
		c, err := client.Dial(dctx, *cc.bus)
		if err != nil {
			return unreachableBar(err.Error())
		}
		defer c.Close() //nolint:errcheck // read only
		plans, jobs, err := c.Objects(dctx)
		if err != nil {
			return unreachableBar(err.Error())
		}
		return renderBar(plans, jobs, time.Now())
	}()
	if err := show(line); err != nil {
		return cc.fail(err)
	}
	return exitOK
}

func (cc *clientCmd) barFollow(ctx context.Context, show func(barLine) error) int {
	views := followDaemon(ctx, *cc.bus, barRetry)
	ages := time.NewTicker(time.Minute)
	defer ages.Stop()
	var view daemonView
	for {
		select {
		case <-ctx.Done():
			return exitOK
		case v, ok := <-views:
			if !ok {
				return exitOK
			}
			view = v
			// A burst (progress of several jobs, a job's end and its
			// plan's change) makes one line.
		drain:
			for {
				select {
				case v, ok := <-views:
					if !ok {
						return exitOK
					}
					view = v
				default:
					break drain
				}
			}
		case <-ages.C:
		}
		var line barLine
		switch {
		case view.Watcher == nil && view.Err == nil:
			continue // not yet known
		case view.Watcher == nil:
			line = unreachableBar(view.Err.Error())
		case !view.Watcher.Up():
			line = unreachableBar("the subvault daemon left the bus; waiting for it to come back")
		default:
			line = renderBar(view.Watcher.Plans(), view.Watcher.Jobs(), time.Now())
		}
		if err := show(line); err != nil {
			return cc.fail(err)
		}
	}
}

// daemonView is what followDaemon knows: the watcher on the daemon (nil
// while it cannot be reached, and Err says why) and the events since the
// last view. A watcher whose Up is false has seen the daemon leave the
// bus and waits for it.
type daemonView struct {
	Watcher *client.Watcher
	Err     error
	Events  []client.Event
}

// followDaemon follows the daemon on bus for as long as ctx lasts, across
// its restarts and the bus's: a view after every burst of events, and
// after each change of reachability. While the daemon cannot be reached it
// tries again every retry. The channel is closed when ctx ends.
func followDaemon(ctx context.Context, bus string, retry time.Duration) <-chan daemonView {
	views := make(chan daemonView, 16)
	send := func(v daemonView) bool {
		select {
		case views <- v:
			return true
		case <-ctx.Done():
			return false
		}
	}
	wait := func() bool {
		t := time.NewTimer(retry)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	go func() {
		defer close(views)
		for ctx.Err() == nil {
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			c, err := client.Dial(dctx, bus)
			cancel()
			var w *client.Watcher
			if err == nil {
				// The watcher lives as long as ctx does.
				if w, err = c.Watch(ctx); err != nil {
					c.Close() //nolint:errcheck,gosec // the Watch error is the one to report
				}
			}
			if err != nil {
				if !send(daemonView{Err: err}) || !wait() {
					return
				}
				continue
			}
			next := followWatcher(ctx, c, w, retry, send)
			w.Close()
			c.Close() //nolint:errcheck,gosec // done with it
			if next == stopFollowing || (next == dialLater && !wait()) {
				return
			}
		}
	}()
	return views
}

// What followDaemon does when a watcher is done.
const (
	stopFollowing = iota // ctx ended
	dialNow              // the daemon is back, and the watcher missed it
	dialLater            // the connection to the bus was lost
)

// followWatcher sends w's events until the connection is lost or ctx
// ends. While the daemon is away it checks every retry whether its name has
// an owner again, in case the watcher missed the signal that says so.
func followWatcher(ctx context.Context, c *client.Client, w *client.Watcher, retry time.Duration, send func(daemonView) bool) int {
	if !send(daemonView{Watcher: w}) {
		return stopFollowing
	}
	var away *time.Ticker
	var awayC <-chan time.Time
	defer func() {
		if away != nil {
			away.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return stopFollowing
		case e, ok := <-w.C:
			if !ok {
				if ctx.Err() != nil || !send(daemonView{Err: errors.New("lost the connection to the bus")}) {
					return stopFollowing
				}
				return dialLater
			}
			events := []client.Event{e}
		drain:
			for {
				select {
				case e, ok := <-w.C:
					if !ok {
						break drain // the next loop reports it
					}
					events = append(events, e)
				default:
					break drain
				}
			}
			if !send(daemonView{Watcher: w, Events: events}) {
				return stopFollowing
			}
		case <-awayC:
			var owned bool
			err := c.Conn().BusObject().CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0, contract.BusName).Store(&owned)
			if err == nil && owned && !w.Up() {
				return dialNow
			}
		}
		switch {
		case !w.Up() && away == nil:
			away = time.NewTicker(retry)
			awayC = away.C
		case w.Up() && away != nil:
			away.Stop()
			away, awayC = nil, nil
		}
	}
}

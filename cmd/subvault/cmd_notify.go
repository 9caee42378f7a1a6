package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/api/client"
	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/api/desktop"
)

const notifyAbout = `Shows desktop notifications about the backups: run it in your graphical
session (packaging/subvault-notify.service is a systemd user unit for it:
systemctl --user enable --now subvault-notify). It follows the daemon on
--bus and talks to the notification server (org.freedesktop.Notifications)
on the session bus.

It notifies when a job fails ("Backup of home failed", with the cause, as
critical), when a running job counts as stalled (its restic made no
progress for the plan's stall_timeout and the plan's on_stall: report lets
it go on; once per stall), when a plan's backup becomes overdue (its last successful
backup is older than twice the interval of its schedule; once per
episode, until a backup succeeds again), and with --on-success when a job
succeeds. A plan's newer notification replaces its older one on screen.
Where the server shows actions, a click on the notification (or its
Details button) opens a terminal with "subvault job ID" in it.

It keeps running when the daemon stops or restarts, and picks it up again
when it comes back.

Exit status: 0 stopped by SIGTERM or SIGINT, 1 the session bus cannot be
reached or went away, 2 wrong command line or no session bus.`

// How often notify tries to reach a daemon that is not there.
const notifyRetry = 5 * time.Second

// detailsAction is the key of the Details button; a click on the
// notification itself invokes desktop.DefaultAction, which does the same.
const detailsAction = "details"

// closeScript is the program the terminal runs: the command given as its
// arguments, then a prompt, so that the window stays until read. The
// script is constant; the command comes in "$@", never in the script.
const closeScript = `"$@"; printf '\nPress Enter to close this window. '; read -r _`

type notifyOptions struct {
	sessionBus string
	onSuccess  bool
	terminal   string
}

func newNotifyCommand() *cobra.Command {
	var opts notifyOptions
	cmd := newClientCommand(&cobra.Command{
		Use:     "notify [--on-success] [--session-bus ADDRESS] [--terminal COMMAND] [--bus BUS]",
		Short:   "show desktop notifications when a backup fails or is overdue",
		Long:    notifyAbout,
		GroupID: groupDesktop,
		Args:    expects(0, 0, "no arguments"),
	}, withoutJSON, func(cc *clientCmd, _ []string) int { return runNotify(cc, opts) })
	cmd.Flags().StringVar(&opts.sessionBus, "session-bus", "", "the session bus `address` the notification server is on (default: $DBUS_SESSION_BUS_ADDRESS)")
	cmd.Flags().BoolVar(&opts.onSuccess, "on-success", false, "notify also when a job succeeds")
	cmd.Flags().StringVar(&opts.terminal, "terminal", "x-terminal-emulator -e", "the terminal `command` that runs \"subvault job ID\" for Details: the program and its options, split at spaces, with the command appended")
	return cmd
}

func runNotify(cc *clientCmd, opts notifyOptions) int {
	stderr := cc.stderr
	if opts.sessionBus == "" {
		opts.sessionBus = os.Getenv("DBUS_SESSION_BUS_ADDRESS")
	}
	if opts.sessionBus == "" {
		fmt.Fprintf(stderr, "subvault notify: no session bus: DBUS_SESSION_BUS_ADDRESS is not set; run it in your desktop session, or give --session-bus\n")
		return exitUsage
	}
	term := strings.Fields(opts.terminal)
	if len(term) == 0 {
		fmt.Fprintf(stderr, "subvault notify: --terminal is empty\n")
		return exitUsage
	}
	exe, err := os.Executable()
	if err != nil {
		exe = "subvault"
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	desk, err := desktop.Dial(opts.sessionBus)
	if err != nil {
		return cc.fail(err)
	}
	defer desk.Close() //nolint:errcheck // exiting
	deskEvents, err := desk.Subscribe(ctx)
	if err != nil {
		return cc.fail(err)
	}
	n := &notifier{
		desk: desk, bus: *cc.bus, onSuccess: opts.onSuccess, terminal: term, exe: exe, stderr: stderr,
		shown: map[string]uint32{}, jobOf: map[uint32]uint32{}, overdue: map[string]bool{}, finished: map[uint32]bool{}, stalled: map[uint32]bool{},
	}
	return n.run(ctx, deskEvents)
}

// notifier is the state of `subvault notify`.
type notifier struct {
	desk      *desktop.Client
	bus       string
	onSuccess bool
	terminal  []string
	exe       string
	stderr    io.Writer

	shown    map[string]uint32 // "plan/kind" -> the notification on screen for it
	jobOf    map[uint32]uint32 // notification id -> the job its Details shows
	overdue  map[string]bool   // plans whose overdue episode was notified
	finished map[uint32]bool   // jobs notified about (a job ends once)
	stalled  map[uint32]bool   // running jobs whose stall was notified
}

// jobChanged notifies a running job that starts counting as stalled (its
// plan's on_stall: report lets it go on), once per stall: the stall ends
// when it moves again.
func (n *notifier) jobChanged(ctx context.Context, j contract.Job) {
	if !j.Stalled || j.State != contract.StateRunning {
		delete(n.stalled, j.ID)
		return
	}
	if n.stalled[j.ID] {
		return
	}
	n.stalled[j.ID] = true
	n.notify(ctx, j.Plan+"/"+string(j.Kind), j.ID, stallNotification(j, time.Now()))
}

// stallNotification is what to show about running job j that counts as
// stalled.
func stallNotification(j contract.Job, now time.Time) desktop.Notification {
	body := stuck(output{now: func() time.Time { return now }}, j)
	body += fmt.Sprintf("; it goes on (on_stall: report): subvault cancel %d stops it", j.ID)
	return desktop.Notification{Summary: jobTitle(j) + " stalled", Body: body, Icon: "dialog-warning", Urgency: desktop.Normal}
}

func (n *notifier) logf(format string, args ...any) {
	fmt.Fprintf(n.stderr, "subvault notify: "+format+"\n", args...)
}

func (n *notifier) run(ctx context.Context, deskEvents <-chan desktop.Event) int {
	views := followDaemon(ctx, n.bus, notifyRetry)
	var w *client.Watcher
	reachable := false
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return exitOK
		case v, ok := <-views:
			if !ok {
				return exitOK
			}
			up := v.Watcher != nil && v.Watcher.Up()
			switch {
			case up && !reachable:
				n.logf("following the daemon on the %s bus", busLabel(n.bus))
			case !up && v.Err != nil && v.Err.Error() != lastErr:
				n.logf("%s; trying again every %v", printable(v.Err.Error()), notifyRetry)
				lastErr = v.Err.Error()
			case !up && reachable:
				n.logf("the daemon left the bus; waiting for it to come back")
			}
			if up {
				lastErr = ""
			}
			reachable, w = up, v.Watcher
			for _, e := range v.Events {
				switch e.Type {
				case client.JobFinished:
					delete(n.stalled, e.Job.ID)
					n.jobFinished(ctx, e.Job)
				case client.JobChanged:
					n.jobChanged(ctx, e.Job)
				}
			}
		case e, ok := <-deskEvents:
			if !ok {
				n.logf("lost the session bus")
				return exitFailure
			}
			n.desktopEvent(e)
			continue
		}
		// A plan's Health changes on the daemon's signal, also when time
		// alone makes it overdue: no clock of our own to watch.
		if reachable {
			n.checkOverdue(ctx, w.Plans(), time.Now())
		}
	}
}

func busLabel(bus string) string {
	if bus == "" {
		return "system"
	}
	return bus
}

// jobFinished notifies a failed job, and a successful one with
// --on-success.
func (n *notifier) jobFinished(ctx context.Context, j contract.Job) {
	if n.finished[j.ID] {
		return
	}
	n.finished[j.ID] = true
	if note, ok := jobNotification(j, n.onSuccess); ok {
		n.notify(ctx, j.Plan+"/"+string(j.Kind), j.ID, note)
	}
}

// jobNotification is what to show about finished job j: a failure, or a
// success when onSuccess; ok is false when there is nothing to show. Its
// text is escaped by printable. A postponed job shows nothing: it is not a
// failure, a laptop offline for a day postpones dozens, and the plan's
// overdue notification comes when the wait outlasts its schedule. Nor does
// a skipped one, with or without onSuccess: a send to a disk that is not
// plugged in is neither a failure nor a success, and one follows every
// backup while the disk is away.
func jobNotification(j contract.Job, onSuccess bool) (note desktop.Notification, ok bool) {
	what := jobTitle(j)
	switch {
	case j.Result == contract.ResultFailed:
		body := printable(j.Error)
		if body == "" {
			body = fmt.Sprintf("job %d failed without saying why; see subvault job %d", j.ID, j.ID)
		}
		return desktop.Notification{Summary: what + " failed", Body: body, Icon: "dialog-error", Urgency: desktop.Critical}, true
	case j.Result == contract.ResultStalled:
		return desktop.Notification{Summary: what + " stalled", Body: printable(j.Error), Icon: "dialog-error", Urgency: desktop.Critical}, true
	case j.Result == contract.ResultDone && onSuccess:
		return desktop.Notification{Summary: what + " done", Body: successBody(j), Icon: "dialog-information", Urgency: desktop.Normal}, true
	}
	return desktop.Notification{}, false
}

// jobTitle is "Backup of home".
func jobTitle(j contract.Job) string {
	kind := printable(j.Kind)
	if kind == "" {
		kind = "job"
	}
	title := strings.ToUpper(kind[:1]) + kind[1:] + " of " + printable(j.Plan)
	if j.SendTarget != "" {
		title += " to " + printable(j.SendTarget)
	}
	return title
}

// successBody says what a successful job did: for a backup, its archive
// and what it added.
func successBody(j contract.Job) string {
	var parts []string
	if j.ArchiveID != "" {
		parts = append(parts, "archive "+printable(j.ArchiveID))
	}
	num := func(key string) (uint64, bool) {
		v, ok := j.Summary[key].(uint64)
		return v, ok
	}
	if nw, ok := num("files_new"); ok {
		changed, _ := num("files_changed")
		parts = append(parts, fmt.Sprintf("%d new and %d changed files", nw, changed))
	}
	if added, ok := num("data_added"); ok {
		parts = append(parts, humanBytes(added)+" added")
	}
	if !j.StartedAt.IsZero() && !j.FinishedAt.IsZero() {
		parts = append(parts, "in "+humanDuration(j.FinishedAt.Sub(j.StartedAt)))
	}
	if len(parts) == 0 {
		return fmt.Sprintf("job %d", j.ID)
	}
	return strings.Join(parts, " · ")
}

// checkOverdue notifies each plan that became overdue (its Health, as the
// daemon decides it), once per episode: the episode ends when the plan is
// no longer overdue.
func (n *notifier) checkOverdue(ctx context.Context, plans []contract.Plan, now time.Time) {
	for _, p := range plans {
		if p.Health != contract.HealthOverdue {
			delete(n.overdue, p.Name)
			continue
		}
		if n.overdue[p.Name] {
			continue
		}
		n.overdue[p.Name] = true
		body := printable(strings.TrimPrefix(p.HealthReason, "overdue: "))
		if !p.NextRun.IsZero() {
			body += "; next run " + relative(now, p.NextRun)
		}
		n.notify(ctx, p.Name+"/backup", 0, desktop.Notification{
			Summary: "Backup of " + printable(p.Name) + " is overdue", Body: body, Icon: "dialog-warning", Urgency: desktop.Normal,
		})
	}
}

// notify shows a notification in key's place (replacing the one shown for
// it); job, when not 0, is what its Details action shows.
func (n *notifier) notify(ctx context.Context, key string, job uint32, note desktop.Notification) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// The server may have been replaced since the last notification: ask
	// each time (notifications are rare).
	caps, err := n.desk.Capabilities(ctx)
	if err != nil {
		n.logf("%s", printable(err.Error()))
	}
	if desktop.Has(caps, desktop.CapBodyMarkup) {
		note.Body = desktop.EscapeMarkup(note.Body)
	}
	if job != 0 && desktop.Has(caps, desktop.CapActions) {
		note.Actions = []desktop.Action{{Key: desktop.DefaultAction, Label: "Details"}, {Key: detailsAction, Label: "Details"}}
	}
	note.ReplacesID = n.shown[key]
	note.Timeout = -1
	id, err := n.desk.Notify(ctx, note)
	if err != nil {
		n.logf("%s", printable(err.Error()))
		return
	}
	if old := note.ReplacesID; old != 0 && old != id {
		delete(n.jobOf, old)
	}
	n.shown[key] = id
	delete(n.jobOf, id)
	if job != 0 {
		n.jobOf[id] = job
	}
}

// desktopEvent handles the server's signals about our notifications.
func (n *notifier) desktopEvent(e desktop.Event) {
	switch e.Type {
	case desktop.ActionInvoked:
		job, ok := n.jobOf[e.ID]
		if !ok || (e.Action != desktop.DefaultAction && e.Action != detailsAction) {
			return
		}
		if err := n.openDetails(job); err != nil {
			n.logf("%v", err)
		}
	case desktop.NotificationClosed:
		delete(n.jobOf, e.ID)
		for key, id := range n.shown {
			if id == e.ID {
				delete(n.shown, key)
			}
		}
	}
}

// openDetails starts a terminal with "subvault job ID" in it, in its own
// session, and does not wait for it: no shell reads any text from the
// daemon (the command goes to a constant script as its arguments).
func (n *notifier) openDetails(job uint32) error {
	command := []string{n.exe, "job", fmt.Sprint(job)}
	if n.bus != "" && n.bus != "system" {
		command = append(command, "--bus", n.bus)
	}
	argv := append(append([]string(nil), n.terminal...), append([]string{"sh", "-c", closeScript, "subvault"}, command...)...)
	cmd := exec.Command(argv[0], argv[1:]...) //nolint:gosec // the terminal is the user's own option
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		var ee *exec.Error
		if errors.As(err, &ee) {
			return fmt.Errorf("cannot open the details of job %d: %w (set the terminal with --terminal)", job, err)
		}
		return fmt.Errorf("cannot open the details of job %d: %w", job, err)
	}
	go cmd.Wait() //nolint:errcheck // reaps it; its exit is the user's business
	return nil
}

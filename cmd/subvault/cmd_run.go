package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/daemon/backup"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/ping"
	"github.com/subvault/subvault/restic"
)

// Exit codes of `subvault run`, documented in subvault(1).
const (
	exitPartial  = 3   // the archive exists, but some files could not be read (as restic's own exit 3)
	exitCanceled = 130 // interrupted by SIGINT or SIGTERM
)

// newRunCommand is "run KIND": its subcommands are the kinds of job it
// runs, only backup so far.
func newRunCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "run backup PLAN [--config PATH] [--verbose]",
		Short:   "run one job in the foreground without the daemon: run backup PLAN",
		Long:    runAbout,
		GroupID: groupAdmin,
		Args:    cobra.ArbitraryArgs,
		RunE:    subcommandsOnly("subvault run: unknown job kind %q (only backup so far)"),
	}
	cmd.AddCommand(newRunBackupCommand())
	// The options of run backup may come before "backup" too: declared
	// here, hidden, they tell cobra which take a value (see newRootCommand).
	cmd.Flags().String("config", "", "")
	cmd.Flags().Bool("verbose", false, "")
	_ = cmd.Flags().MarkHidden("config")
	_ = cmd.Flags().MarkHidden("verbose")
	return cmd
}

const runAbout = `Runs one backup in the foreground, without the daemon, for scripts, timers
and tests: hooks, snapshots, restic in a private mount namespace, snapshots
deleted or kept per keep_snapshots. A progress line is drawn on a terminal;
the summary is printed at the end. It takes the plan's lock, so it never runs
beside the daemon's job of the same plan, and first removes what a killed
earlier job left behind. It pings the plan's notify entries (start, then
success or failure) itself, and waits for them at most their longest
timeout; a failing one is a line on stderr.

It needs no daemon, but its job goes into the daemon's history: it records
the job in the state directory (state_dir/foreground/), and the daemon
imports it, at once when it runs, otherwise at its next start. subvault jobs,
plans and status, the widget, notifications and metrics then show it like a
backup the daemon ran, with the trigger foreground; the daemon shows it as
running while it runs, and as failed (interrupted) if it is killed before it
records its result. Stop it with SIGINT or SIGTERM (the daemon's CancelJob
does not stop it).

Exit status: 0 done, 1 failed (timed out too) or stalled, 2 wrong command line or unknown plan, 3 partial
(the archive exists but some files could not be read), 130 interrupted.`

type runBackupOptions struct {
	config  string
	verbose bool
}

func newRunBackupCommand() *cobra.Command {
	var opts runBackupOptions
	cmd := &cobra.Command{
		Use:               "backup PLAN [--config PATH] [--verbose]",
		Short:             "run one backup in the foreground without the daemon",
		Long:              runAbout,
		Args:              atMost(1),
		ValidArgsFunction: completeArgs(planNames),
		RunE: runs(func(cmd *cobra.Command, args []string) int {
			var plan string
			if len(args) > 0 {
				plan = args[0]
			}
			return runBackup(cmd.OutOrStdout(), cmd.ErrOrStderr(), plan, opts)
		}),
	}
	configFlag(cmd, &opts.config, "configuration `file`")
	cmd.Flags().BoolVar(&opts.verbose, "verbose", false, "log every step (the default when stderr is not a terminal)")
	return cmd
}

func runBackup(stdout, stderr io.Writer, plan string, opts runBackupOptions) int {
	if plan == "" {
		fmt.Fprintln(stderr, "subvault run backup: which plan? (subvault check-config lists them)")
		return exitUsage
	}

	cfg, err := config.Load(opts.config)
	if err != nil {
		fmt.Fprintln(stderr, printableText(err.Error()))
		return exitFailure
	}
	if _, ok := cfg.Plans[plan]; !ok {
		fmt.Fprintf(stderr, "subvault run backup: no plan %q in %s (plans: %s)\n", plan, printable(cfg.File), strings.Join(cfg.PlanNames(), ", "))
		return exitUsage
	}

	errFile, _ := stderr.(*os.File)
	tty := errFile != nil && isTerminal(errFile)
	level := slog.LevelInfo
	if tty && !opts.verbose {
		level = slog.LevelWarn
	}
	progress := &progressLine{w: stderr, tty: tty, plan: plan}
	log := slog.New(slog.NewTextHandler(progress, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	host, _ := os.Hostname()
	pings := ping.NewForeground(log, version, cfg, plan, host)
	defer pings.Wait() // bounded by the entries' timeouts; a failure is a log line
	if p := cfg.Plans[plan]; p.OnStall == config.OnStallReport && p.StallTimeout > 0 {
		// As the daemon does: a stall is said (and pinged), and the
		// backup goes on (docs/configuration.md, on_stall).
		ctx = restic.WithIdleWatch(restic.WithoutStallStop(ctx), p.StallTimeout, func(i restic.Idle) {
			if i.Since.IsZero() {
				log.Warn("the stalled backup moves again", "plan", plan)
				return
			}
			log.Error("backup stalled; it goes on (on_stall: report)", "plan", plan,
				"no_progress_for", time.Since(i.Since).Round(time.Second), "stall_timeout", p.StallTimeout)
			pings.Stalled(i.Since)
		})
	}
	res, id, err := backup.RunOnce(ctx, cfg, plan, log, pings.Start, progress.status)
	progress.clear()
	pings.Finish(id, res.Result, err, res.ArchiveID)

	printSummary(stdout, plan, id, res)
	switch res.Result {
	case backup.ResultDone:
		return exitOK
	case backup.ResultPartial:
		fmt.Fprintf(stderr, "subvault: backup of %s is partial: %s\n", plan, printableText(fmt.Sprint(err)))
		return exitPartial
	case backup.ResultCanceled:
		fmt.Fprintf(stderr, "subvault: backup of %s canceled; its snapshots were removed\n", plan)
		return exitCanceled
	case backup.ResultStalled:
		fmt.Fprintf(stderr, "subvault: backup of %s stalled: %s\n", plan, printableText(fmt.Sprint(err)))
		return exitFailure
	default:
		fmt.Fprintf(stderr, "subvault: backup of %s failed: %s\n", plan, printableText(fmt.Sprint(err)))
		return exitFailure
	}
}

func printSummary(w io.Writer, plan string, id uint32, res backup.Result) {
	s := res.Backup.Summary
	if res.ArchiveID == "" || s == nil {
		return
	}
	fmt.Fprintf(w, "plan %s, job %d: archive %s\n", plan, id, printable(res.ArchiveID))
	fmt.Fprintf(w, "  files: %d new, %d changed, %d unmodified\n", s.FilesNew, s.FilesChanged, s.FilesUnmodified)
	fmt.Fprintf(w, "  dirs:  %d new, %d changed, %d unmodified\n", s.DirsNew, s.DirsChanged, s.DirsUnmodified)
	fmt.Fprintf(w, "  added to the repository: %s; processed %d files, %s in %s\n",
		humanBytes(s.DataAdded), s.TotalFilesProcessed, humanBytes(s.TotalBytesProcessed),
		humanDuration(s.TotalDuration))
	for _, k := range res.Kept {
		fmt.Fprintf(w, "  kept snapshot: %s\n", printable(k.Path))
	}
}

// progressLine draws restic's progress on one terminal line and lets log
// lines pass above it; off a terminal it draws nothing.
type progressLine struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	plan  string
	shown bool
}

func (p *progressLine) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
	return p.w.Write(b)
}

func (p *progressLine) status(s restic.BackupStatus) {
	if !p.tty {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	line := fmt.Sprintf("backing up %s: %3.0f%%  %s of %s  %d/%d files",
		p.plan, s.PercentDone*100, humanBytes(s.BytesDone), humanBytes(s.TotalBytes), s.FilesDone, s.TotalFiles)
	if s.SecondsRemaining > 0 {
		line += "  ETA " + humanDuration(time.Duration(s.SecondsRemaining)*time.Second)
	}
	if len(s.CurrentFiles) > 0 {
		line += "  " + printable(s.CurrentFiles[0])
	}
	if r := []rune(line); len(r) > 120 {
		line = string(r[:117]) + "..."
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
	p.shown = true
}

func (p *progressLine) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
}

func (p *progressLine) clearLocked() {
	if p.shown {
		fmt.Fprint(p.w, "\r\033[K")
		p.shown = false
	}
}

// subcommandsOnly is the RunE of a command that only groups subcommands
// (run, reset): an argument that names none of them is a usage error that
// says which there are (unknown, a format with one %q for the argument);
// none at all prints the help.
func subcommandsOnly(unknown string) func(*cobra.Command, []string) error {
	return runs(func(cmd *cobra.Command, args []string) int {
		if len(args) > 0 {
			fmt.Fprintf(cmd.ErrOrStderr(), unknown+"\n", args[0])
			return exitUsage
		}
		writeHelp(cmd.ErrOrStderr(), cmd)
		return exitUsage
	})
}

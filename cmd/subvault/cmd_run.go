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

	"github.com/subvault/subvault/daemon/backup"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/restic"
)

// Exit codes of `subvault run`, documented in subvault(1).
const (
	exitPartial  = 3   // the archive exists, but some files could not be read (as restic's own exit 3)
	exitCanceled = 130 // interrupted by SIGINT or SIGTERM
)

func runRun(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprint(stdout, runUsage)
			return exitOK
		}
		fmt.Fprint(stderr, runUsage)
		return exitUsage
	}
	switch args[0] {
	case "backup":
		return runBackup(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "subvault run: unknown job kind %q (only backup so far)\n", args[0])
		return exitUsage
	}
}

const runUsage = "Usage: subvault run backup PLAN [--config PATH] [--verbose]\n\n" + runAbout + "\n"

const runAbout = `Runs one backup in the foreground, without the daemon, for scripts, timers
and tests: hooks, snapshots, restic in a private mount namespace, snapshots
deleted or kept per keep_snapshots. A progress line is drawn on a terminal;
the summary is printed at the end. It takes the plan's lock, so it never runs
beside the daemon's job of the same plan, and first removes what a killed
earlier job left behind.

Exit status: 0 done, 1 failed, 2 wrong command line or unknown plan, 3 partial
(the archive exists but some files could not be read), 130 interrupted.`

func runBackup(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run backup", "PLAN [--config PATH] [--verbose]", runAbout, stdout, stderr)
	path := fs.String("config", defaultConfigPath, "configuration `file`")
	verbose := fs.Bool("verbose", false, "log every step (the default when stderr is not a terminal)")
	// The plan may come before or after the options.
	var plan string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		plan, args = args[0], args[1:]
	}
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	if plan == "" {
		fmt.Fprintln(stderr, "subvault run backup: which plan? (subvault check-config lists them)")
		return exitUsage
	}

	cfg, err := config.Load(*path)
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
	if tty && !*verbose {
		level = slog.LevelWarn
	}
	progress := &progressLine{w: stderr, tty: tty, plan: plan}
	log := slog.New(slog.NewTextHandler(progress, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, id, err := backup.RunOnce(ctx, cfg, plan, log, progress.status)
	progress.clear()

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

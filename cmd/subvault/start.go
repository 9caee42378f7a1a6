package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/subvault/subvault/api/client"
	"github.com/subvault/subvault/api/contract"
)

const waitAbout = `With --wait (the default on a terminal) it follows the job: a live progress
bar on a terminal (percent, bytes, files, rate, time left, and the file
being read when the daemon names files to you: root, or polkit's restore
authorization without a password), one line per phase when piped; then the job's summary, and it exits
with the job's result. Ctrl-C asks whether to cancel the job or only stop
watching. --wait=false prints the job's id and returns at once.

Exit status: 0 done, 1 failed, 2 wrong command line or unknown plan, 3
partial (the archive exists but some files could not be read), 4 not
authorized, 5 the daemon is not running, 130 canceled or interrupted.`

// startCmd is a command that queues a job and may follow it.
type startCmd struct {
	*clientCmd
	wait *bool
}

func newStartCmd(name, synopsis, about string, stdout, stderr io.Writer) *startCmd {
	sc := &startCmd{clientCmd: newClientCmd(name, synopsis, about+"\n\n"+waitAbout, false, stdout, stderr)}
	// The default depends on where stdout goes; the flag's own default is
	// false so that --help (and the man page made from it) never changes.
	sc.wait = sc.fs.Bool("wait", false, "follow the job until it ends and exit with its result (default: true when stdout is a terminal)")
	return sc
}

const backupAbout = `Starts a backup of PLAN now: read-only snapshots of its subvolumes, restic
in a private mount namespace that shows each snapshot at its subvolume's
path, then the snapshots deleted or kept per keep_snapshots. A backup of the
plan already queued or running is followed instead of starting a second.`

func runBackupCmd(args []string, stdout, stderr io.Writer) int {
	return runStart("backup", "PLAN [--wait] [--bus BUS]", backupAbout, args, stdout, stderr,
		func(ctx context.Context, c *client.Client, plan string) (uint32, error) {
			return c.StartBackup(ctx, plan)
		})
}

const pruneAbout = `Starts a prune of PLAN: restic forget --prune with the plan's retention
(this host's archives of the plan only), and keep_snapshots for the local
snapshots.`

func runPrune(args []string, stdout, stderr io.Writer) int {
	return runStart("prune", "PLAN [--wait] [--bus BUS]", pruneAbout, args, stdout, stderr,
		func(ctx context.Context, c *client.Client, plan string) (uint32, error) {
			return c.StartPrune(ctx, plan)
		})
}

const checkAbout = `Starts a check of PLAN's repository: restic check, reading the subset of
the data the plan's check_read_data_subset says.`

func runCheck(args []string, stdout, stderr io.Writer) int {
	return runStart("check", "PLAN [--wait] [--bus BUS]", checkAbout, args, stdout, stderr,
		func(ctx context.Context, c *client.Client, plan string) (uint32, error) {
			return c.StartCheck(ctx, plan)
		})
}

func runStart(name, synopsis, about string, args []string, stdout, stderr io.Writer,
	start func(context.Context, *client.Client, string) (uint32, error)) int {
	sc := newStartCmd(name, synopsis, about, stdout, stderr)
	pos, code, ok := sc.parse(args, 1, 1, "a PLAN")
	if !ok {
		return code
	}
	sc.defaultWait()
	return sc.startAndWait(func(ctx context.Context) (uint32, error) { return start(ctx, sc.c, pos[0]) })
}

const restoreAbout = `Starts a restore of ARCHIVE of PLAN: an id as "subvault archives PLAN"
shows it, or latest (the plan's newest archive).

Into TARGET, a directory that does not exist yet (its parent must) or is
empty: the archive's paths are recreated below it, so /home/ann/notes.txt
lands at TARGET/home/ann/notes.txt. Without --in-place a restore never
writes over anything: a TARGET that is not empty is refused.

--subvolume: TARGET must not exist and its directory must be on btrfs. A
btrfs subvolume is created there and the archive restored into it; an
archive of one subvolume fills it with that subvolume's content, so the
restored tree can be snapshotted, swapped in (mv) or thrown away (btrfs
subvolume delete) in one step. A failed restore deletes the subvolume.

--in-place (root only; no TARGET): restores the archive's paths where they
were, over what is there now. First each subvolume the archive holds gets
a pinned read-only snapshot ("subvault snapshots PLAN" lists it;
keep_snapshots never deletes it): the summary names it, and it is the way
back. Files created since the archive stay; mount points and nested
subvolumes are left alone.

Files keep their owners, modes, times, extended attributes and ACLs, hard
links and symbolic links (a link is restored as a link and never
followed, whatever it points to). Sparse files stay sparse with restic 0.15
or newer; restic 0.14 writes their holes out as zeros. --verify has restic
read every restored file back and compare it with the archive; a
difference fails the job. --include restores only the paths given (repeat
it; paths as the archive holds them).`

func runRestore(args []string, stdout, stderr io.Writer) int {
	sc := newStartCmd("restore", "PLAN ARCHIVE {TARGET [--subvolume] | --in-place} [--include PATH]... [--verify] [--wait] [--bus BUS]", restoreAbout, stdout, stderr)
	var include listFlag
	sc.fs.Var(&include, "include", "restore only this `path` of the archive (repeatable)")
	var opts client.RestoreOptions
	sc.fs.BoolVar(&opts.Subvolume, "subvolume", false, "create a btrfs subvolume at TARGET and restore into it")
	sc.fs.BoolVar(&opts.InPlace, "in-place", false, "restore over the plan's subvolumes, after a pinned snapshot of each (root only; no TARGET)")
	sc.fs.BoolVar(&opts.Verify, "verify", false, "read every restored file back and compare it with the archive")
	pos, code, ok := sc.parse(args, 2, 3, "PLAN ARCHIVE TARGET, or PLAN ARCHIVE --in-place")
	if !ok {
		return code
	}
	var target string
	switch {
	case opts.InPlace && len(pos) == 3 && pos[2] != "/":
		fmt.Fprintf(sc.stderr, "subvault restore: --in-place restores the archive's paths where they were; it takes no TARGET (or /), not %q\n", pos[2])
		return exitUsage
	case opts.InPlace:
		target = "/"
	case len(pos) < 3:
		fmt.Fprintf(sc.stderr, "subvault restore: expects PLAN ARCHIVE TARGET (or --in-place without TARGET); run \"subvault restore --help\" for its usage\n")
		return exitUsage
	default:
		abs, err := filepath.Abs(pos[2])
		if err != nil {
			return sc.fail(err)
		}
		target = abs
	}
	sc.defaultWait()
	return sc.startAndWait(func(ctx context.Context) (uint32, error) {
		return sc.c.StartRestoreWith(ctx, pos[0], pos[1], target, include, opts)
	})
}

// listFlag is a flag that may be given more than once.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

var _ flag.Value = (*listFlag)(nil)

// defaultWait turns --wait on when it was not given and stdout is a
// terminal.
func (sc *startCmd) defaultWait() {
	given := false
	sc.fs.Visit(func(f *flag.Flag) { given = given || f.Name == "wait" })
	if !given {
		*sc.wait = sc.out.tty
	}
}

// startAndWait starts a job and, with --wait, follows it to its end.
func (sc *startCmd) startAndWait(start func(context.Context) (uint32, error)) int {
	ctx := context.Background()
	if code, ok := sc.dial(ctx); !ok {
		return code
	}
	defer sc.close()
	var w *client.Watcher
	if *sc.wait {
		// Follow first, so that no signal of the job is missed.
		var err error
		if w, err = sc.c.Watch(ctx); err != nil {
			return sc.fail(err)
		}
		defer w.Close()
	}
	id, err := start(ctx)
	if err != nil {
		return sc.fail(err)
	}
	if !*sc.wait {
		fmt.Fprintf(sc.stdout, "job %d queued; follow it with: subvault job %d\n", id, id)
		return exitOK
	}
	return sc.follow(ctx, w, id)
}

// follow shows job id's progress until it ends; Ctrl-C asks whether to
// cancel it.
func (sc *startCmd) follow(ctx context.Context, w *client.Watcher, id uint32) int {
	interrupts := make(chan os.Signal, 1)
	signal.Notify(interrupts, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(interrupts)

	errFile, _ := sc.stderr.(*os.File)
	bar := &progressBar{w: sc.stderr, out: outputFor(sc.stderr), tty: errFile != nil && isTerminal(errFile)}
	var files *jobFiles
	if bar.tty {
		files = newJobFiles(sc.c) // only the bar shows them
	}
	j, _ := w.Job(id)
	files.fill(ctx, &j)
	bar.update(j)
	for j.State != contract.StateFinished {
		select {
		case e, ok := <-w.C:
			if !ok {
				bar.clear()
				fmt.Fprintf(sc.stderr, "subvault %s: lost the connection to the daemon; job %d may go on (subvault job %d)\n", sc.name, id, id)
				return exitFailure
			}
			switch {
			case e.Type == client.DaemonGone:
				bar.clear()
				fmt.Fprintf(sc.stderr, "subvault %s: the daemon stopped while job %d was running; it ended with it (subvault job %d tells how, once the daemon is back)\n", sc.name, id, id)
				return exitFailure
			case e.Job.ID == id && (e.Type == client.JobChanged || e.Type == client.JobFinished || e.Type == client.JobNew):
				j = e.Job
				files.fill(ctx, &j)
				bar.update(j)
			}
		case sig := <-interrupts:
			bar.clear()
			if sig == os.Interrupt && isTerminal(os.Stdin) && sc.askCancel(id) {
				if err := sc.c.Cancel(ctx, id); err != nil {
					return sc.fail(err)
				}
				fmt.Fprintf(sc.stderr, "canceling job %d...\n", id)
				continue
			}
			fmt.Fprintf(sc.stderr, "stopped watching; job %d goes on: subvault job %d\n", id, id)
			return exitCanceled
		}
	}
	bar.clear()
	// The mirror has the final properties (the last PropertiesChanged came
	// before JobRemoved); read them once more for the summary.
	if full, err := sc.c.Job(ctx, id); err == nil {
		j = full
	}
	return sc.finished(j)
}

// askCancel asks on the terminal whether to cancel the job too.
func (sc *startCmd) askCancel(id uint32) bool {
	fmt.Fprintf(sc.stderr, "Cancel job %d too? [y/N] ", id)
	answer, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	answer = strings.ToLower(strings.TrimSpace(answer))
	return answer == "y" || answer == "yes"
}

// finished prints the job's end and returns the exit code it stands for.
func (sc *startCmd) finished(j contract.Job) int {
	o := sc.out
	switch j.Result {
	case contract.ResultDone:
		fmt.Fprintf(sc.stdout, "job %d: %s of %s %s in %s\n", j.ID, printable(j.Kind), printable(j.Plan), o.result("done"), took(j, o.now()))
		printJobSummary(sc.stdout, o, j)
		return exitOK
	case contract.ResultCanceled:
		fmt.Fprintf(sc.stderr, "job %d: %s of %s %s\n", j.ID, printable(j.Kind), printable(j.Plan), o.result("canceled"))
		return exitCanceled
	}
	fmt.Fprintf(sc.stderr, "job %d: %s of %s %s: %s\n", j.ID, printable(j.Kind), printable(j.Plan), o.result("failed"), printable(j.Error))
	if strings.HasPrefix(j.Error, "partial") {
		printJobSummary(sc.stdout, o, j)
		return exitPartial
	}
	return exitFailure
}

// printJobSummary prints what a backup did (or a restore, prune, check: their
// summaries hold other fields, printed as they are).
func printJobSummary(w io.Writer, o output, j contract.Job) {
	s := j.Summary
	if j.ArchiveID != "" {
		fmt.Fprintf(w, "  archive: %s\n", printable(j.ArchiveID))
	}
	n := func(k string) uint64 { v, _ := s[k].(uint64); return v }
	if _, ok := s["files_new"]; ok {
		fmt.Fprintf(w, "  files: %d new, %d changed, %d unmodified\n", n("files_new"), n("files_changed"), n("files_unmodified"))
		fmt.Fprintf(w, "  dirs:  %d new, %d changed, %d unmodified\n", n("dirs_new"), n("dirs_changed"), n("dirs_unmodified"))
		fmt.Fprintf(w, "  added to the repository: %s; processed %d files, %s\n",
			o.size(n("data_added")), n("total_files_processed"), o.size(n("total_bytes_processed")))
		return
	}
	for _, k := range slices.Sorted(maps.Keys(s)) {
		fmt.Fprintf(w, "  %s: %s\n", printable(strings.ReplaceAll(k, "_", " ")), summaryValue(o, k, s[k]))
	}
}

const cancelAbout = `Cancels job ID: a queued job ends at once; a running one has restic
interrupted and its snapshots removed. A user may cancel the jobs they
started; others' jobs need the manage authorization.`

func runCancel(args []string, stdout, stderr io.Writer) int {
	cc := newClientCmd("cancel", "ID [--bus BUS]", cancelAbout, false, stdout, stderr)
	pos, code, ok := cc.parse(args, 1, 1, "a job ID")
	if !ok {
		return code
	}
	id, err := parseJobID(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "subvault cancel: %v\n", err)
		return exitUsage
	}
	ctx := context.Background()
	if code, ok := cc.dial(ctx); !ok {
		return code
	}
	defer cc.close()
	if err := cc.c.Cancel(ctx, id); err != nil {
		return cc.fail(err)
	}
	fmt.Fprintf(stdout, "job %d canceled\n", id)
	return exitOK
}

const reloadAbout = `Makes the daemon re-read its configuration file. An invalid file is
refused, with every problem as FILE:LINE: KEY: what is wrong, and the
configuration in force stays.`

func runReload(args []string, stdout, stderr io.Writer) int {
	cc := newClientCmd("reload", "[--bus BUS]", reloadAbout, false, stdout, stderr)
	if _, code, ok := cc.parse(args, 0, 0, "no arguments"); !ok {
		return code
	}
	ctx := context.Background()
	if code, ok := cc.dial(ctx); !ok {
		return code
	}
	defer cc.close()
	if err := cc.c.Reload(ctx); err != nil {
		var cerr *client.Error
		if errors.As(err, &cerr) && cerr.Name == contract.ErrorInvalidConfig {
			fmt.Fprintf(stderr, "subvault reload: %s\n", printableText(err.Error()))
			return exitFailure
		}
		return cc.fail(err)
	}
	fmt.Fprintln(stdout, "configuration reloaded")
	return exitOK
}

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

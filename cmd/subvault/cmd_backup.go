package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/api/client"
	"github.com/subvault/subvault/api/contract"
)

const waitAbout = `With --wait (the default on a terminal) it follows the job: a live progress
bar on a terminal (percent, bytes, files, rate, time left, and the file
being read when the daemon names files to you: root, or polkit's restore
authorization without a password), one line per phase when piped; then the job's summary, and it exits
with the job's result. Ctrl-C asks whether to cancel the job or only stop
watching. --wait=false prints the job's id and returns at once.

Exit status: 0 done, 1 failed or stalled, 2 wrong command line or unknown plan, 3
partial (the archive exists but some files could not be read), 4 not
authorized, 5 the daemon is not running, 130 canceled or interrupted.`

// startCmd is a command that queues a job and may follow it.
type startCmd struct {
	*clientCmd
	wait *bool
}

// newStartCommand makes cmd a command that queues a job and may follow it
// (--wait); run runs it with the positional arguments.
func newStartCommand(cmd *cobra.Command, run func(sc *startCmd, args []string) int) *cobra.Command {
	sc := &startCmd{}
	cmd.Long += "\n\n" + waitAbout
	newClientCommand(cmd, withoutJSON, func(cc *clientCmd, args []string) int {
		sc.clientCmd = cc
		return run(sc, args)
	})
	// The default depends on where stdout goes; the flag's own default is
	// false so that --help (and the man page made from it) never changes.
	sc.wait = cmd.Flags().Bool("wait", false, "follow the job until it ends and exit with its result (default: true when stdout is a terminal)")
	return cmd
}

const backupAbout = `Starts a backup of PLAN now: read-only snapshots of its subvolumes, restic
in a private mount namespace that shows each snapshot at its subvolume's
path, then the snapshots deleted or kept per keep_snapshots. A backup of the
plan already queued or running is followed instead of starting a second.`

func newBackupCommand() *cobra.Command {
	return newPlanJobCommand("backup", "back up a plan now and follow it", backupAbout, (*client.Client).StartBackup)
}

// newPlanJobCommand makes a command "NAME PLAN" that starts a job of PLAN
// (backup, prune, check) with start.
func newPlanJobCommand(name, short, about string, start func(*client.Client, context.Context, string) (uint32, error)) *cobra.Command {
	return newStartCommand(&cobra.Command{
		Use:               name + " PLAN [--wait] [--bus BUS]",
		Short:             short,
		Long:              about,
		GroupID:           groupJobs,
		Args:              expects(1, 1, "a PLAN"),
		ValidArgsFunction: completeArgs(planNames),
	}, func(sc *startCmd, pos []string) int {
		sc.defaultWait()
		return sc.startAndWait(func(ctx context.Context) (uint32, error) { return start(sc.c, ctx, pos[0]) })
	})
}

// defaultWait turns --wait on when it was not given and stdout is a
// terminal.
func (sc *startCmd) defaultWait() {
	if !sc.flags.Changed("wait") {
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
		fmt.Fprintf(sc.stdout, "job %d: %s %s in %s\n", j.ID, jobWhat(j), o.result("done"), took(j, o.now()))
		printJobSummary(sc.stdout, o, j)
		return exitOK
	case contract.ResultSkipped:
		// Nothing it could do, and not a failure: a send to an absent
		// target. Why, for the person who may plug the disk in.
		fmt.Fprintf(sc.stdout, "job %d: %s %s: %s\n", j.ID, jobWhat(j), o.result(contract.ResultSkipped), printable(j.Error))
		return exitOK
	case contract.ResultCanceled:
		fmt.Fprintf(sc.stderr, "job %d: %s %s\n", j.ID, jobWhat(j), o.result("canceled"))
		return exitCanceled
	case contract.ResultPostponed, contract.ResultStalled:
		// Only a scheduled job is postponed; this one was already running
		// when the command asked for it. Either way it did not happen: a
		// failure to the caller, with the daemon's reason.
		fmt.Fprintf(sc.stderr, "job %d: %s %s: %s\n", j.ID, jobWhat(j), o.result(j.Result), printable(j.Error))
		return exitFailure
	}
	fmt.Fprintf(sc.stderr, "job %d: %s %s: %s\n", j.ID, jobWhat(j), o.result("failed"), printable(j.Error))
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
	if j.Kind == contract.KindSend {
		printSendSummary(w, o, s)
		return
	}
	for _, k := range slices.Sorted(maps.Keys(s)) {
		fmt.Fprintf(w, "  %s: %s\n", printable(strings.ReplaceAll(k, "_", " ")), summaryValue(o, k, s[k]))
	}
}

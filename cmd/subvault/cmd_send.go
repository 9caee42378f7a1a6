package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/api/client"
	"github.com/subvault/subvault/api/contract"
)

const sendAbout = `Sends PLAN's newest snapshots to TARGET, one of the targets the plan's
send_to names (see targets in subvault.yaml(5)), with btrfs send and
receive: incrementally from the newest copy both sides have, in full only
when there is none (the job's summary says why). Without TARGET, one send
to each of the plan's targets, followed one after the other with --wait.
Each backup of a plan with send_to queues its sends by itself (or its
send_schedule does); this is for a disk just plugged in, or a send that
failed. A send of the plan to that target already queued is followed
instead of a second.

A target that is absent (a disk not plugged in, a directory not mounted)
makes the send end skipped, which is not a failure: it prints why, and the
exit status is 0 as for done.`

func newSendCommand() *cobra.Command {
	return newStartCommand(&cobra.Command{
		Use:               "send PLAN [TARGET] [--wait] [--bus BUS]",
		Short:             "send a plan's newest snapshots to its targets (btrfs send/receive)",
		Long:              sendAbout,
		GroupID:           groupJobs,
		Args:              expects(1, 2, "a PLAN and at most one TARGET"),
		ValidArgsFunction: completeArgs(planNames, planTargets),
	}, func(sc *startCmd, pos []string) int {
		sc.defaultWait()
		if len(pos) == 2 {
			return sc.startAndWait(func(ctx context.Context) (uint32, error) { return sc.c.StartSend(ctx, pos[0], pos[1]) })
		}
		return sc.sendToAll(pos[0])
	})
}

// sendToAll starts a send of plan to each of its targets and, with --wait,
// follows each in turn. The exit status is the first job's that did not
// end well (done and skipped are well), or 130 at once when one is
// interrupted.
func (sc *startCmd) sendToAll(plan string) int {
	ctx := context.Background()
	if code, ok := sc.dial(ctx); !ok {
		return code
	}
	defer sc.close()
	plans, err := sc.c.Plans(ctx)
	if err != nil {
		return sc.fail(err)
	}
	targets := []string{""} // the daemon decides: the plan's only target, or why not
	for _, p := range plans {
		if p.Name == plan && len(p.Targets) > 0 {
			targets = targets[:0]
			for _, t := range p.Targets {
				targets = append(targets, t.Name)
			}
		}
	}
	var w *client.Watcher
	if *sc.wait {
		if w, err = sc.c.Watch(ctx); err != nil {
			return sc.fail(err)
		}
		defer w.Close()
	}
	code := exitOK
	var ids []uint32
	for _, target := range targets {
		id, err := sc.c.StartSend(ctx, plan, target)
		if err != nil {
			if c := sc.fail(err); code == exitOK {
				code = c
			}
			continue
		}
		ids = append(ids, id)
		if !*sc.wait {
			what := jobWhat(contract.Job{Kind: contract.KindSend, Plan: plan, SendTarget: target})
			fmt.Fprintf(sc.stdout, "job %d queued (%s); follow it with: subvault job %d\n", id, what, id)
		}
	}
	if !*sc.wait {
		return code
	}
	for _, id := range ids {
		c := sc.follow(ctx, w, id)
		if c == exitCanceled {
			return c
		}
		if code == exitOK {
			code = c
		}
	}
	return code
}

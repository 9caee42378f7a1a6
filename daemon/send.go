package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/onsite"
	"github.com/subvault/subvault/daemon/queue"
)

// sendOrders are the send jobs to each of plan's send_to targets, asked
// for by trigger and caller ("" for a follow-up, asked for by whoever
// asked for the job before it).
func sendOrders(plan *config.Plan, trigger queue.Trigger, caller int64) []queue.Order {
	out := make([]queue.Order, 0, len(plan.SendTo))
	for _, t := range plan.SendTo {
		out = append(out, queue.Order{Kind: queue.KindSend, Plan: plan.Name, Trigger: trigger, Caller: caller, Send: queue.SendArgs{SendTarget: t}})
	}
	return out
}

// sendTarget is the target a send of plan asked for with target goes
// to: target itself, one of the plan's send_to, or, when "", the plan's
// only one.
func sendTarget(plan *config.Plan, target string) (string, error) {
	switch {
	case len(plan.SendTo) == 0:
		return "", fmt.Errorf("%w: plan %s has no send_to: there is no target to send its snapshots to (add send_to: [TARGET] to plans.%s)",
			ErrInvalidArgument, plan.Name, plan.Name)
	case target == "" && len(plan.SendTo) == 1:
		return plan.SendTo[0], nil
	case target == "":
		return "", fmt.Errorf("%w: plan %s sends to %s: name one of them", ErrInvalidArgument, plan.Name, strings.Join(plan.SendTo, ", "))
	}
	for _, t := range plan.SendTo {
		if t == target {
			return t, nil
		}
	}
	return "", fmt.Errorf("%w: plan %s does not send to %q (its send_to: %s)", ErrInvalidArgument, plan.Name, target, strings.Join(plan.SendTo, ", "))
}

// send runs a send job: the plan's newest snapshots to its target
// (daemon/onsite). An absent target ends the job skipped, not failed.
func (e *executor) send(ctx context.Context, cfg *config.Config, plan *config.Plan, job queue.Job, progress func(queue.Progress)) (queue.Outcome, error) {
	res, err := onsite.Send(ctx, onsite.Options{
		Config: cfg, Plan: plan, Target: job.SendTarget, JobID: job.ID, Log: e.log,
		Progress: func(bytes uint64) { progress(queue.Progress{BytesDone: bytes}) },
	})
	out := queue.Outcome{Summary: sendSummary(res)}
	if err != nil && ctx.Err() == nil && errors.Is(err, onsite.ErrAbsent) {
		return out, queue.Skip(err)
	}
	return out, err
}

// sendSummary is a send's Result as a job's Summary: flat values a
// client shows at once, and the subvolumes' sends as a list.
func sendSummary(res onsite.Result) map[string]any {
	if res.Target == "" && len(res.Sent) == 0 {
		return nil
	}
	var bytes uint64
	full := false
	var sent []map[string]any
	for _, s := range res.Sent {
		bytes += s.Bytes
		full = full || s.Parent == ""
		one := map[string]any{"subvolume": s.Subvolume, "snapshot": s.Snapshot, "bytes": s.Bytes}
		if s.Parent != "" {
			one["parent"] = s.Parent
		} else {
			one["full_reason"] = s.FullReason
		}
		if len(s.Clones) > 0 {
			one["clones"] = s.Clones
		}
		sent = append(sent, one)
	}
	out := map[string]any{"target": res.Target, "bytes_sent": bytes, "full": full, "up_to_date": res.UpToDate}
	if res.Where != "" {
		out["where"] = res.Where
	}
	if len(sent) > 0 {
		out["sent"] = sent
	}
	if len(res.Removed) > 0 {
		out["leftovers_removed"] = len(res.Removed)
	}
	return out
}

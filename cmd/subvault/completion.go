package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/subvault/subvault/api/client"
	"github.com/subvault/subvault/api/contract"
)

// A key press waits for the completions: a daemon that does not answer in
// this time offers none.
const completionTimeout = 3 * time.Second

// candidates lists the values one argument or option may take, as the
// daemon knows them; args are the positional arguments before it.
type candidates func(ctx context.Context, c *client.Client, args []string) []cobra.Completion

// completeArgs completes the positional arguments: the first from the
// first list, and so on; a nil list completes file names (a TARGET), and
// past the lists nothing is offered.
func completeArgs(lists ...candidates) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		switch {
		case len(args) >= len(lists):
			return nil, cobra.ShellCompDirectiveNoFileComp
		case lists[len(args)] == nil:
			return nil, cobra.ShellCompDirectiveDefault
		}
		return fromDaemon(cmd, args, toComplete, lists[len(args)]), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeFlag completes the values of cmd's option name with f.
func completeFlag(cmd *cobra.Command, name string, f cobra.CompletionFunc) {
	_ = cmd.RegisterFlagCompletionFunc(name, f)
}

// completeBus completes --bus: the two named buses (an address is typed).
func completeBus(cmd *cobra.Command) {
	completeFlag(cmd, "bus", fixed("system", "session"))
}

// fixed completes an option from values.
func fixed(values ...string) cobra.CompletionFunc {
	return cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp)
}

// daemonList completes an option from list.
func daemonList(list candidates) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return fromDaemon(cmd, args, toComplete, list), cobra.ShellCompDirectiveNoFileComp
	}
}

// fromDaemon asks the daemon on the command's --bus (the system bus for a
// command without one) for list, keeping the values that start with
// toComplete. A daemon that is not running is not started, and gives
// nothing, as do one that does not answer in time and a refusal.
func fromDaemon(cmd *cobra.Command, args []string, toComplete string, list candidates) []cobra.Completion {
	bus := "system"
	if f := cmd.Flags().Lookup("bus"); f != nil {
		bus = f.Value.String()
	}
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	c, err := client.DialRunning(ctx, bus)
	if err != nil {
		return nil
	}
	defer c.Close() //nolint:errcheck // the completion is done
	var values []cobra.Completion
	for _, v := range list(ctx, c, args) {
		if strings.HasPrefix(v, toComplete) {
			values = append(values, v)
		}
	}
	return values
}

// planNames are the daemon's plans, with their subvolumes.
func planNames(ctx context.Context, c *client.Client, _ []string) []cobra.Completion {
	plans, err := c.Plans(ctx)
	if err != nil {
		return nil
	}
	var out []cobra.Completion
	for _, p := range plans {
		out = append(out, cobra.CompletionWithDesc(p.Name, strings.Join(printableAll(p.Subvolumes), ", ")))
	}
	return out
}

// planTargets are the targets of the plan in args[0] (its send_to), with
// the age of its newest copy on each.
func planTargets(ctx context.Context, c *client.Client, args []string) []cobra.Completion {
	plans, err := c.Plans(ctx)
	if err != nil {
		return nil
	}
	var out []cobra.Completion
	for _, p := range plans {
		if p.Name != args[0] {
			continue
		}
		for _, t := range p.Targets {
			desc := "no copy yet"
			if !t.Newest.IsZero() {
				desc = "newest copy " + t.Newest.Local().Format(time.DateTime)
			}
			if !t.Present {
				desc += ", absent"
			}
			out = append(out, cobra.CompletionWithDesc(t.Name, desc))
		}
	}
	return out
}

// archiveIDs are the archives of the plan in args[0], newest first, and
// "latest".
func archiveIDs(ctx context.Context, c *client.Client, args []string) []cobra.Completion {
	out := []cobra.Completion{cobra.CompletionWithDesc("latest", "the newest archive")}
	archives, err := c.Archives(ctx, args[0])
	if err != nil {
		return out
	}
	for _, a := range archives {
		out = append(out, cobra.CompletionWithDesc(a.ID, a.Time.Local().Format(time.DateTime)))
	}
	return out
}

// snapshotNames are the local snapshots of the plan in args[0], newest
// first.
func snapshotNames(ctx context.Context, c *client.Client, args []string) []cobra.Completion {
	snaps, err := c.Snapshots(ctx, args[0])
	if err != nil {
		return nil
	}
	var out []cobra.Completion
	for _, s := range slices.Backward(snaps) {
		out = append(out, cobra.CompletionWithDesc(s.Name, s.Created.Local().Format(time.DateTime)))
	}
	return out
}

// diffSides are what diff compares: "latest", "live", the plan's archives
// and its local snapshots.
func diffSides(ctx context.Context, c *client.Client, args []string) []cobra.Completion {
	out := append(archiveIDs(ctx, c, args), cobra.CompletionWithDesc("live", "the subvolumes as they are now"))
	return append(out, snapshotNames(ctx, c, args)...)
}

// subvolumes are the subvolumes of the plan in args[0].
func subvolumes(ctx context.Context, c *client.Client, args []string) []cobra.Completion {
	plans, err := c.Plans(ctx)
	if err != nil {
		return nil
	}
	for _, p := range plans {
		if p.Name == args[0] {
			return p.Subvolumes
		}
	}
	return nil
}

// jobIDs are the daemon's jobs, newest first; only the queued and running
// ones when active.
func jobIDs(active bool) candidates {
	return func(ctx context.Context, c *client.Client, _ []string) []cobra.Completion {
		jobs, err := c.Jobs(ctx)
		if err != nil {
			return nil
		}
		var out []cobra.Completion
		for _, j := range jobs {
			if active && j.State == contract.StateFinished {
				continue
			}
			state := string(j.State)
			if j.State == contract.StateFinished {
				state = string(j.Result)
			}
			out = append(out, cobra.CompletionWithDesc(strconv.FormatUint(uint64(j.ID), 10), fmt.Sprintf("%s of %s, %s", printable(j.Kind), printable(j.Plan), printable(state))))
		}
		return out
	}
}

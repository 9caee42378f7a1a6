package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/subvault/subvault/api/client"
	"github.com/subvault/subvault/api/contract"
)

// Exit codes of the client commands, documented in subvault(1) (exitOK,
// exitFailure, exitUsage, exitPartial and exitCanceled are shared).
const (
	exitDenied      = 4 // the daemon refused: not authorized
	exitUnreachable = 5 // the daemon is not on the bus
)

// clientCmd is what every command that talks to the daemon shares: --bus,
// --json, the connection, and how output and errors look.
type clientCmd struct {
	name   string
	flags  *pflag.FlagSet
	bus    *string
	json   *bool // nil for commands without a listing
	stdout io.Writer
	stderr io.Writer
	out    output
	c      *client.Client
}

// Whether a client command takes --json.
const (
	withJSON    = true
	withoutJSON = false
)

// newClientCommand makes cmd a command that talks to the daemon: it gets
// --bus (and --json, withJSON), completes its options' values from the
// daemon, and run runs it with the positional arguments.
func newClientCommand(cmd *cobra.Command, listing bool, run func(cc *clientCmd, args []string) int) *cobra.Command {
	cc := &clientCmd{}
	cc.bus = cmd.Flags().String("bus", "system", "the `bus` the daemon is on: system, session, or a D-Bus address")
	completeBus(cmd)
	if listing {
		cc.json = cmd.Flags().Bool("json", false, "print JSON for scripts (the fields are documented in subvault(1))")
	}
	cmd.RunE = runs(func(cmd *cobra.Command, args []string) int {
		cc.name = strings.TrimPrefix(cmd.CommandPath(), "subvault ")
		cc.flags = cmd.Flags()
		cc.stdout, cc.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
		cc.out = outputFor(cc.stdout)
		return run(cc, args)
	})
	return cmd
}

// expects checks that a command has between minArgs and maxArgs positional
// arguments; what names them for the message.
func expects(minArgs, maxArgs int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) < minArgs || len(args) > maxArgs {
			return fmt.Errorf("expects %s", what)
		}
		return nil
	}
}

// atMost checks that a command that is no client of the daemon has at
// most n positional arguments.
func atMost(n int) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) > n {
			return fmt.Errorf("unexpected argument %q", args[n])
		}
		return nil
	}
}

// dial connects to the daemon; on failure it prints one line and returns
// the exit code.
func (cc *clientCmd) dial(ctx context.Context) (code int, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, *cc.bus)
	if err != nil {
		return cc.fail(err), false
	}
	// Let polkit ask for a password when a person is here to type it.
	c.Interactive = isTerminal(os.Stdin)
	cc.c = c
	return exitOK, true
}

func (cc *clientCmd) close() {
	if cc.c != nil {
		cc.c.Close() //nolint:errcheck // the command is done
	}
}

// fail prints err as one line and returns the exit code it stands for.
func (cc *clientCmd) fail(err error) int {
	fmt.Fprintf(cc.stderr, "subvault %s: %s\n", cc.name, printableText(err.Error()))
	return exitCodeOf(err)
}

func exitCodeOf(err error) int {
	var unreachable *client.UnreachableError
	var cerr *client.Error
	switch {
	case errors.As(err, &unreachable):
		return exitUnreachable
	case errors.As(err, &cerr) && cerr.AccessDenied():
		return exitDenied
	case errors.As(err, &cerr) && slices.Contains([]string{contract.ErrorNoSuchPlan, contract.ErrorNoSuchJob,
		contract.ErrorNoSuchSnapshot, contract.ErrorNoSuchArchive, contract.ErrorInvalidArgument}, cerr.Name):
		return exitUsage
	}
	return exitFailure
}

// printJSON prints v as indented JSON.
func (cc *clientCmd) printJSON(v any) int {
	enc := json.NewEncoder(printableJSON{cc.stdout})
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return cc.fail(err)
	}
	return exitOK
}

// output is how to print for whoever reads stdout: a person at a terminal
// (human sizes and ages, colours unless NO_COLOR) or a pipe (exact values,
// no control characters).
type output struct {
	tty   bool
	color bool
	width int
	now   func() time.Time
}

func outputFor(w io.Writer) output {
	o := output{now: time.Now, width: 80}
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		o.tty = true
		o.color = os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"
		if n := terminalWidth(f); n > 0 {
			o.width = n
		}
	}
	return o
}

// ANSI colours, used only on a terminal without NO_COLOR.
const (
	colorRed    = "31"
	colorGreen  = "32"
	colorYellow = "33"
	colorDim    = "2"
)

// paint colours s, escaped by printable: the colour's own escapes are the
// only ones that reach the terminal.
func (o output) paint(code, s string) string {
	s = printable(s)
	if !o.color || s == "" {
		return s
	}
	return "\033[" + code + "m" + s + "\033[0m"
}

// result paints a job result: done green, failed and stalled red, canceled
// and postponed yellow, skipped dim.
func (o output) result(r contract.Result) string {
	switch r {
	case contract.ResultPostponed:
		return o.paint(colorYellow, string(r))
	case contract.ResultDone:
		return o.paint(colorGreen, string(r))
	case contract.ResultFailed, contract.ResultStalled:
		return o.paint(colorRed, string(r))
	case contract.ResultCanceled:
		return o.paint(colorYellow, string(r))
	case contract.ResultSkipped:
		// Neither a failure nor a success: nothing could be done (a send
		// to an absent disk).
		return o.paint(colorDim, string(r))
	}
	return printable(r)
}

// size is a byte count: 1.2 GiB for a person, 1288490188 for a pipe.
func (o output) size(n uint64) string {
	if o.tty {
		return humanBytes(n)
	}
	return fmt.Sprint(n)
}

// when is a past or future time: "3h ago" / "in 5m" for a person, RFC 3339
// for a pipe; "-" when there is none.
func (o output) when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	if !o.tty {
		return t.Format(time.RFC3339)
	}
	return relative(o.now(), t)
}

// relative says how far t is from now in words a person reads at a glance.
func relative(now, t time.Time) string {
	d := t.Sub(now)
	if d < 0 {
		return roughDuration(-d) + " ago"
	}
	return "in " + roughDuration(d)
}

// roughDuration keeps the two largest units: 45s, 3m, 2h05m, 3d4h.
func roughDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		days := int(d.Hours()) / 24
		return fmt.Sprintf("%dd%dh", days, int(d.Hours())%24)
	}
}

// table prints rows aligned under a header. Cells must not hold tabs or
// newlines: the callers escape what they put in them with printable.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush() //nolint:errcheck // printing to the user
}

// dash is s, or "-" when s is empty, so that a table cell is never blank.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// nonNil makes an empty listing print as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

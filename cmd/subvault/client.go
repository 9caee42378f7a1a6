package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

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
	fs     *flag.FlagSet
	bus    *string
	json   *bool // nil for commands without a listing
	stdout io.Writer
	stderr io.Writer
	out    output
	c      *client.Client
}

// newClientCmd makes the flag set of a client command; withJSON adds --json.
func newClientCmd(name, synopsis, about string, withJSON bool, stdout, stderr io.Writer) *clientCmd {
	cc := &clientCmd{name: name, stdout: stdout, stderr: stderr}
	cc.fs = newFlags(name, synopsis, about, stdout, stderr)
	cc.bus = cc.fs.String("bus", "system", "the `bus` the daemon is on: system, session, or a D-Bus address")
	if withJSON {
		cc.json = cc.fs.Bool("json", false, "print JSON for scripts (the fields are documented in subvault(1))")
	}
	cc.out = outputFor(stdout)
	return cc
}

// parse parses the arguments: positional ones (want of them, at most max;
// max < 0: no limit) may come before, between or after the options. ok is
// false when the command should return code at once.
func (cc *clientCmd) parse(args []string, minArgs, maxArgs int, what string) (pos []string, code int, ok bool) {
	var flags []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "-") && a != "-":
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") {
				if f := cc.fs.Lookup(name); f != nil && !isBoolFlag(f) && i+1 < len(args) {
					flags = append(flags, args[i+1])
					i++
				}
			}
		default:
			pos = append(pos, a)
		}
	}
	if code, ok := parseFlags(cc.fs, flags, cc.stdout); !ok {
		return nil, code, false
	}
	if len(pos) < minArgs || (maxArgs >= 0 && len(pos) > maxArgs) {
		fmt.Fprintf(cc.stderr, "subvault %s: expects %s; run \"subvault %s --help\" for its usage\n", cc.name, what, cc.name)
		return nil, exitUsage, false
	}
	return pos, exitOK, true
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
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

// connect parses the arguments as parse does and connects to the daemon;
// ok is false when the command should return code at once. The caller
// closes the connection (defer cc.close()).
func (cc *clientCmd) connect(args []string, minArgs, maxArgs int, what string) (pos []string, code int, ok bool) {
	if pos, code, ok = cc.parse(args, minArgs, maxArgs, what); !ok {
		return nil, code, false
	}
	if code, ok = cc.dial(context.Background()); !ok {
		return nil, code, false
	}
	return pos, exitOK, true
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

// result paints a job result: done green, failed red, canceled yellow.
func (o output) result(r contract.Result) string {
	switch r {
	case contract.ResultDone:
		return o.paint(colorGreen, string(r))
	case contract.ResultFailed:
		return o.paint(colorRed, string(r))
	case contract.ResultCanceled:
		return o.paint(colorYellow, string(r))
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

package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
)

// The man pages are generated, never edited: subvault(1) from every visible
// command's --help, subvault-daemon(8) from `subvault daemon --help` and
// docs/daemon.md, subvault.yaml(5) from docs/configuration.md. `make man`
// writes them to docs/man; TestManPages fails when the committed ones are
// stale.

// manPageNames are the files "subvault man" writes, in this order.
var manPageNames = []string{"subvault.1", "subvault-daemon.8", "subvault.yaml.5"}

// The .TH lines carry no date and no version, so the pages change only when
// their text does. Each is followed by manLayout: no hyphenation (names and
// paths stay whole, as they are typed; HY too, since .YS restores it) and a
// ragged right margin.
const (
	manTitle1 = `.TH SUBVAULT 1 "" "subvault" "User Commands"`
	manTitle8 = `.TH SUBVAULT\-DAEMON 8 "" "subvault" "System Administration"`
	manTitle5 = `.TH SUBVAULT.YAML 5 "" "subvault" "File Formats"`
)

const manLayout = ".nr HY 0\n.nh\n.ad l"

const manDescription = `.B subvault
snapshots btrfs subvolumes read-only and backs them up with
.BR restic (1)
in a private mount namespace in which each snapshot is mounted over its
subvolume's original path. The backup is consistent (it is read from one
instant), restic records the original path and finds its parent archive, so
it reads only the files that changed, and the host never sees a mount.
.PP
The daemon,
.BR subvault\-daemon (8),
runs the plans' backups, prunes and checks on their schedules and serves
.B org.subvault.Subvault1
on the system bus; the commands that show or steer plans and jobs talk to it
there. Plans, repositories and schedules are configured in
.I /etc/subvault/config.yaml
(see
.BR subvault.yaml (5)).
.PP
Every command prints its usage with
.BR \-\-help ;
this page is made from the same text. Options take one dash or two
.RB ( \-config " is " \-\-config ),
and a value after a space or an
.B =
.RB ( \-\-quiet=false
for a switch).
.PP
What the daemon, a repository or the configuration hands on (file names
above all: any user names the files in a backed\-up subvolume) is printed so
that it cannot act on the terminal: control characters, DEL and bytes that
are not UTF\-8 as
.BI \ex NN\fR,
the C1 controls, the bidirectional embeddings, overrides, isolates and
marks and the line and paragraph separators (U+0080 to U+009F, U+061C,
U+200E, U+200F, U+202A to U+202E, U+2028, U+2029, U+2066 to U+2069) as
.BI \eu NNNN\fR.
A backslash is printed as it is: a name holding the text
.B \ex1b
looks like one holding ESC, and neither acts.`

const manExitStatus = `.TP
.B 0
Success.
.TP
.B 1
Failure: the command ran and the answer is no (an invalid configuration, a
failed job); the message says why and what to do.
.TP
.B 2
Wrong command line: an unknown command, option or plan.
.TP
.B 3
Partial: the archive exists, but some files could not be read; they are named.
.TP
.B 4
The daemon refused: the caller is not authorized.
.TP
.B 5
The daemon is not on the bus.
.TP
.B 130
Interrupted by SIGINT or SIGTERM; the job's snapshots were removed.
.PP
Each command's own codes are listed under
.B Exit status
in its description above.`

const manJSON = `With
.BR \-\-json ,
a listing prints one JSON value; times are RFC 3339 strings, absent when
there is none; sizes are bytes. Strings hold the values themselves; the
characters a terminal acts on are written as JSON
.BI \eu NNNN
escapes (control characters, DEL, the C1 controls and the bidirectional
ones), so the output is safe on a terminal too. The fields:
.TP
.B plans
an array of plans:
.BR name ,
.BR subvolumes ,
.BR repository ,
.BR schedule ,
.BR next_run ,
.BR last_backup ,
.BR last_result " (" done ", " failed ", " canceled " or empty),"
.BR last_error ,
.B last_success
(when the last backup that ended
.B done
finished; absent when none is known).
.TP
.BR jobs ", " job
an array of jobs, or one:
.BR id ,
.BR kind ,
.BR plan ,
.BR state " (" queued ", " running ", " finished ),
.BR result ,
.BR trigger ,
.BR triggers " (everyone who asked for the job: the trigger, then each caller or schedule given it while it was queued or running),"
.BR callers " (the uids among them),"
.BR progress " (0 to 1),"
.BR bytes_done ,
.BR bytes_total ,
.BR files_done ,
.BR files_total ,
.BR seconds_remaining ,
.BR current_files ,
.BR queued_at ,
.BR started_at ,
.BR finished_at ,
.BR error ,
.BR archive_id ,
.B summary
(restic's summary fields, such as
.B files_new
and
.BR data_added ).
.TP
.B status
an object:
.B daemon
.RB ( version ,
.BR state ,
.BR plans ,
.BR running_jobs ,
.BR queued_jobs ),
.B plans
(the plan fields plus
.BR health :
.BR ok ", " failed ", " overdue " or " never ,
and
.BR why ,
a sentence),
.B running
and
.B queued
(jobs), and
.B healthy
(false when a plan failed or is overdue).
.TP
.B snapshots
an array of
.BR name ,
.BR path ,
.BR created ,
.BR kept .
.TP
.B archives
an array of
.BR id ,
.BR time ,
.BR hostname ,
.BR paths ,
.BR tags .
.TP
.B diff
an array of
.B kind
.RB ( added ", " removed ", " changed ", " type\-changed ", " metadata )
and
.B path
(a directory's ends in
.BR / );
the metadata ones only with
.BR \-\-metadata .
.TP
.B watch
one object per line:
.B event
.RB ( job\-new ,
.BR job\-changed ,
.BR job\-finished ,
.BR job\-forgotten ,
.BR plan\-changed ,
.BR plan\-added ,
.BR plan\-removed ,
.BR daemon\-gone ,
.BR daemon\-started ),
.BR time ,
and the
.B job
or
.B plan
as above.`

const manEnvironment = `.TP
.B NO_COLOR
When set and not empty, output on a terminal has no colours (as with
.BR TERM=dumb ).
Output to a pipe never has.
.TP
.B DBUS_SYSTEM_BUS_ADDRESS
The system bus, where
.B \-\-bus system
(the default) finds the daemon; unset,
.IR unix:path=/run/dbus/system_bus_socket .
.TP
.B DBUS_SESSION_BUS_ADDRESS
The bus of
.BR "\-\-bus session" .`

const manFiles = `.TP
.I /etc/subvault/config.yaml
The configuration; see
.BR subvault.yaml (5).
.TP
.I /var/lib/subvault
State: the job history
.RI ( jobs.json ),
job ids, plan locks.
.TP
.I /var/cache/subvault
restic's caches, one directory per repository.
.TP
.IB SUBVOLUME /.subvault\-snapshots/
The plan's local snapshots, named
.IB subvault@ PLAN @ TIME @ JOB @ SUBVOLUME\fR.`

const manExamples = `How the plans stand, and the last jobs of one:
.PP
.RS 4
.nf
subvault plans
subvault jobs \-\-plan home \-\-limit 5
.fi
.RE
.PP
Back up the plan
.I home
now and follow it, then keep watching every job:
.PP
.RS 4
.nf
subvault backup home
subvault watch
.fi
.RE
.PP
Restore one directory of the newest archive into a new directory:
.PP
.RS 4
.nf
subvault restore home latest /root/restored \-\-include /home/alice/Documents
.fi
.RE
.PP
Restore the newest archive of home into a new btrfs subvolume, every file
read back; or, as root, over /home itself after a pinned snapshot of it:
.PP
.RS 4
.nf
subvault restore home latest \-\-subvolume /srv/home.restored \-\-verify
subvault restore home latest \-\-in\-place
.fi
.RE
.PP
Check the configuration after an edit, then have the daemon re-read it:
.PP
.RS 4
.nf
subvault check\-config
subvault reload
.fi
.RE
.PP
Without the daemon: one backup in the foreground, or a trial daemon with
another configuration on the session bus:
.PP
.RS 4
.nf
subvault run backup home
subvault daemon \-\-config ./config.yaml \-\-bus session
.fi
.RE`

const manSeeAlso1 = `.BR subvault\-daemon (8),
.BR subvault.yaml (5),
.BR restic (1),
.BR busctl (1),
.BR btrfs\-subvolume (8)`

const manDaemonFiles = `.TP
.I /etc/subvault/config.yaml
The configuration; see
.BR subvault.yaml (5).
.TP
.I /var/lib/subvault
.RB ( settings.state_dir )
The job history
.RI ( jobs.json ),
job ids, plan locks
.RI ( locks/ ).
.TP
.I /var/cache/subvault
.RB ( settings.cache_dir )
restic's caches, one directory per repository.`

const manSeeAlso8 = `.BR subvault (1),
.BR subvault.yaml (5),
.BR restic (1),
.BR systemd.service (5),
.BR journalctl (1),
.BR busctl (1)`

const manSeeAlso5 = `.BR subvault (1),
.BR subvault\-daemon (8),
.BR restic (1),
.BR crontab (5)`

const manAbout = `Writes the man pages subvault(1), subvault-daemon(8) and subvault.yaml(5)
into DIR: subvault(1) from every command's --help, the others from
docs/daemon.md and docs/configuration.md. "make man" runs it; the test suite
fails when the committed pages differ from what it writes.`

func newManCommand() *cobra.Command {
	var dir, docs string
	cmd := &cobra.Command{
		Use:     "man --dir DIR [--docs DIR]",
		Short:   "write the man pages (for the build)",
		Long:    manAbout,
		GroupID: groupAdmin,
		Hidden:  true,
		Args:    atMost(0),
		RunE: runs(func(cmd *cobra.Command, _ []string) int {
			return runMan(cmd.ErrOrStderr(), dir, docs)
		}),
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the `directory` to write the pages to")
	cmd.Flags().StringVar(&docs, "docs", "docs", "the `directory` holding daemon.md and configuration.md")
	_ = cmd.MarkFlagDirname("dir")
	_ = cmd.MarkFlagDirname("docs")
	return cmd
}

func runMan(stderr io.Writer, dir, docs string) int {
	if dir == "" {
		fmt.Fprintln(stderr, "subvault man: where to? give --dir DIR")
		return exitUsage
	}
	pages, err := manPages(docs)
	if err != nil {
		fmt.Fprintf(stderr, "subvault man: %v\n", err)
		return exitFailure
	}
	for _, name := range manPageNames {
		if err := os.WriteFile(filepath.Join(dir, name), pages[name], 0o644); err != nil {
			fmt.Fprintf(stderr, "subvault man: cannot write the man page: %v\n", err)
			return exitFailure
		}
	}
	return exitOK
}

// manPages returns the pages by file name; docsDir holds the Markdown
// sources.
func manPages(docsDir string) (map[string][]byte, error) {
	var helps []commandHelp
	for _, c := range commands() {
		if c.Hidden {
			continue
		}
		h, err := helpOf(c)
		if err != nil {
			return nil, err
		}
		helps = append(helps, h)
	}
	var daemon *commandHelp
	for i := range helps {
		if helps[i].command == "daemon" {
			daemon = &helps[i]
		}
	}
	if daemon == nil {
		return nil, fmt.Errorf("no daemon command to document in subvault-daemon(8)")
	}
	daemonMD, err := os.ReadFile(filepath.Join(docsDir, "daemon.md"))
	if err != nil {
		return nil, fmt.Errorf("cannot read the source of subvault-daemon(8): %w", err)
	}
	configMD, err := os.ReadFile(filepath.Join(docsDir, "configuration.md"))
	if err != nil {
		return nil, fmt.Errorf("cannot read the source of subvault.yaml(5): %w", err)
	}
	return map[string][]byte{
		"subvault.1":        manPage1(helps),
		"subvault-daemon.8": manPage8(*daemon, string(daemonMD)),
		"subvault.yaml.5":   manPage5(string(configMD)),
	}, nil
}

// commandHelp is one command's --help, taken apart.
type commandHelp struct {
	command  string // as in commands()
	group    string
	name     string // as after "Usage: subvault": "run backup" for run
	synopsis string
	about    string
	flags    []helpFlag
}

type helpFlag struct {
	name  string
	arg   string // the value's name; "" for a switch
	usage string // may hold newlines
}

// helpOf runs `subvault NAME --help`. A command whose help only names a
// subcommand and has no options of its own ("run" prints the usage of "run
// backup") is documented by that subcommand's help.
func helpOf(c *cobra.Command) (commandHelp, error) {
	text, err := helpText(c.Name())
	if err != nil {
		return commandHelp{}, err
	}
	h, err := parseHelp(c.Name(), text)
	if err != nil {
		return commandHelp{}, err
	}
	if sub, _, _ := strings.Cut(h.synopsis, " "); len(h.flags) == 0 && isSubcommand(sub) {
		if text, err := helpText(c.Name() + " " + sub); err == nil {
			if hs, err := parseHelp(c.Name()+" "+sub, text); err == nil {
				h = hs
			}
		}
	}
	h.command, h.group = c.Name(), c.GroupID
	return h, nil
}

func helpText(name string) (string, error) {
	var out, errOut bytes.Buffer
	if code := run(append(strings.Fields(name), "--help"), &out, &errOut); code != exitOK {
		return "", fmt.Errorf("cannot document %q: \"subvault %s --help\" exits %d: %s", name, name, code, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

func isSubcommand(word string) bool {
	if word == "" {
		return false
	}
	for _, r := range word {
		if (r < 'a' || r > 'z') && r != '-' {
			return false
		}
	}
	return true
}

// parseHelp takes apart the text newFlags prints (see there).
func parseHelp(name, text string) (commandHelp, error) {
	h := commandHelp{name: name}
	first, rest, _ := strings.Cut(text, "\n")
	usage, ok := strings.CutPrefix(first, "Usage: subvault "+name)
	if !ok || (usage != "" && usage[0] != ' ') {
		return h, fmt.Errorf("cannot document %q: its --help does not start with \"Usage: subvault %s\" but %q", name, name, first)
	}
	h.synopsis = strings.TrimSpace(usage)
	about, options := rest, ""
	if i := strings.LastIndex(rest, "\nOptions:\n"); i >= 0 {
		about, options = rest[:i], rest[i+len("\nOptions:\n"):]
	} else if strings.HasPrefix(rest, "Options:\n") {
		about, options = "", strings.TrimPrefix(rest, "Options:\n")
	}
	h.about = strings.Trim(about, "\n")
	for _, line := range strings.Split(options, "\n") {
		switch {
		case strings.HasPrefix(line, "  -"):
			// "  -name type", or "  -x\tusage" for a one-letter switch.
			head, usage, _ := strings.Cut(line[3:], "\t")
			flagName, arg, _ := strings.Cut(head, " ")
			h.flags = append(h.flags, helpFlag{name: flagName, arg: arg, usage: usage})
		case strings.HasPrefix(line, "    \t") && len(h.flags) > 0:
			f := &h.flags[len(h.flags)-1]
			if f.usage != "" {
				f.usage += "\n"
			}
			f.usage += line[len("    \t"):]
		case line == "":
		default:
			return h, fmt.Errorf("cannot document %q: unexpected line in its options: %q", name, line)
		}
	}
	return h, nil
}

func manPage1(helps []commandHelp) []byte {
	var w roffWriter
	w.raw(manTitle1)
	w.raw(manLayout)
	w.macro("SH", "NAME")
	w.raw(`subvault \- atomic, incremental restic backups of btrfs subvolumes`)
	w.macro("SH", "SYNOPSIS")
	groups := groupHelps(helps)
	for _, g := range groups {
		for _, h := range g.helps {
			w.macro("SY", "subvault")
			w.raw(synopsisRoff(h.name, h.synopsis))
			w.macro("YS")
		}
	}
	w.macro("SH", "DESCRIPTION")
	w.raw(manDescription)
	w.macro("SH", "COMMANDS")
	for _, g := range groups {
		w.macro("SS")
		w.text(roffText(g.name))
		for _, h := range g.helps {
			w.macro("TP")
			w.raw(`\fBsubvault\fR ` + synopsisRoff(h.name, h.synopsis))
			writeAbout(&w, h.about, "IP")
			if len(h.flags) > 0 {
				w.macro("IP")
				w.text("Options:")
				w.macro("RS")
				writeFlags(&w, h.flags)
				w.macro("RE")
			}
		}
	}
	w.macro("SH", "JSON OUTPUT")
	w.raw(manJSON)
	w.macro("SH", "EXIT STATUS")
	w.raw(manExitStatus)
	w.macro("SH", "ENVIRONMENT")
	w.raw(manEnvironment)
	w.macro("SH", "FILES")
	w.raw(manFiles)
	w.macro("SH", "EXAMPLES")
	w.raw(manExamples)
	w.macro("SH", "SEE ALSO")
	w.raw(manSeeAlso1)
	return w.bytes()
}

type helpGroup struct {
	name  string
	helps []commandHelp
}

// groupHelps orders the commands as --help does: by group, then by name. A
// group missing from groupOrder comes last rather than being lost.
func groupHelps(helps []commandHelp) []helpGroup {
	order := append([]string(nil), groupOrder...)
	for _, h := range helps {
		found := false
		for _, g := range order {
			found = found || g == h.group
		}
		if !found {
			order = append(order, h.group)
		}
	}
	var groups []helpGroup
	for _, g := range order {
		var in []commandHelp
		for _, h := range helps {
			if h.group == g {
				in = append(in, h)
			}
		}
		if len(in) == 0 {
			continue
		}
		slices.SortFunc(in, func(a, b commandHelp) int { return strings.Compare(a.command, b.command) })
		name := g
		if name == "" {
			name = "Other commands"
		}
		groups = append(groups, helpGroup{name: name, helps: in})
	}
	return groups
}

func manPage8(daemon commandHelp, md string) []byte {
	var w roffWriter
	w.raw(manTitle8)
	w.raw(manLayout)
	w.macro("SH", "NAME")
	w.raw(`subvault\-daemon \- the subvault backup daemon`)
	w.macro("SH", "SYNOPSIS")
	w.macro("SY", "subvault")
	w.raw(synopsisRoff(daemon.name, daemon.synopsis))
	w.macro("YS")
	w.macro("SH", "DESCRIPTION")
	about, exit := splitExitStatus(daemon.about)
	writeAbout(&w, about, "PP")
	intro, sections := splitMarkdown(md)
	w.macro("PP")
	writeMarkdown(&w, intro)
	if len(daemon.flags) > 0 {
		w.macro("SH", "OPTIONS")
		writeFlags(&w, daemon.flags)
	}
	writeMarkdown(&w, sections)
	if exit != "" {
		w.macro("SH", "EXIT STATUS")
		w.text(roffText(exit))
	}
	w.macro("SH", "FILES")
	w.raw(manDaemonFiles)
	w.macro("SH", "SEE ALSO")
	w.raw(manSeeAlso8)
	return w.bytes()
}

func manPage5(md string) []byte {
	var w roffWriter
	w.raw(manTitle5)
	w.raw(manLayout)
	w.macro("SH", "NAME")
	w.raw(`subvault.yaml \- the configuration of subvault, /etc/subvault/config.yaml`)
	w.macro("SH", "SYNOPSIS")
	w.raw(`.I /etc/subvault/config.yaml`)
	w.macro("SH", "DESCRIPTION")
	intro, sections := splitMarkdown(md)
	writeMarkdown(&w, intro)
	writeMarkdown(&w, sections)
	w.macro("SH", "SEE ALSO")
	w.raw(manSeeAlso5)
	return w.bytes()
}

// splitExitStatus takes the "Exit status: ..." paragraph out of an about
// text.
func splitExitStatus(about string) (rest, exit string) {
	var keep []string
	for _, p := range strings.Split(about, "\n\n") {
		if s, ok := strings.CutPrefix(p, "Exit status:"); ok {
			exit = strings.TrimSpace(s)
			continue
		}
		keep = append(keep, p)
	}
	return strings.Join(keep, "\n\n"), exit
}

// splitMarkdown parses a page and splits it at its first "##" heading. The
// "#" title goes (the man page has its own), and so does a table of
// contents: a list whose every item starts with a link to the page itself.
func splitMarkdown(md string) (intro, sections []mdBlock) {
	for _, b := range parseMarkdown(md) {
		switch {
		case b.kind == mdHeading && b.level == 1, isContents(b):
			continue
		case b.kind == mdHeading && b.level == 2 || sections != nil:
			sections = append(sections, b)
		default:
			intro = append(intro, b)
		}
	}
	return intro, sections
}

func isContents(b mdBlock) bool {
	if b.kind != mdList {
		return false
	}
	for _, item := range b.items {
		if len(item) == 0 || item[0].kind != mdParagraph || !strings.HasPrefix(item[0].text, "[") {
			return false
		}
		if _, target, ok := cutLink(item[0].text); !ok || !strings.HasPrefix(target, "#") {
			return false
		}
	}
	return true
}

// writeAbout writes the paragraphs of a --help about text: lines indented by
// two spaces are literal, the others are filled. para is the macro that
// starts a paragraph (IP inside a .TP entry); none starts the first.
func writeAbout(w *roffWriter, about, para string) {
	first := true
	start := func() {
		if !first {
			w.macro(para)
		}
		first = false
	}
	for _, p := range strings.Split(about, "\n\n") {
		if strings.TrimSpace(p) == "" {
			continue
		}
		lines := strings.Split(strings.Trim(p, "\n"), "\n")
		for len(lines) > 0 {
			n := 0
			literal := strings.HasPrefix(lines[0], "  ")
			for n < len(lines) && strings.HasPrefix(lines[n], "  ") == literal {
				n++
			}
			start()
			if literal {
				w.literal(lines[:n])
			} else {
				text := strings.Join(lines[:n], "\n")
				if s, ok := strings.CutPrefix(text, "Exit status:"); ok {
					w.text(`\fBExit status:\fR` + roffText(s))
				} else {
					w.text(roffText(text))
				}
			}
			lines = lines[n:]
		}
	}
}

func writeFlags(w *roffWriter, flags []helpFlag) {
	for _, f := range flags {
		w.macro("TP")
		tag := `\fB` + roffCode(flagSpelling(f.name)) + `\fR`
		if f.arg != "" {
			tag += ` \fI` + roffCode(f.arg) + `\fR`
		}
		w.raw(tag)
		w.text(roffText(f.usage))
	}
}

// flagSpelling writes a flag the way the synopses do: -f, --config (the flag
// package takes one dash or two).
func flagSpelling(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// synopsisRoff sets "subvault NAME SYNOPSIS" the man way: the command and
// literal words bold, placeholders (words in capitals) italic, brackets and
// bars roman.
func synopsisRoff(name, synopsis string) string {
	s := `\fB` + roffCode(name) + `\fR`
	if synopsis == "" {
		return s
	}
	var b strings.Builder
	isWord := func(r rune) bool { return r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }
	for i := 0; i < len(synopsis); {
		r, size := utf8.DecodeRuneInString(synopsis[i:])
		if !isWord(r) {
			b.WriteString(roffCode(string(r)))
			i += size
			continue
		}
		j := i
		for j < len(synopsis) {
			r, size := utf8.DecodeRuneInString(synopsis[j:])
			if !isWord(r) {
				break
			}
			j += size
		}
		word := synopsis[i:j]
		font := "B"
		if strings.ToUpper(word) == word && strings.ToLower(word) != word {
			font = "I"
		}
		b.WriteString(`\f` + font + roffCode(word) + `\fR`)
		i = j
	}
	return s + " " + b.String()
}

// roffWriter collects the lines of a page.
type roffWriter struct{ b strings.Builder }

func (w *roffWriter) bytes() []byte { return []byte(w.b.String()) }

// raw writes roff as it is.
func (w *roffWriter) raw(s string) {
	w.b.WriteString(s)
	w.b.WriteByte('\n')
}

func (w *roffWriter) macro(name string, args ...string) {
	w.b.WriteString("." + name)
	for _, a := range args {
		if strings.ContainsAny(a, ` "`) {
			a = `"` + strings.ReplaceAll(a, `"`, `""`) + `"`
		}
		w.b.WriteString(" " + a)
	}
	w.b.WriteByte('\n')
}

// text writes escaped, filled text: one output line per input line, without
// the blank lines and leading blanks that would break the filling, and none
// that roff would take for a request.
func (w *roffWriter) text(s string) {
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		w.b.WriteString(protectLine(line))
		w.b.WriteByte('\n')
	}
}

// literal writes lines as they are, unfilled.
func (w *roffWriter) literal(lines []string) {
	w.macro("nf")
	for _, line := range lines {
		w.b.WriteString(protectLine(roffCode(strings.TrimRight(line, " \t"))))
		w.b.WriteByte('\n')
	}
	w.macro("fi")
}

// protectLine keeps a text line that starts with a control character from
// being read as a request.
func protectLine(line string) string {
	if strings.HasPrefix(line, ".") || strings.HasPrefix(line, "'") {
		return `\&` + line
	}
	return line
}

// roffText escapes prose: backslashes, characters beyond ASCII, and the
// hyphens of words that start with one (options such as --config), which
// must stay ASCII minus signs to be typed back.
func roffText(s string) string {
	var b strings.Builder
	wordStart := true
	inOption := false
	for _, r := range s {
		switch {
		case r == '-' && (wordStart || inOption):
			b.WriteString(`\-`)
			inOption = true
		default:
			inOption = inOption && !unicode.IsSpace(r)
			writeRoffRune(&b, r)
		}
		wordStart = unicode.IsSpace(r) || strings.ContainsRune(`(["'/|=`, r)
	}
	return b.String()
}

// roffCode escapes code: as roffText, and every hyphen a minus sign.
func roffCode(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r == '-' {
			b.WriteString(`\-`)
			continue
		}
		writeRoffRune(&b, r)
	}
	return b.String()
}

// roffCodeSpan escapes inline code, whose spaces at its ends or in a row
// count (`: `), as roffCode; roff would drop or break them.
func roffCodeSpan(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != ' ' {
			j := strings.IndexByte(s[i:], ' ')
			if j < 0 {
				j = len(s) - i
			}
			b.WriteString(roffCode(s[i : i+j]))
			i += j - 1
			continue
		}
		if i == 0 || i == len(s)-1 || s[i-1] == ' ' || s[i+1] == ' ' {
			b.WriteString(`\ `)
		} else {
			b.WriteByte(' ')
		}
	}
	return b.String()
}

func writeRoffRune(b *strings.Builder, r rune) {
	switch {
	case r == '\\':
		b.WriteString(`\e`)
	case r == '\t':
		b.WriteString("        ")
	case r > unicode.MaxASCII:
		fmt.Fprintf(b, `\[u%04X]`, r)
	default:
		b.WriteRune(r)
	}
}

// The Markdown subset docs/*.md use: headings, paragraphs, fenced code,
// bullet and numbered lists (nested, with paragraphs and code inside),
// pipe tables; inline `code`, **bold**, *emphasis*, [links](target) and
// backslash escapes.

type mdKind int

const (
	mdHeading mdKind = iota
	mdParagraph
	mdCode
	mdList
	mdTable
)

type mdBlock struct {
	kind    mdKind
	level   int         // heading
	text    string      // heading, paragraph: inline Markdown, lines joined by \n
	lines   []string    // code
	ordered bool        // list
	start   int         // ordered list: the first number
	items   [][]mdBlock // list
	rows    [][]string  // table: the header, then the body; cells inline Markdown
}

func parseMarkdown(src string) []mdBlock {
	return parseBlocks(strings.Split(strings.ReplaceAll(src, "\r\n", "\n"), "\n"))
}

func parseBlocks(lines []string) []mdBlock {
	var blocks []mdBlock
	for i := 0; i < len(lines); {
		line := lines[i]
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
			i++
		case fenceOf(line) != "":
			var b mdBlock
			b, i = parseFence(lines, i)
			blocks = append(blocks, b)
		case headingLevel(line) > 0:
			level := headingLevel(line)
			text := strings.TrimSpace(strings.TrimLeft(trimmed, "#"))
			text = strings.TrimSpace(strings.TrimRight(text, "#"))
			blocks = append(blocks, mdBlock{kind: mdHeading, level: level, text: text})
			i++
		case listMarkerOf(line) != nil:
			var b mdBlock
			b, i = parseList(lines, i)
			blocks = append(blocks, b)
		case isTableStart(lines, i):
			b := mdBlock{kind: mdTable, rows: [][]string{splitRow(line)}}
			for i += 2; i < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[i]), "|"); i++ {
				b.rows = append(b.rows, splitRow(lines[i]))
			}
			blocks = append(blocks, b)
		default:
			var text []string
			for ; i < len(lines) && strings.TrimSpace(lines[i]) != "" && (len(text) == 0 || !startsBlock(lines, i)); i++ {
				text = append(text, strings.TrimSpace(lines[i]))
			}
			blocks = append(blocks, mdBlock{kind: mdParagraph, text: strings.Join(text, "\n")})
		}
	}
	return blocks
}

func startsBlock(lines []string, i int) bool {
	return fenceOf(lines[i]) != "" || headingLevel(lines[i]) > 0 || listMarkerOf(lines[i]) != nil || isTableStart(lines, i)
}

func indentOf(line string) int { return len(line) - len(strings.TrimLeft(line, " ")) }

// fenceOf returns the fence a line opens (``` or ~~~, or longer), or "".
func fenceOf(line string) string {
	if indentOf(line) > 3 {
		return ""
	}
	t := strings.TrimLeft(line, " ")
	for _, c := range []string{"`", "~"} {
		n := len(t) - len(strings.TrimLeft(t, c))
		if n >= 3 {
			return strings.Repeat(c, n)
		}
	}
	return ""
}

func parseFence(lines []string, i int) (mdBlock, int) {
	fence, indent := fenceOf(lines[i]), indentOf(lines[i])
	b := mdBlock{kind: mdCode}
	for i++; i < len(lines); i++ {
		t := strings.TrimSpace(lines[i])
		if strings.HasPrefix(t, fence) && strings.Trim(t, fence[:1]) == "" && indentOf(lines[i]) <= 3 {
			return b, i + 1
		}
		line := lines[i]
		line = line[min(indent, indentOf(line)):]
		b.lines = append(b.lines, line)
	}
	return b, i
}

func headingLevel(line string) int {
	if indentOf(line) > 3 {
		return 0
	}
	t := strings.TrimLeft(line, " ")
	n := len(t) - len(strings.TrimLeft(t, "#"))
	if n < 1 || n > 6 || (len(t) > n && t[n] != ' ') {
		return 0
	}
	return n
}

type listMarker struct {
	ordered bool
	char    byte // the bullet, or the delimiter after the number
	number  int
	content int // the column the item's text starts at
	text    string
}

func listMarkerOf(line string) *listMarker {
	indent := indentOf(line)
	if indent > 3 {
		return nil
	}
	t := line[indent:]
	m := &listMarker{}
	n := 0
	switch {
	case t != "" && strings.ContainsRune("-*+", rune(t[0])):
		m.char, n = t[0], 1
	default:
		for n < len(t) && n < 9 && t[n] >= '0' && t[n] <= '9' {
			n++
		}
		if n == 0 || n >= len(t) || (t[n] != '.' && t[n] != ')') {
			return nil
		}
		m.ordered, m.char = true, t[n]
		m.number, _ = strconv.Atoi(t[:n])
		n++
	}
	if n < len(t) && t[n] != ' ' {
		return nil
	}
	rest := t[n:]
	spaces := len(rest) - len(strings.TrimLeft(rest, " "))
	if spaces == 0 || spaces > 4 {
		spaces = 1
	}
	if len(rest) < spaces {
		return nil // a bare marker: not an item we need
	}
	m.content = indent + n + spaces
	m.text = rest[spaces:]
	return m
}

func parseList(lines []string, i int) (mdBlock, int) {
	first := listMarkerOf(lines[i])
	b := mdBlock{kind: mdList, ordered: first.ordered, start: first.number}
	for i < len(lines) {
		m := listMarkerOf(lines[i])
		if m == nil || m.ordered != first.ordered || m.char != first.char {
			break
		}
		item := []string{m.text}
		for i++; i < len(lines); i++ {
			line := lines[i]
			if strings.TrimSpace(line) == "" {
				j := i
				for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
					j++
				}
				if j == len(lines) || indentOf(lines[j]) < m.content {
					break
				}
				item = append(item, "")
				continue
			}
			if indentOf(line) >= m.content {
				item = append(item, line[m.content:])
				continue
			}
			// A lazy continuation of the item's paragraph.
			if item[len(item)-1] != "" && !startsBlock(lines, i) {
				item = append(item, strings.TrimSpace(line))
				continue
			}
			break
		}
		b.items = append(b.items, parseBlocks(item))
		j := i
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		if j < len(lines) {
			if next := listMarkerOf(lines[j]); next != nil && next.ordered == first.ordered && next.char == first.char {
				i = j
				continue
			}
		}
		break
	}
	return b, i
}

func isTableStart(lines []string, i int) bool {
	if i+1 >= len(lines) || !strings.HasPrefix(strings.TrimSpace(lines[i]), "|") {
		return false
	}
	sep := splitRow(lines[i+1])
	for _, cell := range sep {
		if strings.Trim(cell, ":-") != "" || !strings.Contains(cell, "-") {
			return false
		}
	}
	return len(sep) > 0
}

// splitRow splits a table row at its unescaped pipes.
func splitRow(line string) []string {
	t := strings.TrimSpace(line)
	t = strings.TrimPrefix(t, "|")
	if strings.HasSuffix(t, "|") && !strings.HasSuffix(t, `\|`) {
		t = t[:len(t)-1]
	}
	var cells []string
	var cell strings.Builder
	for i := 0; i < len(t); i++ {
		switch {
		case t[i] == '\\' && i+1 < len(t) && t[i+1] == '|':
			cell.WriteByte('|')
			i++
		case t[i] == '|':
			cells = append(cells, strings.TrimSpace(cell.String()))
			cell.Reset()
		default:
			cell.WriteByte(t[i])
		}
	}
	return append(cells, strings.TrimSpace(cell.String()))
}

// markdownToRoff converts a Markdown text to man(7) roff, headings "#" and
// "##" as .SH, deeper ones as .SS.
func markdownToRoff(md string) string {
	var w roffWriter
	writeMarkdown(&w, parseMarkdown(md))
	return w.b.String()
}

// writeMarkdown writes blocks at the current left margin, each in its own
// paragraph.
func writeMarkdown(w *roffWriter, blocks []mdBlock) { writeBlocks(w, blocks, false) }

// writeBlocks writes blocks; broken says whether the first one needs a
// paragraph break of its own (it follows text), and a block right after a
// heading never does.
func writeBlocks(w *roffWriter, blocks []mdBlock, broken bool) {
	for i, b := range blocks {
		if b.kind != mdHeading && (i > 0 && blocks[i-1].kind != mdHeading || i == 0 && broken) {
			w.macro("PP")
		}
		switch b.kind {
		case mdHeading:
			if b.level <= 2 {
				w.macro("SH")
				w.text(mdInline(upperOutsideCode(b.text), "B"))
			} else {
				w.macro("SS")
				w.text(mdInline(b.text, "B"))
			}
		case mdParagraph:
			w.text(mdInline(b.text, "R"))
		case mdCode:
			w.macro("RS", "4")
			w.literal(b.lines)
			w.macro("RE")
		case mdList:
			writeList(w, b)
		case mdTable:
			writeTable(w, b)
		}
	}
}

func writeList(w *roffWriter, b mdBlock) {
	width := "2"
	if b.ordered {
		width = "4"
	}
	for n, item := range b.items {
		tag := `\(bu`
		if b.ordered {
			tag = strconv.Itoa(b.start+n) + "."
		}
		w.macro("IP", tag, width)
		rest := item
		if len(item) > 0 && item[0].kind == mdParagraph {
			w.text(mdInline(item[0].text, "R"))
			rest = item[1:]
		}
		if len(rest) > 0 {
			// The item's other blocks, at the margin of its text.
			w.macro("RS", width)
			writeBlocks(w, rest, len(rest) < len(item))
			w.macro("RE")
		}
	}
}

// writeTable sets a table without tbl: one .TP entry per row, tagged by its
// first cell; a two-column row's second cell is the body, wider rows list
// "header: cell" a line each.
func writeTable(w *roffWriter, b mdBlock) {
	header := b.rows[0]
	for _, row := range b.rows[1:] {
		w.macro("TP")
		if len(row) > 0 {
			w.text(mdInline(row[0], "R"))
		}
		for c := 1; c < len(row); c++ {
			if c > 1 {
				w.macro("br")
			}
			cell := mdInline(row[c], "R")
			if len(header) > 2 && c < len(header) {
				cell = `\fI` + mdInline(header[c], "I") + `:\fR ` + cell
			}
			w.text(cell)
		}
	}
}

// upperOutsideCode capitalises a heading but not its code spans, which name
// keys.
func upperOutsideCode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] == '`' {
			if end := codeSpanEnd(s, i); end > 0 {
				b.WriteString(s[i:end])
				i = end
				continue
			}
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(unicode.ToUpper(r))
		i += size
	}
	return b.String()
}

// codeSpanEnd returns the index after the code span that opens at s[i], or 0
// when the backticks there close nothing.
func codeSpanEnd(s string, i int) int {
	n := len(s[i:]) - len(strings.TrimLeft(s[i:], "`"))
	for j := i + n; j < len(s); {
		k := strings.IndexByte(s[j:], '`')
		if k < 0 {
			return 0
		}
		j += k
		m := len(s[j:]) - len(strings.TrimLeft(s[j:], "`"))
		if m == n {
			return j + m
		}
		j += m
	}
	return 0
}

// cutLink parses "[text](target)" at the start of s.
func cutLink(s string) (text, target string, ok bool) {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '`':
			if end := codeSpanEnd(s, i); end > 0 {
				i = end - 1
			}
		case '\\':
			i++
		case '[':
			depth++
		case ']':
			depth--
			if depth == 0 {
				if i+1 >= len(s) || s[i+1] != '(' {
					return "", "", false
				}
				end := strings.IndexByte(s[i+1:], ')')
				if end < 0 {
					return "", "", false
				}
				return s[1:i], s[i+2 : i+1+end], true
			}
		}
	}
	return "", "", false
}

// findCloser returns where delim closes an emphasis opened before s[from],
// skipping code spans and escapes, or -1.
func findCloser(s string, from int, delim string) int {
	for i := from; i < len(s); i++ {
		switch {
		case s[i] == '\\':
			i++
		case s[i] == '`':
			if end := codeSpanEnd(s, i); end > 0 {
				i = end - 1
			}
		case strings.HasPrefix(s[i:], delim) && i > from && s[i-1] != ' ' && s[i-1] != '\n':
			if delim == "*" && strings.HasPrefix(s[i:], "**") {
				i++ // a bold delimiter inside emphasis
				continue
			}
			return i
		}
	}
	return -1
}

// isASCIIPunct reports whether Markdown lets a backslash escape c.
func isASCIIPunct(c byte) bool {
	return c < utf8.RuneSelf && (unicode.IsPunct(rune(c)) || unicode.IsSymbol(rune(c)))
}

var (
	boldOf   = map[string]string{"R": "B", "I": "BI", "B": "B", "BI": "BI"}
	italicOf = map[string]string{"R": "I", "B": "BI", "I": "I", "BI": "BI"}
)

func fontEscape(font string) string {
	if len(font) == 2 {
		return `\f(` + font
	}
	return `\f` + font
}

// mdInline converts inline Markdown to roff in the given font (R, B, I or
// BI), which it returns to after each change.
func mdInline(s, font string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s) && isASCIIPunct(s[i+1]):
			b.WriteString(roffCode(s[i+1 : i+2]))
			i += 2
		case c == '`':
			end := codeSpanEnd(s, i)
			if end == 0 {
				n := len(s[i:]) - len(strings.TrimLeft(s[i:], "`"))
				b.WriteString(s[i : i+n])
				i += n
				continue
			}
			n := len(s[i:]) - len(strings.TrimLeft(s[i:], "`"))
			code := strings.ReplaceAll(s[i+n:end-n], "\n", " ")
			if len(code) > 1 && code[0] == ' ' && code[len(code)-1] == ' ' && strings.Trim(code, " ") != "" {
				code = code[1 : len(code)-1]
			}
			b.WriteString(fontEscape(boldOf[font]) + roffCodeSpan(code) + fontEscape(font))
			i = end
		case strings.HasPrefix(s[i:], "**") && i+2 < len(s) && s[i+2] != ' ':
			j := findCloser(s, i+2, "**")
			if j < 0 {
				b.WriteString("**")
				i += 2
				continue
			}
			inner := boldOf[font]
			b.WriteString(fontEscape(inner) + mdInline(s[i+2:j], inner) + fontEscape(font))
			i = j + 2
		case c == '*' && i+1 < len(s) && s[i+1] != ' ' && s[i+1] != '*':
			j := findCloser(s, i+1, "*")
			if j < 0 {
				b.WriteByte('*')
				i++
				continue
			}
			inner := italicOf[font]
			b.WriteString(fontEscape(inner) + mdInline(s[i+1:j], inner) + fontEscape(font))
			i = j + 1
		case c == '[':
			text, target, ok := cutLink(s[i:])
			if !ok {
				b.WriteByte('[')
				i++
				continue
			}
			b.WriteString(mdInline(text, font))
			i += len(text) + len(target) + 4
		default:
			j := i + 1
			for j < len(s) && !strings.ContainsRune("\\`*[", rune(s[j])) {
				j++
			}
			b.WriteString(roffText(s[i:j]))
			i = j
		}
	}
	return b.String()
}

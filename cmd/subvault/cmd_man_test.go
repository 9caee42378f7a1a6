package main

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/subvault/subvault/internal/testutil"
)

var updateMan = flag.Bool("update", false, "rewrite docs/man with what the generator makes now")

const manDir = "../../docs/man"

func generatedManPages(t *testing.T) map[string][]byte {
	t.Helper()
	pages, err := manPages("../../docs")
	if err != nil {
		t.Fatal(err)
	}
	return pages
}

// The committed pages are what the generator makes from today's --help
// texts and docs: a changed help text or doc without `make man` fails here.
func TestManPages(t *testing.T) {
	pages := generatedManPages(t)
	for _, name := range manPageNames {
		path := filepath.Join(manDir, name)
		if *updateMan {
			if err := os.WriteFile(path, pages[name], 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		committed, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%v; run make man (or go test ./cmd/subvault -run TestManPages -update)", err)
			continue
		}
		if !bytes.Equal(committed, pages[name]) {
			t.Errorf("docs/man/%s is stale: %s; run make man (or go test ./cmd/subvault -run TestManPages -update)", name, firstDifference(string(committed), string(pages[name])))
		}
	}
}

func firstDifference(committed, generated string) string {
	a, b := strings.Split(committed, "\n"), strings.Split(generated, "\n")
	for i := 0; i < len(a) || i < len(b); i++ {
		var la, lb string
		if i < len(a) {
			la = a[i]
		}
		if i < len(b) {
			lb = b[i]
		}
		if la != lb || i >= len(a) || i >= len(b) {
			return "line " + strconv.Itoa(i+1) + " is " + quoteLine(la, i < len(a)) + ", the generator writes " + quoteLine(lb, i < len(b))
		}
	}
	return "they differ"
}

func quoteLine(s string, exists bool) string {
	if !exists {
		return "(end of file)"
	}
	return `"` + s + `"`
}

// Each page formats without a single groff warning, alone and through man
// (which adds preconv and the user's width), the way `man -l` shows it.
func TestManPagesRenderWithoutWarnings(t *testing.T) {
	groff := testutil.RequireCommand(t, "groff", "groff-base")
	man := testutil.RequireCommand(t, "man", "man-db")
	dir := t.TempDir()
	for name, page := range generatedManPages(t) {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, page, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, argv := range [][]string{
			{groff, "-man", "-Tutf8", "-ww", "-z", path},
			{man, "--warnings=w", "-l", path},
		} {
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Env = append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil || stderr.Len() > 0 {
				t.Errorf("%s: %s: %v\n%s", name, strings.Join(argv, " "), err, stderr.String())
			}
			if argv[0] == man && !strings.Contains(stdout.String(), "SEE ALSO") {
				t.Errorf("%s: man -l shows no SEE ALSO:\n%s", name, stdout.String())
			}
		}
	}
}

// Every visible command has its entry under COMMANDS in subvault(1), with
// every flag its --help lists; hidden ones have none.
func TestManPageListsEveryCommandAndFlag(t *testing.T) {
	page := string(generatedManPages(t)["subvault.1"])
	_, section, ok := strings.Cut(page, "\n.SH COMMANDS\n")
	if !ok {
		t.Fatal("subvault.1 has no COMMANDS section")
	}
	section, _, _ = strings.Cut(section, "\n.SH ")
	entries := map[string]string{} // the name as set in roff -> its entry
	for _, e := range strings.Split(section, "\n.TP\n\\fBsubvault\\fR \\fB")[1:] {
		name, _, _ := strings.Cut(e, `\fR`)
		entries[name] = e
	}
	flagLine := regexp.MustCompile(`(?m)^  -(\S+)`)
	for _, c := range commands() {
		name := strings.ReplaceAll(c.Name(), "-", `\-`)
		if c.Name() == "run" {
			name = "run backup"
		}
		entry, listed := entries[name]
		if c.Hidden {
			if listed {
				t.Errorf("hidden command %q is in subvault(1)", c.Name())
			}
			continue
		}
		if !listed {
			t.Errorf("command %q has no entry under COMMANDS in subvault(1)", c.Name())
			continue
		}
		args := []string{c.Name(), "--help"}
		if c.Name() == "run" {
			args = []string{"run", "backup", "--help"}
		}
		_, help, _ := runCLI(t, args...)
		if !strings.Contains(help, "\nOptions:\n") {
			continue
		}
		for _, m := range flagLine.FindAllStringSubmatch(help, -1) {
			want := `\fB\-\-` + strings.ReplaceAll(m[1], "-", `\-`) + `\fR`
			if len(m[1]) == 1 {
				want = `\fB\-` + m[1] + `\fR`
			}
			if !strings.Contains(entry, "\n.TP\n"+want) {
				t.Errorf("subvault(1), command %s: no entry for its flag -%s (want a .TP tagged %s)", c.Name(), m[1], want)
			}
		}
	}
}

// The fixed EXAMPLES name only commands that exist.
func TestManExamplesNameRealCommands(t *testing.T) {
	visible := map[string]bool{}
	for _, c := range commands() {
		visible[c.Name()] = !c.Hidden
	}
	for _, line := range strings.Split(manExamples, "\n") {
		fields := strings.Fields(strings.ReplaceAll(line, `\-`, "-"))
		if len(fields) >= 2 && fields[0] == "subvault" && !visible[fields[1]] {
			t.Errorf("EXAMPLES in subvault(1): %q names no visible command", line)
		}
	}
}

func TestParseHelp(t *testing.T) {
	text := "Usage: subvault logs [PLAN] [-f]\n\nShows it.\n\n  subvault logs home\n\nExit status: 0 fine.\n\nOptions:\n" +
		"  -f\tfollow\n  -job ID\n    \tonly job ID\n    \tsecond line (default \"x\")\n  -quiet\n    \tsay less\n"
	h, err := parseHelp("logs", text)
	if err != nil {
		t.Fatal(err)
	}
	if h.synopsis != "[PLAN] [-f]" || h.about != "Shows it.\n\n  subvault logs home\n\nExit status: 0 fine." {
		t.Errorf("synopsis %q, about %q", h.synopsis, h.about)
	}
	want := []helpFlag{{"f", "", "follow"}, {"job", "ID", "only job ID\nsecond line (default \"x\")"}, {"quiet", "", "say less"}}
	if len(h.flags) != len(want) {
		t.Fatalf("flags %q, want %q", h.flags, want)
	}
	for i := range want {
		if h.flags[i] != want[i] {
			t.Errorf("flag %d: %q, want %q", i, h.flags[i], want[i])
		}
	}
	if _, err := parseHelp("logs", "usage: logs\n"); err == nil {
		t.Error("a help without \"Usage: subvault logs\" parsed")
	}
	if _, err := parseHelp("log", "Usage: subvault logs\n"); err == nil {
		t.Error("the help of logs parsed as that of log")
	}
}

func TestMarkdownToRoff(t *testing.T) {
	md := "# Title\n\n" +
		"## The `plans` key\n\n" +
		".starts with a dot,\n'and a quote, a back\\slash, `C:\\dir`, `--opt` and **bold `code`**,\n" +
		"*emphasis*, a [link](https://example.org) and [a `key`](#key); 3 * 4 and `` ` ``.\n\n" +
		"```yaml\n.hidden: \\n\n  - x\n```\n\n" +
		"| key | type | rules |\n| --- | --- | --- |\n| `a` | string | ≥ 0, with \\| a pipe |\n| `b` | list | **required** |\n\n" +
		"| variable | value |\n| --- | --- |\n| `X` | the x |\n\n" +
		"- one\n  more of one\n\n  ```\n  code in one\n  ```\n- two\n\n" +
		"1. first\n   - nested\n2. second\n\n### Deeper\n\nlast\n"
	want := `.SH
TITLE
.SH
THE \fBplans\fB KEY
\&.starts with a dot,
\&'and a quote, a back\eslash, \fBC:\edir\fR, \fB\-\-opt\fR and \fBbold \fBcode\fB\fR,
\fIemphasis\fR, a link and a \fBkey\fR; 3 * 4 and \fB` + "`" + `\fR.
.PP
.RS 4
.nf
\&.hidden: \en
  \- x
.fi
.RE
.PP
.TP
\fBa\fR
\fItype:\fR string
.br
\fIrules:\fR \[u2265] 0, with | a pipe
.TP
\fBb\fR
\fItype:\fR list
.br
\fIrules:\fR \fBrequired\fR
.PP
.TP
\fBX\fR
the x
.PP
.IP \(bu 2
one
more of one
.RS 2
.PP
.RS 4
.nf
code in one
.fi
.RE
.RE
.IP \(bu 2
two
.PP
.IP 1. 4
first
.RS 4
.PP
.IP \(bu 2
nested
.RE
.IP 2. 4
second
.SS
Deeper
last
`
	got := markdownToRoff(md)
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s\n%s", got, want, firstDifference(got, want))
	}
	if !strings.HasPrefix(markdownToRoff("a `: ` b"), `a \fB:\ \fR b`) {
		t.Errorf("a code span's end space is lost: %q", markdownToRoff("a `: ` b"))
	}
}

// Help text turns into roff with its literal lines kept and nothing a
// request could be made of.
func TestAboutToRoff(t *testing.T) {
	var w roffWriter
	writeAbout(&w, "Runs --fast.\n.dot and \\back.\n\n  subvault x --y\n  .z\n\nExit status: 0 ok.", "IP")
	want := "Runs \\-\\-fast.\n\\&.dot and \\eback.\n.IP\n.nf\n  subvault x \\-\\-y\n  .z\n.fi\n.IP\n\\fBExit status:\\fR 0 ok.\n"
	if got := w.b.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if got := synopsisRoff("run backup", "PLAN [--bus system|ADDRESS]..."); got != `\fBrun backup\fR \fIPLAN\fR [\fB\-\-bus\fR \fBsystem\fR|\fIADDRESS\fR]...` {
		t.Errorf("synopsis: %s", got)
	}
}

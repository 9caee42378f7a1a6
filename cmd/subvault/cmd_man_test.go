package main

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cpuguy83/go-md2man/v2/md2man"

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
	for _, e := range strings.Split(section, "\n.TP\n\\fBsubvault ")[1:] {
		name, _, _ := strings.Cut(e, `\fP`)
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
			want := `\fB\-\-` + strings.ReplaceAll(m[1], "-", `\-`) + `\fP`
			if len(m[1]) == 1 {
				want = `\fB\-` + m[1] + `\fP`
			}
			if !strings.Contains(entry, "\n.IP \\(bu 2\n"+want) {
				t.Errorf("subvault(1), command %s: no entry for its flag -%s (want an item that starts with %s)", c.Name(), m[1], want)
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
		fields := strings.Fields(line)
		if len(fields) >= 2 && fields[0] == "subvault" && !visible[fields[1]] {
			t.Errorf("EXAMPLES in subvault(1): %q names no visible command", line)
		}
	}
}

// A --help text becomes Markdown that says the same: nothing in it is
// taken for markup, its indented lines stay as they are.
func TestHelpToMarkdown(t *testing.T) {
	t.Parallel()
	got := markdownOfHelp("Runs *all* of [it], a_b, `x` and <y> | z;\n- not a list,\n1. nor this, # nor this.\n\n  subvault x --y\n  .z\n\nExit status: 0 ok.")
	want := []string{
		"Runs \\*all\\* of \\[it\\], a\\_b, \\`x\\` and \\<y\\> \\| z;\n\\- not a list,\n1\\. nor this, # nor this.",
		"```\n  subvault x --y\n  .z\n```",
		"**Exit status:** 0 ok.",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	for synopsis, want := range map[string]string{
		"subvault run backup PLAN [--config PATH] [--verbose]": "**subvault run backup** *PLAN* \\[**--config** *PATH*\\] \\[**--verbose**\\]",
		"subvault version":                     "**subvault version**",
		"subvault completion bash|zsh|fish":    "**subvault completion** **bash**\\|**zsh**\\|**fish**",
		"subvault logs [PLAN] [-- OPTIONS]...": "**subvault logs** \\[*PLAN*\\] \\[**--** *OPTIONS*\\]...",
	} {
		if got := synopsisMarkdown(synopsis); got != want {
			t.Errorf("synopsis %q: %s, want %s", synopsis, got, want)
		}
	}
	// And go-md2man reads it back as the text.
	page := string(md2man.Render([]byte(strings.Join(got, "\n\n"))))
	for _, text := range []string{"Runs *all* of [it], a_b, `x` and <y> | z;", "\n- not a list,", "1. nor this", ".EX\n  subvault x --y"} {
		if !strings.Contains(strings.ReplaceAll(page, `\&`, ""), text) {
			t.Errorf("the page does not hold %q:\n%s", text, page)
		}
	}
}

// A page of docs/ loses what a man page has otherwise (title, contents,
// links into the documentation) and its tables become lists.
func TestDocsToManMarkdown(t *testing.T) {
	t.Parallel()
	md := "# Title\n\nIntro with [a link](other.md), [an anchor](#key) and [a site](https://example.org).\n\n" +
		"- [First](#first)\n- [`Second`](#second): two\n\n" +
		"## The `plans` key\n\n| key | type | rules |\n| --- | --- | --- |\n| `a` | string | at least \\| one |\n| `b\\|c` | list | [required](#r) |\n\n" +
		"| variable | value |\n| --- | --- |\n| `X` | the x |\n\n" +
		"1. First step:\n\n   ```sh\n   do it\n   ```\n\n2. Then [this](x.md).\n\n### Deeper\n\nlast\n"
	intro, sections := splitMarkdown(md)
	if want := "Intro with a link, an anchor and [a site](https://example.org)."; intro != want {
		t.Errorf("intro %q, want %q", intro, want)
	}
	want := "## THE `plans` KEY\n\n" +
		"`a`\n: *type:* string  \n  *rules:* at least | one\n\n" +
		"`b|c`\n: *type:* list  \n  *rules:* required\n\n" +
		"`X`\n: the x\n\n" +
		"1\\. First step:\n\n```sh\ndo it\n```\n\n2\\. Then this.\n\n### Deeper\n\nlast"
	if sections != want {
		t.Errorf("sections:\n%s\nwant:\n%s\n%s", sections, want, firstDifference(sections, want))
	}
}

// What the libraries leave undone: no date, the layout, minus signs and
// ASCII only.
func TestManPageFinished(t *testing.T) {
	t.Parallel()
	page := ".nh\n.TH \"X\" \"1\" \"" + manDate.Format("Jan 2006") + "\" \"subvault\" \"User Commands\"\n.SH NAME\nx \\- set-default and \\\\-n \u2265 1\n.IP \"  1.\" 5\n"
	want := ".nh\n.TH \"X\" \"1\" \"\" \"subvault\" \"User Commands\"\n" + manLayout + ".SH NAME\nx \\- set\\-default and \\\\\\-n \\[u2265] 1\n.IP \"  1.\" 5\n"
	if got := string(finished([]byte(page))); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

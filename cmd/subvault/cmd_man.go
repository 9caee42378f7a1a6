package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cpuguy83/go-md2man/v2/md2man"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
)

// The man pages are generated, never edited, and committed: subvault(1)
// by cobra's doc generator from the commands (their synopsis, --help text
// and options), subvault-daemon(8) and subvault.yaml(5) by go-md2man from
// docs/daemon.md and docs/configuration.md. `make man` writes them to
// docs/man; TestManPages fails when the committed ones are stale. The
// text is Markdown on the way: the help texts are turned into it here
// (markdownOfHelp), roff is the libraries' business.

// manPageNames are the files "subvault man" writes, in this order.
var manPageNames = []string{"subvault.1", "subvault-daemon.8", "subvault.yaml.5"}

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
// sources of the daemon's and the configuration's.
func manPages(docsDir string) (map[string][]byte, error) {
	root := newRootCommand()
	daemon, _, err := root.Find([]string{"daemon"})
	if err != nil || daemon == root {
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
	page1, err := manPage1(root)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		"subvault.1":        page1,
		"subvault-daemon.8": manPage8(daemon, string(daemonMD)),
		"subvault.yaml.5":   manPage5(string(configMD)),
	}, nil
}

// manDate is the date cobra's generator is given, and finished takes out:
// a page carries none, so that it changes only when its text does.
var manDate = time.Date(2000, time.January, 1, 0, 0, 0, 0, time.UTC)

// manPage1 is subvault(1): cobra's doc.GenMan of a command that stands
// for the whole program, whose synopsis is every command's and whose
// description holds the commands, by group, and the sections every page
// of a program has.
func manPage1(root *cobra.Command) ([]byte, error) {
	groups := visibleCommands(root)
	var synopses []string
	for _, g := range groups {
		for _, c := range g.commands {
			synopses = append(synopses, useLine(c))
		}
	}
	var long strings.Builder
	long.WriteString(manDescription + "\n\n# COMMANDS\n\n")
	for _, g := range groups {
		fmt.Fprintf(&long, "### %s\n\n", g.title)
		for _, c := range g.commands {
			long.WriteString(commandMarkdown(c) + "\n")
		}
	}
	for _, s := range []string{manJSON, manExitStatus, manEnvironment, manFiles, manExamples, manSeeAlso1} {
		long.WriteString("\n" + s + "\n")
	}
	page := &cobra.Command{
		Use:               strings.Join(synopses, "  \n"), // a line break after each
		Short:             root.Short,
		Long:              long.String(),
		DisableAutoGenTag: true,
	}
	// The program's own options (--help, --version) are in the
	// description: no OPTIONS section of cobra's --help.
	page.Flags().Bool("help", false, "")
	_ = page.Flags().MarkHidden("help")
	var b bytes.Buffer
	header := &doc.GenManHeader{Title: "SUBVAULT", Section: "1", Date: &manDate, Source: "subvault", Manual: "User Commands"}
	if err := doc.GenMan(page, header, &b); err != nil {
		return nil, fmt.Errorf("cannot make subvault(1): %w", err)
	}
	return finished(b.Bytes()), nil
}

// finished is a page as the libraries wrote it, with what they do not do:
//   - no date on the .TH line (cobra's generator writes manDate there), so
//     that a page changes only when its text does;
//   - after .TH, which turns hyphenation back on after go-md2man's .nh: no
//     hyphenation and a ragged right margin, as subvault's pages have had;
//   - on text lines, "-" as \- (a minus: options and names like
//     --set-default are not broken at their hyphens), and every character
//     beyond ASCII as \[uXXXX]: groff reads a page as Latin-1 unless
//     preconv converts it first (man does, groff -k does), and go-md2man
//     leaves UTF-8 as it is.
func finished(page []byte) []byte {
	var b strings.Builder
	for _, line := range strings.SplitAfter(string(page), "\n") {
		request := strings.HasPrefix(line, ".") || strings.HasPrefix(line, "'")
		if strings.HasPrefix(line, ".TH ") {
			b.WriteString(strings.Replace(line, `"`+manDate.Format("Jan 2006")+`"`, `""`, 1) + manLayout)
			continue
		}
		escaped := false // the rune after a backslash is the escape's own
		for _, r := range line {
			after := escaped
			escaped = r == '\\' && !escaped
			switch {
			case r == '-' && !request && !after:
				b.WriteString(`\-`)
			case r >= utf8.RuneSelf:
				fmt.Fprintf(&b, `\[u%04X]`, r)
			default:
				b.WriteRune(r)
			}
		}
	}
	return []byte(b.String())
}

const manLayout = ".nr HY 0\n.nh\n.ad l\n"

type commandGroup struct {
	title    string
	commands []*cobra.Command
}

// visibleCommands are the commands subvault(1) documents, by group and
// name as --help lists them; run is documented by its one subcommand, run
// backup.
func visibleCommands(root *cobra.Command) []commandGroup {
	var groups []commandGroup
	for _, g := range root.Groups() {
		var in []*cobra.Command
		for _, c := range root.Commands() {
			if c.GroupID != g.ID || c.Hidden {
				continue
			}
			if subs := c.Commands(); len(subs) == 1 {
				c = subs[0]
			}
			in = append(in, c)
		}
		groups = append(groups, commandGroup{title: g.Title, commands: in})
	}
	return groups
}

// commandMarkdown is a command's entry under COMMANDS: its synopsis, then
// its --help text and options, as an item of a definition list.
func commandMarkdown(c *cobra.Command) string {
	var b strings.Builder
	b.WriteString(synopsisMarkdown(useLine(c)) + "\n")
	// The first paragraph is the definition; the others are indented as
	// its continuation.
	for i, block := range markdownOfHelp(c.Long) {
		if i == 0 {
			b.WriteString(": " + indentLines(block, "  ") + "\n\n")
		} else {
			b.WriteString("    " + indentLines(block, "    ") + "\n\n")
		}
	}
	if flags := documentedFlags(c.LocalFlags()); len(flags) > 0 {
		b.WriteString("    Options:\n\n")
		for _, f := range flags {
			term, usage := flagMarkdown(f)
			b.WriteString("    - " + term + "  \n" + indentLines(usage, "      ") + "\n")
		}
	}
	return b.String()
}

// indentLines puts indent before every line but the first.
func indentLines(s, indent string) string {
	return strings.ReplaceAll(s, "\n", "\n"+indent)
}

// markdownOfHelp turns a --help text into Markdown blocks: a paragraph
// escaped, lines indented by two spaces as a code block, "Exit status:" in
// bold.
func markdownOfHelp(about string) []string {
	var blocks []string
	for _, p := range strings.Split(strings.TrimSpace(about), "\n\n") {
		lines := strings.Split(strings.Trim(p, "\n"), "\n")
		for len(lines) > 0 {
			literal := strings.HasPrefix(lines[0], "  ")
			n := 0
			for n < len(lines) && strings.HasPrefix(lines[n], "  ") == literal {
				n++
			}
			text := strings.Join(lines[:n], "\n")
			switch {
			case literal:
				blocks = append(blocks, "```\n"+text+"\n```")
			case strings.HasPrefix(text, "Exit status:"):
				blocks = append(blocks, "**Exit status:**"+escapeMarkdown(strings.TrimPrefix(text, "Exit status:")))
			default:
				blocks = append(blocks, escapeMarkdown(text))
			}
			lines = lines[n:]
		}
	}
	return blocks
}

// escapeInline escapes the characters of inline markup, for text that
// does not start a line.
func escapeInline(text string) string {
	var b strings.Builder
	for _, r := range text {
		if strings.ContainsRune(inlineMarkup, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// inlineMarkup are the characters Markdown may take for markup anywhere:
// escapes, code, emphasis, links, HTML, table cells, entities.
const inlineMarkup = "\\`*_[]<>|&"

// escapeMarkdown makes text Markdown that reads as the text: the
// characters of inline markup are escaped everywhere, those that start a
// heading, list, quote or definition only at the start of a line.
func escapeMarkdown(text string) string {
	lines := strings.Split(text, "\n")
	for i, line := range lines {
		var b strings.Builder
		start := true // only spaces so far
		for j, r := range line {
			switch {
			case strings.ContainsRune(inlineMarkup, r),
				start && strings.ContainsRune("#-+:>", r),
				r == '.' && isNumberedItem(line[:j]):
				b.WriteByte('\\')
			}
			b.WriteRune(r)
			start = start && r == ' '
		}
		lines[i] = b.String()
	}
	return strings.Join(lines, "\n")
}

// isNumberedItem says whether a line that goes on with "." after head
// would start a numbered list: head is spaces and digits.
func isNumberedItem(head string) bool {
	digits := strings.TrimLeft(head, " ")
	return digits != "" && strings.Trim(digits, "0123456789") == ""
}

// synopsisMarkdown sets a synopsis the man way: the command and the
// literal words bold, the placeholders (words in capitals) italic,
// brackets and bars roman.
func synopsisMarkdown(synopsis string) string {
	words := strings.Fields(synopsis)
	n := 0
	for n < len(words) && commandWord.MatchString(words[n]) {
		n++
	}
	head := "**" + strings.Join(words[:n], " ") + "**"
	if n == len(words) {
		return head
	}
	return head + " " + styleWords(strings.Join(words[n:], " "))
}

var commandWord = regexp.MustCompile(`^[a-z][a-z-]*$`)

func isPlaceholder(word string) bool {
	return strings.ToUpper(word) == word && strings.ToLower(word) != word
}

// styleWords makes a synopsis's words bold (literal) or italic
// (placeholders), and escapes the rest.
func styleWords(s string) string {
	isWord := func(r rune) bool { return r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }
	var b strings.Builder
	runes := []rune(s)
	for i := 0; i < len(runes); {
		if !isWord(runes[i]) {
			b.WriteString(escapeInline(string(runes[i])))
			i++
			continue
		}
		j := i
		for j < len(runes) && isWord(runes[j]) {
			j++
		}
		word := string(runes[i:j])
		if isPlaceholder(word) {
			b.WriteString("*" + escapeInline(word) + "*")
		} else {
			b.WriteString("**" + escapeInline(word) + "**")
		}
		i = j
	}
	return b.String()
}

// flagMarkdown is an option's term (--name value) and its usage.
func flagMarkdown(f *pflag.Flag) (term, usage string) {
	name, text := pflag.UnquoteUsage(f)
	term = "**" + escapeInline(flagSpelling(f.Name)) + "**"
	if name != "" {
		term += " *" + escapeInline(name) + "*"
	}
	return term, escapeMarkdown(text + defaultText(f))
}

// flagSpelling writes an option the way the synopses do: -f, --config.
func flagSpelling(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// manPage8 is subvault-daemon(8): the daemon command's synopsis, --help
// and options, and docs/daemon.md.
func manPage8(daemon *cobra.Command, md string) []byte {
	about, exit := splitExitStatus(daemon.Long)
	intro, sections := splitMarkdown(md)
	var b strings.Builder
	b.WriteString(`% "SUBVAULT-DAEMON" "8" "" "subvault" "System Administration"` + "\n\n")
	b.WriteString("# NAME\nsubvault-daemon - the subvault backup daemon\n\n")
	b.WriteString("# SYNOPSIS\n" + synopsisMarkdown(useLine(daemon)) + "\n\n")
	b.WriteString("# DESCRIPTION\n" + strings.Join(markdownOfHelp(about), "\n\n") + "\n\n" + intro + "\n\n")
	b.WriteString("# OPTIONS\n")
	for _, f := range documentedFlags(daemon.LocalFlags()) {
		term, usage := flagMarkdown(f)
		b.WriteString(term + "\n: " + indentLines(usage, "  ") + "\n\n")
	}
	b.WriteString(sections + "\n\n")
	if exit != "" {
		b.WriteString("# EXIT STATUS\n" + escapeMarkdown(exit) + "\n\n")
	}
	b.WriteString(manDaemonFiles + "\n\n" + manSeeAlso8 + "\n")
	return finished(md2man.Render([]byte(b.String())))
}

// manPage5 is subvault.yaml(5): docs/configuration.md.
func manPage5(md string) []byte {
	intro, sections := splitMarkdown(md)
	var b strings.Builder
	b.WriteString(`% "SUBVAULT.YAML" "5" "" "subvault" "File Formats"` + "\n\n")
	b.WriteString("# NAME\nsubvault.yaml - the configuration of subvault, /etc/subvault/config.yaml\n\n")
	b.WriteString("# SYNOPSIS\n*/etc/subvault/config.yaml*\n\n")
	b.WriteString("# DESCRIPTION\n" + intro + "\n\n" + sections + "\n\n" + manSeeAlso5 + "\n")
	return finished(md2man.Render([]byte(b.String())))
}

// splitExitStatus takes the "Exit status: ..." paragraph out of a --help
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

var (
	markdownLink  = regexp.MustCompile(`\[([^\]]*)\]\(([^)]*)\)`)
	contentsEntry = regexp.MustCompile(`^\s*[-*] \[[^\]]*\]\(#[^)]*\)`)
)

// splitMarkdown readies a page of docs/ for a man page and splits it at its
// first "##" heading: the "#" title goes (the man page has its own), and
// so does the table of contents (a list whose every line links into the
// page); a "##" heading is a section, written in capitals as man pages
// have them.
func splitMarkdown(md string) (intro, sections string) {
	var in, out, table []string
	fence := ""
	for i, line := range numberedStepsAsParagraphs(strings.Split(md+"\n", "\n")) {
		if trimmed := strings.TrimSpace(line); fence != "" || strings.HasPrefix(trimmed, "```") {
			switch {
			case fence == "":
				fence = trimmed[:strings.IndexFunc(trimmed+"x", func(r rune) bool { return r != '`' })]
			case trimmed == fence:
				fence = ""
			}
			in, out = appendTo(in, out, line)
			continue
		}
		switch {
		case i == 0 && strings.HasPrefix(line, "# "), contentsEntry.MatchString(line):
			continue
		case strings.HasPrefix(line, "## "):
			out = append(out, "## "+upperOutsideCode(line[3:]))
			continue
		case strings.HasPrefix(line, "|"):
			table = append(table, localLinksAsText(line))
			continue
		case table != nil:
			in, out = appendTo(in, out, tableAsList(table))
			table = nil
		}
		in, out = appendTo(in, out, localLinksAsText(line))
	}
	return strings.TrimSpace(strings.Join(in, "\n")), strings.TrimSpace(strings.Join(out, "\n"))
}

// numberedStepsAsParagraphs makes a numbered list one of whose items holds
// a code block paragraphs that start with their number: go-md2man's parser
// ends a list at a fenced block inside an item, and numbers each piece
// from 1 again.
func numberedStepsAsParagraphs(lines []string) []string {
	marker := regexp.MustCompile(`^[0-9]+\. `)
	type item struct{ start, end, indent int }
	out := slices.Clone(lines)
	for i := 0; i < len(lines); {
		var list []item
		hasCode := false
		for i < len(lines) {
			m := marker.FindString(lines[i])
			if m == "" {
				break
			}
			end := i + 1
			for end < len(lines) && (lines[end] == "" || strings.HasPrefix(lines[end], strings.Repeat(" ", len(m)))) {
				hasCode = hasCode || strings.HasPrefix(strings.TrimSpace(lines[end]), "```")
				end++
			}
			list = append(list, item{i, end, len(m)})
			i = end
		}
		if len(list) == 0 {
			i++
			continue
		}
		if !hasCode {
			continue
		}
		for _, it := range list {
			out[it.start] = strings.Replace(lines[it.start], ". ", "\\. ", 1)
			for j := it.start + 1; j < it.end; j++ {
				out[j] = strings.TrimPrefix(lines[j], strings.Repeat(" ", it.indent))
			}
		}
	}
	return out
}

// localLinksAsText keeps only the text of a line's links to other pages
// of docs/ or into the page: a man page's reader has neither.
func localLinksAsText(line string) string {
	return outsideCode(line, func(s string) string {
		return markdownLink.ReplaceAllStringFunc(s, func(link string) string {
			m := markdownLink.FindStringSubmatch(link)
			if strings.Contains(m[2], "://") {
				return link
			}
			return m[1]
		})
	})
}

// tableAsList makes a table a definition list, as man pages have them
// (tbl's boxes do not fit 80 columns): the first column is the term, the
// others its definition, each after its heading when there are more than
// one.
func tableAsList(rows []string) string {
	header := tableCells(rows[0])
	var b strings.Builder
	for _, row := range rows[2:] { // after the header and its --- line
		cells := tableCells(row)
		b.WriteString(cells[0] + "\n")
		for i, cell := range cells[1:] {
			lead, end := "  ", "  \n" // a line break after each
			if i == 0 {
				lead = ": "
			}
			if i == len(cells)-2 {
				end = "\n"
			}
			if len(cells) > 2 && i+1 < len(header) {
				cell = "*" + header[i+1] + ":* " + cell
			}
			b.WriteString(lead + cell + end)
		}
		b.WriteString("\n")
	}
	return strings.TrimRight(b.String(), "\n")
}

// tableCells splits a table row at the pipes that are not escaped (\|)
// nor in a code span.
func tableCells(row string) []string {
	row = strings.TrimSpace(row)
	row = strings.TrimSuffix(strings.TrimPrefix(row, "|"), "|")
	var cells []string
	var cell strings.Builder
	code := false
	for i := 0; i < len(row); i++ {
		switch c := row[i]; {
		case c == '\\' && i+1 < len(row) && row[i+1] == '|':
			cell.WriteByte('|')
			i++
		case c == '`':
			code = !code
			cell.WriteByte(c)
		case c == '|' && !code:
			cells = append(cells, strings.TrimSpace(cell.String()))
			cell.Reset()
		default:
			cell.WriteByte(c)
		}
	}
	return append(cells, strings.TrimSpace(cell.String()))
}

// appendTo adds line to the intro until the first section, then to the
// sections.
func appendTo(intro, sections []string, line string) ([]string, []string) {
	if sections == nil {
		return append(intro, line), nil
	}
	return intro, append(sections, line)
}

// outsideCode applies f to the parts of a line outside `code spans`.
func outsideCode(line string, f func(string) string) string {
	parts := strings.Split(line, "`")
	for i := 0; i < len(parts); i += 2 {
		parts[i] = f(parts[i])
	}
	return strings.Join(parts, "`")
}

func upperOutsideCode(s string) string { return outsideCode(s, strings.ToUpper) }

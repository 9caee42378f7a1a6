package main

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Every string the command line prints that came from the daemon, a
// repository or a configuration file (file names above all: any local user
// names files in a backed-up subvolume) goes through printable first, so
// that it shows as text and never acts on the terminal: no cursor moves,
// no cleared screen, no retitled window (OSC), no line shown backwards.
// The escapes the command line writes itself (the progress bar's
// "\r\033[K", colours) are added after it.

// printable returns s with each character a terminal would act on written
// as an escape:
//
//   - C0 controls (tab and newline too, so that a name stays in its cell
//     and on its line) and DEL as \xNN;
//   - each byte that is not part of valid UTF-8 as \xNN, as the daemon
//     already writes the bytes of a file name that is not UTF-8;
//   - C1 controls (U+0080 to U+009F, which some terminals read as ESC
//     sequences), the bidirectional embeddings, overrides, isolates and
//     marks (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069)
//     and the line and paragraph separators (U+2028, U+2029) as \uNNNN.
//
// A backslash stays as it is, as in the daemon's replies: a name that holds
// the text `\x1b` prints the same as one that holds ESC, and neither acts.
func printable[S ~string](name S) string {
	s := string(name)
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case actsOnTerminal(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// printableText is printable for a message of several lines: each line is
// escaped, and the line ends stay.
func printableText(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = printable(l)
	}
	return strings.Join(lines, "\n")
}

// printableAll is printable of each string.
func printableAll(list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = printable(s)
	}
	return out
}

func needsEscape(s string) bool {
	if !utf8.ValidString(s) {
		return true
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || actsOnTerminal(r) {
			return true
		}
	}
	return false
}

// actsOnTerminal reports whether r, above ASCII, is a character a terminal
// acts on or that changes how the rest of the line is shown.
func actsOnTerminal(r rune) bool {
	switch {
	case r >= 0x80 && r <= 0x9f: // C1 controls
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f: // bidirectional marks
		return true
	case r >= 0x202a && r <= 0x202e: // bidirectional embeddings and overrides
		return true
	case r >= 0x2066 && r <= 0x2069: // bidirectional isolates
		return true
	case r == 0x2028, r == 0x2029: // line and paragraph separators
		return true
	}
	return false
}

// printableJSON writes JSON with the characters printable escapes above
// ASCII written as \uNNNN escapes too (encoding/json already escapes C0
// controls, but passes DEL, C1 controls and the bidirectional ones), so
// that --json output is safe on a terminal and decodes to the same values.
// Such characters can only be inside JSON strings, where \uNNNN means the
// same character.
type printableJSON struct{ w io.Writer }

func (p printableJSON) Write(b []byte) (int, error) {
	s := string(b)
	if !strings.ContainsFunc(s, func(r rune) bool { return r == 0x7f || actsOnTerminal(r) }) {
		return p.w.Write(b)
	}
	var out strings.Builder
	for _, r := range s {
		if r == 0x7f || actsOnTerminal(r) {
			fmt.Fprintf(&out, `\u%04x`, r)
		} else {
			out.WriteRune(r)
		}
	}
	if _, err := io.WriteString(p.w, out.String()); err != nil {
		return 0, err
	}
	return len(b), nil
}

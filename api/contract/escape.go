package contract

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// EscapeInvalidUTF8 makes a name fit a D-Bus string, which must be UTF-8
// without NUL: each byte that is not part of valid UTF-8, and NUL, becomes
// \xNN. Valid names pass as they are. Every name and path the daemon
// replies with is written so.
func EscapeInvalidUTF8(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || r == 0 {
			fmt.Fprintf(&b, `\x%02x`, s[i])
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// EscapeAll is EscapeInvalidUTF8 of each string.
func EscapeAll(list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = EscapeInvalidUTF8(s)
	}
	return out
}

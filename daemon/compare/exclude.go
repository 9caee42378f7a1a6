package compare

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Excluder says which paths a backup leaves out, by the rules of restic's
// --exclude (patterns, matched as restic's internal/filter matches them)
// and --exclude-if-present. A nil *Excluder excludes nothing.
type Excluder struct {
	patterns  []pattern
	negated   bool
	ifPresent []presentRule
}

type pattern struct {
	parts   []string // "**" is ""
	negated bool
}

type presentRule struct {
	name   string
	header []byte
}

// NewExcluder takes --exclude patterns (a leading "!" re-includes, as in
// restic from 0.14) and --exclude-if-present specs ("NAME" or
// "NAME:HEADER": a directory holding a file NAME, which starts with HEADER
// when one is given, is left out).
func NewExcluder(patterns, ifPresent []string) *Excluder {
	e := &Excluder{}
	for _, p := range patterns {
		p = strings.TrimSpace(p)
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		if p == "" {
			continue
		}
		parts := splitPath(filepath.Clean(p))
		for i, part := range parts {
			if part == "**" {
				parts[i] = ""
			}
		}
		e.patterns = append(e.patterns, pattern{parts: parts, negated: neg})
		e.negated = e.negated || neg
	}
	for _, spec := range ifPresent {
		name, header, _ := strings.Cut(spec, ":")
		if name != "" {
			e.ifPresent = append(e.ifPresent, presentRule{name: name, header: []byte(header)})
		}
	}
	return e
}

// Excluded reports whether the backup leaves out path (the path the
// archive records). disk is where the entry is read now, for
// --exclude-if-present, which looks inside directories.
func (e *Excluder) Excluded(path, disk string, isDir bool) bool {
	if e == nil {
		return false
	}
	if len(e.patterns) > 0 {
		strs := splitPath(path)
		matched := false
		for _, p := range e.patterns {
			m := match(p.parts, strs)
			if p.negated {
				matched = matched && !m
			} else {
				matched = matched || m
			}
		}
		if matched {
			return true
		}
	}
	if isDir {
		for _, r := range e.ifPresent {
			if r.presentIn(disk) {
				return true
			}
		}
	}
	return false
}

func (r presentRule) presentIn(dir string) bool {
	f, err := os.Open(filepath.Join(dir, r.name))
	if err != nil {
		return false
	}
	defer f.Close() //nolint:errcheck // read only
	if len(r.header) == 0 {
		return true
	}
	buf := make([]byte, len(r.header))
	if _, err := io.ReadFull(f, buf); err != nil {
		return false
	}
	return bytes.Equal(buf, r.header)
}

// splitPath is restic's: "/home/a" is ["/", "home", "a"].
func splitPath(p string) []string {
	parts := strings.Split(p, "/")
	if parts[0] == "" {
		parts[0] = "/"
	}
	return parts
}

// match is restic's filter.match: the pattern's parts match consecutive
// parts of the path, anywhere in it unless the pattern starts at "/"; ""
// (a "**") stands for any number of parts.
func match(pat, strs []string) bool {
	if pos := doubleWildcard(pat); pos >= 0 {
		// Expand "**" into 0, 1, 2, ... single wildcards.
		for i := 0; i <= len(strs)-len(pat)+1; i++ {
			expanded := append([]string(nil), pat[:pos]...)
			for k := 0; k < i; k++ {
				expanded = append(expanded, "*")
			}
			expanded = append(expanded, pat[pos+1:]...)
			if match(expanded, strs) {
				return true
			}
		}
		return false
	}
	if len(pat) == 0 || len(pat) > len(strs) {
		return len(pat) == 0 && len(strs) == 0
	}
	minOffset, maxOffset := 0, len(strs)-len(pat)
	if pat[0] == "/" {
		maxOffset = 0
	} else if strs[0] == "/" {
		minOffset = 1
	}
outer:
	for offset := maxOffset; offset >= minOffset; offset-- {
		for i := len(pat) - 1; i >= 0; i-- {
			ok, err := filepath.Match(pat[i], strs[offset+i])
			if err != nil || !ok {
				continue outer
			}
		}
		return true
	}
	return false
}

func doubleWildcard(pat []string) int {
	for i, p := range pat {
		if p == "" {
			return i
		}
	}
	return -1
}

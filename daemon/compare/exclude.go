package compare

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
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
// archive records). dirfd is the entry's descriptor when it is a
// directory, for --exclude-if-present, which looks inside directories;
// -1 for anything else.
func (e *Excluder) Excluded(path string, dirfd int) bool {
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
	if dirfd >= 0 {
		for _, r := range e.ifPresent {
			if r.presentIn(dirfd) {
				return true
			}
		}
	}
	return false
}

// presentIn reports whether the directory open at dirfd holds the marker.
// Without a header any entry of that name is one, as restic lstats it:
// nothing is opened. With one, only a regular file can be, and nothing
// else is opened: the marker is first reached with O_PATH (which runs no
// driver's open and does not block on a named pipe), its type checked on
// that descriptor, and only a regular file opened again through it to
// read the header.
func (r presentRule) presentIn(dirfd int) bool {
	if len(r.header) == 0 {
		var st unix.Stat_t
		return unix.Fstatat(dirfd, r.name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
	}
	pathFd, err := unix.Openat(dirfd, r.name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(pathFd)
	var st unix.Stat_t
	if err := unix.Fstat(pathFd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", pathFd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	f := os.NewFile(uintptr(fd), r.name)
	defer f.Close() //nolint:errcheck // read only
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

package api

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/godbus/dbus/v5"
)

// Bounds on what a caller may send.
const (
	maxPathBytes     = 4096
	maxIncludes      = 1000
	maxSnapshotBytes = 255 // a file name
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// checkSignature checks the types the caller sent, not only what godbus
// made of them: godbus stores an int32 into a Go string argument without a
// word (65 becomes "A").
func checkSignature(msg dbus.Message, want string) *dbus.Error {
	got := ""
	if len(msg.Body) > 0 {
		got = dbus.SignatureOf(msg.Body...).String()
	}
	if got != want {
		return invalidArgument("the arguments have the D-Bus types %q; this method takes %q", got, want)
	}
	return nil
}

// checkName checks a plan name as the configuration allows them.
func checkName(what, name string) *dbus.Error {
	if !nameRE.MatchString(name) {
		return invalidArgument("%s %s is not a valid name: 1 to 64 of A-Z a-z 0-9 _ . -, starting with a letter or digit", what, quoteArg(name))
	}
	return nil
}

// checkSnapshotName checks the shape of a snapshot name; whether it is one
// of the plan's is for the daemon to say (NoSuchSnapshot).
func checkSnapshotName(name string) *dbus.Error {
	switch {
	case name == "":
		return invalidArgument("the snapshot name is empty; ListSnapshots lists the plan's snapshots")
	case len(name) > maxSnapshotBytes:
		return invalidArgument("the snapshot name is %d bytes long; names are at most %d", len(name), maxSnapshotBytes)
	case strings.ContainsAny(name, "/\x00") || name == "." || name == "..":
		return invalidArgument("snapshot name %s holds a \"/\" or NUL byte or is \".\" or \"..\"; give the name ListSnapshots shows, not a path", quoteArg(name))
	}
	return nil
}

// checkPath checks a path subvault is asked to write to.
func checkPath(what, p string) *dbus.Error {
	switch {
	case p == "":
		return invalidArgument("the %s is empty; give an absolute path", what)
	case len(p) > maxPathBytes:
		return invalidArgument("the %s is %d bytes long; paths are at most %d", what, len(p), maxPathBytes)
	case strings.IndexByte(p, 0) >= 0:
		return invalidArgument("the %s %s holds a NUL byte", what, quoteArg(p))
	case !filepath.IsAbs(p):
		return invalidArgument("the %s %s is relative; give an absolute path", what, quoteArg(p))
	case filepath.Clean(p) != p:
		return invalidArgument("the %s %s is not clean (\"..\", \".\", \"//\" or a trailing \"/\"); give it as %s", what, quoteArg(p), quoteArg(filepath.Clean(p)))
	case p == "/":
		return invalidArgument("the %s cannot be /", what)
	}
	return nil
}

// checkArchive checks an archive argument: "latest" or a restic id (hex).
func checkArchive(a string) *dbus.Error {
	if a == "latest" {
		return nil
	}
	ok := len(a) >= 4 && len(a) <= 64
	for _, c := range a {
		if !strings.ContainsRune("0123456789abcdef", c) {
			ok = false
		}
	}
	if !ok {
		return invalidArgument("archive %s is neither \"latest\" nor an archive id (4 to 64 lower-case hex digits, as ListArchives shows)", quoteArg(a))
	}
	return nil
}

func checkIncludes(include []string) *dbus.Error {
	if len(include) > maxIncludes {
		return invalidArgument("%d include patterns; at most %d", len(include), maxIncludes)
	}
	for i, p := range include {
		switch {
		case p == "":
			return invalidArgument("include pattern %d is empty; leave the list empty to restore everything", i+1)
		case len(p) > maxPathBytes:
			return invalidArgument("include pattern %d is %d bytes long; at most %d", i+1, len(p), maxPathBytes)
		case strings.IndexByte(p, 0) >= 0:
			return invalidArgument("include pattern %d holds a NUL byte", i+1)
		}
	}
	return nil
}

// quoteArg quotes a caller's value for an error message, shortened so
// that a 64 KiB argument does not come back as a 64 KiB message.
func quoteArg(s string) string {
	const limit = 80
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + fmt.Sprintf("… (%d bytes)", len(s))
	}
	return strconv.Quote(s)
}

// escapeInvalidUTF8 makes a file name fit a D-Bus string: each byte that is
// not part of valid UTF-8, and NUL, becomes \xNN. Valid names pass as they
// are.
func escapeInvalidUTF8(s string) string {
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

func escapeAll[S ~string](list []S) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = escapeInvalidUTF8(string(s))
	}
	return out
}

// PlanPath is the object path of a plan: its name escaped as systemd
// escapes bus path elements ("_" and two lower-case hex digits for every
// byte outside [A-Za-z0-9]).
func PlanPath(name string) dbus.ObjectPath {
	return ManagerPath + "/plan/" + dbus.ObjectPath(escapePathElement(name))
}

// JobPath is the object path of job id.
func JobPath(id uint32) dbus.ObjectPath {
	return ManagerPath + "/job/" + dbus.ObjectPath(strconv.FormatUint(uint64(id), 10))
}

func escapePathElement(s string) string {
	if s == "" {
		return "_"
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "_%02x", c)
		}
	}
	return b.String()
}

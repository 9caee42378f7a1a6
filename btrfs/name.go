package btrfs

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Snapshot is one snapshot subvault made, as its name records it.
type Snapshot struct {
	// Plan is the name of the plan whose job made the snapshot.
	Plan string
	// Time is when the job made it, in UTC to the second.
	Time time.Time
	// JobID is the daemon's id of the job that made it.
	JobID uint32
	// Subvolume is the absolute path of the subvolume it is a snapshot of.
	Subvolume string
	// Path is the snapshot's full path; set by ListSnapshots, empty from ParseName.
	Path string
	// Pinned marks a snapshot that keep_snapshots never deletes: the state
	// a rollback or an in-place restore replaced, kept so that it can be
	// undone. Its name starts with subvault-pinned instead of subvault; only
	// a person deletes it (DeleteSnapshot).
	Pinned bool
}

const (
	namePrefix       = "subvault"
	pinnedNamePrefix = "subvault-pinned"
	nameSep          = "@"
	timeLayout       = "20060102T150405Z"
)

var planPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ValidPlanName reports whether a plan name can appear in a snapshot name.
func ValidPlanName(plan string) bool { return planPattern.MatchString(plan) }

// Name returns the snapshot's base name:
// subvault@<plan>@<YYYYMMDDTHHMMSSZ>@<job id>@<escaped subvolume path>, where
// the subvolume path is escaped as `systemd-escape --path` does, and
// subvault-pinned@... for a pinned one. It does not check the fields;
// Validate does, and ParseName(s.Name()) gives s back for a valid s (Path
// aside).
func (s Snapshot) Name() string {
	prefix := namePrefix
	if s.Pinned {
		prefix = pinnedNamePrefix
	}
	return strings.Join([]string{
		prefix,
		s.Plan,
		s.Time.UTC().Format(timeLayout),
		strconv.FormatUint(uint64(s.JobID), 10),
		escapePath(s.Subvolume),
	}, nameSep)
}

// Validate says what makes the snapshot's fields unfit for a name, or nil.
func (s Snapshot) Validate() error {
	if !ValidPlanName(s.Plan) {
		return fmt.Errorf("plan name %q is not valid (it must match %s)", s.Plan, planPattern)
	}
	if y := s.Time.UTC().Year(); y < 1 || y > 9999 {
		return fmt.Errorf("snapshot time %v is outside years 0001-9999", s.Time)
	}
	if s.Time.Nanosecond() != 0 {
		return fmt.Errorf("snapshot time %v has a fraction of a second (names keep whole seconds)", s.Time)
	}
	if err := checkSubvolumePath(s.Subvolume); err != nil {
		return err
	}
	return nil
}

// ParseName parses a snapshot's base name. Anything that is not exactly what
// Name produces (another field count, a bad time, a job id out of range or
// with leading zeros, a non-canonical escape, trailing junk) is an error: the
// entry is not subvault's, and must not be touched.
func ParseName(name string) (Snapshot, error) {
	fields := strings.Split(name, nameSep)
	if len(fields) != 5 || (fields[0] != namePrefix && fields[0] != pinnedNamePrefix) {
		return Snapshot{}, fmt.Errorf("%q is not a subvault snapshot name (want subvault@<plan>@<YYYYMMDDTHHMMSSZ>@<job id>@<escaped subvolume>)", name)
	}
	planField, timeField, jobField, subvolField := fields[1], fields[2], fields[3], fields[4]
	if !ValidPlanName(planField) {
		return Snapshot{}, fmt.Errorf("%q is not a subvault snapshot name: bad plan %q", name, planField)
	}
	t, err := time.Parse(timeLayout, timeField)
	if err != nil || t.Format(timeLayout) != timeField {
		return Snapshot{}, fmt.Errorf("%q is not a subvault snapshot name: bad time %q (want YYYYMMDDTHHMMSSZ)", name, timeField)
	}
	job, err := strconv.ParseUint(jobField, 10, 32)
	if err != nil || strconv.FormatUint(job, 10) != jobField {
		return Snapshot{}, fmt.Errorf("%q is not a subvault snapshot name: bad job id %q", name, jobField)
	}
	subvol, err := unescapePath(subvolField)
	if err != nil {
		return Snapshot{}, fmt.Errorf("%q is not a subvault snapshot name: %w", name, err)
	}
	s := Snapshot{Plan: planField, Time: t.UTC(), JobID: uint32(job), Subvolume: subvol, Pinned: fields[0] == pinnedNamePrefix}
	if err := s.Validate(); err != nil { // year 0000 parses but is not a name we make
		return Snapshot{}, fmt.Errorf("%q is not a subvault snapshot name: %w", name, err)
	}
	return s, nil
}

// checkSubvolumePath accepts only absolute, clean paths without NUL bytes:
// the paths whose escaped form is unique.
func checkSubvolumePath(p string) error {
	if !strings.HasPrefix(p, "/") || filepath.Clean(p) != p || strings.IndexByte(p, 0) >= 0 {
		return fmt.Errorf("subvolume path %q is not an absolute clean path", p)
	}
	return nil
}

// escapePath escapes an absolute path as `systemd-escape --path` does: the
// root is "-", the leading "/" goes, "/" becomes "-", bytes outside
// [A-Za-z0-9:_.] and a leading "." become \xNN with lower-case hex.
func escapePath(p string) string {
	if p == "/" {
		return "-"
	}
	p = strings.TrimPrefix(p, "/")
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '/':
			b.WriteByte('-')
		case c == '.' && i == 0:
			fmt.Fprintf(&b, `\x%02x`, c)
		case plainByte(c):
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, `\x%02x`, c)
		}
	}
	return b.String()
}

func plainByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == ':' || c == '_' || c == '.'
}

var errEscape = errors.New("bad escaped subvolume path")

// unescapePath reverses escapePath and accepts only its canonical output, so
// that every name has one meaning and one spelling.
func unescapePath(s string) (string, error) {
	if s == "-" {
		return "/", nil
	}
	if s == "" {
		return "", fmt.Errorf("%w: empty", errEscape)
	}
	b := []byte{'/'}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '-':
			b = append(b, '/')
		case c == '\\':
			if i+3 >= len(s) || s[i+1] != 'x' {
				return "", fmt.Errorf("%w %q: incomplete escape", errEscape, s)
			}
			v, ok := lowerHex(s[i+2], s[i+3])
			if !ok {
				return "", fmt.Errorf("%w %q: escape is not two lower-case hex digits", errEscape, s)
			}
			if plainByte(v) && (v != '.' || i != 0) {
				return "", fmt.Errorf("%w %q: %q needs no escape", errEscape, s, v)
			}
			b = append(b, v)
			i += 3
		case c == '.' && i == 0:
			return "", fmt.Errorf("%w %q: a leading dot must be escaped", errEscape, s)
		case plainByte(c):
			b = append(b, c)
		default:
			return "", fmt.Errorf("%w %q: byte %q must be escaped", errEscape, s, c)
		}
	}
	p := string(b)
	if err := checkSubvolumePath(p); err != nil {
		return "", fmt.Errorf("%w: %w", errEscape, err)
	}
	return p, nil
}

func lowerHex(hi, lo byte) (byte, bool) {
	h, ok1 := hexDigit(hi)
	l, ok2 := hexDigit(lo)
	return h<<4 | l, ok1 && ok2
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

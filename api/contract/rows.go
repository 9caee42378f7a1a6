package contract

import "github.com/godbus/dbus/v5"

// The rows the Manager's list methods answer, as godbus encodes them: a
// struct is a D-Bus struct of its fields in order. Times are µs since the
// epoch (Micros).

// PlanEntry is one row of ListPlans: a(so).
type PlanEntry struct {
	Name string
	Path dbus.ObjectPath
}

// JobEntry is one row of ListJobs: a(usssso).
type JobEntry struct {
	ID     uint32
	Kind   Kind
	Plan   string
	State  State
	Result Result
	Path   dbus.ObjectPath
}

// SnapshotEntry is one row of ListSnapshots: a(sstb).
type SnapshotEntry struct {
	Name string
	Path string
	Time uint64
	Kept bool
}

// ArchiveEntry is one row of ListArchives: a(stsasas).
type ArchiveEntry struct {
	ShortID  string
	Time     uint64
	Hostname string
	Paths    []string
	Tags     []string
}

// ChangeKind is how a path differs between the two sides of a Diff.
type ChangeKind string

// The kinds of change.
const (
	// ChangeAdded: the path is on the second side only.
	ChangeAdded ChangeKind = "added"
	// ChangeRemoved: the path is on the first side only.
	ChangeRemoved ChangeKind = "removed"
	// ChangeChanged: a file's content changed.
	ChangeChanged ChangeKind = "changed"
	// ChangeTypeChanged: the path is of another type (a file became a
	// symlink).
	ChangeTypeChanged ChangeKind = "type-changed"
	// ChangeMetadata: only metadata changed (permission bits, owner,
	// modification time). Directories whose entries came or went have
	// this too.
	ChangeMetadata ChangeKind = "metadata"
)

// Change is one path that differs between the two sides of a Diff, and one
// row of Diff's a(ss). A directory's path ends in "/". Diff's rows and
// api/client write bytes of a path that are not UTF-8 as \xNN
// (EscapeInvalidUTF8); DiffTo's records, and the daemon before it replies,
// have the path's bytes as they are.
type Change struct {
	Kind ChangeKind `json:"kind"`
	Path string     `json:"path"`
}

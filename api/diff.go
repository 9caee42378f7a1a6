package api

import (
	"context"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/daemon"
)

// diffTimeout bounds a Diff call: restic reads two archives' trees, or
// one archive's listing while the daemon walks a subvolume. A client
// waits as long (busctl --timeout=30min; its default is 25 s).
const diffTimeout = 30 * time.Minute

// DiffEntry is one row of Diff: a(ss), the kind of change and the path.
type DiffEntry struct {
	Kind string
	Path string
}

// Diff lists what differs from a to b in the plan: each an archive id,
// "latest", "live" or a local snapshot's name, at least one an archive.
// It reads the repository, so it is authorized as ListArchives is.
func (m manager) Diff(msg dbus.Message, sender dbus.Sender, plan, a, b string) ([]DiffEntry, *dbus.Error) {
	if err := checkSignature(msg, "sss"); err != nil {
		return nil, err
	}
	p, derr := m.s.plan(msg, plan)
	if derr != nil {
		return nil, derr
	}
	if derr := firstError(checkDiffSide(a), checkDiffSide(b)); derr != nil {
		return nil, derr
	}
	if _, derr := m.s.authorize(msg, sender, ActionBackup, p); derr != nil {
		return nil, derr
	}
	ctx, cancel := context.WithTimeout(context.Background(), diffTimeout)
	defer cancel()
	changes, err := m.s.d.Diff(ctx, plan, a, b)
	if err != nil {
		return nil, daemonError(err)
	}
	out := make([]DiffEntry, 0, len(changes))
	for _, c := range changes {
		out = append(out, DiffEntry{Kind: c.Kind, Path: escapeInvalidUTF8(c.Path)})
	}
	return out, nil
}

// checkDiffSide checks one side of Diff: "live", an archive ("latest" or
// an id) or the shape of a snapshot name (which has "@" in it).
func checkDiffSide(s string) *dbus.Error {
	switch {
	case s == daemon.DiffLive:
		return nil
	case strings.Contains(s, "@"):
		return checkSnapshotName(s)
	}
	if checkArchive(s) != nil {
		return invalidArgument("%s is neither an archive (\"latest\" or an id of 4 to 64 lower-case hex digits, as ListArchives shows), nor \"live\", nor a snapshot name (as ListSnapshots shows)", quoteArg(s))
	}
	return nil
}

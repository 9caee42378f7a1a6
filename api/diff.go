package api

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon"
)

// diffTimeout bounds a Diff call: restic reads two archives' trees, or
// one archive's listing while the daemon walks a subvolume. A client
// waits as long (busctl --timeout=30min; its default is 25 s).
const diffTimeout = 30 * time.Minute

// Diff lists what differs from a to b in the plan: each an archive id,
// "latest", "live" or a local snapshot's name, at least one an archive.
// It names files, in directories the caller may not be able to read and
// made since the last backup too, so it needs the restore authorization
// (root, or polkit's admin): a plan's allow_users may back it up, not see
// what everybody's files are called. A result whose reply would be over
// MaxReplyBytes is refused, naming DiffTo, which writes any size.
func (m manager) Diff(msg dbus.Message, sender dbus.Sender, plan, a, b string) ([]contract.Change, *dbus.Error) {
	if err := checkSignature(msg, "sss"); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), diffTimeout)
	defer cancel()
	changes, derr := m.s.diff(ctx, msg, sender, plan, a, b, nil)
	if derr != nil {
		return nil, derr
	}
	out := make([]contract.Change, 0, len(changes))
	for _, c := range changes {
		out = append(out, contract.Change{Kind: c.Kind, Path: contract.EscapeInvalidUTF8(c.Path)})
	}
	if derr := checkReplySize(out, fmt.Sprintf("%d paths differ from %s to %s", len(out), a, b),
		"call DiffTo, which writes them to a file descriptor the caller passes (subvault diff does)"); derr != nil {
		return nil, derr
	}
	return out, nil
}

// diff checks the arguments Diff and DiffTo share (and check's, for
// DiffTo's own), asks for the restore authorization, and compares.
func (s *Server) diff(ctx context.Context, msg dbus.Message, sender dbus.Sender, plan, a, b string, check func() *dbus.Error) ([]daemon.Change, *dbus.Error) {
	p, derr := s.plan(msg, plan)
	if derr != nil {
		return nil, derr
	}
	if derr := firstError(checkDiffSide(a), checkDiffSide(b)); derr != nil {
		return nil, derr
	}
	if check != nil {
		if derr := check(); derr != nil {
			return nil, derr
		}
	}
	uid, derr := s.authorize(msg, sender, contract.ActionRestore, p)
	if derr != nil {
		return nil, derr
	}
	ctx, done := s.readCall(ctx, sender, uid, diffTimeout)
	defer done()
	changes, err := s.d.Diff(ctx, plan, a, b)
	if err != nil {
		return nil, daemonError(err)
	}
	return changes, nil
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

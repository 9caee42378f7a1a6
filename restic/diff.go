package restic

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/subvault/subvault/api/contract"
)

// Diff runs `restic diff A B` and returns every path added, removed, of
// another type or whose content changed from archive a to archive b,
// sorted by path.
//
// It does not ask for --metadata: restic then marks U every entry whose
// device or inode number or ctime differs, which is every entry of two
// archives made from different btrfs snapshots with restic before 0.17
// (each snapshot has its own device number), and every entry after a
// restore. Compare two Lists for mode, owner and times instead.
//
// It reads restic's text output, not --json: both 0.14 and 0.18 have
// --json for diff, but it turns each byte of a name that is not UTF-8 into
// U+FFFD, and the text keeps the bytes. The one thing text cannot tell is
// a name holding a newline followed by what looks like a change line.
func (r *Runner) Diff(ctx context.Context, a, b string) ([]contract.Change, error) {
	if a == "" || b == "" {
		return nil, errors.New("restic diff: two archives are required")
	}
	args := []string{"diff", "--", a, b}
	var changes []contract.Change
	err := r.retryUnlocked(ctx, func() error {
		var out bytes.Buffer
		res, err := r.exec(ctx, invocation{op: "diff", args: args, stdout: func(line []byte) {
			out.Write(line)
			out.WriteByte('\n')
		}})
		if err != nil {
			return err
		}
		if err := r.classify("diff", res); err != nil {
			return err
		}
		changes, err = parseDiff(out.Bytes())
		if err != nil {
			return fmt.Errorf("restic diff %s %s on repository %s: %w", a, b, r.Repo.Redacted(), err)
		}
		return nil
	})
	return changes, err
}

// parseDiff reads the text of `restic diff`:
//
//	comparing snapshot 3ba03c98 to 98de3f25:
//	<blank>
//	M    /data/mod
//	TU   /data/typ
//	+    /data/newdir/
//	<blank>
//	Files:           4 new,     2 removed,     2 changed
//	...
//
// Each change is its modifier padded to five columns, then the path. A
// line that is not one (the rest of a name that holds a newline) belongs
// to the path before it.
func parseDiff(out []byte) ([]contract.Change, error) {
	lines := strings.Split(string(out), "\n")
	start := 0
	for i, l := range lines {
		if strings.HasPrefix(l, "comparing snapshot ") {
			start = i + 1
			break
		}
	}
	// The statistics start at the last "Files:" line after a blank one.
	end := len(lines)
	for i := len(lines) - 1; i > start; i-- {
		if strings.HasPrefix(lines[i], "Files:") && lines[i-1] == "" {
			end = i - 1
			break
		}
	}
	if end == len(lines) {
		return nil, errors.New("its output has no statistics (\"Files: ...\"); is this restic's diff?")
	}
	var changes []contract.Change
	for _, l := range lines[start:end] {
		if kind, path, ok := diffLine(l); ok {
			changes = append(changes, contract.Change{Kind: kind, Path: path})
			continue
		}
		if len(changes) == 0 {
			if l == "" {
				continue
			}
			return nil, fmt.Errorf("cannot read the line %q", l)
		}
		changes[len(changes)-1].Path += "\n" + l
	}
	slices.SortStableFunc(changes, func(a, b contract.Change) int { return strings.Compare(a.Path, b.Path) })
	return changes, nil
}

// diffLine reads one change line: "M    /path", "TU   /path". restic's
// + and - are added and removed; T (of another type) wins over M (content)
// and 0.18's ? (content that changed under unchanged metadata), which are
// changed; U alone (metadata, which Diff does not ask for) is metadata.
func diffLine(l string) (kind contract.ChangeKind, path string, ok bool) {
	if len(l) < 6 || l[5] != '/' {
		return "", "", false
	}
	mod := strings.TrimRight(l[:5], " ")
	if mod == "" || strings.Trim(mod, "+-UMT?") != "" {
		return "", "", false
	}
	switch {
	case mod == "+":
		kind = contract.ChangeAdded
	case mod == "-":
		kind = contract.ChangeRemoved
	case strings.Contains(mod, "T"):
		kind = contract.ChangeTypeChanged
	case strings.ContainsAny(mod, "M?"):
		kind = contract.ChangeChanged
	case strings.Contains(mod, "U"):
		kind = contract.ChangeMetadata
	default:
		return "", "", false
	}
	return kind, l[5:], true
}

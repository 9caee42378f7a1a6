package restic

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// CopiedArchive is one archive a copy handled: Source in the source
// repository, Copy its copy in the destination ("" when restic did not
// name it), Skipped when the destination had it already.
type CopiedArchive struct {
	Source  string
	Copy    string
	Skipped bool
}

// The lines of restic copy's text output (0.14 and 0.18 alike; copy has
// no --json): "snapshot cf4ebe11 of [/data] at ...", then "snapshot
// 8e80ec41 saved", or "skipping source snapshot cf4ebe11, was already
// copied to snapshot 8e80ec41".
var (
	copySourceRE  = regexp.MustCompile(`^snapshot ([0-9a-f]{8,64}) of \[`)
	copySavedRE   = regexp.MustCompile(`^snapshot ([0-9a-f]{8,64}) saved`)
	copySkippedRE = regexp.MustCompile(`^skipping source snapshot ([0-9a-f]{8,64}), was already copied to snapshot ([0-9a-f]{8,64})`)
)

// Copy copies the archives ids of the repository from into this runner's
// repository (`restic copy ID...`, the source given as RESTIC_FROM_*,
// never in argv). Archives the destination has already are skipped by
// restic. It returns what became of each archive: copied, or already
// there (0.14 says so, 0.18 says nothing of those).
//
// A destination that does not exist is ErrNoRepository (the source's
// absence reads the same: the caller decides, see InitCopyOf). A locked
// destination is handled as in Backup.
func (r *Runner) Copy(ctx context.Context, from Repository, ids []string) ([]CopiedArchive, error) {
	if len(ids) == 0 {
		return nil, errors.New("restic copy: no archive to copy")
	}
	for _, id := range ids {
		if !isHexPrefix(id) {
			return nil, fmt.Errorf("restic copy: %q is not an archive id", id)
		}
	}
	var copied []CopiedArchive
	err := r.retryUnlocked(ctx, func() error {
		copied = nil
		res, err := r.exec(ctx, invocation{op: "copy", args: append([]string{"copy"}, ids...), from: &from,
			stdout: func(line []byte) {
				l := strings.TrimSpace(string(cleanTerminal(line)))
				switch {
				case copySourceRE.MatchString(l):
					copied = append(copied, CopiedArchive{Source: copySourceRE.FindStringSubmatch(l)[1]})
				case copySavedRE.MatchString(l) && len(copied) > 0:
					copied[len(copied)-1].Copy = copySavedRE.FindStringSubmatch(l)[1]
				case copySkippedRE.MatchString(l):
					m := copySkippedRE.FindStringSubmatch(l)
					if len(copied) == 0 || copied[len(copied)-1].Source != m[1] {
						copied = append(copied, CopiedArchive{Source: m[1]})
					}
					copied[len(copied)-1].Copy, copied[len(copied)-1].Skipped = m[2], true
				}
			}})
		if err != nil {
			return err
		}
		// The error names this runner's repository, the destination: the
		// source is the plan's own, which its backup has just opened.
		return r.classify("copy", res)
	})
	if err != nil {
		return copied, err
	}
	// restic 0.18 says nothing of an archive the destination has already.
	for _, id := range ids {
		named := slices.ContainsFunc(copied, func(c CopiedArchive) bool {
			return strings.HasPrefix(id, c.Source) || strings.HasPrefix(c.Source, id)
		})
		if !named {
			copied = append(copied, CopiedArchive{Source: id[:8], Skipped: true})
		}
	}
	return copied, nil
}

// InitCopyOf creates this runner's repository with the chunker parameters
// of from (`restic init --copy-chunker-params`), so that archives copied
// into it deduplicate as in from.
func (r *Runner) InitCopyOf(ctx context.Context, from Repository) error {
	res, err := r.exec(ctx, invocation{op: "init", args: []string{"init", "--copy-chunker-params"}, from: &from})
	if err != nil {
		return err
	}
	return r.classify("init", res)
}

func isHexPrefix(s string) bool {
	if len(s) < 8 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

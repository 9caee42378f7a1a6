package restic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// ErrNoSuchArchive is the error of Archive when the repository holds no
// archive that matches.
var ErrNoSuchArchive = errors.New("no such archive")

// noArchiveError is ErrNoSuchArchive in words that name the repository and
// the archive.
type noArchiveError struct{ msg string }

func (e *noArchiveError) Error() string        { return e.msg }
func (e *noArchiveError) Is(target error) bool { return target == ErrNoSuchArchive }

// RestoreOptions is one `restic restore`.
type RestoreOptions struct {
	// ArchiveID is an archive ID (short or full) or "latest".
	ArchiveID string
	// Target is the directory restic restores into; the archive's paths
	// are recreated below it.
	Target string
	// Include limits the restore to these patterns (--include).
	Include []string
	// Verify reads every restored file back and compares it with the
	// archive (--verify, restic 0.9 and newer); a difference fails the
	// restore.
	Verify bool
	// Sparse writes runs of zeros as holes (--sparse) when restic has the
	// option (0.15 and newer); older restic writes them out in full.
	Sparse bool
	// Filter selects among the archives when ArchiveID is "latest".
	Filter SnapshotFilter
}

// RestoreStatus is restic's restore progress. restic prints it from 0.16;
// with 0.14 onStatus is never called.
type RestoreStatus struct {
	PercentDone   float64
	TotalFiles    uint64
	FilesRestored uint64
	TotalBytes    uint64
	BytesRestored uint64
}

// RestoreResult is what a restore did.
type RestoreResult struct {
	// Summary is restic's summary message (0.16 and newer), numbers as
	// json.Number; nil when restic printed none.
	Summary map[string]any
	// Sparse reports whether --sparse was passed.
	Sparse bool
	// FilesVerified is the count restic 0.14 prints after --verify
	// ("finished verifying N files"); newer restic says nothing under
	// --json, and then it is 0 although the files were verified.
	FilesVerified uint64
}

// SparseSupported reports whether restic v restores sparse files as such.
func SparseSupported(v Version) bool { return v.AtLeast(0, 15, 0) }

var verifiedRE = regexp.MustCompile(`finished verifying (\d+) files`)

// Restore runs `restic restore --json` and waits for it in the calling
// goroutine.
func (r *Runner) Restore(ctx context.Context, opts RestoreOptions, onStatus func(RestoreStatus)) error {
	_, err := r.RestoreArchive(ctx, opts, onStatus)
	return err
}

// RestoreArchive is Restore, and says what the restore did.
func (r *Runner) RestoreArchive(ctx context.Context, opts RestoreOptions, onStatus func(RestoreStatus)) (RestoreResult, error) {
	var result RestoreResult
	if opts.ArchiveID == "" || opts.Target == "" {
		return result, errors.New("restic restore: an archive and a target are required")
	}
	args := []string{"restore", "--json", "--target", opts.Target}
	for _, p := range opts.Include {
		args = append(args, "--include", p)
	}
	if opts.Verify {
		args = append(args, "--verify")
	}
	if opts.Sparse {
		v, err := r.Version(ctx)
		if err != nil {
			return result, err
		}
		if SparseSupported(v) {
			args = append(args, "--sparse")
			result.Sparse = true
		}
	}
	if opts.ArchiveID == "latest" {
		args = append(args, opts.Filter.args()...)
	}
	args = append(args, "--", opts.ArchiveID)
	var failed []UnreadableFile
	progress := newProgressMark()
	var counts [4]number
	parse := func(line []byte) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '{' {
			progress.touch() // 0.14's text lines
		}
		if m := verifiedRE.FindSubmatch(line); m != nil {
			result.FilesVerified, _ = strconv.ParseUint(string(m[1]), 10, 64)
			return
		}
		if len(line) == 0 || line[0] != '{' {
			return
		}
		var m struct {
			Type          string          `json:"message_type"`
			PercentDone   number          `json:"percent_done"`
			TotalFiles    number          `json:"total_files"`
			FilesRestored number          `json:"files_restored"`
			TotalBytes    number          `json:"total_bytes"`
			BytesRestored number          `json:"bytes_restored"`
			Error         json.RawMessage `json:"error"`
			During        string          `json:"during"`
			Item          string          `json:"item"`
		}
		if json.Unmarshal(line, &m) != nil {
			return
		}
		if m.Type != "status" {
			progress.touch()
		} else if c := [4]number{m.TotalFiles, m.FilesRestored, m.TotalBytes, m.BytesRestored}; c != counts {
			counts = c
			progress.touch()
		}
		switch m.Type {
		case "status":
			if onStatus != nil {
				onStatus(RestoreStatus{PercentDone: float64(m.PercentDone), TotalFiles: uint64(m.TotalFiles),
					FilesRestored: uint64(m.FilesRestored), TotalBytes: uint64(m.TotalBytes), BytesRestored: uint64(m.BytesRestored)})
			}
		case "summary":
			raw := map[string]any{}
			dec := json.NewDecoder(bytes.NewReader(line))
			dec.UseNumber()
			if dec.Decode(&raw) == nil {
				delete(raw, "message_type")
				result.Summary = raw
			}
		case "error":
			failed = append(failed, UnreadableFile{Path: m.Item, During: m.During, Message: errorText(m.Error)})
		}
	}
	res, err := r.exec(ctx, invocation{op: "restore", args: args, stdout: parse, progress: progress,
		message: func(_ string, line []byte) { parse(line) }})
	if err != nil {
		return result, err
	}
	// 0.14 prints its progress lines, and "finished verifying", as text on
	// stdout; errors of single files as text on stderr.
	rerr := r.classify("restore", res)
	var e *Error
	if errors.As(rerr, &e) && errors.Is(e.Kind, ErrFailed) {
		switch {
		case len(failed) > 0:
			e.Message = fmt.Sprintf("restic restore of %s into %s: %d item(s) failed, first %s: %s",
				opts.ArchiveID, opts.Target, len(failed), failed[0].Path, failed[0].Message)
		case opts.Verify && strings.Contains(e.Stderr, "verif"):
			e.Message = fmt.Sprintf("restic restore of %s into %s: verification found restored files that differ from the archive: %s",
				opts.ArchiveID, opts.Target, firstFatal(e.Stderr))
		}
	}
	return result, rerr
}

// Archive returns the one archive id names (a prefix of its id, or
// "latest": the newest of those filter selects). ErrNoSuchArchive when
// there is none; an ambiguous prefix is restic's error.
func (r *Runner) Archive(ctx context.Context, id string, filter SnapshotFilter) (Archive, error) {
	if id == "" || strings.HasPrefix(id, "-") {
		return Archive{}, &noArchiveError{fmt.Sprintf("%q is not an archive id", id)}
	}
	args := []string{"snapshots", "--json"}
	if id == "latest" {
		args = append(args, filter.args()...)
	}
	args = append(args, "--", id)
	var out bytes.Buffer
	res, err := r.exec(ctx, invocation{op: "snapshots", args: args, stdout: func(line []byte) {
		out.Write(line)
		out.WriteByte('\n')
	}})
	if err != nil {
		return Archive{}, err
	}
	if err := r.classify("snapshots", res); err != nil {
		return Archive{}, err
	}
	js := firstJSON(out.Bytes(), '[')
	if js == nil {
		return Archive{}, fmt.Errorf("restic snapshots on repository %s printed no JSON list", r.Repo.Redacted())
	}
	var archives []Archive
	if err := json.Unmarshal(js, &archives); err != nil {
		return Archive{}, fmt.Errorf("restic snapshots on repository %s: cannot read its JSON: %w", r.Repo.Redacted(), err)
	}
	if len(archives) == 0 {
		if note := scrub(res.stderr.String(), res.secrets); strings.Contains(note, "multiple") {
			// "Ignoring "1a2b": multiple IDs with prefix "1a2b" found"
			return Archive{}, &noArchiveError{fmt.Sprintf("more than one archive of repository %s starts with %s; give more of the id", r.Repo.Redacted(), id)}
		}
		if id == "latest" {
			tagged := ""
			if len(filter.Tags) > 0 {
				tagged = " tagged " + strings.Join(filter.Tags, " or ")
			}
			return Archive{}, &noArchiveError{fmt.Sprintf("repository %s has no archive%s yet", r.Repo.Redacted(), tagged)}
		}
		return Archive{}, &noArchiveError{fmt.Sprintf("repository %s has no archive %s", r.Repo.Redacted(), id)}
	}
	return archives[len(archives)-1], nil
}

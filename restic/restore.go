package restic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// RestoreOptions is one `restic restore`.
type RestoreOptions struct {
	// ArchiveID is an archive ID (short or full) or "latest".
	ArchiveID string
	// Target is the directory restic restores into; the archive's paths
	// are recreated below it.
	Target string
	// Include limits the restore to these patterns (--include).
	Include []string
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

// Restore runs `restic restore --json` and waits for it in the calling
// goroutine.
func (r *Runner) Restore(ctx context.Context, opts RestoreOptions, onStatus func(RestoreStatus)) error {
	if opts.ArchiveID == "" || opts.Target == "" {
		return errors.New("restic restore: an archive and a target are required")
	}
	args := []string{"restore", "--json", "--target", opts.Target}
	for _, p := range opts.Include {
		args = append(args, "--include", p)
	}
	args = append(args, "--", opts.ArchiveID)
	var failed []UnreadableFile
	parse := func(line []byte) {
		line = bytes.TrimSpace(line)
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
		switch m.Type {
		case "status":
			if onStatus != nil {
				onStatus(RestoreStatus{PercentDone: float64(m.PercentDone), TotalFiles: uint64(m.TotalFiles),
					FilesRestored: uint64(m.FilesRestored), TotalBytes: uint64(m.TotalBytes), BytesRestored: uint64(m.BytesRestored)})
			}
		case "error":
			failed = append(failed, UnreadableFile{Path: m.Item, During: m.During, Message: errorText(m.Error)})
		}
	}
	res, err := r.exec(ctx, invocation{op: "restore", args: args, stdout: parse,
		message: func(_ string, line []byte) { parse(line) }})
	if err != nil {
		return err
	}
	rerr := r.classify("restore", res)
	var e *Error
	if errors.As(rerr, &e) && errors.Is(e.Kind, ErrFailed) && len(failed) > 0 {
		e.Message = fmt.Sprintf("restic restore of %s into %s: %d item(s) failed, first %s: %s",
			opts.ArchiveID, opts.Target, len(failed), failed[0].Path, failed[0].Message)
	}
	return rerr
}

package restic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// BackupOptions is one `restic backup`.
type BackupOptions struct {
	// Paths are absolute; restic records them as they are.
	Paths []string
	Tags  []string
	// Exclude are --exclude patterns.
	Exclude []string
	// Host overrides Runner.Hostname for this archive.
	Host string
	// Time, when set, is recorded as the archive's time (--time): the
	// instant of the btrfs snapshot rather than the end of the upload.
	Time time.Time
	// ExtraArgs go to restic backup as they are, before the paths.
	ExtraArgs []string
}

// BackupStatus is one of restic's progress messages (about ten a second).
type BackupStatus struct {
	PercentDone      float64
	SecondsElapsed   uint64
	SecondsRemaining uint64 // 0 when unknown
	TotalFiles       uint64
	FilesDone        uint64
	TotalBytes       uint64
	BytesDone        uint64
	ErrorCount       uint64
	CurrentFiles     []string
}

// BackupSummary is restic's last message of a backup.
type BackupSummary struct {
	FilesNew, FilesChanged, FilesUnmodified uint64
	DirsNew, DirsChanged, DirsUnmodified    uint64
	DataBlobs, TreeBlobs                    uint64
	DataAdded                               uint64
	DataAddedPacked                         uint64 // 0.17+, 0 before
	TotalFilesProcessed                     uint64
	TotalBytesProcessed                     uint64
	TotalDuration                           time.Duration
	// SnapshotID is the archive made: 8 hex digits in 0.14, the full 64
	// from 0.17 (restic takes either).
	SnapshotID string
	// Raw is every field restic sent, numbers as json.Number, for callers
	// that pass the summary on as it is (the D-Bus Summary a{sv}).
	Raw map[string]any
}

// BackupResult is what a backup made.
type BackupResult struct {
	// Summary is nil when restic ended without one.
	Summary    *BackupSummary
	SnapshotID string
	// Partial is set when the archive exists but some files could not be
	// read (exit code 3); Unreadable names them.
	Partial    bool
	Unreadable []UnreadableFile
	Duration   time.Duration
}

// Backup runs `restic backup --json` and waits for it in the calling
// goroutine (see the package comment). onStatus, if not nil, gets each
// progress message, from another goroutine, one call at a time.
//
// A partial backup returns the result with Partial set AND a *PartialError:
// the archive exists. A locked repository whose stale lock this host made is
// unlocked and the backup tried once more.
func (r *Runner) Backup(ctx context.Context, opts BackupOptions, onStatus func(BackupStatus)) (BackupResult, error) {
	if len(opts.Paths) == 0 {
		return BackupResult{}, errors.New("restic backup: no paths to back up")
	}
	args := []string{"backup", "--json"}
	host := opts.Host
	if host == "" {
		host = r.Hostname
	}
	if host != "" {
		args = append(args, "--host", host)
	}
	for _, t := range opts.Tags {
		args = append(args, "--tag", t)
	}
	for _, x := range opts.Exclude {
		args = append(args, "--exclude", x)
	}
	if !opts.Time.IsZero() {
		args = append(args, "--time", opts.Time.Local().Format("2006-01-02 15:04:05"))
	}
	args = append(args, opts.ExtraArgs...)
	args = append(args, "--")
	args = append(args, opts.Paths...)

	var result BackupResult
	err := r.retryUnlocked(ctx, func() error {
		var err error
		result, err = r.backupOnce(ctx, args, onStatus)
		return err
	})
	return result, err
}

func (r *Runner) backupOnce(ctx context.Context, args []string, onStatus func(BackupStatus)) (BackupResult, error) {
	p := &backupParser{onStatus: onStatus, progress: newProgressMark()}
	res, err := r.exec(ctx, invocation{op: "backup", args: args, stdout: p.line, progress: p.progress,
		message: func(kind string, line []byte) { p.line(line) }})
	if err != nil {
		return BackupResult{}, err
	}
	result := BackupResult{Summary: p.summary, Unreadable: p.unreadable, Duration: res.duration}
	if p.summary != nil {
		result.SnapshotID = p.summary.SnapshotID
	}
	if res.exitCode == 3 && !res.canceled && p.summary != nil {
		result.Partial = true
		return result, &PartialError{SnapshotID: result.SnapshotID, Files: result.Unreadable}
	}
	if err := r.classify("backup", res); err != nil {
		return result, err
	}
	if p.summary == nil {
		return result, &Error{Kind: ErrFailed, Op: "backup", Repository: r.Repo.Redacted(),
			Message: fmt.Sprintf("restic backup on repository %s ended without a summary: is %s restic?", r.Repo.Redacted(), r.Binary)}
	}
	return result, nil
}

// backupParser reads restic backup --json lines from stdout and stderr.
type backupParser struct {
	onStatus   func(BackupStatus)
	summary    *BackupSummary
	unreadable []UnreadableFile
	// other counts lines that were not JSON or of an unknown type.
	other int
	// progress is touched when the counts of a status line move, and by
	// every message other than status (see progressMark).
	progress *progressMark
	counts   [5]number
}

func (p *backupParser) line(line []byte) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		p.other++
		return
	}
	var head struct {
		Type string `json:"message_type"`
	}
	if json.Unmarshal(line, &head) != nil {
		p.other++
		return
	}
	if head.Type != "status" {
		p.progress.touch()
	}
	switch head.Type {
	case "status":
		var s statusJSON
		if json.Unmarshal(line, &s) != nil {
			p.other++
			return
		}
		if s.Action != "" {
			return // verbose "scan_finished", only with --verbose=2
		}
		// The totals grow while restic scans, the done counts while it
		// reads and saves: a stopped upload stops them all.
		if counts := [5]number{s.FilesDone, s.BytesDone, s.TotalFiles, s.TotalBytes, s.ErrorCount}; counts != p.counts {
			p.counts = counts
			p.progress.touch()
		}
		if p.onStatus != nil {
			p.onStatus(BackupStatus{
				PercentDone: float64(s.PercentDone), SecondsElapsed: uint64(s.SecondsElapsed),
				SecondsRemaining: uint64(s.SecondsRemaining), TotalFiles: uint64(s.TotalFiles),
				FilesDone: uint64(s.FilesDone), TotalBytes: uint64(s.TotalBytes), BytesDone: uint64(s.BytesDone),
				ErrorCount: uint64(s.ErrorCount), CurrentFiles: s.CurrentFiles,
			})
		}
	case "summary":
		var s summaryJSON
		if json.Unmarshal(line, &s) != nil {
			p.other++
			return
		}
		raw := map[string]any{}
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.UseNumber()
		_ = dec.Decode(&raw)
		delete(raw, "message_type")
		p.summary = &BackupSummary{
			FilesNew: uint64(s.FilesNew), FilesChanged: uint64(s.FilesChanged), FilesUnmodified: uint64(s.FilesUnmodified),
			DirsNew: uint64(s.DirsNew), DirsChanged: uint64(s.DirsChanged), DirsUnmodified: uint64(s.DirsUnmodified),
			DataBlobs: uint64(s.DataBlobs), TreeBlobs: uint64(s.TreeBlobs),
			DataAdded: uint64(s.DataAdded), DataAddedPacked: uint64(s.DataAddedPacked),
			TotalFilesProcessed: uint64(s.TotalFilesProcessed), TotalBytesProcessed: uint64(s.TotalBytesProcessed),
			TotalDuration: time.Duration(float64(s.TotalDuration) * float64(time.Second)),
			SnapshotID:    s.SnapshotID, Raw: raw,
		}
	case "error":
		var e struct {
			Error  json.RawMessage `json:"error"`
			During string          `json:"during"`
			Item   string          `json:"item"`
		}
		if json.Unmarshal(line, &e) != nil {
			p.other++
			return
		}
		f := UnreadableFile{Path: e.Item, During: e.During, Message: errorText(e.Error)}
		for i, seen := range p.unreadable {
			if seen.Path == f.Path {
				if seen.Message == "" {
					p.unreadable[i].Message = f.Message
				}
				return
			}
		}
		p.unreadable = append(p.unreadable, f)
	default:
		p.other++ // verbose_status, exit_error, and types of later versions
	}
}

// errorText reads the "error" of an error message in any of its shapes:
// 0.17+ {"message":"open /x: permission denied"}; 0.14 the Go error itself
// marshalled, {"Op":"open","Path":"/x","Err":13} for a *PathError and {}
// for most others; or a plain string.
func errorText(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return string(raw)
	}
	if msg, ok := m["message"].(string); ok {
		return msg
	}
	op, _ := m["Op"].(string)
	path, _ := m["Path"].(string)
	var cause string
	switch v := m["Err"].(type) {
	case float64:
		cause = syscall.Errno(uintptr(v)).Error()
	case string:
		cause = v
	case map[string]any:
		if msg, ok := v["message"].(string); ok {
			cause = msg
		}
	}
	switch {
	case op != "" && path != "" && cause != "":
		return op + " " + path + ": " + cause
	case cause != "":
		return cause
	case len(m) == 0:
		return ""
	}
	return string(raw)
}

// number reads a JSON number whether restic wrote it as an integer, a float
// or a string; counts never go below zero.
type number float64

func (n *number) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "null" || s == "" {
		*n = 0
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return err
	}
	if f < 0 || math.IsNaN(f) {
		f = 0
	}
	*n = number(f)
	return nil
}

type statusJSON struct {
	Action           string   `json:"action"`
	PercentDone      number   `json:"percent_done"`
	SecondsElapsed   number   `json:"seconds_elapsed"`
	SecondsRemaining number   `json:"seconds_remaining"`
	TotalFiles       number   `json:"total_files"`
	FilesDone        number   `json:"files_done"`
	TotalBytes       number   `json:"total_bytes"`
	BytesDone        number   `json:"bytes_done"`
	ErrorCount       number   `json:"error_count"`
	CurrentFiles     []string `json:"current_files"`
}

type summaryJSON struct {
	FilesNew            number `json:"files_new"`
	FilesChanged        number `json:"files_changed"`
	FilesUnmodified     number `json:"files_unmodified"`
	DirsNew             number `json:"dirs_new"`
	DirsChanged         number `json:"dirs_changed"`
	DirsUnmodified      number `json:"dirs_unmodified"`
	DataBlobs           number `json:"data_blobs"`
	TreeBlobs           number `json:"tree_blobs"`
	DataAdded           number `json:"data_added"`
	DataAddedPacked     number `json:"data_added_packed"`
	TotalFilesProcessed number `json:"total_files_processed"`
	TotalBytesProcessed number `json:"total_bytes_processed"`
	TotalDuration       number `json:"total_duration"`
	SnapshotID          string `json:"snapshot_id"`
}

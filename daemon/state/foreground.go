package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/api/contract"
)

// The foreground spool: a job that `subvault run backup` runs in its own
// process is recorded as one file, ForegroundDir/<id>.json in the state
// directory, written atomically when it starts (running) and again when it
// ends (finished). The daemon owns the job history (jobs.json); it imports
// the records into it, at its start and, while it runs, as they appear,
// and removes each once the history holds it. docs/daemon.md ("Foreground
// runs") has the rules.

// ForegroundDir is the spool's directory in the state directory.
const ForegroundDir = "foreground"

// brokenDir, in the spool, holds the records that could not be read.
const brokenDir = "broken"

// Bounds of the spool. A record is small (the summary is restic's, a few
// dozen numbers); a scan reads at most ScanLimit records, the lowest ids,
// so that a spool flooded with files is imported in bounded batches.
const (
	MaxRecordSize = 64 << 10
	MaxRecordText = 4096
	ScanLimit     = 256
	maxBroken     = 100
	maxSummary    = 128
)

// ForegroundRecord is one foreground job as its process records it.
type ForegroundRecord struct {
	Version int            `json:"version"`
	ID      uint32         `json:"id"`
	Kind    contract.Kind  `json:"kind"`
	Plan    string         `json:"plan"`
	State   contract.State `json:"state"`
	// The process that runs the job: its pid, its start time in clock
	// ticks after boot (/proc/PID/stat, field 22) and the boot's id, so
	// that a pid used again by another process is not taken for it.
	PID       int       `json:"pid"`
	PIDStart  uint64    `json:"pid_start"`
	BootID    string    `json:"boot_id"`
	StartedAt time.Time `json:"started_at"`

	FinishedAt time.Time       `json:"finished_at,omitzero"`
	Result     contract.Result `json:"result,omitempty"`
	Error      string          `json:"error,omitempty"`
	ArchiveID  string          `json:"archive_id,omitempty"`
	Summary    map[string]any  `json:"summary,omitempty"`
}

var (
	recordName = regexp.MustCompile(`^[1-9][0-9]{0,9}\.json$`)
	planNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	archiveRE  = regexp.MustCompile(`^[0-9a-f]{0,64}$`)
	bootIDRE   = regexp.MustCompile(`^[0-9a-f-]{1,64}$`)
)

// check says what is wrong with r, read from the file of job id.
func (r *ForegroundRecord) check(id uint32) error {
	switch {
	case r.Version != 1:
		return fmt.Errorf("version %d, expected 1", r.Version)
	case r.ID != id:
		return fmt.Errorf("holds job %d, not the job its name says", r.ID)
	case r.Kind != contract.KindBackup:
		return fmt.Errorf("kind %q, expected backup", r.Kind)
	case !planNameRE.MatchString(r.Plan):
		return fmt.Errorf("plan %q is not a plan name", r.Plan)
	case r.StartedAt.IsZero():
		return errors.New("no started_at")
	case r.PID <= 0 || r.PIDStart == 0 || !bootIDRE.MatchString(r.BootID):
		return errors.New("no process (pid, pid_start, boot_id)")
	case len(r.Error) > MaxRecordText || !utf8.ValidString(r.Error):
		return errors.New("error too long or not UTF-8")
	case !archiveRE.MatchString(r.ArchiveID):
		return fmt.Errorf("archive_id %q is not an archive id", r.ArchiveID)
	case len(r.Summary) > maxSummary:
		return fmt.Errorf("summary has %d fields, at most %d", len(r.Summary), maxSummary)
	}
	switch r.State {
	case contract.StateRunning:
		if r.Result != "" || !r.FinishedAt.IsZero() {
			return errors.New("running, with a result")
		}
	case contract.StateFinished:
		switch r.Result {
		case contract.ResultDone, contract.ResultFailed, contract.ResultCanceled, contract.ResultStalled:
		default:
			return fmt.Errorf("result %q, expected done, failed, canceled or stalled", r.Result)
		}
		if r.FinishedAt.IsZero() {
			return errors.New("finished, without finished_at")
		}
	default:
		return fmt.Errorf("state %q, expected running or finished", r.State)
	}
	return nil
}

// WriteForegroundRecord writes r into the spool of the state directory dir,
// atomically: the daemon reads either the record before or this one.
func WriteForegroundRecord(dir string, r ForegroundRecord) error {
	r.Version = 1
	if err := r.check(r.ID); err != nil {
		return fmt.Errorf("cannot record job %d: %w", r.ID, err)
	}
	spool, err := EnsureSpool(dir)
	if err != nil {
		return err
	}
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("cannot record job %d: %w", r.ID, err)
	}
	if len(data) > MaxRecordSize {
		r.Summary = nil // restic's summary is dozens of bytes; the rest of the record matters
		if data, err = json.Marshal(r); err != nil {
			return fmt.Errorf("cannot record job %d: %w", r.ID, err)
		}
	}
	if err := WriteFileAtomic(filepath.Join(spool, recordFile(r.ID)), data, 0o600); err != nil {
		return fmt.Errorf("cannot record job %d in %s: %w", r.ID, spool, err)
	}
	return nil
}

func recordFile(id uint32) string { return strconv.FormatUint(uint64(id), 10) + ".json" }

// EnsureSpool makes the state directory and its spool (both root's 0700)
// and returns the spool's path.
func EnsureSpool(dir string) (string, error) {
	if err := EnsureDir(dir); err != nil {
		return "", err
	}
	spool := filepath.Join(dir, ForegroundDir)
	if err := os.Mkdir(spool, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("cannot create the foreground job spool %s: %w", spool, err)
	}
	return spool, nil
}

// Self is this process as a ForegroundRecord names it: pid, start time and
// boot id.
func Self() (pid int, start uint64, bootID string, err error) {
	pid = os.Getpid()
	if start, err = processStart(pid); err != nil {
		return 0, 0, "", err
	}
	if bootID, err = currentBootID(); err != nil {
		return 0, 0, "", err
	}
	return pid, start, bootID, nil
}

// Alive reports whether the process r names still runs: same boot, and
// the pid is a live process (not a zombie) that started when r's did.
func (r *ForegroundRecord) Alive() bool {
	if boot, err := currentBootID(); err != nil || boot != r.BootID {
		return false
	}
	start, err := processStart(r.PID)
	return err == nil && start == r.PIDStart
}

// EndedBy is the latest moment r's process can have ended, when that is
// known before now: a record of an earlier boot ended before this boot
// began.
func (r *ForegroundRecord) EndedBy(now time.Time) time.Time {
	if boot, err := currentBootID(); err != nil || boot == r.BootID {
		return now
	}
	var info unix.Sysinfo_t
	if err := unix.Sysinfo(&info); err != nil {
		return now
	}
	booted := now.Add(-time.Duration(info.Uptime) * time.Second)
	if booted.After(r.StartedAt) && booted.Before(now) {
		return booted
	}
	return now
}

func currentBootID() (string, error) {
	data, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("cannot read the boot id: %w", err)
	}
	return strings.TrimSpace(string(data)), nil
}

// processStart is the start time of live process pid (field 22 of
// /proc/PID/stat, in clock ticks after boot); an error for a zombie.
func processStart(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold anything,
	// ")" and spaces too: the fields after it follow its last ")".
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields)+2)
	}
	if fields[0] == "Z" || fields[0] == "X" {
		return 0, fmt.Errorf("process %d has ended", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// Spool is the foreground spool as the daemon reads it.
type Spool struct{ Dir string }

// BrokenRecord is a record Scan could not read: moved aside to Aside (or
// removed, Aside empty, when too many are aside already).
type BrokenRecord struct {
	Name, Aside string
	Err         error
}

// Scan reads the records of the spool with the lowest ids, at most limit,
// in id order, and says how many more wait. A record that cannot be read
// (not a regular file of ours, too large, not a valid record) is moved
// aside into the spool's broken/ directory and returned in broken. The
// spool itself must be a directory of this process's user that no one
// else may write, or nothing is read.
func (s Spool) Scan(limit int) (records []ForegroundRecord, more int, broken []BrokenRecord, err error) {
	dfd, err := s.open()
	if err != nil {
		return nil, 0, nil, err
	}
	defer unix.Close(dfd)
	// The names are read through a duplicate (an os.File closes its
	// descriptor); the records through dfd.
	dup, err := unix.FcntlInt(uintptr(dfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("cannot read the foreground job spool %s: %w", s.Dir, err)
	}
	dir := os.NewFile(uintptr(dup), s.Dir) //nolint:gosec // a descriptor this function opened
	defer dir.Close()                      //nolint:errcheck // read only
	var ids []uint32
	for {
		names, rerr := dir.Readdirnames(1024)
		for _, name := range names {
			if !recordName.MatchString(name) {
				continue
			}
			id, perr := strconv.ParseUint(strings.TrimSuffix(name, ".json"), 10, 32)
			if perr != nil {
				continue
			}
			ids = append(ids, uint32(id))
			if len(ids) >= 2*limit+1024 { // bounded, however many files there are
				slices.Sort(ids)
				more += len(ids) - limit
				ids = ids[:limit]
			}
		}
		if errors.Is(rerr, io.EOF) || len(names) == 0 {
			break
		}
		if rerr != nil {
			return nil, 0, nil, fmt.Errorf("cannot read the foreground job spool %s: %w", s.Dir, rerr)
		}
	}
	slices.Sort(ids)
	if len(ids) > limit {
		more += len(ids) - limit
		ids = ids[:limit]
	}
	for _, id := range ids {
		r, rerr := readRecord(dfd, id)
		var transient transientError
		switch {
		case errors.Is(rerr, os.ErrNotExist):
		case errors.As(rerr, &transient):
			// Kept, and read again at the next scan (not counted in more,
			// which would read again at once).
		case rerr != nil:
			broken = append(broken, s.moveAside(dfd, recordFile(id), rerr))
		default:
			records = append(records, r)
		}
	}
	return records, more, broken, nil
}

// Read reads the record of job id.
func (s Spool) Read(id uint32) (ForegroundRecord, error) {
	dfd, err := s.open()
	if err != nil {
		return ForegroundRecord{}, err
	}
	defer unix.Close(dfd)
	return readRecord(dfd, id)
}

// Remove removes the record of job id, once the history holds it.
func (s Spool) Remove(id uint32) error {
	dfd, err := s.open()
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if err := unix.Unlinkat(dfd, recordFile(id), 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("cannot remove %s: %w", filepath.Join(s.Dir, recordFile(id)), err)
	}
	return nil
}

// open opens the spool and checks it: a directory, not a link, of this
// process's user, that neither group nor others may write.
func (s Spool) open() (int, error) {
	dfd, err := unix.Open(s.Dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("cannot open the foreground job spool %s: %w", s.Dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil {
		unix.Close(dfd)
		return -1, fmt.Errorf("cannot open the foreground job spool %s: %w", s.Dir, err)
	}
	if int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		unix.Close(dfd)
		return -1, fmt.Errorf("the foreground job spool %s is owned by uid %d with mode %04o: it must be this user's (uid %d) and writable by no one else; nothing in it is read (chown %d %s; chmod 700 %s)",
			s.Dir, st.Uid, st.Mode&0o7777, os.Geteuid(), os.Geteuid(), s.Dir, s.Dir)
	}
	return dfd, nil
}

func readRecord(dfd int, id uint32) (ForegroundRecord, error) {
	fd, err := unix.Openat(dfd, recordFile(id), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return ForegroundRecord{}, os.ErrNotExist
	case errors.Is(err, unix.ELOOP):
		return ForegroundRecord{}, errors.New("a symbolic link")
	case err != nil: // out of descriptors, memory: the record is kept for the next scan
		return ForegroundRecord{}, transientError{err}
	}
	f := os.NewFile(uintptr(fd), recordFile(id)) //nolint:gosec // a descriptor this function opened
	defer f.Close()                              //nolint:errcheck // read only
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return ForegroundRecord{}, transientError{err}
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return ForegroundRecord{}, errors.New("not a regular file")
	case int(st.Uid) != os.Geteuid():
		return ForegroundRecord{}, fmt.Errorf("owned by uid %d, not %d", st.Uid, os.Geteuid())
	case st.Size > MaxRecordSize:
		return ForegroundRecord{}, fmt.Errorf("%d bytes, at most %d", st.Size, MaxRecordSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxRecordSize+1))
	if err != nil {
		return ForegroundRecord{}, transientError{err}
	}
	if len(data) > MaxRecordSize {
		return ForegroundRecord{}, fmt.Errorf("more than %d bytes", MaxRecordSize)
	}
	var r ForegroundRecord
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	dec.UseNumber() // restic's numbers as the daemon's own jobs keep them
	if err := dec.Decode(&r); err != nil {
		return ForegroundRecord{}, fmt.Errorf("not a record: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return ForegroundRecord{}, errors.New("not a record: data after it")
	}
	if err := r.check(id); err != nil {
		return ForegroundRecord{}, err
	}
	return r, nil
}

// transientError is a failure to read a record that says nothing of the
// record: it stays in the spool.
type transientError struct{ err error }

func (e transientError) Error() string { return e.err.Error() }
func (e transientError) Unwrap() error { return e.err }

// moveAside moves the unreadable record name into broken/, named with the
// time, so that it is kept to look at but never read again; with too many
// there already, it is removed.
func (s Spool) moveAside(dfd int, name string, why error) BrokenRecord {
	b := BrokenRecord{Name: filepath.Join(s.Dir, name), Err: why}
	if err := unix.Mkdirat(dfd, brokenDir, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		b.Err = fmt.Errorf("%w; cannot make %s: %w", why, brokenDir, err)
	}
	full := false
	if bfd, err := unix.Openat(dfd, brokenDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
		d := os.NewFile(uintptr(bfd), brokenDir) //nolint:gosec // a descriptor this function opened
		names, _ := d.Readdirnames(maxBroken)
		d.Close() //nolint:errcheck,gosec // read only
		full = len(names) >= maxBroken
	}
	aside := name + ".broken-" + time.Now().UTC().Format("20060102T150405.000000000Z")
	if !full {
		if err := unix.Renameat(dfd, name, dfd, filepath.Join(brokenDir, aside)); err == nil {
			b.Aside = filepath.Join(s.Dir, brokenDir, aside)
			return b
		}
	}
	if err := unix.Unlinkat(dfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		b.Err = fmt.Errorf("%w; cannot remove it: %w", b.Err, err)
	}
	return b
}

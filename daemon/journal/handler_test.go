package journal

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeJournald listens on its own unixgram socket and parses what arrives.
type fakeJournald struct {
	t      *testing.T
	path   string
	conn   *net.UnixConn
	memfds int // entries that came as a memfd
}

func newFakeJournald(t *testing.T) *fakeJournald {
	t.Helper()
	path := filepath.Join(t.TempDir(), "socket")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fakeJournald{t: t, path: path, conn: conn}
}

// entry is one journal entry: each field with all its values, in order.
type entry map[string][]string

func (e entry) get(name string) string {
	if v := e[name]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// handler is a journal handler that sends to this fake journald.
func (j *fakeJournald) handler(opts ...Option) slog.Handler {
	j.t.Helper()
	h, err := NewJournalHandler(j.path, opts...)
	if err != nil {
		j.t.Fatal(err)
	}
	j.t.Cleanup(func() { h.(*journalHandler).sender.close() })
	return h
}

// next reads the next entry; a datagram carrying a file descriptor is an
// entry sent as a memfd.
func (j *fakeJournald) next() entry {
	j.t.Helper()
	raw := j.nextRaw()
	e, err := parseNative(raw)
	if err != nil {
		j.t.Fatalf("bad entry %q: %v", raw, err)
	}
	return e
}

func (j *fakeJournald) nextRaw() []byte {
	j.t.Helper()
	if err := j.conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		j.t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := j.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		j.t.Fatalf("no entry: %v", err)
	}
	if oobn == 0 {
		return buf[:n]
	}
	if n != 0 {
		j.t.Fatalf("a datagram with a descriptor also carries %d bytes", n)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		j.t.Fatalf("control messages %v: %v", msgs, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		j.t.Fatalf("rights %v: %v", fds, err)
	}
	f := os.NewFile(uintptr(fds[0]), "memfd")
	defer f.Close()
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		j.t.Fatal(err)
	}
	if want := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL; seals&want != want {
		j.t.Errorf("memfd seals %#x, want %#x", seals, want)
	}
	st, err := f.Stat()
	if err != nil {
		j.t.Fatal(err)
	}
	// journald reads the memfd from offset 0 whatever the sender's offset.
	b, err := io.ReadAll(io.NewSectionReader(f, 0, st.Size()))
	if err != nil {
		j.t.Fatal(err)
	}
	j.memfds++
	return b
}

// parseNative parses journald's native protocol, strictly.
func parseNative(b []byte) (entry, error) {
	e := entry{}
	r := bufio.NewReader(bytes.NewReader(b))
	for {
		line, err := r.ReadString('\n')
		if errors.Is(err, io.EOF) && line == "" {
			return e, nil
		}
		if err != nil {
			return nil, fmt.Errorf("unterminated line %q", line)
		}
		line = strings.TrimSuffix(line, "\n")
		name, value, isText := strings.Cut(line, "=")
		if !isText {
			var n uint64
			if err := binary.Read(r, binary.LittleEndian, &n); err != nil {
				return nil, fmt.Errorf("field %s: no length: %w", name, err)
			}
			if n >= uint64(len(b)) {
				return nil, fmt.Errorf("field %s: length %d beyond the entry", name, n)
			}
			v := make([]byte, n+1)
			if _, err := io.ReadFull(r, v); err != nil {
				return nil, fmt.Errorf("field %s: short value: %w", name, err)
			}
			if v[n] != '\n' {
				return nil, fmt.Errorf("field %s: value not followed by a newline", name)
			}
			value = string(v[:n])
		}
		if !validFieldName(name) {
			return nil, fmt.Errorf("invalid field name %q", name)
		}
		e[name] = append(e[name], value)
	}
}

// validFieldName is journald's rule for a field a client may send.
func validFieldName(name string) bool {
	if name == "" || len(name) > 64 || name[0] == '_' || (name[0] >= '0' && name[0] <= '9') {
		return false
	}
	for _, r := range name {
		if (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '_' {
			return false
		}
	}
	return true
}

func TestJournalFields(t *testing.T) {
	t.Parallel()
	j := newFakeJournald(t)
	log := slog.New(j.handler())

	log.Info("backup done", Event(EventJobDone), "plan", "home", "job", "42",
		"kind", "backup", "archive", "a1b2c3", "snapshot", "/home/.subvault-snapshots/x",
		"snapshot_job", "41", "files_new", 3, "took", 1500*time.Millisecond)
	e := j.next()

	want := map[string]string{
		"MESSAGE":               "backup done",
		"PRIORITY":              "6",
		"SYSLOG_IDENTIFIER":     "subvault",
		"MESSAGE_ID":            "1f1009a00ffb43c2a65430572d13015f",
		"SUBVAULT_EVENT":        "job-done",
		"SUBVAULT_PLAN":         "home",
		"SUBVAULT_JOB":          "42",
		"SUBVAULT_KIND":         "backup",
		"SUBVAULT_ARCHIVE":      "a1b2c3",
		"SUBVAULT_SNAPSHOT":     "/home/.subvault-snapshots/x",
		"SUBVAULT_SNAPSHOT_JOB": "41",
		"SUBVAULT_FILES_NEW":    "3",
		"SUBVAULT_TOOK":         "1.5s",
		"CODE_FUNC":             "github.com/subvault/subvault/daemon/journal.TestJournalFields",
	}
	for name, v := range want {
		if got := e[name]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want [%q]", name, got, v)
		}
	}
	if !strings.HasSuffix(e.get("CODE_FILE"), "handler_test.go") || e.get("CODE_LINE") == "" {
		t.Errorf("CODE_FILE %q CODE_LINE %q: want this test's call", e.get("CODE_FILE"), e.get("CODE_LINE"))
	}
}

func TestJournalMessageWithError(t *testing.T) {
	t.Parallel()
	j := newFakeJournald(t)
	log := slog.New(j.handler())

	log.Error("backup failed", Event(EventJobFailed), "plan", "home", "err", errors.New("cannot snapshot /home: read-only file system"))
	e := j.next()
	if got, want := e.get("MESSAGE"), "backup failed: cannot snapshot /home: read-only file system"; got != want {
		t.Errorf("MESSAGE %q, want %q", got, want)
	}
	if got := e.get("SUBVAULT_ERR"); got != "cannot snapshot /home: read-only file system" {
		t.Errorf("SUBVAULT_ERR %q", got)
	}

	// restic's wrapper names it "error".
	log.Error("restic did not start", "error", errors.New("exec: not found"))
	if got := j.next().get("MESSAGE"); got != "restic did not start: exec: not found" {
		t.Errorf("MESSAGE %q", got)
	}

	// A nil error adds nothing to the message; an err inside a group is
	// just a field.
	log.Info("hook ran", "err", nil, slog.Group("hook", "err", "exit status 1"))
	e = j.next()
	if got := e.get("MESSAGE"); got != "hook ran" {
		t.Errorf("MESSAGE %q, want %q", got, "hook ran")
	}
	if got := e.get("SUBVAULT_HOOK_ERR"); got != "exit status 1" {
		t.Errorf("SUBVAULT_HOOK_ERR %q", got)
	}
}

func TestJournalPriority(t *testing.T) {
	t.Parallel()
	j := newFakeJournald(t)
	log := slog.New(j.handler(WithLevel(slog.LevelDebug)))
	for _, c := range []struct {
		level slog.Level
		want  string
	}{
		{slog.LevelDebug, "7"},
		{slog.LevelDebug + 2, "7"},
		{slog.LevelInfo, "6"},
		{slog.LevelInfo + 2, "6"},
		{slog.LevelWarn, "4"},
		{slog.LevelError, "3"},
		{slog.LevelError + 4, "3"},
	} {
		log.Log(t.Context(), c.level, "m")
		if got := j.next().get("PRIORITY"); got != c.want {
			t.Errorf("level %v: PRIORITY %s, want %s", c.level, got, c.want)
		}
	}
}

func TestJournalLevel(t *testing.T) {
	t.Parallel()
	j := newFakeJournald(t)
	log := slog.New(j.handler()) // Info by default
	log.Debug("not sent")
	log.Warn("sent")
	if got := j.next().get("MESSAGE"); got != "sent" {
		t.Errorf("first entry %q, want the warning: a debug line got through", got)
	}
}

func TestJournalMultiLine(t *testing.T) {
	t.Parallel()
	j := newFakeJournald(t)
	log := slog.New(j.handler())
	stderr := "Fatal: unable to open config file\nIs there a repository at the following location?\n"
	log.Warn("restic said\nmore", "stderr", stderr, "empty", "", "eq", "a=b")
	raw := j.nextRaw()
	// The multi-line value must go length-prefixed, byte for byte.
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(stderr)))
	if wantRaw := "SUBVAULT_STDERR\n" + string(n[:]) + stderr + "\n"; !bytes.Contains(raw, []byte(wantRaw)) {
		t.Errorf("entry %q lacks %q", raw, wantRaw)
	}
	e, err := parseNative(raw)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"MESSAGE": "restic said\nmore", "SUBVAULT_STDERR": stderr, "SUBVAULT_EMPTY": "", "SUBVAULT_EQ": "a=b",
	} {
		if got := e[name]; len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want [%q]", name, got, want)
		}
	}
}

func TestJournalLargeEntryGoesAsMemfd(t *testing.T) {
	t.Parallel()
	j := newFakeJournald(t)
	log := slog.New(j.handler())
	big := strings.Repeat("x", 1<<20) + "\nend"
	log.Warn("big", "stderr", big)
	e := j.next()
	if j.memfds != 1 {
		t.Errorf("a %d-byte entry came as a datagram, want a memfd", len(big))
	}
	if e.get("SUBVAULT_STDERR") != big || e.get("MESSAGE") != "big" {
		t.Errorf("large entry garbled: MESSAGE %q, %d bytes of stderr", e.get("MESSAGE"), len(e.get("SUBVAULT_STDERR")))
	}
	// Small entries still go as datagrams.
	log.Info("small")
	if j.next(); j.memfds != 1 {
		t.Error("a small entry went as a memfd")
	}
}

func TestJournalWithAndGroups(t *testing.T) {
	t.Parallel()
	j := newFakeJournald(t)
	base := slog.New(j.handler())
	jobLog := base.With("plan", "home", "job", "7", Event(EventJobStarted))

	jobLog.Info("job started")
	e := j.next()
	if e.get("SUBVAULT_PLAN") != "home" || e.get("SUBVAULT_JOB") != "7" || e.get("MESSAGE_ID") != "7479f1a0615042eab35af3f5c7d3d8e8" {
		t.Errorf("With attributes lost: %v", e)
	}

	// A record's event overrides the one from With.
	jobLog.Info("snapshot created", Event(EventSnapshotCreated), "snapshot", "/s")
	if e := j.next(); e.get("MESSAGE_ID") != "e92fb8afb96c4c6bb73287fbfdf091a6" || e.get("SUBVAULT_PLAN") != "home" {
		t.Errorf("record event: %v", e)
	}

	// Groups flatten into the field name; With inside a group keeps it.
	g := jobLog.WithGroup("restic").With("version", "0.17.3")
	g.Info("restic ended", "exit_code", 0, slog.Group("summary", "filesNew", 3, "dataAdded", int64(1024)),
		"event", "not-the-event")
	e = j.next()
	for name, want := range map[string]string{
		"SUBVAULT_PLAN":                      "home",
		"SUBVAULT_RESTIC_VERSION":            "0.17.3",
		"SUBVAULT_RESTIC_EXIT_CODE":          "0",
		"SUBVAULT_RESTIC_SUMMARY_FILES_NEW":  "3",
		"SUBVAULT_RESTIC_SUMMARY_DATA_ADDED": "1024",
		"SUBVAULT_RESTIC_EVENT":              "not-the-event",
		"MESSAGE_ID":                         "7479f1a0615042eab35af3f5c7d3d8e8",
	} {
		if got := e[name]; len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want [%q]", name, got, want)
		}
	}

	// The parent is unchanged by what its children added.
	base.Info("plain")
	if e := j.next(); e.get("SUBVAULT_PLAN") != "" || e.get("MESSAGE_ID") != "" {
		t.Errorf("With leaked into the parent: %v", e)
	}

	// An empty group adds nothing; an unnamed group inlines.
	base.WithGroup("").Info("m", slog.Group("", "a", 1), slog.Group("none"))
	if e := j.next(); e.get("SUBVAULT_A") != "1" || len(e["SUBVAULT_NONE"]) != 0 {
		t.Errorf("empty groups: %v", e)
	}
}

func TestJournalEventIDs(t *testing.T) {
	t.Parallel()
	j := newFakeJournald(t)
	log := slog.New(j.handler())
	for _, name := range Events() {
		id, _ := MessageID(name)
		log.Info(name, Event(name))
		if e := j.next(); e.get("MESSAGE_ID") != id || e.get("SUBVAULT_EVENT") != name {
			t.Errorf("event %s: MESSAGE_ID %q SUBVAULT_EVENT %q, want %s", name, e.get("MESSAGE_ID"), e.get("SUBVAULT_EVENT"), id)
		}
	}
	log.Info("m", Event("no-such-event"))
	if e := j.next(); len(e["MESSAGE_ID"]) != 0 || e.get("SUBVAULT_EVENT") != "no-such-event" {
		t.Errorf("unknown event: %v", e)
	}
}

func TestJournalRedaction(t *testing.T) {
	t.Parallel()
	j := newFakeJournald(t)
	const secret = "hunter2"
	log := slog.New(j.handler()).With("password", secret)
	log.Info("m", "secret", secret, "token", secret, "env", []string{"RESTIC_PASSWORD=" + secret},
		"restic_password", secret, "AccessToken", secret,
		slog.Group("env", "RESTIC_PASSWORD", secret, "HOME", secret),
		"plan", "home")
	log.WithGroup("environ").Info("m", "x", secret)
	for range 2 {
		raw := j.nextRaw()
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("entry holds the secret: %q", raw)
		}
		e, err := parseNative(raw)
		if err != nil {
			t.Fatal(err)
		}
		if e.get("SUBVAULT_PASSWORD") != Redacted && e.get("SUBVAULT_ENVIRON_X") != Redacted {
			t.Errorf("redacted fields missing: %v", e)
		}
	}
}

func TestIsSecret(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]bool{
		"password": true, "PASSWORD": true, "password_file": true, "secret": true, "client_secret": true,
		"token": true, "AccessToken": true, "env": true, "ENV": true, "restic_env": true, "environment": true,
		"plan": false, "job": false, "event": false, "snapshot": false, "archive": false, "err": false,
		"envelope": false, "kind": false, "repository": false, "seven": false,
	} {
		if got := isSecret(key); got != want {
			t.Errorf("isSecret(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestFieldName(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		groups []string
		key    string
		want   string
	}{
		{nil, "plan", "SUBVAULT_PLAN"},
		{nil, "snapshot_job", "SUBVAULT_SNAPSHOT_JOB"},
		{nil, "filesNew", "SUBVAULT_FILES_NEW"},
		{nil, "ArchiveID", "SUBVAULT_ARCHIVE_ID"},
		{nil, "exit-code", "SUBVAULT_EXIT_CODE"},
		{nil, "a.b c", "SUBVAULT_A_B_C"},
		{nil, "_private", "SUBVAULT_PRIVATE"},
		{nil, "sha256", "SUBVAULT_SHA256"},
		{nil, "größe", "SUBVAULT_GR_E"},
		{nil, "", "SUBVAULT_FIELD"},
		{nil, "!!", "SUBVAULT_FIELD"},
		{[]string{"restic", "summary"}, "files_new", "SUBVAULT_RESTIC_SUMMARY_FILES_NEW"},
		{nil, strings.Repeat("long_", 20), "SUBVAULT_LONG_LONG_LONG_LONG_LONG_LONG_LONG_LONG_LONG_LONG_LONG"},
	} {
		got := fieldName(c.groups, c.key)
		if got != c.want || !validFieldName(got) {
			t.Errorf("fieldName(%q, %q) = %q, want %q", c.groups, c.key, got, c.want)
		}
	}
}

func TestJournalConcurrent(t *testing.T) {
	t.Parallel()
	j := newFakeJournald(t)
	log := slog.New(j.handler()).With("plan", "home")
	const n = 50
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			go log.With("job", i).WithGroup("g").Info("m", "i", i)
		}
	}()
	seen := map[string]bool{}
	for range n {
		e := j.next()
		if e.get("SUBVAULT_JOB") != e.get("SUBVAULT_G_I") || e.get("SUBVAULT_PLAN") != "home" {
			t.Errorf("entries mixed up: %v", e)
		}
		seen[e.get("SUBVAULT_JOB")] = true
	}
	<-done
	if len(seen) != n {
		t.Errorf("%d distinct jobs, want %d", len(seen), n)
	}
}

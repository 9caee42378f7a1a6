package api

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon"
)

// DiffTo writes only where the caller could itself: the write end of a
// pipe, a stream socket, a regular file open for writing; never a device,
// a directory, a datagram socket or a descriptor open for reading.
func TestCallerOutputKinds(t *testing.T) {
	dir := t.TempDir()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	file, err := os.Create(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	readOnly, err := os.Open(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer readOnly.Close()
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	dirFD, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer dirFD.Close()
	stream, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	dgram, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeAll(append(stream[:], dgram[:]...)) })

	for _, c := range []struct {
		name string
		fd   int
		want string // "" accepted, else part of the refusal
	}{
		{"pipe's write end", int(w.Fd()), ""},
		{"stream socket", stream[0], ""},
		{"regular file", int(file.Fd()), ""},
		{"pipe's read end", int(r.Fd()), "not open for writing"},
		{"file open for reading", int(readOnly.Fd()), "not open for writing"},
		{"/dev/null", int(devNull.Fd()), "character device"},
		{"datagram socket", dgram[0], "not a stream socket"},
		{"no descriptor", -1, "no file descriptor"},
	} {
		out, derr := openCallerOutput(dbus.UnixFD(c.fd))
		switch {
		case c.want == "" && derr != nil:
			t.Errorf("%s: refused: %v", c.name, derr)
		case c.want != "" && (derr == nil || derr.Name != contract.ErrorInvalidArgument || !strings.Contains(derr.Error(), c.want)):
			t.Errorf("%s: %v, want InvalidArgument saying %q", c.name, derr, c.want)
		}
		if out != nil {
			out.Close()
		}
	}
	// A directory is opened for reading only, so that is what is refused.
	if _, derr := openCallerOutput(dbus.UnixFD(dirFD.Fd())); derr == nil {
		t.Error("a directory was accepted")
	}
}

// The records DiffTo writes come back as they went, whatever bytes the
// paths hold (not UTF-8, tabs, newlines); through a pipe whose reader is
// slower than the writer.
func TestDiffRecordsRoundTrip(t *testing.T) {
	changes := []daemon.Change{
		{Kind: "added", Path: "/home/ann/new.txt"},
		{Kind: "removed", Path: "/home/ann/bad-\xff-name"},
		{Kind: "changed", Path: "/home/ann/tab\there\nand newline"},
		{Kind: "metadata", Path: "/home/ann/"},
	}
	for i := range 20000 {
		changes = append(changes, daemon.Change{Kind: "added", Path: "/home/bob/" + strings.Repeat("x", i%200)})
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	out, derr := openCallerOutput(dbus.UnixFD(w.Fd()))
	if derr != nil {
		t.Fatal(derr)
	}
	type result struct {
		n   int
		err error
	}
	written := make(chan result, 1)
	go func() {
		n, err := writeDiffRecords(context.Background(), out, changes)
		out.Close()
		w.Close()
		written <- result{n, err}
	}()
	var got []daemon.Change
	n, err := contract.ReadDiffRecords(r, func(c contract.Change) error {
		got = append(got, c)
		return nil
	})
	wrote := <-written
	if err != nil || wrote.err != nil || n != len(changes) || wrote.n != len(changes) {
		t.Fatalf("read %d (%v), wrote %d (%v), want %d", n, err, wrote.n, wrote.err, len(changes))
	}
	if !reflect.DeepEqual(got, changes) {
		t.Error("the records read differ from those written")
	}

	if _, err := contract.ReadDiffRecords(bytes.NewReader([]byte("added\t/a\x00added\t/b")), func(contract.Change) error { return nil }); err == nil {
		t.Error("a record cut short was read without an error")
	}
}

// A caller that never reads does not hold DiffTo: its write gives up.
func TestDiffToGivesUpOnACallerThatDoesNotRead(t *testing.T) {
	old := callerWriteIdle
	callerWriteIdle = 200 * time.Millisecond
	defer func() { callerWriteIdle = old }()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	out, derr := openCallerOutput(dbus.UnixFD(w.Fd()))
	if derr != nil {
		t.Fatal(derr)
	}
	defer out.Close()
	changes := make([]daemon.Change, 10000)
	for i := range changes {
		changes[i] = daemon.Change{Kind: "added", Path: "/home/" + strings.Repeat("y", 100)}
	}
	start := time.Now()
	n, err := writeDiffRecords(context.Background(), out, changes)
	t.Logf("gave up after %v, %d records in the pipe: %v", time.Since(start).Round(time.Millisecond), n, err)
	if !errors.Is(err, errCallerNotReading) {
		t.Errorf("writing to a pipe nobody reads: %v, want %v", err, errCallerNotReading)
	}
	// The caller's own descriptor was left as it was: blocking.
	if flags, err := unix.FcntlInt(w.Fd(), unix.F_GETFL, 0); err != nil || flags&unix.O_NONBLOCK != 0 {
		t.Errorf("the caller's pipe became non-blocking (flags %#x, %v)", flags, err)
	}
}

// A reply over MaxReplyBytes is refused; one under passes.
func TestReplySizeBound(t *testing.T) {
	row := contract.Change{Kind: "added", Path: "/" + strings.Repeat("p", 4000)}
	rows := make([]contract.Change, MaxReplyBytes/wireSize(reflect.ValueOf(row))+1)
	for i := range rows {
		rows[i] = row
	}
	if derr := checkReplySize(rows[:len(rows)-2], "under", "nothing"); derr != nil {
		t.Errorf("a reply under the bound: %v", derr)
	}
	derr := checkReplySize(rows, "2100 paths differ", "call DiffTo")
	if derr == nil || derr.Name != contract.ErrorFailed || !strings.Contains(derr.Error(), "call DiffTo") || !strings.Contains(derr.Error(), "8 MiB") {
		t.Errorf("a reply over the bound: %v", derr)
	}
	t.Logf("%d rows of 4 KB: %v", len(rows), derr)
}

func TestBoundedLine(t *testing.T) {
	if got := boundedLine("partial:\n  a b"); got != "partial: a b" {
		t.Errorf("boundedLine of a short message: %q", got)
	}
	long := boundedLine(strings.Repeat("é", 5000))
	if len(long) > maxErrorBytes || !strings.HasSuffix(long, " [...]") || !strings.HasPrefix(long, "éé") {
		t.Errorf("boundedLine of 10000 bytes: %d bytes, ends %q", len(long), long[len(long)-10:])
	}
}

package btrfs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/internal/testutil"
	"golang.org/x/sys/unix"
)

// blockingPipe is a pipe whose ends the kernel may write and read blocking.
func blockingPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, w = os.NewFile(uintptr(fds[0]), "pipe-r"), os.NewFile(uintptr(fds[1]), "pipe-w")
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// sendInto sends snap (incrementally from parent when set) into btrfs
// receive at dir and returns the stream's length.
func sendInto(t *testing.T, snap, parent *os.File, dir, rename string) int {
	t.Helper()
	r, w := blockingPipe(t)
	cmd := exec.Command("btrfs", "receive", dir)
	var stream countingReader
	stream.r = r
	cmd.Stdin = &stream
	errc := make(chan error, 1)
	go func() {
		errc <- Send(snap, parent, nil, w)
		w.Close()
	}()
	if rename != "" {
		head, n, err := RenameInStream(r, filepath.Base(snap.Name()), rename)
		if err != nil {
			t.Fatal(err)
		}
		stream.n = n
		cmd.Stdin = io.MultiReader(bytes.NewReader(head), &stream)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("btrfs receive: %v: %s", err, stderr.String())
	}
	return stream.n
}

type countingReader struct {
	r *os.File
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// A full and an incremental send land on another btrfs as read-only
// copies whose received UUID is the source snapshot's and whose files are
// the snapshot's; the incremental stream of one changed file is small.
// Closing the pipe's read end ends a send with EPIPE.
func TestSendReceive(t *testing.T) {
	testutil.RequireCommand(t, "btrfs", "btrfs-progs")
	src := testutil.NewBtrfs(t, 400, "home")
	dst := testutil.NewBtrfs(t, 400)
	testutil.WriteFile(t, src.Path("home", "a"), strings.Repeat("a", 8<<20))
	testutil.WriteFile(t, src.Path("home", "b"), "b")
	if err := os.Mkdir(src.Path("snaps"), 0o700); err != nil {
		t.Fatal(err)
	}
	open := func(p string) *os.File {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	home, snaps := open(src.Path("home")), open(src.Path("snaps"))
	s1 := Snapshot{Plan: "p", JobID: 1, Subvolume: "/home", Time: time.Unix(1000, 0)}
	snap1, info1, err := SnapshotAt(home, snaps, s1.Name(), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { snap1.Close() })
	full := sendInto(t, snap1, nil, dst.Mount, "")
	copy1, err := Info(dst.Path(s1.Name()))
	if err != nil {
		t.Fatal(err)
	}
	if copy1.ReceivedUUID != info1.UUID || !copy1.ReadOnly {
		t.Errorf("copy %+v of snapshot %+v: want read-only, received UUID %s", copy1, info1, info1.UUID)
	}
	if info1.ReceivedUUID != "" {
		t.Errorf("a snapshot that was never received has received UUID %q", info1.ReceivedUUID)
	}
	if d := testutil.CompareTrees(t, snap1.Name(), dst.Path(s1.Name())); len(d) > 0 {
		t.Errorf("full copy differs: %v", d)
	}

	testutil.WriteFile(t, src.Path("home", "b"), "changed")
	s2 := Snapshot{Plan: "p", JobID: 2, Subvolume: "/home", Time: time.Unix(2000, 0)}
	snap2, info2, err := SnapshotAt(home, snaps, s2.Name(), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { snap2.Close() })
	incr := sendInto(t, snap2, snap1, dst.Mount, ".receiving")
	t.Logf("stream bytes: full %d, incremental after one changed file %d", full, incr)
	if full < 8<<20 || incr > 64<<10 {
		t.Errorf("stream bytes: full %d (want ≥ 8 MiB), incremental %d (want < 64 KiB)", full, incr)
	}
	// Renamed in the stream: received under the temporary name, then
	// renamed in place (a read-only subvolume cannot change directory).
	if err := os.Rename(dst.Path(".receiving"), dst.Path(s2.Name())); err != nil {
		t.Fatal(err)
	}
	copy2, err := Info(dst.Path(s2.Name()))
	if err != nil || copy2.ReceivedUUID != info2.UUID {
		t.Errorf("incremental copy %+v, %v; want received UUID %s", copy2, err, info2.UUID)
	}
	if d := testutil.CompareTrees(t, snap2.Name(), dst.Path(s2.Name())); len(d) > 0 {
		t.Errorf("incremental copy differs: %v", d)
	}

	// Nobody reads: closing the read end ends the blocked ioctl.
	r, w := blockingPipe(t)
	errc := make(chan error, 1)
	go func() { errc <- Send(snap1, nil, nil, w) }()
	time.Sleep(200 * time.Millisecond)
	r.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, unix.EPIPE) {
			t.Errorf("send with its reader gone: %v, want EPIPE", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("send did not end 30 s after its reader closed the pipe")
	}

	// A writable subvolume is refused.
	if err := Send(home, nil, nil, w); err == nil || !strings.Contains(err.Error(), "not read-only") {
		t.Errorf("send of a writable subvolume: %v", err)
	}
}

// RenameNoReplace moves an entry and never replaces one.
func TestRenameNoReplace(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a", "b"} {
		if err := os.Mkdir(dir+"/"+n, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := RenameNoReplace(d, "a", d, "b"); !errors.Is(err, unix.EEXIST) {
		t.Errorf("rename over an existing entry: %v", err)
	}
	if err := RenameNoReplace(d, "a", d, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir + "/c"); err != nil {
		t.Error(err)
	}
	if err := RenameNoReplace(d, "c", d, "../x"); err == nil {
		t.Error("a name with / accepted")
	}
}

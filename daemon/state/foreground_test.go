package state

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/subvault/subvault/api/contract"
)

func runningRecord(t *testing.T, id uint32) ForegroundRecord {
	t.Helper()
	pid, start, boot, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	return ForegroundRecord{ID: id, Kind: contract.KindBackup, Plan: "home", State: contract.StateRunning,
		PID: pid, PIDStart: start, BootID: boot, StartedAt: time.Now()}
}

// Records go in and come out in id order, at most the limit at a time;
// the rest are counted.
func TestSpoolScanInIDOrderBounded(t *testing.T) {
	dir := t.TempDir()
	for _, id := range []uint32{12, 3, 7, 100, 1} {
		if err := WriteForegroundRecord(dir, runningRecord(t, id)); err != nil {
			t.Fatal(err)
		}
	}
	s := Spool{Dir: filepath.Join(dir, ForegroundDir)}
	got, more, broken, err := s.Scan(3)
	if err != nil || len(broken) != 0 {
		t.Fatal(err, broken)
	}
	var ids []uint32
	for _, r := range got {
		ids = append(ids, r.ID)
	}
	if fmt.Sprint(ids) != "[1 3 7]" || more != 2 {
		t.Errorf("scan: %v, %d more; want [1 3 7], 2 more", ids, more)
	}
	if fi, err := os.Stat(s.Dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("spool mode %v %v, want 0700", fi.Mode(), err)
	}
	if err := s.Remove(1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(1); !os.IsNotExist(err) {
		t.Errorf("read after remove: %v", err)
	}
}

// What is not a record of ours is moved aside with its cause, never read:
// unknown fields, bad values, a link, a FIFO (which would block), a file
// too large.
func TestSpoolBrokenRecordsMovedAside(t *testing.T) {
	dir := t.TempDir()
	spool, err := EnsureSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	good := runningRecord(t, 1)
	if err := WriteForegroundRecord(dir, good); err != nil {
		t.Fatal(err)
	}
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(spool, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("2.json", `{"version":1,"id":2,"kind":"backup","plan":"home","state":"running","extra":true}`)
	write("3.json", `{"version":1,"id":4,"kind":"backup","plan":"home","state":"running"}`)
	write("4.json", `not json`)
	write("5.json", `{"version":1,"id":5,"kind":"backup","plan":"../etc","state":"finished"}`)
	write("6.json", strings.Repeat(" ", MaxRecordSize+1))
	if err := os.Symlink(filepath.Join(spool, "1.json"), filepath.Join(spool, "7.json")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(spool, "8.json"), 0o600); err != nil {
		t.Fatal(err)
	}
	write("notes.txt", "not a record name: ignored")
	records, _, broken, err := Spool{Dir: spool}.Scan(ScanLimit)
	if err != nil {
		t.Fatal(err)
	}
	if len(records) != 1 || records[0].ID != 1 {
		t.Errorf("records: %+v", records)
	}
	if len(broken) != 7 {
		t.Fatalf("%d broken, want 7: %+v", len(broken), broken)
	}
	for _, b := range broken {
		if b.Aside == "" || !strings.HasPrefix(b.Aside, filepath.Join(spool, "broken")+"/") || b.Err == nil {
			t.Errorf("broken record %+v", b)
		}
		t.Logf("%s: %v", filepath.Base(b.Name), b.Err)
	}
	if _, err := os.Lstat(filepath.Join(spool, "notes.txt")); err != nil {
		t.Errorf("a file that is no record was touched: %v", err)
	}
}

// A record's process is alive while it runs; once it ended (a zombie
// too), or when its pid names a process that started at another time
// (the pid used again), it is not.
func TestRecordAlive(t *testing.T) {
	r := runningRecord(t, 1)
	if !r.Alive() {
		t.Fatal("this process is not alive by its own record")
	}
	other := r
	other.PIDStart++
	if other.Alive() {
		t.Error("a pid with another start time counts as alive")
	}
	other = r
	other.BootID = "00000000-0000-0000-0000-000000000000"
	if other.Alive() {
		t.Error("a record of another boot counts as alive")
	}
	// A run of an earlier boot ended before this boot began.
	other.StartedAt = time.Unix(0, 0)
	if now := time.Now(); !other.EndedBy(now).Before(now.Add(-time.Second)) {
		t.Errorf("a record of another boot ended by %v, want the boot's start", other.EndedBy(now))
	}
	if now := time.Now(); !r.EndedBy(now).Equal(now) {
		t.Errorf("a record of this boot ended by %v, want now", r.EndedBy(now))
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	start, err := processStart(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	child := r
	child.PID, child.PIDStart = cmd.Process.Pid, start
	if !child.Alive() {
		t.Error("a running child is not alive")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// Not reaped yet: a zombie has ended.
	deadline := time.Now().Add(10 * time.Second)
	for child.Alive() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if child.Alive() {
		t.Error("a killed child (a zombie) counts as alive")
	}
	_ = cmd.Wait()
	if child.Alive() {
		t.Error("a reaped child counts as alive")
	}
}

// A spool someone else may write is not read at all.
func TestSpoolWritableByOthersNotRead(t *testing.T) {
	dir := t.TempDir()
	if err := WriteForegroundRecord(dir, runningRecord(t, 1)); err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(dir, ForegroundDir)
	if err := os.Chmod(spool, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := (Spool{Dir: spool}).Scan(ScanLimit); err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Errorf("scan of a spool writable to all: %v", err)
	}
}

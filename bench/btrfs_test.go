// Package bench holds benchmarks of subvault against the alternatives. They
// need root and real filesystems; they skip without root and are not part of
// `go test` timing assertions.
package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	cbtrfs "github.com/containerd/btrfs/v2"
	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/internal/testutil"
	"golang.org/x/sys/unix"
)

func requireRoot(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("SKIP: needs root (loop-device btrfs); run as root: go test -run '^$' -bench . ./bench/")
	}
}

func fillSubvolume(b *testing.B, dir string, files int) {
	b.Helper()
	for i := 0; i < files; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/200))
		if i%200 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d", i)), []byte(fmt.Sprintf("file %d\n", i)), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	unix.Sync()
}

// A read-only snapshot and its delete, of a subvolume with 20,000 small
// files: the fixed cost subvault adds to every backup. The delete ioctl
// returns before the kernel's cleaner has freed the snapshot's tree blocks;
// that work happens in the background.
func BenchmarkSnapshotDelete20kFiles(b *testing.B) {
	requireRoot(b)
	fs := testutil.NewBtrfs(b, 1024, "home", "snaps")
	fillSubvolume(b, fs.Path("home"), 20000)

	run := func(b *testing.B, del func(string) error) {
		var snapTime, delTime time.Duration
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			s := btrfs.Snapshot{Plan: "bench", Time: time.Unix(1795230000, 0).UTC(), JobID: uint32(i), Subvolume: "/home"}
			path := fs.Path("snaps", s.Name())
			t0 := time.Now()
			if err := btrfs.SnapshotReadOnly(fs.Path("home"), path); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if err := del(path); err != nil {
				b.Fatal(err)
			}
			snapTime += t1.Sub(t0)
			delTime += time.Since(t1)
		}
		b.ReportMetric(float64(snapTime.Microseconds())/float64(b.N), "snapshot-µs/op")
		b.ReportMetric(float64(delTime.Microseconds())/float64(b.N), "delete-µs/op")
	}
	b.Run("subvault", func(b *testing.B) { run(b, btrfs.Delete) })
	// containerd's SubvolDelete walks the whole snapshot (an lstat per file)
	// looking for nested subvolumes before the same ioctl.
	b.Run("containerd-SubvolDelete", func(b *testing.B) { run(b, cbtrfs.SubvolDelete) })
}

// Listing a snapshot directory with 1,000 snapshots (the daemon does it at
// start to find leftovers, and for retention), and reading one snapshot's
// info with subvault's one-ioctl Info against containerd's tree search.
func BenchmarkList1000Snapshots(b *testing.B) {
	requireRoot(b)
	fs := testutil.NewBtrfs(b, 512, "home", "snaps")
	testutil.WriteFile(b, fs.Path("home/file"), "x")
	base := time.Unix(1795230000, 0).UTC()
	var last string
	start := time.Now()
	for i := 0; i < 1000; i++ {
		s := btrfs.Snapshot{Plan: "bench", Time: base.Add(time.Duration(i) * time.Hour), JobID: uint32(i), Subvolume: "/home"}
		last = fs.Path("snaps", s.Name())
		if err := btrfs.SnapshotReadOnly(fs.Path("home"), last); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("made 1,000 read-only snapshots in %v", time.Since(start))

	b.Run("ListSnapshots", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			list, err := btrfs.ListSnapshots(fs.Path("snaps"))
			if err != nil || len(list) != 1000 {
				b.Fatalf("ListSnapshots: %d, %v", len(list), err)
			}
		}
	})
	b.Run("Info", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := btrfs.Info(last); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("containerd-SubvolInfo", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := cbtrfs.SubvolInfo(last); err != nil {
				b.Fatal(err)
			}
		}
	})
}

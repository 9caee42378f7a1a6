package restic

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Archive resolves "latest" among the archives of a tag and a prefix of an
// id, and says ErrNoSuchArchive for neither; RestoreArchive passes --sparse
// only to restic 0.15 and newer (whose restore of a sparse file has holes
// then), --verify to both, and reports what restic said.
func TestArchiveAndRestoreArchive(t *testing.T) {
	forEachRestic(t, func(t *testing.T, f *fixture) {
		ctx := context.Background()
		dir := smallTree(t, 3, 0)
		sparse, err := os.Create(filepath.Join(dir, "sparse"))
		if err != nil {
			t.Fatal(err)
		}
		if err := sparse.Truncate(16 << 20); err != nil {
			t.Fatal(err)
		}
		if _, err := sparse.WriteAt([]byte("data in the middle"), 8<<20); err != nil {
			t.Fatal(err)
		}
		sparse.Close()
		tagged, err := f.r.Backup(ctx, BackupOptions{Paths: []string{dir}, Tags: []string{"subvault:a"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.r.Backup(ctx, BackupOptions{Paths: []string{filepath.Join(dir, "sub")}, Tags: []string{"subvault:b"}}, nil); err != nil {
			t.Fatal(err)
		}

		a, err := f.r.Archive(ctx, "latest", SnapshotFilter{Tags: []string{"subvault:a"}})
		// 0.14's backup summary has the short id, 0.18's the full one.
		if err != nil || !strings.HasPrefix(a.ID, tagged.SnapshotID) || len(a.Paths) != 1 || a.Paths[0] != dir {
			t.Errorf("latest of tag subvault:a: %+v, %v; want %s of %s", a, err, tagged.SnapshotID, dir)
		}
		if a, err := f.r.Archive(ctx, tagged.SnapshotID[:8], SnapshotFilter{}); err != nil || !strings.HasPrefix(a.ID, tagged.SnapshotID) {
			t.Errorf("archive %s: %+v, %v", tagged.SnapshotID[:8], a, err)
		}
		for _, c := range []struct {
			id     string
			filter SnapshotFilter
		}{{"deadbeef", SnapshotFilter{}}, {"latest", SnapshotFilter{Tags: []string{"subvault:none"}}}} {
			if _, err := f.r.Archive(ctx, c.id, c.filter); !errors.Is(err, ErrNoSuchArchive) {
				t.Errorf("archive %s %v: %v, want ErrNoSuchArchive", c.id, c.filter, err)
			}
		}

		target := filepath.Join(t.TempDir(), "restore")
		res, err := f.r.RestoreArchive(ctx, RestoreOptions{ArchiveID: a.ID, Target: target, Verify: true, Sparse: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := f.r.Version(ctx)
		if res.Sparse != v.AtLeast(0, 15, 0) {
			t.Errorf("restic %s: --sparse passed: %v", v, res.Sparse)
		}
		if v.AtLeast(0, 16, 0) != (res.Summary != nil) {
			t.Errorf("restic %s: summary %v", v, res.Summary)
		}
		if !v.AtLeast(0, 16, 0) && res.FilesVerified != 4 {
			t.Errorf("restic %s: %d files verified, want 4", v, res.FilesVerified)
		}
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(target, dir, "sparse"), &st); err != nil {
			t.Fatal(err)
		}
		if holes := st.Blocks*512 < 8<<20; holes != res.Sparse {
			t.Errorf("restic %s: the sparse file takes %d bytes of 16 MiB (sparse restore: %v)", v, st.Blocks*512, res.Sparse)
		}
		if !strings.Contains(f.logs.String(), "--verify") {
			t.Errorf("restore without --verify:\n%s", f.logs)
		}
	})
}

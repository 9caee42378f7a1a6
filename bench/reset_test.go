package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/reset"
	"github.com/subvault/subvault/internal/testutil"
)

// envInt reads a size from the environment, for a smaller run.
func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// sectorsWritten is the loop device's count of 512-byte sectors written
// (the 7th field of /sys/block/loopN/stat).
func sectorsWritten(b *testing.B, device string) uint64 {
	b.Helper()
	data, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(device), "stat"))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(data))
	n, err := strconv.ParseUint(f[6], 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkReset is the reset at boot of a root with persisted data
// (SUBVAULT_BENCH_RESET_MB, default 5120, across SUBVAULT_BENCH_RESET_FILES,
// default 20000, files in 100 directories): the time of reset.Run and the
// bytes the device wrote for it, with reflinks and with the plain copy
// SUBVAULT_RESET_PLAIN_COPY=1 forces.
func BenchmarkReset(b *testing.B) {
	requireRoot(b)
	totalMB := envInt(b, "SUBVAULT_BENCH_RESET_MB", 5120)
	files := envInt(b, "SUBVAULT_BENCH_RESET_FILES", 20000)
	fs := testutil.NewBtrfs(b, 3*totalMB+1024, "@")
	root := filepath.Join(filepath.Dir(fs.Mount), "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		b.Fatal(err)
	}
	testutil.Run(b, "mount", "-o", "subvol=@", fs.Device, root)
	mounted := true
	b.Cleanup(func() {
		if mounted {
			_ = unix.Unmount(root, 0)
		}
	})
	sub := &config.ResetSubvolume{Path: root, Clean: "latest", Persist: []string{filepath.Join(root, "var/lib/data")}, Keep: config.KeepSnapshots{Last: 1}}
	cfg := &config.Config{Reset: &config.Reset{Subvolumes: []*config.ResetSubvolume{sub}}}
	cfg.Settings.StateDir = filepath.Join(root, "var/lib/subvault")
	testutil.WriteFile(b, filepath.Join(root, "etc/os-release"), "bench\n")
	if _, err := reset.Init(context.Background(), cfg, root, nil); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	per := int64(totalMB) << 20 / int64(files)
	src := rand.NewChaCha8([32]byte{'r', 'e', 's', 'e', 't'})
	for i := range files {
		dir := filepath.Join(root, "var/lib/data", fmt.Sprintf("d%03d", i*100/files))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("f%05d", i)))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyN(f, src, per); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
	unix.Sync()
	b.Logf("setup: %d files, %d MiB persisted, written in %v", files, int64(files)*per>>20, time.Since(start).Round(time.Second))
	if err := unix.Unmount(root, 0); err != nil {
		b.Fatal(err)
	}
	mounted = false
	boot := time.Now().UTC().Add(time.Hour).Truncate(time.Second)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	for _, mode := range []struct{ name, env string }{{"reflink", ""}, {"plain-copy", "1"}} {
		b.Run(mode.name, func(b *testing.B) {
			b.Setenv("SUBVAULT_RESET_PLAIN_COPY", mode.env)
			var took time.Duration
			var written uint64
			for range b.N {
				boot = boot.Add(time.Minute)
				// The deleted states' space back, and their writes done,
				// before the count starts.
				testutil.Run(b, "btrfs", "subvolume", "sync", fs.Mount)
				unix.Sync()
				before := sectorsWritten(b, fs.Device)
				t0 := time.Now()
				rec, err := reset.Run(context.Background(), cfg, reset.RunOptions{Cmdline: "root=" + fs.Device + " rootflags=subvol=@", Now: func() time.Time { return boot }, Log: logger})
				unix.Sync() // what the reset wrote, on the device
				took += time.Since(t0)
				written += sectorsWritten(b, fs.Device) - before
				if err != nil || rec.Results[0].Result != reset.ResultDone {
					b.Fatalf("%+v, %v", rec, err)
				}
				if rec.Results[0].Persisted < files {
					b.Fatalf("persisted %d, want the %d files and their directories", rec.Results[0].Persisted, files)
				}
			}
			b.ReportMetric(took.Seconds()/float64(b.N), "s/reset")
			b.ReportMetric(float64(written)*512/float64(b.N)/(1<<20), "MiB-written/reset")
			b.ReportMetric(0, "ns/op")
		})
	}
}

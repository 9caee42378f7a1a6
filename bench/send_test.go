package bench

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/onsite"
	"github.com/subvault/subvault/internal/testutil"
	"golang.org/x/sys/unix"
)

// envNumber reads a positive number from the environment, or def.
func envNumber(b *testing.B, name string, def float64) float64 {
	b.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 {
		b.Fatalf("%s=%q: want a positive number", name, s)
	}
	return v
}

// writeRandom writes size bytes of incompressible data to path.
func writeRandom(b *testing.B, rng *rand.ChaCha8, path string, size int) {
	b.Helper()
	buf := make([]byte, size)
	_, _ = rng.Read(buf)
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		b.Fatal(err)
	}
}

// syncFS commits a btrfs filesystem and waits for deleted subvolumes to be
// cleaned, so that no side pays for what came before it.
func syncFS(b *testing.B, mounts ...string) {
	b.Helper()
	unix.Sync()
	for _, m := range mounts {
		testutil.Run(b, "btrfs", "filesystem", "sync", m)
		testutil.Run(b, "btrfs", "subvolume", "sync", m)
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianFloat(f []float64) float64 {
	s := slices.Clone(f)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkIncrementalSendVsBtrbk: an incremental send of a 2 GB subvolume
// (3,000 files) after 1% of its files changed, by subvault (onsite.Send)
// and by btrbk (`btrbk run` with snapshot_create no), from the same data at
// the same moment to the same target filesystem, median of 5 rounds.
// bench/README.md says what each side times. Run it once:
//
//	sudo go test -run '^$' -bench IncrementalSendVsBtrbk -benchtime 1x -timeout 60m ./bench/
//
// BENCH_SEND_GB (2), BENCH_SEND_FILES (3000), BENCH_SEND_RUNS (5) change
// the size, the number of files and the timed rounds.
func BenchmarkIncrementalSendVsBtrbk(b *testing.B) {
	requireRoot(b)
	btrbk := testutil.RequireCommand(b, "btrbk", "btrbk")
	testutil.RequireCommand(b, "btrfs", "btrfs-progs")
	gb := envNumber(b, "BENCH_SEND_GB", 2)
	files := int(envNumber(b, "BENCH_SEND_FILES", 3000))
	runs := int(envNumber(b, "BENCH_SEND_RUNS", 5))
	changed := max(1, files/100)
	total := int64(gb * 1e9)
	mean := int(total / int64(files))

	// The source holds the data and both sides' snapshots (which share its
	// extents); the target both sides' copies.
	dataMiB := int(total >> 20)
	src := testutil.NewBtrfs(b, dataMiB*5/4+1024, "data")
	dst := testutil.NewBtrfs(b, dataMiB*5/2+1024)
	// btrfs-progs' floor gets a target of its own: its copies have the same
	// received UUIDs as subvault's, and btrfs receive looks a parent up by
	// received UUID on the whole filesystem; subvault's receive, which sees
	// only its plan's directory, fails when it finds the other copy first
	// ("parent subvol is not reachable from inside the root subvol").
	progs := testutil.NewBtrfs(b, dataMiB*5/4+1024)
	for _, d := range []string{src.Path("snaps"), src.Path("btrbk-snaps"), dst.Path("subvault"), dst.Path("btrbk")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			b.Fatal(err)
		}
	}

	// The data: files of random bytes, sizes uniform over 0.5x-1.5x the
	// mean, 200 to a directory.
	rng := rand.NewChaCha8([32]byte{'s', 'u', 'b', 'v', 'a', 'u', 'l', 't'})
	pick := rand.New(rand.NewPCG(1, 2))
	sizes := make([]int, files)
	start := time.Now()
	for i := range files {
		sizes[i] = mean/2 + pick.IntN(mean+1)
		dir := src.Path("data", fmt.Sprintf("d%03d", i/200))
		if i%200 == 0 {
			if err := os.Mkdir(dir, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		writeRandom(b, rng, filepath.Join(dir, fmt.Sprintf("f%05d", i)), sizes[i])
	}
	syncFS(b, src.Mount)
	b.Logf("data: %d files, %.2f GB, written in %v", files, gb, time.Since(start).Round(time.Millisecond))

	// subvault's side: a plan of the subvolume, sending to a path target.
	state := b.TempDir()
	settings := config.DefaultSettings()
	settings.StateDir = state
	plan := &config.Plan{
		Name:            "bench",
		Subvolumes:      []string{src.Path("data")},
		SnapshotDir:     src.Path("snaps"),
		SendTo:          []string{"disk"},
		TargetRetention: config.KeepSnapshots{Last: 1000},
		KeepSnapshots:   config.KeepSnapshots{Last: 1000},
		TargetPinFor:    config.DefaultTargetPinFor,
	}
	cfg := &config.Config{
		Plans:    map[string]*config.Plan{"bench": plan},
		Targets:  map[string]*config.Target{"disk": {Name: "disk", Path: dst.Path("subvault")}},
		Settings: settings,
	}
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))

	// btrbk's side: its own names for snapshots of the same data at the same
	// moment; it makes none itself and keeps everything.
	conf := filepath.Join(b.TempDir(), "btrbk.conf")
	testutil.WriteFile(b, conf, fmt.Sprintf(`# bench/send_test.go
timestamp_format        long-iso
snapshot_create         no
snapshot_preserve_min   all
target_preserve_min     all
# Its own chain only: by default btrbk would take subvault's snapshots and
# copies (snapshots of the same subvolume, on the same filesystems) as
# parents.
incremental_resolve     directory
volume %s
  snapshot_dir btrbk-snaps
  subvolume data
    snapshot_name data
    target send-receive %s
`, src.Mount, dst.Path("btrbk")))

	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	var subvaultTimes, btrbkTimes, progsTimes []time.Duration
	prev := ""
	var ratios []float64
	var streamBytes []uint64
	for round := 0; round <= runs; round++ {
		if round > 0 {
			// 1% of the files rewritten with new data of the same size.
			for range changed {
				i := pick.IntN(files)
				writeRandom(b, rng, src.Path("data", fmt.Sprintf("d%03d", i/200), fmt.Sprintf("f%05d", i)), sizes[i])
			}
		}
		at := base.Add(time.Duration(round) * time.Minute)
		snap := btrfs.Snapshot{Plan: "bench", Time: at, JobID: uint32(round + 1), Subvolume: src.Path("data")}
		if err := btrfs.SnapshotReadOnly(src.Path("data"), src.Path("snaps", snap.Name())); err != nil {
			b.Fatal(err)
		}
		btrbkName := "data." + at.Format("20060102T150405-0700")
		if err := btrfs.SnapshotReadOnly(src.Path("data"), src.Path("btrbk-snaps", btrbkName)); err != nil {
			b.Fatal(err)
		}

		runSubvault := func() time.Duration {
			syncFS(b, src.Mount, dst.Mount)
			t0 := time.Now()
			res, err := onsite.Send(context.Background(), onsite.Options{Config: cfg, Plan: plan, Target: "disk", JobID: uint32(1000 + round), Log: log})
			d := time.Since(t0)
			if err != nil {
				b.Fatalf("round %d: subvault: %v", round, err)
			}
			if len(res.Sent) != 1 || res.Sent[0].Snapshot != snap.Name() || (round > 0) != (res.Sent[0].Parent != "") {
				b.Fatalf("round %d: subvault sent %+v, want %s incremental after round 0", round, res.Sent, snap.Name())
			}
			if round > 0 {
				streamBytes = append(streamBytes, res.Sent[0].Bytes)
			}
			return d
		}
		runBtrbk := func() time.Duration {
			syncFS(b, src.Mount, dst.Mount)
			t0 := time.Now()
			cmd := exec.Command(btrbk, "-c", conf, "run")
			out, err := cmd.CombinedOutput()
			d := time.Since(t0)
			if err != nil {
				b.Fatalf("round %d: btrbk run: %v\n%s", round, err, out)
			}
			info, err := btrfs.Info(dst.Path("btrbk", btrbkName))
			if err != nil || !info.ReadOnly {
				b.Fatalf("round %d: btrbk's copy %s: %+v, %v\n%s", round, btrbkName, info, err, out)
			}
			// ">>>" is btrbk's mark of an incremental receive, "***" of a
			// full one: full in round 0, incremental after.
			mark := ">>> "
			if round == 0 {
				mark = "*** "
			}
			if !strings.Contains(string(out), mark+dst.Path("btrbk", btrbkName)) {
				b.Fatalf("round %d: btrbk did not receive %s as %q says:\n%s", round, btrbkName, mark, out)
			}
			return d
		}
		// The floor: btrfs-progs' own pipeline, of subvault's snapshot
		// against the previous one.
		runProgs := func() time.Duration {
			syncFS(b, src.Mount, progs.Mount)
			script := `btrfs send -q "$1" | btrfs receive -q "$2"`
			args := []string{"-c", script, "sh", src.Path("snaps", snap.Name()), progs.Mount}
			if round > 0 {
				script = `btrfs send -q -p "$3" "$1" | btrfs receive -q "$2"`
				args = []string{"-c", "set -o pipefail; " + script, "sh", src.Path("snaps", snap.Name()), progs.Mount, src.Path("snaps", prev)}
			}
			t0 := time.Now()
			out, err := exec.Command("bash", args...).CombinedOutput()
			d := time.Since(t0)
			if err != nil {
				b.Fatalf("round %d: btrfs send | btrfs receive: %v\n%s", round, err, out)
			}
			return d
		}
		// The order rotates, so no side always runs on a cache another
		// warmed.
		sides := []func() time.Duration{runSubvault, runBtrbk, runProgs}
		var took [3]time.Duration
		for k := range sides {
			i := (k + round) % len(sides)
			took[i] = sides[i]()
		}
		ts, tb, tp := took[0], took[1], took[2]
		prev = snap.Name()
		b.Logf("round %d: subvault %v, btrbk %v, btrfs send|receive %v", round, ts.Round(time.Millisecond), tb.Round(time.Millisecond), tp.Round(time.Millisecond))
		if round > 0 {
			subvaultTimes = append(subvaultTimes, ts)
			btrbkTimes = append(btrbkTimes, tb)
			progsTimes = append(progsTimes, tp)
			ratios = append(ratios, ts.Seconds()/tb.Seconds())
		}
	}
	ms, mb := median(subvaultTimes), median(btrbkTimes)
	b.ReportMetric(float64(ms.Milliseconds()), "subvault-ms")
	b.ReportMetric(float64(mb.Milliseconds()), "btrbk-ms")
	b.ReportMetric(ms.Seconds()/mb.Seconds(), "subvault/btrbk")
	b.ReportMetric(medianFloat(ratios), "median-pair-ratio")
	mp := median(progsTimes)
	b.ReportMetric(float64(mp.Milliseconds()), "btrfs-progs-ms")
	round := func(d []time.Duration) []time.Duration {
		out := make([]time.Duration, len(d))
		for i, x := range d {
			out[i] = x.Round(time.Millisecond)
		}
		return out
	}
	fmt.Printf("incremental send, %.2f GB in %d files, %d changed (1%%), %d rounds:\n"+
		"  subvault             median %v %v (streams %v bytes)\n"+
		"  btrbk                median %v %v\n"+
		"  btrfs send|receive   median %v %v\n"+
		"  subvault/btrbk %.2f (median of the rounds' ratios %.2f)\n",
		gb, files, changed, runs, ms.Round(time.Millisecond), round(subvaultTimes), streamBytes,
		mb.Round(time.Millisecond), round(btrbkTimes), mp.Round(time.Millisecond), round(progsTimes),
		ms.Seconds()/mb.Seconds(), medianFloat(ratios))
}

package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api"
	"github.com/subvault/subvault/api/client"
	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/internal/testutil"
)

// historyJobs is the job history the D-Bus benchmarks answer about: the
// default settings.job_history.
const historyJobs = 200

// resticSummary is a backup summary as restic 0.17/0.18 prints it (its
// "summary" message), 20 fields, as the daemon keeps it in jobs.json.
func resticSummary(i int, end time.Time) map[string]any {
	start := end.Add(-time.Duration(40+i%30) * time.Second)
	return map[string]any{
		"message_type":          "summary",
		"dry_run":               false,
		"files_new":             12 + i%7,
		"files_changed":         140 + i%13,
		"files_unmodified":      48211 + i,
		"dirs_new":              1 + i%3,
		"dirs_changed":          37 + i%5,
		"dirs_unmodified":       5120 + i,
		"data_blobs":            301 + i%17,
		"tree_blobs":            39 + i%5,
		"data_added":            18_374_112 + 1024*i,
		"data_added_packed":     7_913_550 + 512*i,
		"data_added_files":      17_105_004 + 1000*i,
		"data_added_trees":      1_269_108 + 24*i,
		"total_files_processed": 48363 + i,
		"total_bytes_processed": 21_474_836_480 + 4096*i,
		"total_duration":        float64(40+i%30) + 0.4817,
		"backup_start":          start.Format(time.RFC3339Nano),
		"backup_end":            end.Format(time.RFC3339Nano),
		"snapshot_id":           fmt.Sprintf("%08x5d1f0e9c3b7a2864d0c1e5f9a3b7c2d6e0f4a8b1c5d9e3f7a1b5c9d3e7f1a", i),
	}
}

// writeHistory writes the daemon's state file with n finished backups.
func writeHistory(b *testing.B, stateDir string, n int) {
	b.Helper()
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		b.Fatal(err)
	}
	base := time.Now().Add(-time.Duration(n) * time.Hour)
	jobs := make([]queue.Job, 0, n)
	for i := range n {
		queued := base.Add(time.Duration(i) * time.Hour)
		finished := queued.Add(time.Duration(41+i%30) * time.Second)
		jobs = append(jobs, queue.Job{
			ID: uint32(i + 1), Kind: queue.KindBackup, Plan: "home", State: queue.StateFinished, Result: queue.ResultDone,
			Trigger: "schedule", Caller: -1, Progress: 1,
			BytesDone: 21_474_836_480, BytesTotal: 21_474_836_480, FilesDone: 48363, FilesTotal: 48363,
			QueuedAt: queued, StartedAt: queued.Add(time.Second), FinishedAt: finished,
			ArchiveID: fmt.Sprintf("%08x", i), Summary: resticSummary(i, finished),
		})
	}
	data, err := json.Marshal(map[string]any{"version": 1, "jobs": jobs, "last_run": map[string]time.Time{}, "plans": map[string]any{}})
	if err != nil {
		b.Fatal(err)
	}
	testutil.WriteFile(b, filepath.Join(stateDir, queue.StateFile), string(data))
}

// dbusDaemon serves a daemon in this process on a private bus, its state
// file holding historyJobs finished backups, and returns a client
// connection to it and the bus's address.
func dbusDaemon(b *testing.B) (*dbus.Conn, string) {
	b.Helper()
	requireRoot(b)
	bus := testutil.NewBus(b)
	dir := b.TempDir()
	state := filepath.Join(dir, "state")
	writeHistory(b, state, historyJobs)
	config := filepath.Join(dir, "config.yaml")
	testutil.WriteFile(b, config, fmt.Sprintf(`repositories:
  r:
    url: %s
    password_file: %s
plans:
  home:
    subvolumes: [%s]
    repository: r
    schedule: "0 3 * * *"
settings:
  state_dir: %s
  cache_dir: %s
  job_history: %d
`, filepath.Join(dir, "repo"), filepath.Join(dir, "pw"), filepath.Join(dir, "home"), state, filepath.Join(dir, "cache"), historyJobs))
	d, err := daemon.New(context.Background(), daemon.Options{
		ConfigPath: config, Version: "bench", Logger: slog.New(slog.DiscardHandler),
		Notify: func(string) error { return nil },
	})
	if err != nil {
		b.Fatal(err)
	}
	server := connect(b, bus.Address)
	if err := api.Serve(server, nil, slog.New(slog.DiscardHandler))(d); err != nil {
		b.Fatal(err)
	}
	return connect(b, bus.Address), bus.Address
}

// connect connects to the bus, retrying while dbus-daemon starts to listen.
func connect(b *testing.B, address string) *dbus.Conn {
	b.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		conn, err := dbus.Connect(address)
		if err == nil {
			b.Cleanup(func() { _ = conn.Close() })
			return conn
		}
		if time.Now().After(deadline) {
			b.Fatal(err)
		}
	}
}

// BenchmarkDBus200Jobs times ListJobs and GetManagedObjects, from a client
// on the bus, of a daemon with 200 finished jobs in its history (the
// contract wants each under 20 ms).
func BenchmarkDBus200Jobs(b *testing.B) {
	conn, address := dbusDaemon(b)
	manager := conn.Object(contract.BusName, contract.ManagerPath)

	b.Run("ListJobs", func(b *testing.B) {
		var jobs []contract.JobEntry
		for b.Loop() {
			if err := manager.Call(contract.ManagerInterface+".ListJobs", 0).Store(&jobs); err != nil {
				b.Fatal(err)
			}
		}
		if len(jobs) != historyJobs {
			b.Fatalf("ListJobs: %d jobs, want %d", len(jobs), historyJobs)
		}
		reportMs(b)
	})
	b.Run("GetManagedObjects", func(b *testing.B) {
		var objects map[dbus.ObjectPath]map[string]map[string]dbus.Variant
		for b.Loop() {
			if err := manager.Call(contract.ObjectManagerInterface+".GetManagedObjects", 0).Store(&objects); err != nil {
				b.Fatal(err)
			}
		}
		if len(objects) != historyJobs+1 {
			b.Fatalf("GetManagedObjects: %d objects, want %d jobs and a plan", len(objects), historyJobs)
		}
		summary, _ := objects[contract.JobPath(1)][contract.JobInterface]["Summary"].Value().(map[string]dbus.Variant)
		if len(summary) != 20 {
			b.Fatalf("job 1's Summary has %d fields, want 20: %v", len(summary), summary)
		}
		reportMs(b)
	})
	// What subvault status, jobs, watch and waybar do: GetManagedObjects
	// through api/client, into its plans and jobs.
	b.Run("client.Objects", func(b *testing.B) {
		ctx := context.Background()
		c, err := client.Dial(ctx, address)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		var jobs []contract.Job
		for b.Loop() {
			if _, jobs, err = c.Objects(ctx); err != nil {
				b.Fatal(err)
			}
		}
		if len(jobs) != historyJobs || len(jobs[0].Summary) != 20 {
			b.Fatalf("Objects: %d jobs, the first with %d summary fields; want %d and 20", len(jobs), len(jobs[0].Summary), historyJobs)
		}
		reportMs(b)
	})
	// The same call without converting the reply into Go maps of the
	// caller's: the round trip and godbus's decoding of the message only.
	b.Run("GetManagedObjects-nostore", func(b *testing.B) {
		var call *dbus.Call
		for b.Loop() {
			if call = manager.Call(contract.ObjectManagerInterface+".GetManagedObjects", 0); call.Err != nil {
				b.Fatal(call.Err)
			}
		}
		if len(call.Body) != 1 {
			b.Fatalf("GetManagedObjects: %d values", len(call.Body))
		}
		reportMs(b)
	})
	// What the daemon's connection spends on the reply alone: godbus
	// encodes a message body twice (Message.CountFds, then EncodeTo).
	b.Run("GetManagedObjects-encode", func(b *testing.B) {
		var objects map[dbus.ObjectPath]map[string]map[string]dbus.Variant
		if err := manager.Call(contract.ObjectManagerInterface+".GetManagedObjects", 0).Store(&objects); err != nil {
			b.Fatal(err)
		}
		reply := &dbus.Message{Type: dbus.TypeMethodReply, Headers: map[dbus.HeaderField]dbus.Variant{
			dbus.FieldReplySerial: dbus.MakeVariant(uint32(1)),
			dbus.FieldSignature:   dbus.MakeVariant(dbus.SignatureOf(objects)),
		}, Body: []any{objects}}
		var size bytes.Buffer
		if err := reply.EncodeTo(&size, binary.LittleEndian); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := reply.CountFds(); err != nil {
				b.Fatal(err)
			}
			if err := reply.EncodeTo(io.Discard, binary.LittleEndian); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(size.Len())/1024, "KiB/reply")
		reportMs(b)
	})
}

// reportMs adds ms/call to the benchmark's line and logs it.
func reportMs(b *testing.B) {
	ms := float64(b.Elapsed().Microseconds()) / 1000 / float64(b.N)
	b.ReportMetric(ms, "ms/call")
	b.Logf("%s: %.2f ms per call (%d calls)", b.Name(), ms, b.N)
}

package metrics

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon/queue"
	svtestutil "github.com/subvault/subvault/internal/testutil"
)

// fixedSnapshot is two plans: home, whose last backup was partial after a
// success, with a summary, its archives known, a stalled job and a next
// run; and db, never backed up, manual, overdue can't be (but the field
// says what health said), archives unknown.
func fixedSnapshot() Snapshot {
	at := func(s string) time.Time {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			panic(err)
		}
		return t
	}
	counter := NewJobCounter()
	counter.JobFinished(queue.Job{Kind: queue.KindBackup, Result: queue.ResultDone})
	counter.JobFinished(queue.Job{Kind: queue.KindBackup, Result: queue.ResultDone})
	counter.JobFinished(queue.Job{Kind: queue.KindBackup, Result: queue.ResultFailed, ArchiveID: "abc", Error: "partial backup, archive abc exists: restic could not read 2 file(s)"})
	counter.JobFinished(queue.Job{Kind: queue.KindPrune, Result: queue.ResultFailed, Error: "repository is locked"})
	counter.JobFinished(queue.Job{Kind: queue.KindCheck, Result: queue.ResultStalled})
	counter.JobFinished(queue.Job{Kind: queue.KindSend, Result: queue.ResultSkipped, Error: "target disk is absent"})
	counter.JobFinished(queue.Job{Kind: queue.KindSend, Result: queue.ResultDone})
	return Snapshot{
		Version: "1.2.3", Started: at("2026-12-01T10:00:00Z"), Reloaded: at("2026-12-01T11:00:00.5Z"), ReloadOK: false,
		Queued: 1, Running: 2, Jobs: counter.Counts(),
		Plans: []Plan{{
			Name: "home", LastBackup: at("2026-12-03T03:10:00Z"), LastResult: ResultOf(contract.ResultFailed, "partial backup, archive abc exists"),
			LastSuccess: at("2026-12-02T03:05:00.25Z"), LastDuration: 90*time.Second + 500*time.Millisecond,
			Summary:  &Summary{FilesNew: 3, FilesChanged: 2, FilesUnmodified: 1000, AddedBytes: 123456789, ProcessedBytes: 9876543210},
			Archives: 12, Snapshots: 2, NextRun: at("2026-12-04T03:00:00Z"), Overdue: false, Stalled: 1,
		}, {
			Name: "db", LastDuration: -1, Archives: -1, Snapshots: 0, Overdue: true,
		}},
	}
}

const wantExposition = `# HELP subvault_archives The plan's archives in its repository, as the daemon last listed them; absent when it has not since the last job on the repository ended (subvault never runs restic for a scrape).
# TYPE subvault_archives gauge
subvault_archives{plan="home"} 12
# HELP subvault_build_info 1, with the daemon's version as a label.
# TYPE subvault_build_info gauge
subvault_build_info{version="1.2.3"} 1
# HELP subvault_config_last_reload_success 1 when the daemon's last load of its configuration (at start or by a reload) was accepted, 0 when it was refused and the one before stays in force.
# TYPE subvault_config_last_reload_success gauge
subvault_config_last_reload_success 0
# HELP subvault_config_last_reload_timestamp_seconds When the daemon last loaded its configuration (at start or by a reload, accepted or not), in seconds since the epoch.
# TYPE subvault_config_last_reload_timestamp_seconds gauge
subvault_config_last_reload_timestamp_seconds 1.7961228005e+09
# HELP subvault_jobs Jobs queued and running now.
# TYPE subvault_jobs gauge
subvault_jobs{state="queued"} 1
subvault_jobs{state="running"} 2
# HELP subvault_jobs_total Jobs that finished since the daemon started, by kind and result.
# TYPE subvault_jobs_total counter
subvault_jobs_total{kind="backup",result="canceled"} 0
subvault_jobs_total{kind="backup",result="done"} 2
subvault_jobs_total{kind="backup",result="failed"} 0
subvault_jobs_total{kind="backup",result="partial"} 1
subvault_jobs_total{kind="backup",result="postponed"} 0
subvault_jobs_total{kind="backup",result="skipped"} 0
subvault_jobs_total{kind="backup",result="stalled"} 0
subvault_jobs_total{kind="check",result="canceled"} 0
subvault_jobs_total{kind="check",result="done"} 0
subvault_jobs_total{kind="check",result="failed"} 0
subvault_jobs_total{kind="check",result="partial"} 0
subvault_jobs_total{kind="check",result="postponed"} 0
subvault_jobs_total{kind="check",result="skipped"} 0
subvault_jobs_total{kind="check",result="stalled"} 1
subvault_jobs_total{kind="copy",result="canceled"} 0
subvault_jobs_total{kind="copy",result="done"} 0
subvault_jobs_total{kind="copy",result="failed"} 0
subvault_jobs_total{kind="copy",result="partial"} 0
subvault_jobs_total{kind="copy",result="postponed"} 0
subvault_jobs_total{kind="copy",result="skipped"} 0
subvault_jobs_total{kind="copy",result="stalled"} 0
subvault_jobs_total{kind="prune",result="canceled"} 0
subvault_jobs_total{kind="prune",result="done"} 0
subvault_jobs_total{kind="prune",result="failed"} 1
subvault_jobs_total{kind="prune",result="partial"} 0
subvault_jobs_total{kind="prune",result="postponed"} 0
subvault_jobs_total{kind="prune",result="skipped"} 0
subvault_jobs_total{kind="prune",result="stalled"} 0
subvault_jobs_total{kind="restore",result="canceled"} 0
subvault_jobs_total{kind="restore",result="done"} 0
subvault_jobs_total{kind="restore",result="failed"} 0
subvault_jobs_total{kind="restore",result="partial"} 0
subvault_jobs_total{kind="restore",result="postponed"} 0
subvault_jobs_total{kind="restore",result="skipped"} 0
subvault_jobs_total{kind="restore",result="stalled"} 0
subvault_jobs_total{kind="send",result="canceled"} 0
subvault_jobs_total{kind="send",result="done"} 1
subvault_jobs_total{kind="send",result="failed"} 0
subvault_jobs_total{kind="send",result="partial"} 0
subvault_jobs_total{kind="send",result="postponed"} 0
subvault_jobs_total{kind="send",result="skipped"} 1
subvault_jobs_total{kind="send",result="stalled"} 0
# HELP subvault_last_backup_added_bytes Bytes the plan's last backup added to the repository (restic's data_added, before compression); absent when it made no summary.
# TYPE subvault_last_backup_added_bytes gauge
subvault_last_backup_added_bytes{plan="home"} 1.23456789e+08
# HELP subvault_last_backup_duration_seconds How long the plan's last backup ran, from its start to its end (snapshots, hooks and restic).
# TYPE subvault_last_backup_duration_seconds gauge
subvault_last_backup_duration_seconds{plan="home"} 90.5
# HELP subvault_last_backup_files Files restic found new, changed and unmodified in the plan's last backup; absent when it made no summary.
# TYPE subvault_last_backup_files gauge
subvault_last_backup_files{change="changed",plan="home"} 2
subvault_last_backup_files{change="new",plan="home"} 3
subvault_last_backup_files{change="unmodified",plan="home"} 1000
# HELP subvault_last_backup_processed_bytes Bytes restic read in the plan's last backup (total_bytes_processed); absent when it made no summary.
# TYPE subvault_last_backup_processed_bytes gauge
subvault_last_backup_processed_bytes{plan="home"} 9.87654321e+09
# HELP subvault_last_backup_result 1 for the result the plan's last backup ended with, 0 for the other results (done, partial, failed, stalled, canceled, postponed); absent until one is known.
# TYPE subvault_last_backup_result gauge
subvault_last_backup_result{plan="home",result="canceled"} 0
subvault_last_backup_result{plan="home",result="done"} 0
subvault_last_backup_result{plan="home",result="failed"} 0
subvault_last_backup_result{plan="home",result="partial"} 1
subvault_last_backup_result{plan="home",result="postponed"} 0
subvault_last_backup_result{plan="home",result="stalled"} 0
# HELP subvault_last_backup_success 1 when the plan's last backup ended done, 0 when it ended otherwise (partial, failed, stalled, canceled); absent until one is known.
# TYPE subvault_last_backup_success gauge
subvault_last_backup_success{plan="home"} 0
# HELP subvault_last_backup_timestamp_seconds When the plan's last backup ended (any result but postponed), in seconds since the epoch; absent until one is known.
# TYPE subvault_last_backup_timestamp_seconds gauge
subvault_last_backup_timestamp_seconds{plan="home"} 1.7962674e+09
# HELP subvault_last_success_timestamp_seconds When the plan's last backup that ended done ended, in seconds since the epoch; absent until one is known.
# TYPE subvault_last_success_timestamp_seconds gauge
subvault_last_success_timestamp_seconds{plan="home"} 1.79618070025e+09
# HELP subvault_next_run_timestamp_seconds When the plan's next scheduled backup is due, in seconds since the epoch; absent for a plan without a schedule.
# TYPE subvault_next_run_timestamp_seconds gauge
subvault_next_run_timestamp_seconds{plan="home"} 1.7963532e+09
# HELP subvault_overdue 1 when the plan is overdue: its last success is twice its schedule's interval old or older, and its last backup did not fail (its health, as subvault status shows it).
# TYPE subvault_overdue gauge
subvault_overdue{plan="db"} 1
subvault_overdue{plan="home"} 0
# HELP subvault_snapshots The plan's local btrfs snapshots.
# TYPE subvault_snapshots gauge
subvault_snapshots{plan="db"} 0
subvault_snapshots{plan="home"} 2
# HELP subvault_stalled_jobs The plan's running jobs that count as stalled now: their restic made no progress for the plan's stall_timeout, and on_stall lets them go on.
# TYPE subvault_stalled_jobs gauge
subvault_stalled_jobs{plan="db"} 0
subvault_stalled_jobs{plan="home"} 1
# HELP subvault_start_time_seconds When the daemon started, in seconds since the epoch.
# TYPE subvault_start_time_seconds gauge
subvault_start_time_seconds 1.7961192e+09
`

// TestCollectorExposition: a fixed snapshot gives exactly the text a
// scrape or the textfile shows: every metric with its HELP, every kind ×
// result counter from 0, a plan never backed up without last-backup
// metrics, a partial backup told apart from a failed one.
func TestCollectorExposition(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(fixedSnapshot))
	if err := testutil.GatherAndCompare(reg, strings.NewReader(wantExposition)); err != nil {
		t.Error(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestTextfileExpositionExactly: the textfile holds exactly the text of
// the exposition, no go_* or process_* metric, and promtool check
// metrics finds nothing wrong in it.
func TestTextfileExpositionExactly(t *testing.T) {
	t.Parallel()
	s := NewService(fixedSnapshot, nil)
	dir := t.TempDir()
	if err := WriteTextfile(dir, s.TextfileGatherer()); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, TextfileName))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != wantExposition {
		t.Errorf("textfile:\n%s\nwant:\n%s", got, wantExposition)
	}
	fi, err := os.Stat(filepath.Join(dir, TextfileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("textfile mode %v, want 0644 (node_exporter runs as its own user)", fi.Mode())
	}
	promtoolCheck(t, got)
}

// promtoolCheck runs promtool check metrics on an exposition.
func promtoolCheck(t *testing.T, text []byte) {
	t.Helper()
	promtool := svtestutil.RequireCommand(t, "promtool", "prometheus")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(text)
	out, err := cmd.CombinedOutput()
	t.Logf("promtool check metrics: %v %s", err, out)
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// A failure is partial when its error says so, as the notify reports and
// subvault jobs have it (api/contract Result), whether or not the job's
// archive is known: a backup whose archive was made but whose
// keep_snapshots failed after it is failed (before: partial while its job
// was in the history, failed once it had left it).
func TestResultOf(t *testing.T) {
	counter := NewJobCounter()
	counter.JobFinished(queue.Job{Kind: queue.KindBackup, Result: queue.ResultFailed, ArchiveID: "abc", Error: "cannot delete snapshot /home/.subvault-snapshots/x: permission denied"})
	counter.JobFinished(queue.Job{Kind: queue.KindBackup, Result: queue.ResultFailed, ArchiveID: "abc", Error: "partial backup, archive abc exists: restic could not read 1 file(s)"})
	if got := counter.Counts(); got[JobKey{"backup", "failed"}] != 1 || got[JobKey{"backup", "partial"}] != 1 {
		t.Errorf("counts %v; want one failed backup and one partial", got)
	}
	for _, c := range []struct {
		result contract.Result
		err    string
		want   string
	}{
		{contract.ResultFailed, "partial backup, archive abc exists: restic could not read 1 file(s)", "partial"},
		{contract.ResultFailed, "cannot delete snapshot: permission denied", "failed"},
		{contract.ResultDone, "", "done"},
		{contract.ResultStalled, "no progress", "stalled"},
	} {
		if got := ResultOf(c.result, c.err); got != c.want {
			t.Errorf("ResultOf(%s, %q) = %s, want %s", c.result, c.err, got, c.want)
		}
	}
}

package contract

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

func TestPlanPathEscapesLikeSystemd(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{
		"home":      "/org/subvault/Subvault1/plan/home",
		"my_plan.x": "/org/subvault/Subvault1/plan/my_5fplan_2ex",
		"a-b":       "/org/subvault/Subvault1/plan/a_2db",
		"":          "/org/subvault/Subvault1/plan/_",
	} {
		if got := PlanPath(name); string(got) != want || !got.IsValid() {
			t.Errorf("PlanPath(%q) = %s, want %s", name, got, want)
		}
	}
	if JobPath(42) != "/org/subvault/Subvault1/job/42" {
		t.Errorf("JobPath(42) = %s", JobPath(42))
	}
}

func TestEscapeInvalidUTF8(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/home/ok":          "/home/ok",
		"/home/caf\xc3\xa9": "/home/café",
		"/home/\xff\xfeX":   `/home/\xff\xfeX`,
		"/home/a\x00b":      `/home/a\x00b`,
		"\xc3":              `\xc3`,
	} {
		if got := EscapeInvalidUTF8(in); got != want {
			t.Errorf("EscapeInvalidUTF8(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestJobIDFromPath(t *testing.T) {
	t.Parallel()
	for path, want := range map[dbus.ObjectPath]uint32{JobPath(1): 1, JobPath(4294967295): 4294967295} {
		if id, ok := JobID(path); !ok || id != want {
			t.Errorf("JobID(%s) = %d, %v", path, id, ok)
		}
	}
	for _, p := range []dbus.ObjectPath{"/org/subvault/Subvault1/job/", "/org/subvault/Subvault1/job/01", "/org/subvault/Subvault1/job/x", "/org/subvault/Subvault1/plan/home"} {
		if _, ok := JobID(p); ok {
			t.Errorf("JobID(%s) accepted", p)
		}
	}
}

// What a client reads back from a job's properties is the job the server
// gave them, and the properties have the contract's D-Bus types.
func TestJobProperties(t *testing.T) {
	t.Parallel()
	at := time.UnixMicro(1767225600123456)
	j := Job{ID: 3, Kind: KindBackup, Plan: "home", State: StateFinished, Result: ResultDone, Trigger: CallerTrigger(1000),
		Callers: []uint32{1000}, Triggers: []string{"dbus:1000", TriggerSchedule}, Progress: 1,
		BytesDone: 1 << 40, BytesTotal: 1 << 40, FilesDone: 9, FilesTotal: 9, SecondsRemaining: 0, CurrentFiles: []string{},
		WaitingSince: at.Add(30 * time.Second), Waiting: "restic retries the repository",
		Stalled: true, StalledSince: at.Add(40 * time.Second), StallTimeout: 300,
		QueuedAt: at, StartedAt: at.Add(time.Second), FinishedAt: at.Add(time.Minute), ArchiveID: "0123abcd",
		Summary:    map[string]any{"files_new": uint64(2), "total_duration": 1.5, "snapshot_id": "ab", "dry_run": false, "neg": int64(-1)},
		SendTarget: "usb"}
	props := j.Properties()
	want := map[string]string{"Id": "u", "Kind": "s", "Plan": "s", "State": "s", "Result": "s", "Trigger": "s", "Callers": "au",
		"Triggers": "as", "Progress": "d", "BytesDone": "t", "BytesTotal": "t", "FilesDone": "t", "FilesTotal": "t",
		"SecondsRemaining": "t", "CurrentFiles": "as", "WaitingSince": "t", "Waiting": "s", "Stalled": "b", "StalledSince": "t", "StallTimeout": "t", "QueuedAt": "t", "StartedAt": "t", "FinishedAt": "t", "Error": "s",
		"ArchiveId": "s", "Summary": "a{sv}", "SendTarget": "s"}
	for k, v := range props {
		if v.Signature().String() != want[k] {
			t.Errorf("property %s is %s, want %s", k, v.Signature(), want[k])
		}
	}
	if len(props) != len(want) {
		t.Errorf("%d properties, want %d", len(props), len(want))
	}
	if props["QueuedAt"].Value() != uint64(1767225600123456) {
		t.Errorf("QueuedAt %v", props["QueuedAt"])
	}
	if got := JobOf(props); !reflect.DeepEqual(got, j) {
		t.Errorf("read back:\n%+v\nwant\n%+v", got, j)
	}
	// A job as a new daemon shows it before it starts: no time, no lists.
	empty := JobOf(Job{ID: 4, State: StateQueued}.Properties())
	if !empty.StartedAt.IsZero() || empty.Callers == nil || len(empty.Callers) != 0 || empty.Summary == nil {
		t.Errorf("a queued job read back as %+v", empty)
	}
	// A property changed alone changes only itself.
	j.Apply(map[string]dbus.Variant{"State": dbus.MakeVariant("running")})
	if j.State != StateRunning || j.Plan != "home" {
		t.Errorf("after one change: %+v", j)
	}
}

func TestPlanAndManagerProperties(t *testing.T) {
	t.Parallel()
	p := Plan{Name: "home", Subvolumes: []string{"/home"}, Repository: "r", Schedule: "0 3 * * *",
		NextRun: time.UnixMicro(2000), LastBackup: time.UnixMicro(1000), LastResult: ResultFailed, LastError: "partial: 1 file",
		LastSuccess: time.UnixMicro(500), Health: HealthFailed, HealthReason: "last backup failed: partial: 1 file"}
	if got := PlanOf(p.Properties()); !reflect.DeepEqual(got, p) {
		t.Errorf("plan read back:\n%+v\nwant\n%+v", got, p)
	}
	for name, typ := range map[string]string{"Health": "s", "HealthReason": "s"} {
		if v, ok := p.Properties()[name]; !ok || v.Signature().String() != typ {
			t.Errorf("plan property %s: %v, want type %s", name, v, typ)
		}
	}
	m := Manager{Version: "1.0", State: ManagerRunning, Plans: []string{"home"}, Running: []uint32{3}, Queued: []uint32{4, 10}}
	props := m.Properties()
	if paths, _ := props["QueuedJobs"].Value().([]dbus.ObjectPath); !reflect.DeepEqual(paths, []dbus.ObjectPath{JobPath(4), JobPath(10)}) {
		t.Errorf("QueuedJobs %v", props["QueuedJobs"])
	}
	var got Manager
	got.Apply(props)
	if !reflect.DeepEqual(got, m) {
		t.Errorf("manager read back:\n%+v\nwant\n%+v", got, m)
	}
}

// The JSON of the objects is what subvault --json prints: the field names
// are documented in subvault(1).
func TestJSONNames(t *testing.T) {
	t.Parallel()
	data, err := json.Marshal(Job{ID: 1, Kind: KindCheck, State: StateQueued})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"id":1`, `"kind":"check"`, `"state":"queued"`, `"result":""`, `"bytes_done":0`, `"archive_id":""`} {
		if !strings.Contains(string(data), k) {
			t.Errorf("%s lacks %s", data, k)
		}
	}
	if strings.Contains(string(data), "started_at") {
		t.Errorf("%s has a zero time", data)
	}
}

func TestDiffRecords(t *testing.T) {
	t.Parallel()
	changes := []Change{{Kind: ChangeAdded, Path: "/a\tb\nc"}, {Kind: ChangeMetadata, Path: "/d/"}, {Kind: ChangeChanged, Path: "/\xff"}}
	var buf []byte
	for _, c := range changes {
		buf = AppendDiffRecord(buf, c)
	}
	var got []Change
	n, err := ReadDiffRecords(bytes.NewReader(buf), func(c Change) error {
		got = append(got, c)
		return nil
	})
	if err != nil || n != len(changes) || !reflect.DeepEqual(got, changes) {
		t.Errorf("read %d %v: %q", n, err, got)
	}
	for _, bad := range []string{"added\t/a\x00added\t/b", "added/a\x00"} {
		if _, err := ReadDiffRecords(strings.NewReader(bad), func(Change) error { return nil }); err == nil {
			t.Errorf("%q was read without an error", bad)
		}
	}
}

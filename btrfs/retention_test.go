package btrfs

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"
)

func at(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04:05", s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

// snaps makes one snapshot of subvolume per time, with job ids 1, 2, ...
func snaps(subvolume string, times ...string) []Snapshot {
	var out []Snapshot
	for i, s := range times {
		out = append(out, Snapshot{Plan: "p", Time: at(s), JobID: uint32(i + 1), Subvolume: subvolume})
	}
	return out
}

func times(list []Snapshot) []string {
	var out []string
	for _, s := range list {
		out = append(out, s.Time.Format("2006-01-02 15:04:05"))
	}
	return out
}

// The times of restic's internal/restic/snapshot_policy_test.go
// (testExpireSnapshots), tags dropped; sub-second times truncated, so two
// pairs share a second and differ by job id.
var resticTimes = []string{
	"2014-09-01 10:20:30", "2014-09-02 10:20:30", "2014-09-05 10:20:30", "2014-09-06 10:20:30",
	"2014-09-08 10:20:30", "2014-09-09 10:20:30", "2014-09-10 10:20:30", "2014-09-11 10:20:30",
	"2014-09-20 10:20:30", "2014-09-22 10:20:30", "2014-08-08 10:20:30", "2014-08-10 10:20:30",
	"2014-08-12 10:20:30", "2014-08-13 10:20:30", "2014-08-13 10:20:30", "2014-08-15 10:20:30",
	"2014-08-18 10:20:30", "2014-08-20 10:20:30", "2014-08-21 10:20:30", "2014-08-22 10:20:30",
	"2014-10-01 10:20:30", "2014-10-02 10:20:30", "2014-10-05 10:20:30", "2014-10-06 10:20:30",
	"2014-10-08 10:20:30", "2014-10-09 10:20:30", "2014-10-10 10:20:30", "2014-10-11 10:20:30",
	"2014-10-20 10:20:30", "2014-10-22 10:20:30", "2014-11-08 10:20:30", "2014-11-10 10:20:30",
	"2014-11-12 10:20:30", "2014-11-13 10:20:30", "2014-11-13 10:20:30", "2014-11-15 10:20:30",
	"2014-11-18 10:20:30", "2014-11-20 10:20:30", "2014-11-21 10:20:30", "2014-11-22 10:20:30",
	"2015-09-01 10:20:30", "2015-09-02 10:20:30", "2015-09-05 10:20:30", "2015-09-06 10:20:30",
	"2015-09-08 10:20:30", "2015-09-09 10:20:30", "2015-09-10 10:20:30", "2015-09-11 10:20:30",
	"2015-09-20 10:20:30", "2015-09-22 10:20:30", "2015-08-08 10:20:30", "2015-08-10 10:20:30",
	"2015-08-12 10:20:30", "2015-08-13 10:20:30", "2015-08-13 10:20:30", "2015-08-15 10:20:30",
	"2015-08-18 10:20:30", "2015-08-20 10:20:30", "2015-08-21 10:20:30", "2015-08-22 10:20:30",
	"2015-10-01 10:20:30", "2015-10-02 10:20:30", "2015-10-05 10:20:30", "2015-10-06 10:20:30",
	"2015-10-08 10:20:30", "2015-10-09 10:20:30", "2015-10-10 10:20:30", "2015-10-11 10:20:30",
	"2015-10-20 10:20:30", "2015-10-22 10:20:30", "2015-10-22 10:20:30", "2015-10-22 10:20:30",
	"2015-10-22 10:20:30", "2015-10-22 10:20:30", "2015-11-08 10:20:30", "2015-11-10 10:20:30",
	"2015-11-12 10:20:30", "2015-11-13 10:20:30", "2015-11-13 10:20:30", "2015-11-15 10:20:30",
	"2015-11-18 10:20:30", "2015-11-20 10:20:30", "2015-11-21 10:20:30", "2015-11-22 10:20:30",
	"2016-01-01 01:02:03", "2016-01-01 01:03:03", "2016-01-01 07:08:03", "2016-01-03 07:02:03",
	"2016-01-04 10:23:03", "2016-01-04 11:23:03", "2016-01-04 12:23:03", "2016-01-04 12:24:03",
	"2016-01-04 12:28:03", "2016-01-04 12:30:03", "2016-01-04 16:23:03", "2016-01-05 09:02:03",
	"2016-01-06 08:02:03", "2016-01-07 10:02:03", "2016-01-08 20:02:03", "2016-01-09 21:02:03",
	"2016-01-12 21:02:03", "2016-01-12 21:08:03", "2016-01-18 12:02:03",
}

func TestSelectKeep(t *testing.T) {
	now := at("2016-02-01 00:00:00")
	tests := []struct {
		name    string
		snaps   []Snapshot
		policy  KeepPolicy
		keep    []string
		reasons map[string][]string // by time, for the kept ones that are checked
	}{
		{
			// restic's golden file testdata/policy_keep_snapshots_13 for
			// ExpirePolicy{Daily: 3, Weekly: 4}: 2016-01-03 is ISO week
			// 2015-53, so it is a new week.
			name:   "restic daily 3 weekly 4",
			snaps:  snaps("/home", resticTimes...),
			policy: KeepPolicy{Daily: 3, Weekly: 4},
			keep:   []string{"2016-01-03 07:02:03", "2016-01-09 21:02:03", "2016-01-12 21:08:03", "2016-01-18 12:02:03"},
			reasons: map[string][]string{
				"2016-01-18 12:02:03": {"daily", "weekly"},
				"2016-01-12 21:08:03": {"daily", "weekly"},
				"2016-01-09 21:02:03": {"daily", "weekly"},
				"2016-01-03 07:02:03": {"weekly"},
			},
		},
		{
			name:   "last 3",
			snaps:  snaps("/home", "2016-01-01 00:00:00", "2016-01-02 00:00:00", "2016-01-03 00:00:00", "2016-01-04 00:00:00"),
			policy: KeepPolicy{Last: 3},
			keep:   []string{"2016-01-02 00:00:00", "2016-01-03 00:00:00", "2016-01-04 00:00:00"},
		},
		{
			name:   "hourly keeps the newest of each hour",
			snaps:  snaps("/home", "2016-01-04 10:05:00", "2016-01-04 10:55:00", "2016-01-04 11:10:00", "2016-01-04 11:50:00", "2016-01-04 12:00:00"),
			policy: KeepPolicy{Hourly: 2},
			keep:   []string{"2016-01-04 11:50:00", "2016-01-04 12:00:00"},
		},
		{
			name:   "daily with counts left also keeps the oldest (restic 0.17+)",
			snaps:  snaps("/home", "2016-01-04 10:00:00", "2016-01-04 11:00:00", "2016-01-05 10:00:00"),
			policy: KeepPolicy{Daily: 5},
			keep:   []string{"2016-01-04 10:00:00", "2016-01-04 11:00:00", "2016-01-05 10:00:00"},
		},
		{
			name:   "monthly",
			snaps:  snaps("/home", "2015-11-30 23:00:00", "2015-12-01 01:00:00", "2015-12-31 23:00:00", "2016-01-01 00:00:00", "2016-01-20 00:00:00"),
			policy: KeepPolicy{Monthly: 2},
			keep:   []string{"2015-12-31 23:00:00", "2016-01-20 00:00:00"},
		},
		{
			name:   "unlimited weekly (-1) keeps one per week",
			snaps:  snaps("/home", "2016-01-04 00:00:00", "2016-01-05 00:00:00", "2016-01-11 00:00:00", "2016-01-12 00:00:00", "2016-01-18 00:00:00"),
			policy: KeepPolicy{Weekly: -1},
			keep:   []string{"2016-01-04 00:00:00", "2016-01-05 00:00:00", "2016-01-12 00:00:00", "2016-01-18 00:00:00"},
		},
		{
			name:   "all-zero policy keeps nothing",
			snaps:  snaps("/home", "2016-01-01 00:00:00", "2016-01-02 00:00:00"),
			policy: KeepPolicy{},
			keep:   nil,
		},
		{
			name:    "future snapshots are kept and not counted",
			snaps:   snaps("/home", "2016-01-30 00:00:00", "2016-01-31 00:00:00", "2016-03-01 00:00:00"),
			policy:  KeepPolicy{Last: 1},
			keep:    []string{"2016-01-31 00:00:00", "2016-03-01 00:00:00"},
			reasons: map[string][]string{"2016-03-01 00:00:00": {"future"}, "2016-01-31 00:00:00": {"last"}},
		},
		{
			name:   "future snapshots survive an all-zero policy",
			snaps:  snaps("/home", "2016-01-30 00:00:00", "2016-03-01 00:00:00"),
			policy: KeepPolicy{},
			keep:   []string{"2016-03-01 00:00:00"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := append([]Snapshot(nil), tt.snaps...)
			keep, remove, reasons := SelectKeep(tt.snaps, tt.policy, now, time.UTC)
			if !reflect.DeepEqual(tt.snaps, input) {
				t.Fatal("SelectKeep modified its input")
			}
			if got := times(keep); !reflect.DeepEqual(got, tt.keep) {
				t.Errorf("keep = %v\nwant   %v", got, tt.keep)
			}
			if len(keep)+len(remove) != len(tt.snaps) {
				t.Errorf("keep %d + remove %d != %d snapshots", len(keep), len(remove), len(tt.snaps))
			}
			for _, s := range remove {
				if len(reasons[s.Name()]) != 0 {
					t.Errorf("removed %s has reasons %v", s.Name(), reasons[s.Name()])
				}
			}
			for _, s := range keep {
				if len(reasons[s.Name()]) == 0 {
					t.Errorf("kept %s has no reason", s.Name())
				}
				if want, ok := tt.reasons[s.Time.Format("2006-01-02 15:04:05")]; ok && !reflect.DeepEqual(reasons[s.Name()], want) {
					t.Errorf("reasons for %s = %v, want %v", s.Name(), reasons[s.Name()], want)
				}
			}
			if !slices.IsSortedFunc(keep, compareSnapshots) {
				t.Errorf("keep is not sorted: %v", times(keep))
			}
		})
	}
}

func TestSelectKeepPerSubvolume(t *testing.T) {
	now := at("2016-02-01 00:00:00")
	all := append(snaps("/home", "2016-01-01 00:00:00", "2016-01-02 00:00:00", "2016-01-03 00:00:00"),
		snaps("/srv/db", "2016-01-01 00:00:00", "2016-01-02 00:00:00")...)
	keep, remove, _ := SelectKeep(all, KeepPolicy{Last: 1}, now, nil)
	var got []string
	for _, s := range keep {
		got = append(got, fmt.Sprintf("%s %s", s.Subvolume, s.Time.Format("01-02")))
	}
	want := []string{"/srv/db 01-02", "/home 01-03"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("keep = %v, want %v", got, want)
	}
	if len(remove) != 3 {
		t.Errorf("remove %d snapshots, want 3", len(remove))
	}
}

// Buckets are computed in the plan's time zone: 23:30 UTC is already the next
// day in Berlin.
func TestSelectKeepTimeZone(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skipf("no tzdata: %v", err)
	}
	now := at("2016-02-01 00:00:00")
	list := snaps("/home", "2016-01-04 22:30:00", "2016-01-04 23:30:00")
	keep, _, _ := SelectKeep(list, KeepPolicy{Daily: 1}, now, time.UTC)
	if got := times(keep); !reflect.DeepEqual(got, []string{"2016-01-04 23:30:00"}) {
		t.Errorf("UTC: keep = %v", got)
	}
	keep, _, _ = SelectKeep(list, KeepPolicy{Daily: 2}, now, time.UTC)
	if len(keep) != 2 { // the oldest is kept while count is left
		t.Errorf("UTC daily 2: keep = %v", times(keep))
	}
	keep, _, _ = SelectKeep(list, KeepPolicy{Daily: 2, Hourly: 0}, now, berlin)
	if len(keep) != 2 {
		t.Errorf("Berlin: keep = %v", times(keep))
	}
	three := snaps("/home", "2016-01-04 21:30:00", "2016-01-04 22:30:00", "2016-01-04 23:30:00", "2016-01-05 10:00:00")
	keep, _, _ = SelectKeep(three, KeepPolicy{Daily: 2}, now, berlin)
	// Berlin days: 01-04 (21:30, 22:30 local 22:30/23:30), 01-05 (00:30, 11:00).
	if got, want := times(keep), []string{"2016-01-04 22:30:00", "2016-01-05 10:00:00"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Berlin: keep = %v, want %v", got, want)
	}
	keep, _, _ = SelectKeep(three, KeepPolicy{Daily: 2}, now, time.UTC)
	if got, want := times(keep), []string{"2016-01-04 23:30:00", "2016-01-05 10:00:00"}; !reflect.DeepEqual(got, want) {
		t.Errorf("UTC: keep = %v, want %v", got, want)
	}
}

// A pinned snapshot (a rollback's undo point) is kept whatever the policy
// and its age, and takes no rule's count from the others.
func TestSelectKeepPinned(t *testing.T) {
	list := snaps("/home", "2026-11-01 03:00:00", "2026-11-02 03:00:00", "2026-11-03 03:00:00")
	pinned := Snapshot{Plan: "p", Time: at("2020-01-01 00:00:00"), JobID: 9, Subvolume: "/home", Pinned: true}
	list = append(list, pinned)
	now := at("2026-11-04 00:00:00")
	for _, policy := range []KeepPolicy{{}, {Last: 1}, {Daily: 2}} {
		keep, remove, reasons := SelectKeep(list, policy, now, nil)
		if len(keep) == 0 || keep[0] != pinned || !reflect.DeepEqual(reasons[pinned.Name()], []string{ReasonPinned}) {
			t.Errorf("%+v: keep %v, reasons %v: the pinned snapshot is not kept first as pinned", policy, keep, reasons)
		}
		if got, want := len(keep)-1, policy.Last+policy.Daily; got != want {
			t.Errorf("%+v: %d unpinned kept, want %d (the pinned one must not use a rule's count)", policy, got, want)
		}
		if len(keep)+len(remove) != len(list) {
			t.Errorf("%+v: %d kept + %d removed of %d", policy, len(keep), len(remove), len(list))
		}
	}
}

package btrfs

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// KeepPolicy says how many snapshots to keep per kind, with the meaning of
// restic's `forget --keep-last/--keep-hourly/--keep-daily/--keep-weekly/
// --keep-monthly`. A negative count keeps one snapshot in every bucket of
// that kind (restic's -1, "unlimited").
type KeepPolicy struct {
	Last, Hourly, Daily, Weekly, Monthly int
}

// Keep reasons, as SelectKeep reports them.
const (
	ReasonLast    = "last"
	ReasonHourly  = "hourly"
	ReasonDaily   = "daily"
	ReasonWeekly  = "weekly"
	ReasonMonthly = "monthly"
	// ReasonFuture marks a snapshot dated after now (a clock that went
	// back): it is kept and counts for no rule.
	ReasonFuture = "future"
	// ReasonPinned marks a pinned snapshot (a rollback's or in-place
	// restore's undo point): always kept, counted for no rule.
	ReasonPinned = "pinned"
)

// SelectKeep splits snapshots into the ones the policy keeps and the ones it
// removes. Each subvolume's snapshots are selected on their own. Within one,
// the snapshots are walked newest first, as restic does: for each kind, a
// snapshot is kept when its bucket (hour, day, ISO week or month of its time
// in loc; every snapshot is its own bucket for "last") differs from the bucket
// of the last snapshot kept for that kind and that kind's count is not used
// up; the oldest snapshot is kept too while a kind still has count left
// (restic ≥ 0.17 does the same, to keep the longest history). A snapshot is
// kept when any kind keeps it; reasons lists the kinds, by snapshot name.
//
// Snapshots dated after now are kept (ReasonFuture) and not counted, and so
// are pinned ones (ReasonPinned), whatever their time. An
// all-zero policy keeps nothing else. A nil loc means UTC. keep and remove are
// sorted as ListSnapshots sorts. snaps is not modified.
func SelectKeep(snaps []Snapshot, policy KeepPolicy, now time.Time, loc *time.Location) (keep, remove []Snapshot, reasons map[string][]string) {
	if loc == nil {
		loc = time.UTC
	}
	reasons = make(map[string][]string)
	bySubvolume := make(map[string][]Snapshot)
	for _, s := range snaps {
		bySubvolume[s.Subvolume] = append(bySubvolume[s.Subvolume], s)
	}
	for _, group := range bySubvolume {
		var past []Snapshot
		for _, s := range group {
			if s.Pinned {
				keep = append(keep, s)
				reasons[s.Name()] = append(reasons[s.Name()], ReasonPinned)
				continue
			}
			if s.Time.After(now) {
				keep = append(keep, s)
				reasons[s.Name()] = append(reasons[s.Name()], ReasonFuture)
				continue
			}
			past = append(past, s)
		}
		// Newest first; ties by job id, newest job first.
		slices.SortStableFunc(past, func(a, b Snapshot) int { return compareSnapshots(b, a) })

		kinds := []struct {
			count  int
			bucket func(t time.Time, nr int) int
			last   int
			reason string
		}{
			{policy.Last, func(_ time.Time, nr int) int { return nr }, -1, ReasonLast},
			{policy.Hourly, func(t time.Time, _ int) int {
				return t.Year()*1000000 + int(t.Month())*10000 + t.Day()*100 + t.Hour()
			}, -1, ReasonHourly},
			{policy.Daily, func(t time.Time, _ int) int {
				return t.Year()*10000 + int(t.Month())*100 + t.Day()
			}, -1, ReasonDaily},
			{policy.Weekly, func(t time.Time, _ int) int {
				y, w := t.ISOWeek()
				return y*100 + w
			}, -1, ReasonWeekly},
			{policy.Monthly, func(t time.Time, _ int) int {
				return t.Year()*100 + int(t.Month())
			}, -1, ReasonMonthly},
		}
		for nr, s := range past {
			t := s.Time.In(loc)
			var why []string
			for i := range kinds {
				k := &kinds[i]
				if k.count == 0 {
					continue
				}
				v := k.bucket(t, nr)
				if v != k.last || nr == len(past)-1 {
					k.last = v
					if k.count > 0 {
						k.count--
					}
					why = append(why, k.reason)
				}
			}
			if len(why) > 0 {
				keep = append(keep, s)
				reasons[s.Name()] = append(reasons[s.Name()], why...)
			} else {
				remove = append(remove, s)
			}
		}
	}
	slices.SortStableFunc(keep, compareSnapshots)
	slices.SortStableFunc(remove, compareSnapshots)
	return keep, remove, reasons
}

// compareSnapshots orders snapshots by time, then job id, then subvolume,
// then plan.
func compareSnapshots(a, b Snapshot) int {
	return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.JobID, b.JobID),
		strings.Compare(a.Subvolume, b.Subvolume), strings.Compare(a.Plan, b.Plan))
}

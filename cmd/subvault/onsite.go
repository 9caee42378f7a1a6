package main

import (
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/subvault/subvault/api/contract"
)

// What the onsite tier (targets, send jobs) looks like in every listing.

// jobWhat names a job for a person: "backup of home", "send of home to
// usb".
func jobWhat(j contract.Job) string {
	what := printable(j.Kind) + " of " + printable(j.Plan)
	if j.SendTarget != "" {
		what += " to " + printable(j.SendTarget)
	}
	return what
}

// kindCell is a job's KIND cell: its kind, and a send's target.
func kindCell(j contract.Job) string {
	if j.SendTarget != "" {
		return printable(j.Kind) + " " + printable(j.SendTarget)
	}
	return printable(j.Kind)
}

// onsiteAges is a plan's targets with the age of the plan's newest copy on
// each: "usb 3h00m ago, disk 12d4h ago (absent)"; "never" for none, "-"
// for a plan that sends nowhere.
func onsiteAges(o output, targets []contract.PlanTarget) string {
	if len(targets) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(targets))
	for _, t := range targets {
		age := "never"
		if !t.Newest.IsZero() {
			age = o.when(t.Newest)
		}
		part := printable(t.Name) + " " + age
		if !t.Present {
			part += " (absent)"
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, ", ")
}

// anyTargets reports whether a plan sends to a target.
func anyTargets(plans []contract.Plan) bool {
	for _, p := range plans {
		if len(p.Targets) > 0 {
			return true
		}
	}
	return false
}

// copyTime is a copy's time: local minutes for a person, RFC 3339 for a
// pipe; "-" for none.
func (o output) copyTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	if !o.tty {
		return t.Format(time.RFC3339)
	}
	return t.Local().Format("2006-01-02 15:04")
}

// age is how old t is: 3h05m for a person, seconds for a pipe; "-" for
// none.
func (o output) age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := max(o.now().Sub(t), 0)
	if !o.tty {
		return strconv.FormatInt(int64(d/time.Second), 10)
	}
	return roughDuration(d)
}

// printSendSummary prints what a send did: each subvolume's snapshot,
// from which parent or why in full, and the bytes; where the copies are.
func printSendSummary(w io.Writer, o output, s map[string]any) {
	if where, _ := s["where"].(string); where != "" {
		fmt.Fprintf(w, "  copies in: %s\n", printable(where))
	}
	if up, _ := s["up_to_date"].(bool); up {
		fmt.Fprintln(w, "  up to date: the target had the newest snapshots already")
	}
	for _, one := range summaryList(s["sent"]) {
		str := func(k string) string { v, _ := one[k].(string); return v }
		bytes, _ := one["bytes"].(uint64)
		how := "incremental from " + printable(str("parent"))
		if str("parent") == "" {
			how = "full"
			if why := str("full_reason"); why != "" {
				how += " (" + printable(why) + ")"
			}
		}
		fmt.Fprintf(w, "  %s: %s, %s, %s\n", printable(str("subvolume")), printable(str("snapshot")), how, o.size(bytes))
	}
	if n, ok := s["bytes_sent"].(uint64); ok {
		fmt.Fprintf(w, "  sent: %s\n", o.size(n))
	}
	if n, ok := s["leftovers_removed"]; ok {
		fmt.Fprintf(w, "  leftovers of interrupted receives removed: %v\n", n)
	}
}

// summaryList reads a summary value that is a list of records: as the
// daemon made it ([]map[string]any) or as it came over the bus (each
// value a D-Bus variant).
func summaryList(v any) []map[string]any {
	type variant interface{ Value() any }
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Slice {
		return nil
	}
	var out []map[string]any
	for i := range rv.Len() {
		m := rv.Index(i)
		if m.Kind() == reflect.Interface {
			m = m.Elem()
		}
		if m.Kind() != reflect.Map || m.Type().Key().Kind() != reflect.String {
			continue
		}
		rec := map[string]any{}
		for it := m.MapRange(); it.Next(); {
			val := it.Value().Interface()
			if vv, ok := val.(variant); ok {
				val = vv.Value()
			}
			rec[it.Key().String()] = val
		}
		out = append(out, rec)
	}
	return out
}

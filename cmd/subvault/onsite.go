package main

import (
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

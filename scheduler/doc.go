// Package scheduler turns each plan's cron specs into runs: next-run times from
// the wall clock, re-checked after suspend, and catch-up of a run missed while
// the machine was off. It only enqueues; it never runs a job itself.
package scheduler

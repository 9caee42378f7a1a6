// Package daemon is subvault's service, a facade over the packages that do
// the work: it holds the configuration in force (reloaded on SIGHUP), feeds
// the scheduler, owns the job queue (daemon/queue) and the executor that
// hands each job to its feature package (daemon/backup, daemon/restore,
// daemon/maintenance), and answers what callers ask (jobs, restores,
// rollbacks through daemon/rollback, diffs through daemon/compare, a plan's
// snapshots and archives through daemon/planstore) after checking the
// arguments and mapping refusals to its errors. It publishes each plan's
// health (daemon/health) and tells its Listeners of the plan changes no
// job tells of: a reload, a next run moved, a plan become overdue. It speaks sd_notify (READY,
// STATUS, WATCHDOG, RELOADING, STOPPING), holds the logind sleep inhibitor
// while a job runs, removes at start what jobs of an earlier daemon left,
// and drains the queue at stop.
//
// It speaks no D-Bus: package api is a thin skin over it. It uses btrfs,
// restic and scheduler, never the other way round (checked by depguard in
// .golangci.yml). docs/architecture.md has the layers, who owns what, and
// the flow of a job through the queue.
package daemon

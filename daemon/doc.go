// Package daemon is subvault's service: the job queue and its workers, job
// state and persisted history, sd_notify (READY, STATUS, WATCHDOG, RELOADING,
// STOPPING), SIGHUP reload, graceful stop, journald logging, the logind sleep
// inhibitor and the removal of leftover snapshots at start.
//
// It speaks no D-Bus: package api is a thin skin over it. It uses btrfs,
// restic and scheduler, never the other way round (checked by depguard in
// .golangci.yml). docs/architecture.md has the layers, who owns what, and
// the flow of a job through the queue.
package daemon

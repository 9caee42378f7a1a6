// Package restic runs the restic binary: argv and environment (secrets only
// through RESTIC_PASSWORD_FILE or RESTIC_PASSWORD_COMMAND, never argv or
// logs), --json parsing of backup, snapshots, forget and check, version
// detection, and the mapping of exit codes and stderr to one-line causes a
// person can act on. It knows nothing of D-Bus.
//
// Every restic process is started and waited for in the goroutine that calls
// a Runner method, through one wrapper (run in exec.go). The daemon calls
// Backup from a goroutine locked to an OS thread that has unshared its mount
// namespace: a process forked from any other thread would not see the
// snapshots bound over the original paths. Only the readers of the child's
// stdout and stderr run on helper goroutines, so callbacks such as the
// backup status function are called from a goroutine of this package, one at
// a time.
//
// restic 0.14 to 0.19 are supported. Where they differ (exit codes 10, 11
// and 12 exist from 0.17; 0.17 adds exit_error messages and feature flags;
// error objects changed shape), the code says which version does what, and
// the tests run against every binary testutil.ResticBinaries names.
package restic

// Package restic runs the restic binary: argv and environment (secrets only
// through RESTIC_PASSWORD_FILE or RESTIC_PASSWORD_COMMAND, never argv or
// logs), --json parsing of backup, snapshots, forget and check, version
// detection, and the mapping of exit codes and stderr to one-line causes a
// person can act on. It knows nothing of D-Bus.
package restic

// Package mountns runs a program in a private mount namespace in which each
// read-only snapshot is bind-mounted over its subvolume's original path, so
// restic records the original paths and finds its parent archive while the
// host never sees a mount.
//
// The runner owns one goroutine: it locks its OS thread, unshares the mount
// namespace, makes / recursively private, mounts, starts the program and
// waits for it, and never unlocks the thread, which then dies with the
// goroutine and takes the namespace with it. Nothing else may run on it.
package mountns

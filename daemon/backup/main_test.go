package backup

import "runtime"

// As in package main: the startup thread must never enter a backup's
// namespace, because /proc/self shows its view of the mounts.
func init() { runtime.LockOSThread() }

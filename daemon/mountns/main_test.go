package mountns

import "runtime"

// As in package main of the daemon: the startup thread's mounts are what
// /proc/self shows, so no namespace goroutine may ever run on it.
func init() { runtime.LockOSThread() }

package mountns

import (
	"os"
	"runtime"
	"testing"
)

// As in package main of the daemon: the startup thread's mounts are what
// /proc/self shows, so no namespace goroutine may ever run on it.
func init() { runtime.LockOSThread() }

func TestMain(m *testing.M) {
	if os.Getenv(mainUnlockedEnv) == "1" {
		// Stand in for a program that forgot the lock in init: Run must
		// still keep off the main thread (TestRunKeepsOffAnUnlockedMainThread).
		runtime.UnlockOSThread()
	}
	os.Exit(m.Run())
}

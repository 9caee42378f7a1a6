package backup

import (
	"os"
	"runtime"
	"testing"

	"github.com/subvault/subvault/internal/testutil"
)

// As in package main: the startup thread must never enter a backup's
// namespace, because /proc/self shows its view of the mounts.
func init() { runtime.LockOSThread() }

func TestMain(m *testing.M) {
	testutil.HostileMain()
	os.Exit(m.Run())
}

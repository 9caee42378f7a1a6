package mountns

import (
	"os"
	"runtime"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Getenv(mainUnlockedEnv) == "1" {
		// Undo the package's own init lock (mainthread.go), as a program
		// that unlocks its main thread would: Run must still keep off it
		// (TestRunKeepsOffAnUnlockedMainThread).
		runtime.UnlockOSThread()
	}
	os.Exit(m.Run())
}

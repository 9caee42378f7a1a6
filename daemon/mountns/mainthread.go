package mountns

import "runtime"

// init locks the main goroutine to the process's startup thread, for every
// binary that imports this package: the subvault command, and the test
// binaries of the packages that run restic in a namespace. Package init
// functions run on the startup thread, and a LockOSThread there holds it
// for main (or TestMain) and for good.
//
// Why: Run unshares the mount namespace of a locked thread and never
// leaves it; when its goroutine returns, the runtime ends that thread
// (golang/go#20395), except the startup thread, which it cannot end and
// parks for ever in whatever namespace it is in (golang/go#53210). The
// startup thread is what /proc/self shows, so a namespace that landed on
// it would be, for the rest of the process's life, what /proc/self/mountinfo
// and every check of "the host's mounts" read. Held by the main goroutine,
// the startup thread never runs a namespace goroutine. Run keeps off an
// unlocked startup thread by itself too (TestRunKeepsOffAnUnlockedMainThread)
// for a program that unlocks it.
func init() { runtime.LockOSThread() }

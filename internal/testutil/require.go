// Package testutil holds the helpers that let tests use the real things:
// btrfs on a loop device, the restic binary, a private dbus-daemon.
//
// A test that needs something this machine lacks skips with the reason; under
// CI (CI=true) the same skip is a failure, so a green CI run means the test ran.
//
// Under -short (`go test -short ./...`, make test-unit) every helper that
// needs root, a loop device, a bus or restic skips, whoever runs it: what is
// left needs only Go and a temporary directory, and runs in seconds for a
// contributor without root. A -short skip is a skip under CI=true too, since
// -short asked for it; CI runs without -short.
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run under CI, where a skip of a test that
// needs root, btrfs, restic or dbus is a failure instead.
func InCI() bool {
	v := os.Getenv("CI")
	return v == "true" || v == "1"
}

// SkipOrFail skips the test with the reason, or fails it under CI.
func SkipOrFail(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("required but missing under CI=true (a skip here would hide an untested feature): %s", reason)
	}
	t.Skipf("SKIP (needs %s; set CI=true to make this a failure)", reason)
}

// SkipShort skips the test under -short, saying it needs what. Every
// helper that needs root, a loop device, a bus or restic calls it first.
func SkipShort(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("-short: needs %s (run without -short, as root, for this test)", what)
	}
}

// RequireRoot skips (or fails under CI) unless the test runs as root; it
// skips under -short.
func RequireRoot(t testing.TB) {
	t.Helper()
	SkipShort(t, "root")
	if os.Geteuid() != 0 {
		SkipOrFail(t, "root: run the tests as root, e.g. `sudo make test`")
	}
}

// RequireCommand skips (or fails under CI) unless each named program is on
// PATH, and says which Debian package provides it.
func RequireCommand(t testing.TB, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		SkipOrFail(t, name+" on PATH: apt-get install "+debianPackage)
	}
	return p
}

package api

import (
	"os"
	"testing"

	"github.com/subvault/subvault/internal/testutil"
)

// TestMain lets the test binary run as a hostile process (testutil.StartHostile).
func TestMain(m *testing.M) {
	testutil.HostileMain()
	os.Exit(m.Run())
}

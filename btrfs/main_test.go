package btrfs_test

import (
	"os"
	"testing"

	"github.com/subvault/subvault/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.HostileMain()
	os.Exit(m.Run())
}

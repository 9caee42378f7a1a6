package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResticBinariesFromEnv(t *testing.T) {
	bins := ResticBinaries(t)
	t.Setenv("SUBVAULT_RESTIC_BINARIES", strings.Join(bins, ":")+":"+bins[0])
	again := ResticBinaries(t)
	if strings.Join(again, ":") != strings.Join(bins, ":") {
		t.Errorf("ResticBinaries from SUBVAULT_RESTIC_BINARIES = %v, want %v (duplicates dropped)", again, bins)
	}
	if len(bins) == 0 {
		t.Fatal("ResticBinaries returned nothing")
	}
}

func TestResticCacheBinaryFollowsSubvaultCache(t *testing.T) {
	t.Setenv("SUBVAULT_CACHE", "/x/cache")
	if got, want := ResticCacheBinary(), "/x/cache/restic-trixie/root/usr/bin/restic"; got != want {
		t.Errorf("ResticCacheBinary() = %s, want %s", got, want)
	}
}

func TestNewResticRepo(t *testing.T) {
	ForEachRestic(t, func(t *testing.T, bin string) {
		repo, pw := NewResticRepo(t, bin)
		if _, err := os.Stat(filepath.Join(repo, "config")); err != nil {
			t.Errorf("no repository made: %v", err)
		}
		st, err := os.Stat(pw)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("password file mode %v, want 0600", st.Mode().Perm())
		}
	})
}

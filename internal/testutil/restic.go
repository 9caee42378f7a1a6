package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// resticVersionRE reads "restic 0.14.0 compiled with go1.19.8 on linux/amd64".
var resticVersionRE = regexp.MustCompile(`^restic (\d+)\.(\d+)\.(\d+)`)

// ResticCacheBinary is where .ci/restic-versions unpacks Debian trixie's
// restic (0.18): the second version the restic tests run against.
func ResticCacheBinary() string {
	return filepath.Join(subvaultCache(), "restic-trixie", "root", "usr", "bin", "restic")
}

// subvaultCache is the cache directory of .ci/deps: $SUBVAULT_CACHE, or
// $XDG_CACHE_HOME/subvault, or ~/.cache/subvault.
func subvaultCache() string {
	if cache := os.Getenv("SUBVAULT_CACHE"); cache != "" {
		return cache
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "subvault")
}

// resticVersions caches ResticVersion by path: a binary does not change
// during a test run, and each per-binary subtest asks for its version.
var resticVersions sync.Map

// ResticVersion runs `bin version` and returns "0.14.0", or "" when bin
// does not run or says something else.
func ResticVersion(bin string) string {
	if v, ok := resticVersions.Load(bin); ok {
		return v.(string)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "" // not cached: it may be unpacked later in the run
	}
	v := ""
	if m := resticVersionRE.FindStringSubmatch(strings.TrimSpace(string(out))); m != nil {
		v = m[1] + "." + m[2] + "." + m[3]
	}
	resticVersions.Store(bin, v)
	return v
}

// ResticBinaries is the restic binaries to run each restic test against:
// the colon-separated $SUBVAULT_RESTIC_BINARIES when set, else restic from
// PATH plus trixie's if .ci/restic-versions has unpacked it (a test never
// downloads). Under CI=true it fails unless both an old (< 0.17) and a new
// (>= 0.17) restic are there, since their exit codes and messages differ;
// outside CI a missing one is skipped loudly (t.Log) and only no restic at
// all skips the test. It skips under -short. Most tests want ForEachRestic
// or Restic instead.
func ResticBinaries(t testing.TB) []string {
	t.Helper()
	SkipShort(t, "restic")
	var candidates []string
	if env := os.Getenv("SUBVAULT_RESTIC_BINARIES"); env != "" {
		for _, b := range strings.Split(env, ":") {
			if b != "" {
				candidates = append(candidates, b)
			}
		}
	} else {
		if p, err := exec.LookPath("restic"); err == nil {
			candidates = append(candidates, p)
		} else {
			t.Logf("NOTE: no restic on PATH (apt-get install restic): its tests are not run")
		}
		// Listed even when missing: RequireRestic then skips that version's
		// subtests, each with the fix, where a NOTE in the log would go unseen.
		candidates = append(candidates, ResticCacheBinary())
	}
	var bins []string
	seen := map[string]string{}
	haveOld, haveNew := false, false
	for _, b := range candidates {
		v := ResticVersion(b)
		if v == "" {
			if InCI() {
				t.Fatalf("restic %s is missing or does not run, under CI=true: %s", b, resticFix)
			}
			bins = append(bins, b)
			continue
		}
		if other, dup := seen[v]; dup {
			t.Logf("NOTE: %s is restic %s like %s: tested once", b, v, other)
			continue
		}
		seen[v] = b
		bins = append(bins, b)
		if strings.HasPrefix(v, "0.") && versionMinor(v) < 17 {
			haveOld = true
		} else {
			haveNew = true
		}
	}
	if InCI() && (!haveOld || !haveNew) {
		t.Fatalf("CI=true needs restic < 0.17 and >= 0.17 (found %v): %s", seen, resticFix)
	}
	return bins
}

const resticFix = "apt-get install restic for 0.14; make test fetches trixie's 0.18 (or run .ci/restic-versions, or set SUBVAULT_RESTIC_BINARIES=old:new)"

// RequireRestic returns the version of bin, one of ResticBinaries, or skips
// (fails under CI) with the fix when bin is missing or does not run. Call it
// first in each per-binary subtest.
func RequireRestic(t testing.TB, bin string) string {
	t.Helper()
	v := ResticVersion(bin)
	if v == "" {
		SkipOrFail(t, "restic at "+bin+": "+resticFix)
	}
	return v
}

// ForEachRestic runs fn in a subtest for each of ResticBinaries, named
// by ResticName; a subtest whose binary is missing or does not run skips
// (fails under CI) with the fix, as RequireRestic does. fn's bin is the
// binary; ResticVersion(bin) is its version.
func ForEachRestic(t *testing.T, fn func(t *testing.T, bin string)) {
	t.Helper()
	for _, bin := range ResticBinaries(t) {
		t.Run(ResticName(bin), func(t *testing.T) {
			RequireRestic(t, bin)
			fn(t, bin)
		})
	}
}

// Restic returns the restic binary of a test that needs one but not each
// version: the first of ResticBinaries (the machine's own), or it skips
// (fails under CI) as RequireRestic does.
func Restic(t testing.TB) string {
	t.Helper()
	bins := ResticBinaries(t)
	if len(bins) == 0 {
		SkipOrFail(t, "a restic binary: "+resticFix)
	}
	RequireRestic(t, bins[0])
	return bins[0]
}

// ResticName is a subtest name for bin: "restic-" and its version, or
// "restic-not-found".
func ResticName(bin string) string {
	if v := ResticVersion(bin); v != "" {
		return "restic-" + v
	}
	return "restic-not-found"
}

func versionMinor(v string) int {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0
	}
	n := 0
	for _, c := range parts[1] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// ResticPassword is the password of repositories NewResticRepo makes.
const ResticPassword = "subvault-test-password-4f1c"

// NewResticRepo runs `restic init` with bin in a new temporary directory and
// returns the repository directory and its password file (mode 0600, holding
// ResticPassword); both are removed at cleanup.
func NewResticRepo(t testing.TB, bin string) (repoDir, passwordFile string) {
	t.Helper()
	dir := t.TempDir()
	repoDir = filepath.Join(dir, "repo")
	passwordFile = filepath.Join(dir, "password")
	if err := os.WriteFile(passwordFile, []byte(ResticPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "init")
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		"RESTIC_REPOSITORY=" + repoDir,
		"RESTIC_PASSWORD_FILE=" + passwordFile,
		"RESTIC_CACHE_DIR=" + filepath.Join(dir, "cache"),
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s init %s: %v\n%s", bin, repoDir, err, out)
	}
	return repoDir, passwordFile
}

package restic

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Version is a restic release, from "restic 0.14.0 compiled with go1.19.8 on
// linux/amd64" (or "restic 0.16.4-dev (compiled manually) ...").
type Version struct {
	Major, Minor, Patch int
	// Raw is the whole first line restic printed.
	Raw string
}

var versionRE = regexp.MustCompile(`^restic (\d+)\.(\d+)\.(\d+)`)

// ParseVersion reads the output of `restic version`.
func ParseVersion(out string) (Version, error) {
	line := strings.TrimSpace(strings.SplitN(strings.TrimSpace(out), "\n", 2)[0])
	m := versionRE.FindStringSubmatch(line)
	if m == nil {
		return Version{}, fmt.Errorf("cannot read the restic version from %q: expected \"restic X.Y.Z ...\"", line)
	}
	v := Version{Raw: line}
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	v.Patch, _ = strconv.Atoi(m[3])
	return v, nil
}

// AtLeast reports whether v is major.minor.patch or newer.
func (v Version) AtLeast(major, minor, patch int) bool {
	if v.Major != major {
		return v.Major > major
	}
	if v.Minor != minor {
		return v.Minor > minor
	}
	return v.Patch >= patch
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Version runs `restic version` once per Runner and remembers the answer
// (and, from 0.17, whether the device-id-for-hardlinks feature flag exists).
func (r *Runner) Version(ctx context.Context) (Version, error) {
	r.mu.Lock()
	if r.versionKnown {
		v := r.version
		r.mu.Unlock()
		return v, nil
	}
	r.mu.Unlock()

	var out strings.Builder
	res, err := r.exec(ctx, invocation{op: "version", args: []string{"version"}, bare: true,
		stdout: func(line []byte) { out.Write(line); out.WriteByte('\n') }})
	if err != nil {
		return Version{}, err
	}
	if res.exitCode != 0 {
		return Version{}, r.failure("version", res)
	}
	v, err := ParseVersion(out.String())
	if err != nil {
		return Version{}, fmt.Errorf("%s: %w", r.Binary, err)
	}
	hardlinkFlag := false
	if v.AtLeast(0, 17, 0) {
		// The flag is alpha in 0.17 and 0.18 and "will be removed after
		// repository format 3"; an unknown flag is fatal, so ask restic.
		var feats strings.Builder
		res, err := r.exec(ctx, invocation{op: "features", args: []string{"features"}, bare: true,
			stdout: func(line []byte) { feats.Write(line); feats.WriteByte('\n') }})
		if err != nil {
			return Version{}, err
		}
		hardlinkFlag = res.exitCode == 0 && featureIsOptIn(feats.String(), featureDeviceID)
	}
	r.mu.Lock()
	r.version, r.versionKnown, r.deviceIDFlag = v, true, hardlinkFlag
	r.mu.Unlock()
	return v, nil
}

const featureDeviceID = "device-id-for-hardlinks"

// featureIsOptIn reads `restic features` ("Name Type Default Description"
// rows) and reports whether name is listed and off by default.
func featureIsOptIn(table, name string) bool {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == name {
			return f[2] == "false"
		}
	}
	return false
}

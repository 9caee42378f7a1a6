package main

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// The Debian package depends on what the daemon runs: restic for every
// backup, btrfs receive (btrfs-progs) for every send to a target; the
// NixOS module puts the same on its PATH (TestNixOSModuleMirrorsUnitFiles).
func TestDebianDependsOnWhatTheDaemonRuns(t *testing.T) {
	raw, err := os.ReadFile("../../packaging/debian/control.in")
	if err != nil {
		t.Fatal(err)
	}
	var depends []string
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "Depends:"); ok {
			for _, d := range strings.Split(rest, ",") {
				for _, alt := range strings.Split(d, "|") {
					name, _, _ := strings.Cut(strings.TrimSpace(alt), " ")
					depends = append(depends, name)
				}
			}
		}
	}
	for _, pkg := range []string{"restic", "btrfs-progs"} {
		if !slices.Contains(depends, pkg) {
			t.Errorf("packaging/debian/control.in: Depends %q, without %s (the daemon runs it)", depends, pkg)
		}
	}
}

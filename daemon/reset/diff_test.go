package reset

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/subvault/subvault/btrfs"
	"github.com/subvault/subvault/internal/testutil"
)

func TestDiffListsWhatTheNextResetThrowsAway(t *testing.T) {
	m := newMachine(t, 512, "var/lib/keep", "etc/machine-id")
	w := func(rel, content string) { testutil.WriteFile(t, filepath.Join(m.Root, rel), content) }
	w("etc/machine-id", "clean\n")
	w("etc/hosts", "127.0.0.1 localhost\n")
	w("usr/bin/tool", "v1\n")
	w("etc/gone", "removed later\n")
	if _, err := Init(context.Background(), m.cfg, m.Root, nil); err != nil {
		t.Fatal(err)
	}
	w("etc/machine-id", "machine-1\n")            // persisted
	w("var/lib/keep/a/b", "kept\n")               // persisted, below an added directory
	w("var/lib/other/x", "12345")                 // added
	w("var/lib/other/y", "1234567890")            // added, same directory
	w("etc/hosts", "127.0.0.1 localhost other\n") // changed
	if err := os.Remove(filepath.Join(m.Root, "etc/gone")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nowhere", filepath.Join(m.Root, "link")); err != nil {
		t.Fatal(err)
	}
	// A nested subvolume moves over: not in the diff.
	if _, err := btrfs.CreateSubvolume(filepath.Join(m.Root, "srv")); err != nil {
		t.Fatal(err)
	}
	w("srv/data", "in a nested subvolume\n")
	changes, err := Diff(context.Background(), m.cfg, m.Root)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range changes {
		got = append(got, fmt.Sprintf("%s %s %s %d", c.Kind, c.Type, c.Path[len(m.Root):], c.Size))
	}
	want := []string{
		"changed file /etc/hosts 26",
		"removed file /etc/gone 14",
		"added symlink /link 0",
		"added dir /var/lib/other 15",
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Diff:\n%q\nwant\n%q", got, want)
	}
}

func TestResetMovesNestedSubvolumes(t *testing.T) {
	m := prepared(t, 512, "var/lib/keep")
	if _, err := btrfs.CreateSubvolume(filepath.Join(m.Root, "srv")); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, filepath.Join(m.Root, "srv/data"), "nested\n")
	if err := os.MkdirAll(filepath.Join(m.Root, "deep/er"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := btrfs.SnapshotReadOnly(filepath.Join(m.Root, "srv"), filepath.Join(m.Root, "deep/er/ro")); err != nil {
		t.Fatal(err)
	}
	if rec, err := m.boot(t, t0); err != nil {
		t.Fatalf("%+v, %v", rec, err)
	}
	for _, p := range []string{"srv/data", "deep/er/ro/data"} {
		if got, err := os.ReadFile(filepath.Join(m.Root, p)); err != nil || string(got) != "nested\n" {
			t.Errorf("%s after the reset: %q, %v", p, got, err)
		}
	}
	if info, err := btrfs.Info(filepath.Join(m.Root, "deep/er/ro")); err != nil || !info.ReadOnly {
		t.Errorf("deep/er/ro: %+v, %v; want read-only still", info, err)
	}
	if st, err := os.Stat(filepath.Join(m.Root, "deep/er")); err != nil || st.Mode().Perm() != 0o750 {
		t.Errorf("deep/er made with mode %v, %v; want the previous state's 0750", st.Mode(), err)
	}
	if _, err := os.Stat(filepath.Join(m.Root, "marker")); !os.IsNotExist(err) {
		t.Errorf("marker survived: %v", err)
	}
}

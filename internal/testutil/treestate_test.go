package testutil

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TreeState must see every kind of change it claims to; a comparison that
// cannot fail proves nothing.
func TestTreeStateSeesChanges(t *testing.T) {
	dir := t.TempDir()
	WriteFile(t, filepath.Join(dir, "a", "f"), "content")
	if err := os.Symlink("f", filepath.Join(dir, "a", "l")); err != nil {
		t.Fatal(err)
	}
	xattrs := unix.Setxattr(filepath.Join(dir, "a", "f"), "user.k", []byte("v"), 0) == nil
	base := TreeState(t, dir)
	if d := DiffStates(base, TreeState(t, dir)); len(d) != 0 {
		t.Fatalf("the same tree differs: %v", d)
	}
	then := time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC)
	for name, change := range map[string]func(string) error{
		"content": func(p string) error { return os.WriteFile(filepath.Join(p, "a", "f"), []byte("CONTENT"), 0o644) },
		"mode":    func(p string) error { return os.Chmod(filepath.Join(p, "a", "f"), 0o4755) },
		"mtime":   func(p string) error { return os.Chtimes(filepath.Join(p, "a", "f"), then, then) },
		"target": func(p string) error {
			if err := os.Remove(filepath.Join(p, "a", "l")); err != nil {
				return err
			}
			return os.Symlink("g", filepath.Join(p, "a", "l"))
		},
		"xattr": func(p string) error {
			if !xattrs {
				return errors.ErrUnsupported
			}
			return unix.Setxattr(filepath.Join(p, "a", "f"), "user.k", []byte("w"), 0)
		},
		"new file": func(p string) error { return os.WriteFile(filepath.Join(p, "a", "new"), nil, 0o644) },
	} {
		copyDir := t.TempDir()
		Run(t, "cp", "-a", dir+"/.", copyDir)
		before := TreeState(t, copyDir)
		if d := DiffStates(base, before); len(d) != 0 {
			t.Fatalf("cp -a made a different tree: %v", d)
		}
		if err := change(copyDir); errors.Is(err, errors.ErrUnsupported) {
			t.Logf("%s: user xattrs unsupported on %s", name, copyDir)
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		if d := DiffStates(before, TreeState(t, copyDir)); len(d) == 0 {
			t.Errorf("a change of %s went unseen", name)
		} else {
			t.Logf("%s: %v", name, d)
		}
	}
	if got := TreeState(t, dir, "a"); len(got) != 1 {
		t.Errorf("skipping a leaves %v", got)
	}
}

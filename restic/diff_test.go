package restic

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/api/contract"
)

func readRecordedStdout(t *testing.T, version, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", version, name+".stdout"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// What testdata/record-diff.sh changed between its two archives, as
// parseDiff must report it with --metadata (sorted by path).
var recordedChanges = []contract.Change{
	{Kind: contract.ChangeMetadata, Path: "/data/"},
	{Kind: contract.ChangeChanged, Path: "/data/bad\xffname"},
	{Kind: contract.ChangeRemoved, Path: "/data/gone"},
	{Kind: contract.ChangeMetadata, Path: "/data/meta"},
	{Kind: contract.ChangeChanged, Path: "/data/mod"},
	{Kind: contract.ChangeAdded, Path: "/data/new\nline"},
	{Kind: contract.ChangeAdded, Path: "/data/newdir/"},
	{Kind: contract.ChangeAdded, Path: "/data/newdir/f"},
	{Kind: contract.ChangeRemoved, Path: "/data/olddir/"},
	{Kind: contract.ChangeRemoved, Path: "/data/olddir/f"},
	{Kind: contract.ChangeMetadata, Path: "/data/sub/"},
	{Kind: contract.ChangeAdded, Path: "/data/sub/added"},
	{Kind: contract.ChangeTypeChanged, Path: "/data/typ"},
	{Kind: contract.ChangeAdded, Path: "/data/with  space"},
}

func changesText(cs []contract.Change) string {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString(string(c.Kind) + " " + strings.ReplaceAll(c.Path, "\n", `\n`) + "\n")
	}
	return b.String()
}

func TestDiffRecorded(t *testing.T) {
	for _, v := range recordedVersions(t) {
		t.Run(v, func(t *testing.T) {
			got, err := parseDiff(readRecordedStdout(t, v, "diff-metadata"))
			if err != nil {
				t.Fatal(err)
			}
			if g, w := changesText(got), changesText(recordedChanges); g != w {
				t.Errorf("diff --metadata:\n%s\nwant:\n%s", g, w)
			}
			// Without --metadata restic leaves out the U lines and prints
			// TU as T: the same list without the metadata kind.
			var noMeta []contract.Change
			for _, c := range recordedChanges {
				if c.Kind != contract.ChangeMetadata {
					noMeta = append(noMeta, c)
				}
			}
			got, err = parseDiff(readRecordedStdout(t, v, "diff"))
			if err != nil {
				t.Fatal(err)
			}
			if g, w := changesText(got), changesText(noMeta); g != w {
				t.Errorf("diff:\n%s\nwant:\n%s", g, w)
			}
			got, err = parseDiff(readRecordedStdout(t, v, "diff-same"))
			if err != nil || len(got) != 0 {
				t.Errorf("an archive against itself: %v, %v", got, err)
			}
		})
	}
}

// Why Diff reads text: restic's --json diff loses the bytes of a name
// that is not UTF-8 (in both versions).
func TestDiffJSONLosesBytes(t *testing.T) {
	for _, v := range recordedVersions(t) {
		found := false
		sc := bufio.NewScanner(bytes.NewReader(readRecordedStdout(t, v, "diff-json")))
		for sc.Scan() {
			var m struct{ Path string }
			if json.Unmarshal(sc.Bytes(), &m) == nil && strings.HasPrefix(m.Path, "/data/bad") {
				found = true
				if m.Path != "/data/bad\ufffdname" {
					t.Errorf("%s: --json now gives %q: Diff could use --json", v, m.Path)
				}
			}
		}
		if !found {
			t.Errorf("%s: the recording has no /data/bad...name", v)
		}
	}
}

func TestDiffMissingArchiveRecorded(t *testing.T) {
	repo := Repository{URL: "/srv/restic", PasswordFile: "/etc/subvault/nas.pass"}
	for _, v := range recordedVersions(t) {
		rec := readRecorded(t, v, "diff-missing")
		out := &outcome{stderr: newStderrLog(), exitCode: rec.rc}
		for _, l := range rec.stderr {
			out.stderrLine([]byte(l), nil)
		}
		e := classifyOutcome("diff", repo, out)
		if !errors.Is(e, ErrFailed) || !strings.Contains(e.Error(), `no matching ID found for prefix "deadbeef"`) {
			t.Errorf("%s: %v (%s)", v, e.Kind, e)
		}
	}
}

func TestParseDiff(t *testing.T) {
	stats := "\nFiles:           0 new,     0 removed,     1 changed\nDirs: 0 new, 0 removed\n"
	for _, c := range []struct {
		name, out string
		want      []contract.Change
		err       string
	}{
		{name: "bitrot and content with metadata", out: "comparing snapshot a to b:\n\n?    /x\nMU   /y\n" + stats,
			want: []contract.Change{{Kind: contract.ChangeChanged, Path: "/x"}, {Kind: contract.ChangeChanged, Path: "/y"}}},
		{name: "type change of a directory", out: "comparing snapshot a to b:\n\nT    /d/\n" + stats,
			want: []contract.Change{{Kind: contract.ChangeTypeChanged, Path: "/d/"}}},
		{name: "a name with a blank line in it", out: "comparing snapshot a to b:\n\n+    /a\n\nb\n-    /c\n" + stats,
			want: []contract.Change{{Kind: contract.ChangeAdded, Path: "/a\n\nb"}, {Kind: contract.ChangeRemoved, Path: "/c"}}},
		{name: "a name that reads like statistics", out: "comparing snapshot a to b:\n\n+    /a\n\nFiles: x\n" + stats,
			want: []contract.Change{{Kind: contract.ChangeAdded, Path: "/a\n\nFiles: x"}}},
		{name: "no header (restic -q)", out: "M    /x\n" + stats, want: []contract.Change{{Kind: contract.ChangeChanged, Path: "/x"}}},
		{name: "sorted by path", out: "comparing snapshot a to b:\n\n+    /b\n-    /a\n" + stats,
			want: []contract.Change{{Kind: contract.ChangeRemoved, Path: "/a"}, {Kind: contract.ChangeAdded, Path: "/b"}}},
		{name: "not a diff", out: "Fatal: something\n", err: "no statistics"},
		{name: "an unknown line first", out: "comparing snapshot a to b:\n\nX    /a\n" + stats, err: "cannot read the line"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseDiff([]byte(c.out))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Errorf("error %v, want one with %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g, w := changesText(got), changesText(c.want); g != w {
				t.Errorf("got\n%s\nwant\n%s", g, w)
			}
		})
	}
}

func TestLsRecorded(t *testing.T) {
	for _, v := range recordedVersions(t) {
		t.Run(v, func(t *testing.T) {
			nodes := map[string]Node{}
			var order []string
			sc := bufio.NewScanner(bytes.NewReader(readRecordedStdout(t, v, "ls")))
			for sc.Scan() {
				n, ok, err := parseNode(sc.Bytes())
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					nodes[n.Path] = n
					order = append(order, n.Path)
				}
			}
			// data, keep, meta, mod, typ, sub, sub/x, sub/added, newdir,
			// newdir/f, the two odd names and the one not UTF-8.
			if len(nodes) != 13 || order[0] != "/data" {
				t.Errorf("%d nodes: %q", len(nodes), order)
			}
			check := func(path, typ string, mode os.FileMode, size uint64) {
				t.Helper()
				n, ok := nodes[path]
				if !ok {
					t.Errorf("no node %q", path)
					return
				}
				if n.Type != typ || n.Mode != mode || (typ == "file" && n.Size != size) || n.UID != 0 || n.GID != 0 ||
					n.ModTime.Before(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)) {
					t.Errorf("%q: %+v, want %s %v size %d", path, n, typ, mode, size)
				}
			}
			check("/data", "dir", os.ModeDir|0o755, 0)
			check("/data/meta", "file", 0o600, 5)
			check("/data/mod", "file", 0o644, 9)
			check("/data/typ", "symlink", os.ModeSymlink|0o777, 0)
			check("/data/new\nline", "file", 0o644, 3)
			check(JSONPath("/data/bad\xffname"), "file", 0o644, 8)
			check("/data/newdir/f", "file", 0o644, 4)
			if nodes["/data/mod"].ModTime.Nanosecond() == 0 && nodes["/data/keep"].ModTime.Nanosecond() == 0 {
				t.Error("mtimes without nanoseconds: live comparisons need them")
			}
		})
	}
}

// JSONPath is what Go's encoding/json (and so restic) makes of a name.
func TestJSONPath(t *testing.T) {
	for _, p := range []string{"/plain", "/h\u00e9", "/a\xff\xfeb", "/\xc3", "/x\xe2\x82", "/n\nl"} {
		js, _ := json.Marshal(p)
		var back string
		if err := json.Unmarshal(js, &back); err != nil {
			t.Fatal(err)
		}
		if got := JSONPath(p); got != back {
			t.Errorf("JSONPath(%q) = %q; encoding/json gives %q", p, got, back)
		}
	}
}

func TestParseNodeSkipsTheArchiveLine(t *testing.T) {
	for _, line := range []string{
		`{"time":"2026-11-22T00:20:33Z","paths":["/x"],"id":"f8dd","short_id":"f8dd","struct_type":"snapshot"}`,
		`{"time":"2026-11-22T00:20:33Z","paths":["/x"],"message_type":"snapshot","struct_type":"snapshot"}`,
		"", "not json",
	} {
		if _, ok, err := parseNode([]byte(line)); ok || err != nil {
			t.Errorf("%q: ok %v, err %v", line, ok, err)
		}
	}
	if _, _, err := parseNode([]byte(`{"struct_type":"node","type":"file"}`)); err == nil {
		t.Error("a node without a path was accepted")
	}
	if _, _, err := parseNode([]byte(`{"struct_type":"node",`)); err == nil {
		t.Error("a broken line was accepted")
	}
}

// Diff and List against each real restic: two archives of a small tree
// with one file added, one removed and one changed.
func TestDiffAndList(t *testing.T) {
	forEachRestic(t, func(t *testing.T, f *fixture) {
		ctx := context.Background()
		dir := smallTree(t, 3, 0)
		first, err := f.r.Backup(ctx, BackupOptions{Paths: []string{dir}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
		if err := os.WriteFile(filepath.Join(dir, "sub", "new"), []byte("new"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, "sub", "f00")); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "sub", "f01"), []byte("changed"), 0o644); err != nil {
			t.Fatal(err)
		}
		second, err := f.r.Backup(ctx, BackupOptions{Paths: []string{dir}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		changes, err := f.r.Diff(ctx, first.SnapshotID, second.SnapshotID)
		if err != nil {
			t.Fatal(err)
		}
		want := []contract.Change{{Kind: contract.ChangeRemoved, Path: dir + "/sub/f00"}, {Kind: contract.ChangeChanged, Path: dir + "/sub/f01"}, {Kind: contract.ChangeAdded, Path: dir + "/sub/new"}}
		if g, w := changesText(changes), changesText(want); g != w {
			t.Errorf("Diff:\n%s\nwant\n%s", g, w)
		}
		nodes, err := f.r.List(ctx, second.SnapshotID)
		if err != nil {
			t.Fatal(err)
		}
		byPath := map[string]Node{}
		for _, n := range nodes {
			byPath[n.Path] = n
		}
		fi, err := os.Lstat(filepath.Join(dir, "sub", "f01"))
		if err != nil {
			t.Fatal(err)
		}
		n := byPath[dir+"/sub/f01"]
		if n.Type != "file" || n.Size != 7 || !n.ModTime.Equal(fi.ModTime()) || n.Mode != fi.Mode() {
			t.Errorf("List: %s/sub/f01 is %+v; on disk %v %v %d", dir, n, fi.Mode(), fi.ModTime(), fi.Size())
		}
		if _, ok := byPath[dir+"/sub/f00"]; ok || byPath["/"+strings.Split(dir, "/")[1]].Type != "dir" {
			t.Errorf("List: %d nodes, f00 listed or %s's top directory missing", len(nodes), dir)
		}
		if _, err := f.r.Diff(ctx, first.SnapshotID, "deadbeef"); !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "deadbeef") {
			t.Errorf("Diff with a missing archive: %v", err)
		}
	})
}

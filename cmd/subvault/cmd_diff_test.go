package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/api/client"
	"github.com/subvault/subvault/api/contract"
)

// diff runs subvault diff and returns its exit code and stdout,
// failing on anything on stderr when the run is expected to work.
func (e *apiEnv) diff(t *testing.T, args ...string) (int, string) {
	t.Helper()
	code, out, errOut := e.cli(t, append([]string{"diff", "home"}, args...)...)
	if code > exitFailure || errOut != "" {
		t.Fatalf("subvault diff home %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out, errOut)
	}
	return code, out
}

func (e *apiEnv) diffJSON(t *testing.T, args ...string) []contract.Change {
	t.Helper()
	_, out := e.diff(t, append(args, "--json", "--metadata")...)
	var changes []contract.Change
	if err := json.Unmarshal([]byte(out), &changes); err != nil {
		t.Fatalf("subvault diff home %v --json: %v\n%s", args, err, out)
	}
	return changes
}

func changeLines(cs []contract.Change) string {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString(string(c.Kind) + " " + c.Path + "\n")
	}
	return b.String()
}

// TestDiffAgainstTheDaemon: two backups with exactly three files changed
// between them (one added, one removed, one modified). subvault diff lists
// exactly those three; with --metadata also exactly the two directories
// whose entries came and went. Then the archive against the live
// subvolume after a further change, and against the local snapshots the
// backups kept (the one it was made from: no difference at all).
func TestDiffAgainstTheDaemon(t *testing.T) {
	e := newAPIEnv(t, 3) // home/d0/a0, d1/a1, d2/a2 (1 MiB each) and d0/bad-\xff-name
	e.startDaemon(t)
	home := e.fs.Path("home")
	backup := func() {
		t.Helper()
		if code, out, errOut := e.cli(t, "backup", "home", "--wait"); code != exitOK {
			t.Fatalf("backup: exit %d\n%s%s", code, out, errOut)
		}
	}
	backup()
	// An archive's time is its snapshot's, to the second: the next one
	// must be later for "latest" and the listing's order to be sure.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	if err := os.Remove(e.fs.Path("home", "d0", "a0")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.fs.Path("home", "d1", "a1"), []byte("modified"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.fs.Path("home", "d2", "added"), []byte("added"), 0o644); err != nil {
		t.Fatal(err)
	}
	backup()

	var archives []client.Archive
	if code, out, _ := e.cli(t, "archives", "home", "--json"); code != exitOK || json.Unmarshal([]byte(out), &archives) != nil || len(archives) != 2 {
		t.Fatalf("archives: exit %d\n%s", code, out)
	}
	first, second := archives[1].ID, archives[0].ID

	// Two archives: exactly the three files, marked as restic marks them.
	code, out := e.diff(t, first, second)
	want := "-  " + home + "/d0/a0\n" +
		"M  " + home + "/d1/a1\n" +
		"+  " + home + "/d2/added\n" +
		"3 differences: 1 added, 1 removed, 1 changed, 0 changed type (and 2 metadata only, not listed: --metadata lists them)\n"
	if code != exitFailure || out != want {
		t.Errorf("diff of the two archives: exit %d\n%s\nwant exit 1\n%s", code, out, want)
	}
	threeAndParents := "metadata " + home + "/d0/\n" +
		"removed " + home + "/d0/a0\n" +
		"changed " + home + "/d1/a1\n" +
		"metadata " + home + "/d2/\n" +
		"added " + home + "/d2/added\n"
	if got := changeLines(e.diffJSON(t, first, second)); got != threeAndParents {
		t.Errorf("diff --json --metadata of the two archives:\n%s\nwant (the three, and the directories they came and went in)\n%s", got, threeAndParents)
	}
	// "latest" is the plan's newest; an archive against itself is no
	// difference, exit 0.
	if code, out := e.diff(t, second, "latest", "--metadata"); code != exitOK || out != "no differences: 0 added, 0 removed, 0 changed, 0 changed type, 0 metadata only\n" {
		t.Errorf("diff of an archive with latest (itself): exit %d\n%s", code, out)
	}

	// Local snapshots (keep_snapshots: last 5 kept both): the one the
	// newest archive was made from is the same tree, metadata and all; the
	// older one differs from it by the three.
	var snapshots []client.Snapshot
	if code, out, _ := e.cli(t, "snapshots", "home", "--json"); code != exitOK || json.Unmarshal([]byte(out), &snapshots) != nil || len(snapshots) != 2 {
		t.Fatalf("snapshots: exit %d\n%s", code, out)
	}
	if got := changeLines(e.diffJSON(t, snapshots[1].Name, "latest")); got != "" {
		t.Errorf("the newest snapshot against the archive made from it:\n%s", got)
	}
	if got := changeLines(e.diffJSON(t, snapshots[0].Name, "latest")); got != threeAndParents {
		t.Errorf("the first snapshot against the newest archive:\n%s\nwant\n%s", got, threeAndParents)
	}
	swapped := strings.NewReplacer("removed ", "added ", "added ", "removed ").Replace(threeAndParents)
	if got := changeLines(e.diffJSON(t, "latest", snapshots[0].Name)); got != swapped {
		t.Errorf("the newest archive against the first snapshot:\n%s\nwant\n%s", got, swapped)
	}

	// The live subvolume after a further change: a file added, one chmod,
	// and the file whose name is not UTF-8 rewritten (shown with \xff).
	if code, out := e.diff(t, "latest", "live"); code != exitOK || out != "no differences: 0 added, 0 removed, 0 changed, 0 changed type\n" {
		t.Errorf("diff latest live right after the backup: exit %d\n%s", code, out)
	}
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(e.fs.Path("home", "d2", "later"), []byte("later"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(e.fs.Path("home", "d1", "a1"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.fs.Path("home", "d0", "bad-\xff-name"), []byte("rewritten"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out = e.diff(t, "latest", "live")
	want = "M  " + home + `/d0/bad-\xff-name` + "\n" +
		"+  " + home + "/d2/later\n" +
		"2 differences: 1 added, 0 removed, 1 changed, 0 changed type (and 2 metadata only, not listed: --metadata lists them)\n"
	if code != exitFailure || out != want {
		t.Errorf("diff latest live: exit %d\n%s\nwant\n%s", code, out, want)
	}
	live := "changed " + home + `/d0/bad-\xff-name` + "\n" +
		"metadata " + home + "/d1/a1\n" +
		"metadata " + home + "/d2/\n" +
		"added " + home + "/d2/later\n"
	if got := changeLines(e.diffJSON(t, "latest", "live")); got != live {
		t.Errorf("diff latest live --json --metadata:\n%s\nwant\n%s", got, live)
	}
	if got := changeLines(e.diffJSON(t, "live", "latest")); got != strings.Replace(live, "added ", "removed ", 1) {
		t.Errorf("diff live latest --json --metadata:\n%s", got)
	}

	// Trouble is exit 2, one line, nothing compared.
	for _, args := range [][]string{
		{"live", "live"},
		{"deadbeef", "latest"},
		{"nonsense", "latest"},
		{strings.Replace(snapshots[0].Name, "@1@", "@99@", 1), "latest"}, // the form of one, but none
		{"latest"},
	} {
		code, out, errOut := e.cli(t, append([]string{"diff", "home"}, args...)...)
		if code != exitUsage || out != "" || strings.Count(errOut, "\n") != 1 {
			t.Errorf("diff home %v: exit %d, want 2\nstdout: %s\nstderr: %s", args, code, out, errOut)
		}
		t.Logf("diff home %v: %s", args, strings.TrimSpace(errOut))
	}
}

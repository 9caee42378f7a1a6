package restic

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/subvault/subvault/internal/testutil"
)

func TestSplitCommand(t *testing.T) {
	for _, c := range []struct {
		line string
		want []string
		err  string
	}{
		{line: "pass show backup/restic", want: []string{"pass", "show", "backup/restic"}},
		{line: "  cat\t/etc/x  ", want: []string{"cat", "/etc/x"}},
		{line: `printf '%s\n' 'two words'`, want: []string{"printf", `%s\n`, "two words"}},
		{line: `echo "a 'b'" x"y z"`, want: []string{"echo", "a 'b'", "xy z"}},
		{line: `echo ''`, want: []string{"echo", ""}},
		{line: `echo 'open`, err: "unterminated ' quote"},
		{line: "   ", err: "empty command"},
	} {
		got, err := splitCommand(c.line)
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("%q: error %v, want %q", c.line, err, c.err)
			}
			continue
		}
		if err != nil || strings.Join(got, "|") != strings.Join(c.want, "|") || len(got) != len(c.want) {
			t.Errorf("%q: %q, %v; want %q", c.line, got, err, c.want)
		}
	}
}

func TestReadPasswordSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	if err := os.WriteFile(file, []byte("  s3cret pass\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range []struct {
		name string
		repo Repository
		want string
		err  string
	}{
		{"file", Repository{PasswordFile: file}, "s3cret pass", ""},
		{"credential", Repository{CredentialFile: file}, "s3cret pass", ""},
		{"command", Repository{PasswordCommand: `printf '%s\n' 'from a command'`}, "from a command", ""},
		{"missing file", Repository{PasswordFile: filepath.Join(dir, "nope")}, "", "cannot read password_file " + filepath.Join(dir, "nope")},
		{"failing command", Repository{PasswordCommand: "sh -c 'echo nope >&2; exit 3'"}, "", "password_command sh failed: exit status 3: nope"},
		{"empty output", Repository{PasswordCommand: "true"}, "", "the output of password_command is empty"},
	} {
		got, err := c.repo.ReadPassword(ctx)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: %q, %v; want an error with %q", c.name, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}

// What ReadPassword returns for a password_command is the password restic
// itself got from that command: a repository made with the command opens
// with the returned password in a file.
func TestReadPasswordAgreesWithRestic(t *testing.T) {
	forEachRestic(t, func(t *testing.T, f *fixture) {
		dir := t.TempDir()
		script := filepath.Join(dir, "pw.sh")
		testutil.WriteFile(t, script, "#!/bin/sh\nprintf '  %s %s  \\n' \"$1\" \"$2\"\n")
		if err := os.Chmod(script, 0o755); err != nil {
			t.Fatal(err)
		}
		byCommand := &Runner{Binary: f.bin, Repo: Repository{URL: filepath.Join(dir, "repo"),
			PasswordCommand: script + ` 'one two' "three"`, CacheDir: filepath.Join(dir, "cache")}}
		if err := byCommand.Init(context.Background()); err != nil {
			t.Fatal(err)
		}
		pw, err := byCommand.Repo.ReadPassword(context.Background())
		if err != nil || pw != "one two three" {
			t.Fatalf("ReadPassword: %q, %v", pw, err)
		}
		file := filepath.Join(dir, "pw")
		testutil.WriteSecret(t, file, pw)
		byFile := &Runner{Binary: f.bin, Repo: Repository{URL: byCommand.Repo.URL, PasswordFile: file, CacheDir: byCommand.Repo.CacheDir}}
		if _, err := byFile.Snapshots(context.Background(), SnapshotFilter{}); err != nil {
			t.Errorf("the password ReadPassword returned does not open the repository: %v", err)
		}
	})
}

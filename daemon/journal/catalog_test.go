package journal

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/subvault/subvault/internal/testutil"
)

const catalogPath = "../../packaging/subvault.catalog"

// catalogSection is one "-- MESSAGE_ID" section of a journald catalog.
type catalogSection struct {
	id      string
	line    int
	headers map[string]string
	body    string
}

// parseCatalog reads a catalog the way systemd's catalog.c does: '#' lines
// are comments, "-- ID [LANG]" starts a section, "Key: value" headers run to
// the first empty line, the body to the next section.
func parseCatalog(t *testing.T, path string) []catalogSection {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var sections []catalogSection
	var cur *catalogSection
	inHeaders := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "-- "):
			fields := strings.Fields(strings.TrimPrefix(line, "-- "))
			if len(fields) != 1 {
				t.Errorf("%s:%d: %q: want exactly one id and no language", path, n, line)
				continue
			}
			sections = append(sections, catalogSection{id: fields[0], line: n, headers: map[string]string{}})
			cur = &sections[len(sections)-1]
			inHeaders = true
		case cur == nil:
			if strings.TrimSpace(line) != "" {
				t.Errorf("%s:%d: text before the first section: %q", path, n, line)
			}
		case inHeaders && line == "":
			inHeaders = false
		case inHeaders:
			key, value, ok := strings.Cut(line, ": ")
			if !ok || key == "" || strings.TrimSpace(value) == "" {
				t.Errorf("%s:%d: header %q is not \"Key: value\"", path, n, line)
				continue
			}
			if _, dup := cur.headers[key]; dup {
				t.Errorf("%s:%d: header %s twice in section %s", path, n, key, cur.id)
			}
			cur.headers[key] = value
		default:
			cur.body += line + "\n"
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return sections
}

var (
	id128    = regexp.MustCompile(`^[0-9a-f]{32}$`)
	variable = regexp.MustCompile(`@([A-Za-z0-9_]+)@`)
)

func TestCatalogMatchesEvents(t *testing.T) {
	t.Parallel()
	sections := parseCatalog(t, catalogPath)
	seen := map[string]int{}
	for _, s := range sections {
		if !id128.MatchString(s.id) {
			t.Errorf("line %d: id %q is not 32 lowercase hex digits", s.line, s.id)
		}
		if prev, dup := seen[s.id]; dup {
			t.Errorf("line %d: id %s already has a section at line %d", s.line, s.id, prev)
		}
		seen[s.id] = s.line
		for _, key := range []string{"Subject", "Defined-By", "Support"} {
			if s.headers[key] == "" {
				t.Errorf("line %d: section %s has no %s", s.line, s.id, key)
			}
		}
		if got := s.headers["Defined-By"]; got != Identifier {
			t.Errorf("line %d: Defined-By %q, want %q", s.line, got, Identifier)
		}
		if strings.TrimSpace(s.body) == "" {
			t.Errorf("line %d: section %s has no explanation", s.line, s.id)
		}
		// Every @FIELD@ must be one of ours: journalctl -x substitutes it
		// from the entry, and a misspelt name shows up verbatim.
		for _, m := range variable.FindAllStringSubmatch(s.headers["Subject"]+s.body, -1) {
			if !strings.HasPrefix(m[1], "SUBVAULT_") || !validFieldName(m[1]) {
				t.Errorf("line %d: @%s@ is not a SUBVAULT_ field", s.line, m[1])
			}
		}
	}

	var code []string
	for _, name := range Events() {
		id, ok := MessageID(name)
		if !ok || !id128.MatchString(id) {
			t.Errorf("event %s: MESSAGE_ID %q", name, id)
		}
		if slices.Contains(code, id) {
			t.Errorf("event %s: MESSAGE_ID %s used twice", name, id)
		}
		code = append(code, id)
		if _, ok := seen[id]; !ok {
			t.Errorf("event %s (%s) has no section in %s", name, id, catalogPath)
		}
	}
	for id, line := range seen {
		if !slices.Contains(code, id) {
			t.Errorf("line %d: section %s is no event in events.go", line, id)
		}
	}
}

// TestCatalogJournalctl has journalctl itself compile the catalog into a
// private root and list it back.
func TestCatalogJournalctl(t *testing.T) {
	t.Parallel()
	journalctl := testutil.RequireCommand(t, "journalctl", "systemd")
	root := t.TempDir()
	dir := filepath.Join(root, "usr/lib/systemd/catalog")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "subvault.catalog"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(journalctl, "--root="+root, "--update-catalog").CombinedOutput(); err != nil || len(out) != 0 {
		t.Fatalf("journalctl --update-catalog: %v\n%s", err, out)
	}
	out, err := exec.Command(journalctl, "--root="+root, "--list-catalog").Output()
	if err != nil {
		t.Fatalf("journalctl --list-catalog: %v", err)
	}
	listed := map[string]string{} // id → "subvault: Subject"
	for line := range strings.Lines(string(out)) {
		id, subject, _ := strings.Cut(strings.TrimSpace(line), " ")
		listed[id] = subject
	}
	for _, s := range parseCatalog(t, catalogPath) {
		if want := Identifier + ": " + s.headers["Subject"]; listed[s.id] != want {
			t.Errorf("journalctl lists %s as %q, want %q", s.id, listed[s.id], want)
		}
	}
	if len(listed) != len(Events()) {
		t.Errorf("journalctl lists %d entries, want %d:\n%s", len(listed), len(Events()), out)
	}
}

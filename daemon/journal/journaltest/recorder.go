// Package journaltest records what the code under test logs, each
// attribute under the name the journal gives it (plan → SUBVAULT_PLAN), and
// checks an entry against the section of the journal catalog
// (packaging/subvault.catalog) that its event's MESSAGE_ID has: a field the
// section names and the entry lacks shows as its bare name under
// journalctl -x. It is for tests only.
package journaltest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/subvault/subvault/daemon/journal"
)

// Recorder is a slog handler that keeps every record with its attributes
// (With's included) as the journal's field names.
type Recorder struct {
	mu      *sync.Mutex
	entries *[]Entry
	with    []slog.Attr
}

// Entry is one record: its level, message and SUBVAULT_* fields.
type Entry struct {
	Level  slog.Level
	Msg    string
	Fields map[string]string
}

// NewRecorder returns an empty recorder; slog.New(r) logs into it.
func NewRecorder() *Recorder {
	return &Recorder{mu: &sync.Mutex{}, entries: &[]Entry{}}
}

func (r *Recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *Recorder) WithGroup(string) slog.Handler            { return r }
func (r *Recorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *r
	c.with = append(append([]slog.Attr(nil), r.with...), attrs...)
	return &c
}

func (r *Recorder) Handle(_ context.Context, rec slog.Record) error {
	e := Entry{Level: rec.Level, Msg: rec.Message, Fields: map[string]string{}}
	add := func(a slog.Attr) bool {
		// The journal's name for the simple keys used here: plan →
		// SUBVAULT_PLAN, kept_id → SUBVAULT_KEPT_ID.
		e.Fields["SUBVAULT_"+strings.ToUpper(a.Key)] = fmt.Sprint(a.Value.Any())
		return true
	}
	for _, a := range r.with {
		add(a)
	}
	rec.Attrs(add)
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.entries = append(*r.entries, e)
	return nil
}

// Entries returns every entry, in order (to show a failed test's log).
func (r *Recorder) Entries() []Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(*r.entries)
}

// Events returns the entries of event, in order.
func (r *Recorder) Events(event string) []Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Entry
	for _, e := range *r.entries {
		if e.Fields["SUBVAULT_"+strings.ToUpper(journal.EventKey)] == event {
			out = append(out, e)
		}
	}
	return out
}

// Only returns the one entry of event, and fails the test unless there is
// exactly one and it has every field its catalog section names.
func (r *Recorder) Only(t testing.TB, event string) Entry {
	t.Helper()
	got := r.Events(event)
	if len(got) != 1 {
		t.Fatalf("%d %s entries, want 1: %+v", len(got), event, got)
	}
	got[0].HasCatalogFields(t, event)
	return got[0]
}

// HasCatalogFields fails the test unless e has every field the catalog
// section of event names (a missing one shows as its bare name under
// journalctl -x).
func (e Entry) HasCatalogFields(t testing.TB, event string) {
	t.Helper()
	for _, f := range catalogFields(t, event) {
		if _, ok := e.Fields[f]; !ok {
			t.Errorf("the %s entry lacks %s, which its catalog section uses: %v", event, f, e.Fields)
		}
	}
}

// Want fails the test unless e has each field with its value ("" for a
// field it must not have).
func (e Entry) Want(t testing.TB, what string, fields map[string]string) {
	t.Helper()
	for field, v := range fields {
		if got, ok := e.Fields[field]; v == "" && ok {
			t.Errorf("%s: has %s=%q, want none", what, field, got)
		} else if v != "" && got != v {
			t.Errorf("%s: %s=%q, want %q", what, field, got, v)
		}
	}
}

var catalogVariable = regexp.MustCompile(`@(SUBVAULT_[A-Z0-9_]+)@`)

// catalogFields returns the fields packaging/subvault.catalog's section of
// event substitutes.
func catalogFields(t testing.TB, event string) []string {
	t.Helper()
	id, ok := journal.MessageID(event)
	if !ok {
		t.Fatalf("%s is no event", event)
	}
	b, err := os.ReadFile(catalogPath(t))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n-- "+id+"\n")
	if !ok {
		t.Fatalf("the catalog has no section %s (%s)", id, event)
	}
	section, _, _ = strings.Cut(section, "\n-- ")
	var out []string
	for _, m := range catalogVariable.FindAllStringSubmatch(section, -1) {
		if !slices.Contains(out, m[1]) {
			out = append(out, m[1])
		}
	}
	return out
}

// catalogPath finds the catalog from the test's directory (go test runs a
// test in its package's), in the module's root: the nearest directory
// above with a go.mod.
func catalogPath(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "packaging", "subvault.catalog")
		} else if !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory: cannot find packaging/subvault.catalog")
		}
		dir = parent
	}
}

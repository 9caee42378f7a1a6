package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/subvault/subvault/daemon/journal"
)

// logRecorder is a slog handler that keeps every record with its
// attributes (With's included) as the journal's field names.
type logRecorder struct {
	mu      *sync.Mutex
	entries *[]logEntry
	with    []slog.Attr
}

// logEntry is one record: its message and SUBVAULT_* fields.
type logEntry struct {
	level  slog.Level
	msg    string
	fields map[string]string
}

func newLogRecorder() *logRecorder {
	return &logRecorder{mu: &sync.Mutex{}, entries: &[]logEntry{}}
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *r
	c.with = append(append([]slog.Attr(nil), r.with...), attrs...)
	return &c
}

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	e := logEntry{level: rec.Level, msg: rec.Message, fields: map[string]string{}}
	add := func(a slog.Attr) bool {
		// The journal's name for the simple keys used here: plan →
		// SUBVAULT_PLAN, kept_id → SUBVAULT_KEPT_ID.
		e.fields["SUBVAULT_"+strings.ToUpper(a.Key)] = fmt.Sprint(a.Value.Any())
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

// events returns the entries of event, in order.
func (r *logRecorder) events(event string) []logEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logEntry
	for _, e := range *r.entries {
		if e.fields["SUBVAULT_"+strings.ToUpper(journal.EventKey)] == event {
			out = append(out, e)
		}
	}
	return out
}

// only returns the one entry of event, and fails the test unless there is
// exactly one and it has every field its catalog section names.
func (r *logRecorder) only(t *testing.T, event string) logEntry {
	t.Helper()
	got := r.events(event)
	if len(got) != 1 {
		t.Fatalf("%d %s entries, want 1: %+v", len(got), event, got)
	}
	got[0].hasCatalogFields(t, event)
	return got[0]
}

// hasCatalogFields fails the test unless e has every field the catalog
// section of event names (a missing one shows as its bare name under
// journalctl -x).
func (e logEntry) hasCatalogFields(t *testing.T, event string) {
	t.Helper()
	for _, f := range catalogFields(t, event) {
		if _, ok := e.fields[f]; !ok {
			t.Errorf("the %s entry lacks %s, which its catalog section uses: %v", event, f, e.fields)
		}
	}
}

// want fails the test unless e has each field with its value ("" for a
// field it must not have).
func (e logEntry) want(t *testing.T, what string, fields map[string]string) {
	t.Helper()
	for field, v := range fields {
		if got, ok := e.fields[field]; v == "" && ok {
			t.Errorf("%s: has %s=%q, want none", what, field, got)
		} else if v != "" && got != v {
			t.Errorf("%s: %s=%q, want %q", what, field, got, v)
		}
	}
}

var catalogVariable = regexp.MustCompile(`@(SUBVAULT_[A-Z0-9_]+)@`)

// catalogFields returns the fields packaging/subvault.catalog's section of
// event substitutes.
func catalogFields(t *testing.T, event string) []string {
	t.Helper()
	id, ok := journal.MessageID(event)
	if !ok {
		t.Fatalf("%s is no event", event)
	}
	b, err := os.ReadFile("../packaging/subvault.catalog")
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

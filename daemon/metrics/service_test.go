package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/subvault/subvault/internal/testutil"
)

// serviceUnderTest runs a Service whose writes are recorded, with a
// refresh of its own.
func serviceUnderTest(t *testing.T, refresh time.Duration) (*Service, *testutil.SyncBuffer, func() []time.Time) {
	t.Helper()
	logged := &testutil.SyncBuffer{}
	s := NewService(fixedSnapshot, slog.New(slog.NewTextHandler(logged, nil)))
	s.refresh = refresh
	var mu sync.Mutex
	var writes []time.Time
	s.written = func(error) {
		mu.Lock()
		writes = append(writes, time.Now())
		mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, logged, func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Time(nil), writes...)
	}
}

// TestServiceDebounceAndRefresh: a burst of changes (a running job's
// progress, ten a second) writes the textfile once, a Debounce after the
// first; with nothing changing it is rewritten every refresh.
func TestServiceDebounceAndRefresh(t *testing.T) {
	t.Parallel()
	dir := t.TempDir() // before the service, so removed after it stopped
	s, _, writes := serviceUnderTest(t, 3*time.Second)
	start := time.Now()
	if err := s.Configure(dir, ""); err != nil {
		t.Fatal(err)
	}
	for range 15 {
		s.Changed()
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Until(start.Add(2500 * time.Millisecond)))
	got := writes()
	if len(got) != 1 || got[0].Sub(start) < Debounce || got[0].Sub(start) > Debounce+time.Second {
		t.Errorf("writes after a burst of 15 changes: %v after the start, want one, a second after", offsets(got, start))
	}
	time.Sleep(3500 * time.Millisecond)
	if n := len(writes()); n < 2 {
		t.Errorf("%d writes in 6 s with a refresh of 3 s and no change", n)
	}
	if _, err := os.Stat(filepath.Join(dir, TextfileName)); err != nil {
		t.Error(err)
	}
}

func offsets(ts []time.Time, from time.Time) []time.Duration {
	var out []time.Duration
	for _, t := range ts {
		out = append(out, t.Sub(from).Round(time.Millisecond))
	}
	return out
}

// TestServiceReconfigure: a reload moves the listener to its new address
// (the old one stops answering), turns it off, and moves the textfile to a
// new directory, whose leftover temporary files of ours are removed; a
// failed write is logged once, not at every try.
func TestServiceReconfigure(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "none")
	dir := t.TempDir() // before the service, so removed after it stopped
	s, logged, writes := serviceUnderTest(t, time.Hour)
	c := &http.Client{Timeout: 5 * time.Second}
	if err := s.Configure(missing, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	first := "http://" + s.listener.Addr().String() + "/metrics"
	if status, _, err := scrape(c, first); err != nil || status != 200 {
		t.Fatalf("first listener: %d %v", status, err)
	}
	for range 3 {
		s.Changed()
		time.Sleep(Debounce + 300*time.Millisecond)
	}
	if n := strings.Count(logged.String(), "cannot write the metrics textfile"); n != 1 || len(writes()) < 3 {
		t.Errorf("%d writes to a missing directory logged %d times, want once:\n%s", len(writes()), n, logged.String())
	}

	if err := os.Mkdir(missing, 0o755); err != nil {
		t.Fatal(err)
	}
	s.Changed()
	time.Sleep(Debounce + 500*time.Millisecond)
	if !strings.Contains(logged.String(), "metrics textfile written again") {
		t.Errorf("the recovery is not logged:\n%s", logged.String())
	}

	leftover := filepath.Join(dir, tempPrefix+"dead")
	if err := os.WriteFile(leftover, []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Configure(dir, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("the leftover temporary file is still there: %v", err)
	}
	// The same address: the same listener.
	if status, _, err := scrape(c, first); err != nil || status != 200 {
		t.Errorf("unchanged listen, the listener: %d %v", status, err)
	}
	if err := s.Configure(dir, "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	second := "http://" + s.listener.Addr().String() + "/metrics"
	if _, _, err := scrape(c, first); err == nil {
		t.Error("the old listener still answers after the address changed")
	}
	if status, _, err := scrape(c, second); err != nil || status != 200 {
		t.Errorf("the new listener: %d %v", status, err)
	}
	time.Sleep(Debounce + 500*time.Millisecond)
	if _, err := os.Stat(filepath.Join(dir, TextfileName)); err != nil {
		t.Errorf("the textfile in the new directory: %v", err)
	}
	if err := s.Configure("", ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := scrape(c, second); err == nil {
		t.Error("the listener still answers after it was turned off")
	}
}

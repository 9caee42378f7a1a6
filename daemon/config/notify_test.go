package config

import (
	"bytes"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Notify entries load with their defaults (every event; a healthchecks
// check hears of backups only, the others of every kind; 10 s), and a
// plan's jobs go to settings.notify's entries and then the plan's own.
func TestNotifyEntries(t *testing.T) {
	t.Parallel()
	cfg, err := parseFile(t, "testdata/good/notify.yaml")
	if err != nil {
		t.Fatal(err)
	}
	all := []NotifyEvent{NotifyStart, NotifySuccess, NotifyFailure, NotifyStalled}
	want := []Notify{
		{Service: NotifyWebhook, URL: "http://127.0.0.1:9000/hooks/subvault?token=abc", Events: all, Kinds: NotifyKinds, Timeout: time.Second},
		{Service: NotifyNtfy, URL: "https://ntfy.sh/some-topic", Events: all, Kinds: NotifyKinds, Timeout: 10 * time.Second},
		{Service: NotifyHealthchecks, URL: "https://hc-ping.com/0f7e2a3c-6c0e-4c52-9d3e-1b2a3c4d5e6f", Events: all, Kinds: []string{"backup"}, Timeout: 10 * time.Second},
		{Service: NotifyHealthchecks, URL: "https://hc-ping.com/PINGKEY/home-prune", Events: all, Kinds: []string{"prune"}, Timeout: 10 * time.Second},
		{Service: NotifyNtfy, URL: "https://backup:s3cr%40t@ntfy.example.com/laptop-backups", Events: []NotifyEvent{NotifyFailure, NotifyStalled},
			Kinds: NotifyKinds, Timeout: 30 * time.Second},
	}
	if got := cfg.NotifyFor("home"); !reflect.DeepEqual(got, want) {
		t.Errorf("NotifyFor(home):\n got %#v\nwant %#v", urls(got), urls(want))
	}
	if got := cfg.NotifyFor("srv"); !reflect.DeepEqual(got, want[:2]) {
		t.Errorf("NotifyFor(srv) = %v, want settings.notify's two", urls(got))
	}
	if got := want[2]; !got.Wants(NotifyFailure, "backup") || got.Wants(NotifyFailure, "prune") {
		t.Errorf("a healthchecks entry without kinds: Wants(failure, backup) %v, Wants(failure, prune) %v",
			got.Wants(NotifyFailure, "backup"), got.Wants(NotifyFailure, "prune"))
	}
	if got := want[4]; got.Wants(NotifyStart, "backup") || !got.Wants(NotifyStalled, "backup") {
		t.Errorf("events [failure, stalled]: Wants(start) %v, Wants(stalled) %v", got.Wants(NotifyStart, "backup"), got.Wants(NotifyStalled, "backup"))
	}
}

func urls(entries []Notify) []string {
	var out []string
	for _, e := range entries {
		out = append(out, fmt.Sprintf("%s %s %v %v %v", e.Service, e.URL, e.Events, e.Kinds, e.Timeout))
	}
	return out
}

// A notify URL is a secret: however an entry, a plan or the settings are
// printed or logged, only the service and host show.
func TestNotifyURLNeverPrinted(t *testing.T) {
	t.Parallel()
	cfg, err := parseFile(t, "testdata/good/notify.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	entry := cfg.Plans["home"].Notify[0]
	log.Info("x", "entry", entry, "entries", cfg.Plans["home"].Notify)
	printed := []string{
		fmt.Sprint(entry), fmt.Sprintf("%v %+v %#v %s", entry, entry, entry, entry),
		fmt.Sprintf("%v %+v", *cfg.Plans["home"], cfg.Settings), logged.String(),
	}
	for _, text := range printed {
		for _, secret := range []string{"0f7e2a3c", "PINGKEY", "s3cr", "laptop-backups", "some-topic", "token=abc"} {
			if strings.Contains(text, secret) {
				t.Errorf("%q shows in %s", secret, text)
			}
		}
	}
	if got := entry.String(); got != "healthchecks hc-ping.com" {
		t.Errorf("String() = %q, want %q", got, "healthchecks hc-ping.com")
	}
}

// No refusal of a notify entry quotes its URL or a part of it: every bad
// file's URL holds "hunter2" or a check's UUID, and no message does.
func TestNotifyRefusalsQuoteNoURL(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/bad/notify_*.yaml")
	if err != nil || len(files) < 10 {
		t.Fatalf("%d bad notify files (%v)", len(files), err)
	}
	for _, file := range files {
		_, err := parseFile(t, file)
		if err == nil {
			t.Fatalf("%s accepted", file)
		}
		for _, secret := range []string{"hunter2", "0f7e2a3c", "ntfy.sh/x"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: the refusal quotes %q: %v", file, secret, err)
			}
		}
	}
}

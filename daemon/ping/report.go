package ping

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/subvault/subvault/daemon/config"
)

// Event is what a report tells of: config's four events, and postponed.
type Event string

// The events of reports.
const (
	EventStart   = Event(config.NotifyStart)
	EventSuccess = Event(config.NotifySuccess)
	EventFailure = Event(config.NotifyFailure)
	EventStalled = Event(config.NotifyStalled)
	// EventPostponed ends a run that was postponed (docs/laptops.md): it
	// neither succeeded nor failed, and is retried later. It goes to the
	// entries that were sent the run's start, so that each run they heard
	// start of ends.
	EventPostponed Event = "postponed"
)

// Results of a report beyond the queue's: a failed job whose archive
// exists is partial.
const ResultPartial = "partial"

// Report is one event of one job, for every endpoint it goes to.
type Report struct {
	Event Event
	Plan  string
	// Job is the job's id; 0 in the start of a foreground run, whose id
	// is not known yet.
	Job  uint32
	Kind string
	// Trigger is who asked for the job ("schedule", "dbus:1000",
	// "foreground", ...).
	Trigger string
	// Result is how the job ended: done, failed, partial, stalled,
	// canceled or postponed; "" in a start or stalled report.
	Result string
	// Error is the job's error in one line; "" unless it failed.
	Error        string
	ArchiveID    string
	StartedAt    time.Time
	FinishedAt   time.Time
	StalledSince time.Time
	Host         string
	// RunID is the run's id, a random UUID: healthchecks matches a run's
	// start and end by it (?rid=).
	RunID string
}

// ExitStatus is the exit status `subvault run backup` has for the result
// (docs/monitoring.md): 0 done, 3 partial, 130 canceled, 1 otherwise.
func ExitStatus(result string) int {
	switch result {
	case "done":
		return 0
	case ResultPartial:
		return 3
	case "canceled":
		return 130
	}
	return 1
}

// title is the report in a few words: "laptop: backup of home failed".
func (r Report) title() string {
	what := map[Event]string{EventStart: "started", EventSuccess: "done", EventStalled: "stalled", EventPostponed: "postponed"}[r.Event]
	if r.Event == EventFailure {
		what = r.Result
	}
	return fmt.Sprintf("%s: %s of %s %s", r.Host, r.Kind, r.Plan, what)
}

// Text is the report for a person, a few short lines: the healthchecks
// body and the ntfy message.
func (r Report) Text() string {
	var b strings.Builder
	b.WriteString(r.title())
	b.WriteString("\n")
	job := "job " + strconv.FormatUint(uint64(r.Job), 10)
	if r.Job == 0 {
		job = "a job"
	}
	fmt.Fprintf(&b, "%s, asked by %s\n", job, r.Trigger)
	if r.Error != "" {
		fmt.Fprintf(&b, "error: %s\n", cut(r.Error, maxTextError))
	}
	if r.ArchiveID != "" {
		fmt.Fprintf(&b, "archive: %s\n", r.ArchiveID)
	}
	switch {
	case r.Event == EventStalled:
		fmt.Fprintf(&b, "no progress since %s; the job goes on (on_stall: report)\n", stamp(r.StalledSince))
	case !r.FinishedAt.IsZero():
		fmt.Fprintf(&b, "started %s, took %s\n", stamp(r.StartedAt), r.FinishedAt.Sub(r.StartedAt).Round(time.Second))
	case !r.StartedAt.IsZero():
		fmt.Fprintf(&b, "started %s\n", stamp(r.StartedAt))
	}
	return b.String()
}

// maxTextError bounds the error in Text, so that the whole text stays
// below the 4096 bytes ntfy takes as a message (not an attachment);
// maxJSONError the webhook's, as the bus bounds a job's Error.
const (
	maxTextError = 2048
	maxJSONError = 4096
)

// cut is s in at most n bytes, cut at a character's start, with "..." when
// cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n -= len("...")
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

// webhookBody is the JSON a webhook is sent (docs/monitoring.md).
type webhookBody struct {
	Event        Event   `json:"event"`
	Plan         string  `json:"plan"`
	Job          uint32  `json:"job"`
	Kind         string  `json:"kind"`
	Result       string  `json:"result"`
	Error        string  `json:"error"`
	Trigger      string  `json:"trigger"`
	StartedAt    *string `json:"started_at"`
	FinishedAt   *string `json:"finished_at"`
	StalledSince *string `json:"stalled_since,omitempty"`
	ArchiveID    string  `json:"archive_id"`
	Host         string  `json:"host"`
}

func rfc3339(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339)
	return &s
}

// JSON is the webhook's body.
func (r Report) JSON() []byte {
	body, _ := json.Marshal(webhookBody{ // strings, numbers and times: it cannot fail
		Event: r.Event, Plan: r.Plan, Job: r.Job, Kind: r.Kind, Result: r.Result, Error: cut(r.Error, maxJSONError), Trigger: r.Trigger,
		StartedAt: rfc3339(r.StartedAt), FinishedAt: rfc3339(r.FinishedAt), StalledSince: rfc3339(r.StalledSince),
		ArchiveID: r.ArchiveID, Host: r.Host,
	})
	return body
}

// ntfy's priorities and tags (emoji short codes) per event.
var (
	ntfyPriority = map[Event]string{EventStart: "low", EventSuccess: "default", EventFailure: "high", EventStalled: "high", EventPostponed: "low"}
	ntfyEmoji    = map[Event]string{EventStart: "arrow_forward", EventSuccess: "white_check_mark", EventFailure: "x", EventStalled: "warning", EventPostponed: "hourglass"}
)

// request is the HTTP request that tells entry of r. The URL's user and
// password, if any, become basic authentication (net/http does that).
func request(ctx context.Context, entry config.Notify, r Report, userAgent string) (*http.Request, error) {
	u, err := url.Parse(entry.URL)
	if err != nil {
		return nil, fmt.Errorf("the URL cannot be parsed") // config refuses it first; never quoted
	}
	var body []byte
	header := http.Header{}
	switch entry.Service {
	case config.NotifyHealthchecks:
		u.Path = strings.TrimSuffix(u.Path, "/")
		if u.RawPath != "" {
			u.RawPath = strings.TrimSuffix(u.RawPath, "/")
		}
		switch r.Event {
		case EventStart:
			u = u.JoinPath("start")
		case EventSuccess:
		case EventFailure:
			u = u.JoinPath(strconv.Itoa(ExitStatus(r.Result)))
		default: // stalled, postponed: logged on the check, its state unchanged
			u = u.JoinPath("log")
		}
		if r.RunID != "" {
			q := u.Query()
			q.Set("rid", r.RunID)
			u.RawQuery = q.Encode()
		}
		body = []byte(r.Text())
		header.Set("Content-Type", "text/plain; charset=utf-8")
	case config.NotifyNtfy:
		body = []byte(r.Text())
		header.Set("Content-Type", "text/plain; charset=utf-8")
		header.Set("Title", r.title())
		header.Set("Priority", ntfyPriority[r.Event])
		header.Set("Tags", strings.Join([]string{ntfyEmoji[r.Event], "subvault", r.Kind, r.Plan}, ","))
	default:
		body = r.JSON()
		header.Set("Content-Type", "application/json")
	}
	header.Set("User-Agent", userAgent)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("cannot make the request") // its message would quote the URL
	}
	req.Header = header
	return req, nil
}

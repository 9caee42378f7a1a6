package ping

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/internal/testutil"
)

// The tests of delivery run in a synctest bubble: the backoff and the
// timeouts run on its clock, so "2 s later" is exact and takes no time.

// call is one request as the fake endpoint saw it.
type call struct {
	at     time.Time
	method string
	url    string
	header http.Header
	body   string
}

// endpoint answers each request with answer(n), n counting from 0; it
// records every request.
type fakeEndpoint struct {
	mu     sync.Mutex
	calls  []call
	answer func(n int, req *http.Request) (*http.Response, error)
}

func (f *fakeEndpoint) RoundTrip(req *http.Request) (*http.Response, error) {
	body, _ := io.ReadAll(req.Body)
	f.mu.Lock()
	n := len(f.calls)
	f.calls = append(f.calls, call{at: time.Now(), method: req.Method, url: req.URL.String(), header: req.Header.Clone(), body: string(body)})
	answer := f.answer
	f.mu.Unlock()
	if answer == nil {
		return status(200), nil
	}
	return answer(n, req)
}

func (f *fakeEndpoint) all() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func status(code int) *http.Response {
	return &http.Response{StatusCode: code, Body: io.NopCloser(strings.NewReader("OK")), Header: http.Header{}}
}

// logBuffer is a log that tests read while the sender writes it.
type logBuffer struct{ testutil.SyncBuffer }

func (l *logBuffer) lines(level string) []string {
	var out []string
	for line := range strings.Lines(l.String()) {
		if strings.Contains(line, "level="+level) {
			out = append(out, line)
		}
	}
	return out
}

func newTestSender(f *fakeEndpoint) (*Sender, *logBuffer) {
	log := &logBuffer{}
	return NewSender(slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})), "test", WithTransport(f)), log
}

func entry(service config.NotifyService, url string) config.Notify {
	return config.Notify{Service: service, URL: url, Events: config.NotifyEvents, Kinds: config.NotifyKinds, Timeout: 10 * time.Second}
}

var (
	started  = time.Date(2026, 12, 3, 3, 0, 0, 0, time.UTC)
	finished = started.Add(90 * time.Second)
)

func report(event Event, result, errText string) Report {
	r := Report{Event: event, Plan: "home", Job: 42, Kind: "backup", Trigger: "schedule", Host: "laptop",
		RunID: "5f0b3c1e-8a2d-4c6e-9f10-2b3c4d5e6f70", StartedAt: started}
	if event != EventStart && event != EventStalled {
		r.Result, r.Error, r.FinishedAt = result, errText, finished
	}
	return r
}

// Each event of a healthchecks check is its URL: /start, the URL itself
// for success, /<exit status> for a failure (1 failed or stalled, 3
// partial, 130 canceled), /log for stalled and postponed; always with the
// run's rid, the query the URL had kept, and a text body that names the
// plan, job, result, error and archive.
func TestHealthchecksRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeEndpoint{}
		s, _ := newTestSender(f)
		hc := entry(config.NotifyHealthchecks, "https://hc.example.com/ping/0f7e2a3c-6c0e-4c52-9d3e-1b2a3c4d5e6f/?create=1")
		stalled := report(EventStalled, "", "")
		stalled.StalledSince = started.Add(time.Minute)
		partial := report(EventFailure, ResultPartial, "partial backup, archive 1a2b3c4d exists: restic could not read 2 file(s)")
		partial.ArchiveID = "1a2b3c4d"
		for _, r := range []Report{
			report(EventStart, "", ""), report(EventSuccess, "done", ""), report(EventFailure, "failed", "restic backup: repository is locked"),
			partial, report(EventFailure, "stalled", "no progress for 10m"), report(EventFailure, "canceled", "canceled"),
			stalled, report(EventPostponed, "postponed", "on battery (on_battery: skip)"),
		} {
			s.Send([]config.Notify{hc}, r)
		}
		s.Wait(t.Context())
		calls := f.all()
		base := "https://hc.example.com/ping/0f7e2a3c-6c0e-4c52-9d3e-1b2a3c4d5e6f"
		q := "?create=1&rid=5f0b3c1e-8a2d-4c6e-9f10-2b3c4d5e6f70"
		want := []string{base + "/start" + q, base + q, base + "/1" + q, base + "/3" + q, base + "/1" + q, base + "/130" + q, base + "/log" + q, base + "/log" + q}
		var got []string
		for _, c := range calls {
			got = append(got, c.url)
			if c.method != http.MethodPost || c.header.Get("User-Agent") != "subvault/test" {
				t.Errorf("%s %s with User-Agent %q, want POST with subvault/test", c.method, c.url, c.header.Get("User-Agent"))
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("healthchecks URLs, in order:\n got %q\nwant %q", got, want)
		}
		for i, wantBody := range []string{
			"laptop: backup of home started\njob 42, asked by schedule\nstarted 2026-12-03 03:00:00 UTC\n",
			"laptop: backup of home done\njob 42, asked by schedule\nstarted 2026-12-03 03:00:00 UTC, took 1m30s\n",
			"laptop: backup of home failed\njob 42, asked by schedule\nerror: restic backup: repository is locked\nstarted 2026-12-03 03:00:00 UTC, took 1m30s\n",
			"laptop: backup of home partial\njob 42, asked by schedule\nerror: partial backup, archive 1a2b3c4d exists: restic could not read 2 file(s)\narchive: 1a2b3c4d\nstarted 2026-12-03 03:00:00 UTC, took 1m30s\n",
		} {
			if calls[i].body != wantBody {
				t.Errorf("body of %s:\n got %q\nwant %q", calls[i].url, calls[i].body, wantBody)
			}
		}
		if want := "no progress since 2026-12-03 03:01:00 UTC; the job goes on (on_stall: report)"; !strings.Contains(calls[6].body, want) {
			t.Errorf("the stalled log's body lacks %q:\n%s", want, calls[6].body)
		}
	})
}

// ntfy gets the text as the message, with a title, a priority (high for
// a failure or a stall) and tags; credentials in the URL become basic
// authentication and leave the URL.
func TestNtfyRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeEndpoint{}
		s, _ := newTestSender(f)
		n := entry(config.NotifyNtfy, "https://backup:s3cr%40t@ntfy.example.com/laptop-backups")
		s.Send([]config.Notify{n}, report(EventStart, "", ""))
		s.Send([]config.Notify{n}, report(EventFailure, "failed", "restic backup: repository is locked"))
		s.Send([]config.Notify{n}, report(EventStalled, "", ""))
		s.Wait(t.Context())
		calls := f.all()
		if len(calls) != 3 {
			t.Fatalf("%d requests, want 3", len(calls))
		}
		for i, want := range []struct{ title, priority, tags string }{
			{"laptop: backup of home started", "low", "arrow_forward,subvault,backup,home"},
			{"laptop: backup of home failed", "high", "x,subvault,backup,home"},
			{"laptop: backup of home stalled", "high", "warning,subvault,backup,home"},
		} {
			c := calls[i]
			if c.url != "https://backup:s3cr%40t@ntfy.example.com/laptop-backups" && c.url != "https://ntfy.example.com/laptop-backups" {
				t.Errorf("ntfy request to %s", c.url)
			}
			if got := []string{c.header.Get("Title"), c.header.Get("Priority"), c.header.Get("Tags")}; !slices.Equal(got, []string{want.title, want.priority, want.tags}) {
				t.Errorf("ntfy headers Title, Priority, Tags = %q, want %q", got, []string{want.title, want.priority, want.tags})
			}
			if auth := c.header.Get("Authorization"); auth != "Basic "+base64.StdEncoding.EncodeToString([]byte("backup:s3cr@t")) {
				t.Errorf("Authorization %q, want basic authentication as backup:s3cr@t", auth)
			}
		}
		if !strings.Contains(calls[1].body, "error: restic backup: repository is locked") {
			t.Errorf("the failure's message lacks the error:\n%s", calls[1].body)
		}
	})
}

// A webhook gets the documented JSON (docs/monitoring.md): every key
// there, times in RFC 3339, null until known.
func TestWebhookBody(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeEndpoint{}
		s, _ := newTestSender(f)
		w := entry(config.NotifyWebhook, "http://127.0.0.1:9000/hooks/subvault?token=abc")
		end := report(EventFailure, ResultPartial, "partial backup, archive 1a2b3c4d exists: restic could not read 2 file(s)")
		end.ArchiveID = "1a2b3c4d"
		s.Send([]config.Notify{w}, report(EventStart, "", ""))
		s.Send([]config.Notify{w}, end)
		s.Wait(t.Context())
		calls := f.all()
		if len(calls) != 2 {
			t.Fatalf("%d requests, want 2", len(calls))
		}
		if calls[0].url != w.URL || calls[0].header.Get("Content-Type") != "application/json" {
			t.Errorf("webhook request to %s with Content-Type %q", calls[0].url, calls[0].header.Get("Content-Type"))
		}
		var start, got map[string]any
		if err := json.Unmarshal([]byte(calls[0].body), &start); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(calls[1].body), &got); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"event": "failure", "plan": "home", "job": 42.0, "kind": "backup", "result": "partial",
			"error": "partial backup, archive 1a2b3c4d exists: restic could not read 2 file(s)", "trigger": "schedule",
			"started_at": "2026-12-03T03:00:00Z", "finished_at": "2026-12-03T03:01:30Z", "archive_id": "1a2b3c4d", "host": "laptop"}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %#v, want %#v", k, got[k], v)
			}
		}
		if len(got) != len(want) {
			t.Errorf("keys %v, want those of %v", keys(got), keys(want))
		}
		if start["event"] != "start" || start["finished_at"] != nil || start["result"] != "" {
			t.Errorf("the start: %s", calls[0].body)
		}
	})
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// An endpoint that fails is tried three times, 2 s and 8 s apart, and
// the failure is logged once: not per attempt, not per report. When it
// answers again, that is logged once too.
func TestRetriesAndLogsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		down := true
		var mu sync.Mutex
		f := &fakeEndpoint{answer: func(int, *http.Request) (*http.Response, error) {
			mu.Lock()
			defer mu.Unlock()
			if down {
				return nil, errors.New("dial tcp 192.0.2.1:443: connect: connection refused")
			}
			return status(200), nil
		}}
		s, log := newTestSender(f)
		hc := entry(config.NotifyHealthchecks, "https://hc.example.com/0f7e2a3c-6c0e-4c52-9d3e-1b2a3c4d5e6f")
		t0 := time.Now()
		s.Send([]config.Notify{hc}, report(EventStart, "", ""))
		s.Wait(t.Context())
		var offsets []time.Duration
		for _, c := range f.all() {
			offsets = append(offsets, c.at.Sub(t0))
		}
		if want := []time.Duration{0, 2 * time.Second, 10 * time.Second}; !slices.Equal(offsets, want) {
			t.Errorf("attempts at %v, want %v", offsets, want)
		}
		s.Send([]config.Notify{hc}, report(EventSuccess, "done", ""))
		s.Send([]config.Notify{hc}, report(EventFailure, "failed", "x"))
		s.Wait(t.Context())
		if n := len(f.all()); n != 9 {
			t.Errorf("%d attempts for 3 reports, want 9", n)
		}
		warns := log.lines("WARN")
		if len(warns) != 1 || !strings.Contains(warns[0], "healthchecks ping to hc.example.com for plan home failed: dial tcp 192.0.2.1:443: connect: connection refused") {
			t.Errorf("want one warning that names the endpoint's host and why, got:\n%s", strings.Join(warns, ""))
		}
		mu.Lock()
		down = false
		mu.Unlock()
		s.Send([]config.Notify{hc}, report(EventStart, "", ""))
		s.Send([]config.Notify{hc}, report(EventSuccess, "done", ""))
		s.Wait(t.Context())
		infos := log.lines("INFO")
		if len(infos) != 1 || !strings.Contains(infos[0], "healthchecks ping to hc.example.com for plan home answers again (2 reports failed meanwhile)") {
			t.Errorf("want one line that the endpoint answers again, got:\n%s", strings.Join(infos, ""))
		}
		if n := len(log.lines("WARN")); n != 1 {
			t.Errorf("%d warnings in all, want 1", n)
		}
		if strings.Contains(log.String(), "0f7e2a3c") {
			t.Errorf("the log shows the check's UUID:\n%s", log)
		}
		// "event" is the journal's MESSAGE_ID attribute (daemon/journal):
		// a ping's event has a name of its own.
		if strings.Contains(log.String(), " event=") || !strings.Contains(log.String(), " notify_event=start") {
			t.Errorf("the log's lines name the report's event other than notify_event:\n%s", log)
		}
	})
}

// A server that does not answer costs each attempt the entry's timeout,
// no more; an answer that cannot change (404) is not tried again, nor is
// a redirect followed.
func TestTimeoutAndPermanentAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeEndpoint{answer: func(_ int, req *http.Request) (*http.Response, error) {
			switch {
			case strings.Contains(req.URL.Path, "hang"):
				<-req.Context().Done()
				return nil, req.Context().Err()
			case strings.Contains(req.URL.Path, "gone"):
				return status(404), nil
			}
			r := status(301)
			r.Header.Set("Location", "https://elsewhere.example.org/new")
			return r, nil
		}}
		s, log := newTestSender(f)
		hang := entry(config.NotifyWebhook, "https://slow.example.com/hang")
		hang.Timeout = 3 * time.Second
		t0 := time.Now()
		s.Send([]config.Notify{hang}, report(EventStart, "", ""))
		s.Wait(t.Context())
		if took := time.Since(t0); took != 3*3*time.Second+10*time.Second {
			t.Errorf("three attempts of 3 s, 2 s and 8 s apart took %v", took)
		}
		if !strings.Contains(log.String(), "no answer within 3s (the entry's timeout)") {
			t.Errorf("the log does not say the endpoint did not answer in time:\n%s", log)
		}
		before := len(f.all())
		s.Send([]config.Notify{entry(config.NotifyWebhook, "https://a.example.com/gone")}, report(EventStart, "", ""))
		s.Send([]config.Notify{entry(config.NotifyWebhook, "https://b.example.com/moved")}, report(EventStart, "", ""))
		s.Wait(t.Context())
		if n := len(f.all()) - before; n != 2 {
			t.Errorf("%d attempts for a 404 and a 301, want one each", n)
		}
		for _, want := range []string{"the server answered HTTP 404 Not Found: check the URL", "the server redirects to elsewhere.example.org (HTTP 301), which subvault does not follow"} {
			if !strings.Contains(log.String(), want) {
				t.Errorf("the log lacks %q:\n%s", want, log)
			}
		}
	})
}

// Send never waits, whatever the endpoint does: with one that hangs, a
// thousand reports are queued at once, those beyond MaxQueued dropped
// and that logged once; each endpoint's reports go out in order, and a
// hanging endpoint holds up no other.
func TestSendNeverBlocksAndKeepsOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeEndpoint{answer: func(_ int, req *http.Request) (*http.Response, error) {
			if req.URL.Host == "hang.example.com" {
				<-req.Context().Done()
				return nil, req.Context().Err()
			}
			return status(200), nil
		}}
		s, log := newTestSender(f)
		hang, fine := entry(config.NotifyWebhook, "https://hang.example.com/x"), entry(config.NotifyWebhook, "https://fine.example.com/x")
		t0 := time.Now()
		for i := range 1000 {
			r := report(EventStart, "", "")
			r.Job = uint32(i + 1)
			s.Send([]config.Notify{hang}, r)
		}
		for i := range 5 {
			r := report(EventStart, "", "")
			r.Job = uint32(i + 1)
			s.Send([]config.Notify{fine}, r)
			r.Event, r.Result = EventSuccess, "done"
			s.Send([]config.Notify{fine}, r)
		}
		if took := time.Since(t0); took != 0 {
			t.Errorf("Send took %v of the bubble's clock", took)
		}
		synctest.Wait()
		var order []string
		for _, c := range f.all() {
			if strings.Contains(c.url, "fine") {
				var b struct {
					Event string
					Job   int
				}
				_ = json.Unmarshal([]byte(c.body), &b)
				order = append(order, b.Event+" "+itoa(b.Job))
			}
		}
		want := []string{"start 1", "success 1", "start 2", "success 2", "start 3", "success 3", "start 4", "success 4", "start 5", "success 5"}
		if !slices.Equal(order, want) {
			t.Errorf("the fine endpoint got %q while the other hung, want %q", order, want)
		}
		if dropped := regexp.MustCompile(`does not keep up`).FindAllString(log.String(), -1); len(dropped) != 1 {
			t.Errorf("%d lines about dropped reports, want 1:\n%s", len(dropped), log)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		if s.Wait(ctx) {
			t.Errorf("Wait says all was delivered, with 64 reports to a hanging endpoint")
		}
		s.Close()
		if !strings.Contains(log.String(), "pings and webhook calls not sent: subvault stops") {
			t.Errorf("Close does not say what it gave up:\n%s", log)
		}
	})
}

// An error that quotes the URL (net/http's do, whole) is logged without
// it: the host only.
func TestErrorsNeverQuoteTheURL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		secretURL := "https://user:hunter2@hooks.example.com/secret-path-0f7e2a3c?token=t0ps3cret"
		f := &fakeEndpoint{answer: func(int, *http.Request) (*http.Response, error) {
			return nil, errors.New("tls: cannot verify " + secretURL + " nor https://hooks.example.com/secret-path-0f7e2a3c?token=t0ps3cret (user hunter2)")
		}}
		s, log := newTestSender(f)
		s.Send([]config.Notify{entry(config.NotifyWebhook, secretURL)}, report(EventStart, "", ""))
		s.Wait(t.Context())
		for _, secret := range []string{"hunter2", "secret-path", "0f7e2a3c", "t0ps3cret"} {
			if strings.Contains(log.String(), secret) {
				t.Errorf("the log shows %q:\n%s", secret, log)
			}
		}
		if !strings.Contains(log.String(), "webhook call to hooks.example.com for plan home failed") {
			t.Errorf("the log does not name the host:\n%s", log)
		}
	})
}

// The listener tells of a daemon job from its start: a start when it
// runs, stalled once each time it comes to count as stalled, its end with
// the result (partial for a failed backup with an archive); nothing for
// a job canceled while queued or one subvault run ran (foreground); a
// postponed end only to entries that heard the start. A run's reports
// share one rid.
func TestListener(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeEndpoint{}
		s, _ := newTestSender(f)
		cfg, err := config.Parse("test.yaml", []byte(`repositories:
  r: {url: /srv/restic, password_file: /etc/subvault/r.pass}
plans:
  home:
    subvolumes: [/home]
    repository: r
    notify:
      - webhook: https://all.example.com/x
      - webhook: https://ends.example.com/x
        events: [success, failure]
settings:
  notify:
    - healthchecks: https://hc.example.com/0f7e2a3c-6c0e-4c52-9d3e-1b2a3c4d5e6f
`))
		if err != nil {
			t.Fatal(err)
		}
		l := NewListener(s, cfg, "laptop")
		job := queue.Job{ID: 7, Kind: queue.KindBackup, Plan: "home", Trigger: queue.TriggerSchedule, State: queue.StateQueued}
		l.JobQueued(job)
		job.State, job.StartedAt = queue.StateRunning, time.Now()
		l.JobChanged(job)
		l.JobChanged(job) // progress
		job.StalledSince = time.Now()
		l.JobChanged(job)
		l.JobChanged(job) // still stalled
		job.StalledSince = time.Time{}
		l.JobChanged(job) // moves
		job.State, job.Result, job.Error, job.ArchiveID, job.FinishedAt = queue.StateFinished, queue.ResultFailed, "partial backup, archive 1a2b exists: ...", "1a2b", time.Now()
		l.JobFinished(job)

		never := queue.Job{ID: 8, Kind: queue.KindBackup, Plan: "home", Trigger: "dbus:1000", State: queue.StateFinished, Result: queue.ResultCanceled}
		l.JobFinished(never)
		fg := queue.Job{ID: 9, Kind: queue.KindBackup, Plan: "home", Trigger: queue.TriggerForeground, State: queue.StateRunning}
		l.JobChanged(fg)
		fg.State, fg.Result = queue.StateFinished, queue.ResultDone
		l.JobFinished(fg)
		post := queue.Job{ID: 10, Kind: queue.KindBackup, Plan: "home", Trigger: queue.TriggerSchedule, State: queue.StateRunning}
		l.JobChanged(post)
		post.State, post.Result, post.Error = queue.StateFinished, queue.ResultPostponed, "on battery (on_battery: skip)"
		l.JobFinished(post)
		prune := queue.Job{ID: 11, Kind: queue.KindPrune, Plan: "home", Trigger: queue.TriggerSchedule, State: queue.StateRunning}
		l.JobChanged(prune)
		prune.State, prune.Result = queue.StateFinished, queue.ResultDone
		l.JobFinished(prune)
		s.Wait(t.Context())

		got := map[string][]string{}
		rids := map[string]bool{}
		for _, c := range f.all() {
			host := strings.SplitN(strings.TrimPrefix(c.url, "https://"), "/", 2)[0]
			if host == "hc.example.com" {
				path, query, _ := strings.Cut(strings.TrimPrefix(c.url, "https://hc.example.com/0f7e2a3c-6c0e-4c52-9d3e-1b2a3c4d5e6f"), "?")
				got[host] = append(got[host], path)
				rids[query] = true
				continue
			}
			var b struct {
				Event  string
				Job    int
				Result string
			}
			_ = json.Unmarshal([]byte(c.body), &b)
			got[host] = append(got[host], strings.TrimSpace(b.Event+" "+itoa(b.Job)+" "+b.Result))
		}
		want := map[string][]string{
			// backups only, by default; partial is exit status 3
			"hc.example.com":   {"/start", "/log", "/3", "/start", "/log"},
			"all.example.com":  {"start 7", "stalled 7", "failure 7 partial", "start 10", "postponed 10 postponed", "start 11", "success 11 done"},
			"ends.example.com": {"failure 7 partial", "success 11 done"},
		}
		for host, w := range want {
			if !slices.Equal(got[host], w) {
				t.Errorf("%s got %q, want %q", host, got[host], w)
			}
		}
		if len(rids) != 2 {
			t.Errorf("healthchecks saw %d run ids for 2 runs: %v", len(rids), rids)
		}
	})
}

func itoa(n int) string {
	if n == 0 {
		return ""
	}
	b, _ := json.Marshal(n)
	return string(b)
}

// NewRunID is a UUID in the form healthchecks takes: lower case, version
// 4, variant 10.
func TestNewRunID(t *testing.T) {
	form := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 100 {
		id := NewRunID()
		if !form.MatchString(id) || seen[id] {
			t.Fatalf("run id %q (seen before: %v)", id, seen[id])
		}
		seen[id] = true
	}
}

// A long error is cut: the text stays below ntfy's 4096-byte message, the
// webhook's error at 4 KiB, each cut at a character's start.
func TestLongErrorsAreCut(t *testing.T) {
	r := report(EventFailure, "failed", strings.Repeat("é", 5000))
	if text := r.Text(); len(text) >= 4096 || !strings.Contains(text, "é...") || !utf8.ValidString(text) {
		t.Errorf("the text of a 10000-byte error is %d bytes (valid UTF-8: %v)", len(text), utf8.ValidString(text))
	}
	var body webhookBody
	if err := json.Unmarshal(r.JSON(), &body); err != nil {
		t.Fatal(err)
	}
	if len(body.Error) > 4096 || !strings.HasSuffix(body.Error, "...") || !utf8.ValidString(body.Error) {
		t.Errorf("the webhook's error is %d bytes", len(body.Error))
	}
}

// A subvault run backup's pings (Foreground), to a webhook on loopback:
// nothing before Start; start, stalled and the end carry the job's id
// (before: the start had job 0, and no stall was sent); a stall is sent
// once however often restic's watch repeats it (retrying), again when it
// stalls anew.
func TestForeground(t *testing.T) {
	var mu sync.Mutex
	var got []webhookBody
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p webhookBody
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		mu.Lock()
		got = append(got, p)
		mu.Unlock()
	}))
	defer srv.Close()
	cfg := &config.Config{Plans: map[string]*config.Plan{"home": {Name: "home", Notify: []config.Notify{entry(config.NotifyWebhook, srv.URL+"/hook")}}}}
	f := NewForeground(slog.New(slog.DiscardHandler), "test", cfg, "home", "laptop")
	f.Start(7)
	first := time.Now().Add(-time.Minute)
	var wg sync.WaitGroup
	for range 3 { // the watch's goroutine
		wg.Go(func() { f.Stalled(first) })
	}
	wg.Wait()
	f.Stalled(first.Add(30 * time.Second))
	f.Finish(7, "done", nil, "abc")
	f.Wait()
	mu.Lock()
	defer mu.Unlock()
	var events []string
	for _, p := range got {
		events = append(events, fmt.Sprintf("%s %d %s %s", p.Event, p.Job, p.Trigger, p.Result))
	}
	if want := []string{"start 7 foreground ", "stalled 7 foreground ", "stalled 7 foreground ", "success 7 foreground done"}; !slices.Equal(events, want) {
		t.Errorf("the webhook got %q, want %q", events, want)
	}
}

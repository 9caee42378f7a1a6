// Package ping tells endpoints outside the machine of jobs: healthchecks
// checks, ntfy topics and webhooks (the notify entries of the
// configuration; docs/monitoring.md, "Pings and webhooks"), when a job
// starts, ends and stalls.
//
// Nothing here may delay or fail a job. A Sender queues each delivery
// without blocking (the queue's listeners run under its lock) and drops it
// when an endpoint's queue is full; each endpoint has a goroutine of its
// own that delivers in order (a run's start before its end), each attempt
// bounded by the entry's timeout, a few attempts with backoff, and only a
// bounded part of the answer read. An endpoint that fails is logged once,
// and again when it answers again.
//
// A notify URL is a secret (a check's UUID, an ntfy topic, credentials):
// what is logged names the service and host only.
package ping

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/subvault/subvault/daemon/config"
)

// Bounds of delivery.
const (
	// MaxQueued is as many deliveries as wait for one endpoint; more are
	// dropped (and counted).
	MaxQueued = 64
	// maxAnswer is as much of an answer as is read: "OK", or a short
	// error. The rest is not read, whatever the server sends.
	maxAnswer = 4 << 10
	// maxAnswerHeaders bounds the answer's headers.
	maxAnswerHeaders = 64 << 10
)

// backoff is the wait before each attempt after the first: three
// attempts, 2 s and 8 s apart.
var backoff = []time.Duration{2 * time.Second, 8 * time.Second}

// Sender delivers reports to notify entries' endpoints.
type Sender struct {
	log       *slog.Logger
	client    *http.Client
	userAgent string
	ctx       context.Context // canceled by Close: in-flight attempts end
	cancel    context.CancelFunc

	mu        sync.Mutex
	endpoints map[string]*endpoint // by service and URL
	idle      *sync.Cond           // broadcast when a worker ends
	working   int
}

// endpoint is one URL's queue and how it fares (Sender.mu).
type endpoint struct {
	queue   []delivery
	running bool
	// failing: the last delivery failed, and was logged; the next
	// failures are not, until one succeeds.
	failing bool
	// dropped counts the deliveries dropped since the queue was last
	// below MaxQueued.
	dropped int
	lost    int // deliveries that failed while failing
}

type delivery struct {
	entry  config.Notify
	report Report
}

// Option changes a Sender.
type Option func(*Sender)

// WithTransport makes the Sender send through rt (unit tests).
func WithTransport(rt http.RoundTripper) Option {
	return func(s *Sender) { s.client.Transport = rt }
}

// NewSender returns a Sender that logs to log; version goes into its
// User-Agent.
func NewSender(log *slog.Logger, version string, opts ...Option) *Sender {
	transport := &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           8,
		IdleConnTimeout:        30 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		MaxResponseHeaderBytes: maxAnswerHeaders,
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sender{
		log: log, userAgent: "subvault/" + version, ctx: ctx, cancel: cancel,
		client: &http.Client{
			Transport: transport,
			// A redirect would carry the report (and a webhook's body)
			// to a URL nobody configured; it is a failure that names the
			// fix instead.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		endpoints: map[string]*endpoint{},
	}
	s.idle = sync.NewCond(&s.mu)
	for _, o := range opts {
		o(s)
	}
	return s
}

// Send queues r for each entry that wants it, and returns at once: it
// never blocks on the network, so it may be called under any lock. An
// endpoint whose queue is full drops the report, and says so in the log.
func (s *Sender) Send(entries []config.Notify, r Report) {
	var full []config.Notify // endpoints that began to drop reports: logged unlocked
	defer func() {
		for _, e := range full {
			s.log.Warn(fmt.Sprintf("%s endpoint %s does not keep up: reports to it are dropped", e.Service, e.Host()),
				"plan", r.Plan, "job", r.Job, "notify_event", r.Event, "queued", MaxQueued)
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	for _, e := range entries {
		key := string(e.Service) + " " + e.URL
		if seen[key] || !wants(e, r) {
			continue
		}
		seen[key] = true // the same endpoint in settings.notify and the plan's: once
		ep := s.endpoints[key]
		if ep == nil {
			ep = &endpoint{}
			s.endpoints[key] = ep
		}
		if len(ep.queue) >= MaxQueued {
			if ep.dropped == 0 {
				full = append(full, e)
			}
			ep.dropped++
			continue
		}
		ep.queue = append(ep.queue, delivery{entry: e, report: r})
		if !ep.running {
			ep.running = true
			s.working++
			go s.work(ep)
		}
	}
}

// wants reports whether entry is sent r: a postponed end goes where the
// start went.
func wants(entry config.Notify, r Report) bool {
	event := config.NotifyEvent(r.Event)
	if r.Event == EventPostponed {
		event = config.NotifyStart
	}
	return entry.Wants(event, r.Kind)
}

// work delivers ep's queue in order, then ends. It logs with s.mu
// released: a slow log must not hold up Send, which runs under the
// queue's lock.
func (s *Sender) work(ep *endpoint) {
	s.mu.Lock()
	defer func() {
		ep.running = false
		s.working--
		s.idle.Broadcast()
		s.mu.Unlock()
	}()
	for len(ep.queue) > 0 {
		d := ep.queue[0]
		ep.queue = ep.queue[1:]
		dropped := 0
		if ep.dropped > 0 && len(ep.queue) == 0 {
			dropped, ep.dropped = ep.dropped, 0
		}
		s.mu.Unlock()
		if dropped > 0 {
			s.log.Warn(fmt.Sprintf("%d reports to %s endpoint %s were dropped: it did not keep up", dropped, d.entry.Service, d.entry.Host()))
		}
		err := s.deliver(d)
		s.mu.Lock()
		wasFailing, lost := ep.failing, ep.lost
		ep.failing = err != nil
		switch {
		case err == nil:
			ep.lost = 0
		case wasFailing:
			ep.lost++
		}
		s.mu.Unlock()
		s.logDelivery(d, err, wasFailing, lost)
		s.mu.Lock()
	}
}

// logDelivery logs how d fared: a failure once, until the endpoint
// answers again; the rest at debug level.
func (s *Sender) logDelivery(d delivery, err error, wasFailing bool, lost int) {
	what := fmt.Sprintf("%s %s to %s for plan %s", d.entry.Service, kindOfCall(d.entry), d.entry.Host(), d.report.Plan)
	attrs := []any{"plan", d.report.Plan, "job", d.report.Job, "notify_event", d.report.Event, "endpoint", d.entry.Host()}
	switch {
	case err == nil && wasFailing:
		s.log.Info(fmt.Sprintf("%s answers again (%d reports failed meanwhile)", what, lost), attrs...)
	case err == nil:
		s.log.Debug(what+" delivered", attrs...)
	case !wasFailing:
		s.log.Warn(fmt.Sprintf("%s failed: %s; the job is not affected, and further failures of this endpoint are not logged until it answers again", what, err),
			attrs...)
	default:
		s.log.Debug(what+" failed again", append(attrs, "why", err.Error())...)
	}
}

func kindOfCall(e config.Notify) string {
	if e.Service == config.NotifyWebhook {
		return "call"
	}
	if e.Service == config.NotifyNtfy {
		return "message"
	}
	return "ping"
}

// deliver tries d up to 1+len(backoff) times. Only an answer that cannot
// change by trying again (a 4xx other than 408 and 429, a redirect) ends
// the attempts early.
func (s *Sender) deliver(d delivery) error {
	var err error
	for attempt := 0; ; attempt++ {
		var retry bool
		retry, err = s.attempt(d)
		if err == nil || !retry || attempt >= len(backoff) {
			return err
		}
		t := time.NewTimer(backoff[attempt])
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (given up: subvault stops)", err)
		}
	}
}

// attempt sends d once, within its entry's timeout, and reports whether
// trying again may help.
func (s *Sender) attempt(d delivery) (retry bool, err error) {
	if s.ctx.Err() != nil {
		return false, errors.New("not sent: subvault stops")
	}
	ctx, cancel := context.WithTimeout(s.ctx, d.entry.Timeout)
	defer cancel()
	req, err := request(ctx, d.entry, d.report, s.userAgent)
	if err != nil {
		return false, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return true, describe(err, d.entry, ctx)
	}
	// A bounded part of the answer, then the connection is closed: an
	// endless answer costs no more.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
	_ = resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return false, nil
	case code >= 300 && code < 400:
		where := "elsewhere"
		if loc, err := url.Parse(resp.Header.Get("Location")); err == nil && loc.Host != "" {
			where = "to " + loc.Host
		}
		return false, fmt.Errorf("the server redirects %s (HTTP %d), which subvault does not follow: put the URL it redirects to into the configuration", where, code)
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return true, fmt.Errorf("the server answered HTTP %d %s", code, http.StatusText(code))
	default:
		return false, fmt.Errorf("the server answered HTTP %d %s: check the URL (and its credentials)", code, http.StatusText(code))
	}
}

// describe is a transport error in words that never quote the URL:
// net/http's own quote it whole, a healthchecks UUID or ntfy topic with
// it.
func describe(err error, entry config.Notify, ctx context.Context) error {
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("no answer within %s (the entry's timeout)", entry.Timeout)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return errors.New(scrub(err.Error(), entry.URL))
}

// scrub removes what of the URL a message may hold beyond its host: the
// URL, its path and query, its user and password.
func scrub(msg, raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return strings.ReplaceAll(msg, raw, "[URL]")
	}
	secrets := []string{raw, u.Redacted(), u.String()}
	if len(strings.Trim(u.Path, "/")) > 0 {
		secrets = append(secrets, u.EscapedPath(), u.Path)
	}
	if u.RawQuery != "" {
		secrets = append(secrets, u.RawQuery)
	}
	if u.User != nil {
		secrets = append(secrets, u.User.String(), u.User.Username())
		if p, ok := u.User.Password(); ok {
			secrets = append(secrets, p)
		}
	}
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
		}
	}
	return msg
}

// Wait waits until every queued report has been delivered or given up,
// or ctx is done; it reports whether all were.
func (s *Sender) Wait(ctx context.Context) bool {
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.idle.Broadcast()
	})
	defer stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.working > 0 && ctx.Err() == nil {
		s.idle.Wait()
	}
	return s.working == 0
}

// Close gives up what is still queued or under way, logs how many reports
// that was, and waits for the workers to end (each at once: an attempt
// under way is canceled).
func (s *Sender) Close() {
	s.mu.Lock()
	left := 0
	for _, ep := range s.endpoints {
		left += len(ep.queue)
		ep.queue = nil
	}
	s.mu.Unlock()
	s.cancel()
	if left > 0 {
		s.log.Warn(fmt.Sprintf("%d pings and webhook calls not sent: subvault stops", left))
	}
	s.Wait(context.Background())
}

// Forget drops the state of endpoints no longer in entries (a reload)
// that have nothing queued.
func (s *Sender) Forget(entries []config.Notify) {
	keep := map[string]bool{}
	for _, e := range entries {
		keep[string(e.Service)+" "+e.URL] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, ep := range s.endpoints {
		if !keep[key] && !ep.running {
			delete(s.endpoints, key)
		}
	}
}

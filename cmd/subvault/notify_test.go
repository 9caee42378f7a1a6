package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/internal/testutil"
)

// pingRecorder is a web server on loopback that records the pings and
// webhook calls it gets. A path that starts with /hang never answers (it
// waits until the caller hangs up); one that starts with /slow answers
// after 5 s; one that starts with /endless answers
// 200 with a body that never ends, and records how much of it it got to
// write before the caller hung up.
type pingRecorder struct {
	*httptest.Server
	mu      sync.Mutex
	got     []pingRequest
	endless []int64 // bytes written to each /endless request, once it ended
	stop    chan struct{}
}

type pingRequest struct {
	at           time.Time
	method, path string
	query        url.Values
	header       http.Header
	user, pass   string
	body         string
}

func newPingRecorder(t *testing.T) *pingRecorder {
	t.Helper()
	r := &pingRecorder{stop: make(chan struct{})}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(func() {
		close(r.stop)
		r.CloseClientConnections()
		r.Close()
	})
	return r
}

func (r *pingRecorder) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	user, pass, _ := req.BasicAuth()
	r.mu.Lock()
	r.got = append(r.got, pingRequest{at: time.Now(), method: req.Method, path: req.URL.Path, query: req.URL.Query(),
		header: req.Header.Clone(), user: user, pass: pass, body: string(body)})
	r.mu.Unlock()
	switch {
	case strings.HasPrefix(req.URL.Path, "/hang"):
		select {
		case <-req.Context().Done():
		case <-r.stop:
		}
	case strings.HasPrefix(req.URL.Path, "/slow"):
		select {
		case <-req.Context().Done():
			return
		case <-r.stop:
			return
		case <-time.After(5 * time.Second):
		}
		_, _ = io.WriteString(w, "OK")
	case strings.HasPrefix(req.URL.Path, "/endless"):
		w.WriteHeader(http.StatusOK)
		chunk := []byte(strings.Repeat("endless ", 8192))
		var n int64
		for {
			if _, err := w.Write(chunk); err != nil {
				break
			}
			n += int64(len(chunk))
			if n > 1<<30 { // the caller reads it all: a bound of the test's own
				break
			}
		}
		r.mu.Lock()
		r.endless = append(r.endless, n)
		r.mu.Unlock()
	default:
		_, _ = io.WriteString(w, "OK")
	}
}

// requests are the requests whose path starts with prefix, in order.
func (r *pingRecorder) requests(prefix string) []pingRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []pingRequest
	for _, g := range r.got {
		if strings.HasPrefix(g.path, prefix) {
			out = append(out, g)
		}
	}
	return out
}

// wait waits until n requests whose path starts with prefix have come.
func (r *pingRecorder) wait(t *testing.T, prefix string, n int, limit time.Duration) []pingRequest {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		got := r.requests(prefix)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests to %s within %v, want %d: %v", len(got), prefix, limit, n, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// webhookEvent is a webhook's JSON body (docs/monitoring.md).
type webhookEvent struct {
	Event      string  `json:"event"`
	Plan       string  `json:"plan"`
	Job        uint32  `json:"job"`
	Kind       string  `json:"kind"`
	Result     string  `json:"result"`
	Error      string  `json:"error"`
	Trigger    string  `json:"trigger"`
	StartedAt  *string `json:"started_at"`
	FinishedAt *string `json:"finished_at"`
	ArchiveID  string  `json:"archive_id"`
	Host       string  `json:"host"`
}

func webhookEvents(t *testing.T, reqs []pingRequest) []webhookEvent {
	t.Helper()
	var out []webhookEvent
	for _, r := range reqs {
		var ev webhookEvent
		if r.method != http.MethodPost || r.header.Get("Content-Type") != "application/json" {
			t.Errorf("webhook request %s %s with Content-Type %q", r.method, r.path, r.header.Get("Content-Type"))
		}
		if err := json.Unmarshal([]byte(r.body), &ev); err != nil {
			t.Fatalf("webhook body %q: %v", r.body, err)
		}
		out = append(out, ev)
	}
	return out
}

// The secrets of the notify URLs of the tests below: none may show in a
// log, on the bus or in what the subvault command prints.
var notifySecrets = []string{"hc-user", "hc-pw-5e1f", "0f7e2a3c", "ntfy-user", "ntfy-s3cret", "topic-6b1d", "tok-9c2e",
	"hook-user", "hook-pw-2d4c", "unreachable-8d3a", "hang-4f2c", "slow-5e8a", "endless-7a1b", "after-reload-3c9d"}

func noNotifySecrets(t *testing.T, where, text string) {
	t.Helper()
	for _, s := range notifySecrets {
		if strings.Contains(text, s) {
			t.Errorf("%s shows %q of a notify URL:\n%s", where, s, text)
		}
	}
}

// The daemon pings and calls webhooks for its jobs, and nothing of it
// delays a job or shows a URL:
//   - a done backup sends start then success, a failed one start then
//     failure, to a healthchecks check (/start, the URL, /1, with the
//     run's rid), an ntfy topic (title, priority, basic authentication from
//     the URL) and webhooks (the documented JSON), of the plan and of
//     settings.notify (which asked for success and failure only);
//   - a reload puts a new entry in force for the next job;
//   - an endpoint on a closed port, one slower than its timeout and one
//     that never answers (timeout 60 s) delay nothing: the backup takes
//     less than that timeout, though the hanging endpoint got its start
//     while the backup ran; the closed port's and the slow endpoint's
//     failures are each logged once, not per attempt or per report;
//   - one whose answer never ends is read 4 KiB and hung up on;
//   - no part of a URL but its host is in the daemon's log, on the bus
//     (GetManagedObjects, root and uid 65534) or in what subvault plans,
//     status, jobs and job print, to root or to uid 65534;
//   - the daemon stops without waiting for the hanging endpoint's timeout.
func TestNotifyDaemonPingsAndWebhooks(t *testing.T) {
	testutil.RequireNobody(t)
	rec := newPingRecorder(t)
	closed := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)) // nothing listens on it
	e := newAPIEnv(t, 5)
	server := strings.TrimPrefix(rec.URL, "http://")
	hcURL := "http://hc-user:hc-pw-5e1f@" + server + "/hc/0f7e2a3c-6c0e-4c52-9d3e-1b2a3c4d5e6f"
	e.editPlan(t, "0 3 * * *", fmt.Sprintf(`    notify:
      - healthchecks: %s
      - ntfy: http://ntfy-user:ntfy-s3cret@%s/ntfy/topic-6b1d
      - webhook: http://%s/hook?token=tok-9c2e
      - webhook: http://%s/unreachable-8d3a
        events: [start, success, failure]
      - webhook: http://%s/hang-4f2c
        timeout: 60s
      - webhook: http://%s/slow-5e8a
        timeout: 2s
      - webhook: http://%s/endless-7a1b
        timeout: 5s
`, hcURL, server, server, closed, server, server, server))
	global := fmt.Sprintf("settings:\n  notify:\n    - webhook: http://hook-user:hook-pw-2d4c@%s/global\n      events: [success, failure]\n", server)
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteSecret(t, e.config, strings.Replace(string(cfg), "settings:\n", global, 1))
	// --debug: the log then says each time an endpoint fails again, which
	// the test counts.
	cmd, log := e.startDaemonLogged(t, "--debug")
	host, _ := os.Hostname()

	// A done backup.
	id := e.startJob(t, "StartBackup", "s", "home")
	if job, _ := e.waitJob(t, id, 3*time.Minute, time.Now()); job.Result != contract.ResultDone {
		t.Fatalf("the backup ended %s: %s", job.Result, job.Error)
	}
	started, finished := e.timeProperty(t, id, "StartedAt"), e.timeProperty(t, id, "FinishedAt")
	archive := e.stringProperty(t, contract.JobPath(id), contract.JobInterface, "ArchiveId")
	t.Logf("the backup took %v with a closed port, an endpoint that never answers (timeout 60s) and an endless one among its entries",
		finished.Sub(started).Round(time.Millisecond))
	if took := finished.Sub(started); took >= 60*time.Second {
		t.Errorf("the backup took %v: as long as the hanging endpoint's timeout", took)
	}
	if hang := rec.wait(t, "/hang-4f2c", 1, 30*time.Second); !hang[0].at.Before(finished) {
		t.Errorf("the hanging endpoint got the start at %v, after the backup ended (%v): it proves nothing", hang[0].at, finished)
	}

	hc := rec.wait(t, "/hc/", 2, 30*time.Second)
	const check = "/hc/0f7e2a3c-6c0e-4c52-9d3e-1b2a3c4d5e6f"
	if hc[0].path != check+"/start" || hc[1].path != check || hc[0].query.Get("rid") == "" || hc[0].query.Get("rid") != hc[1].query.Get("rid") {
		t.Errorf("healthchecks got %s?%s then %s?%s; want %s/start then %s, with the same rid", hc[0].path, hc[0].query.Encode(), hc[1].path, hc[1].query.Encode(), check, check)
	}
	if hc[0].user != "hc-user" || hc[0].pass != "hc-pw-5e1f" {
		t.Errorf("healthchecks' basic authentication: %q %q", hc[0].user, hc[0].pass)
	}
	for _, want := range []string{host + ": backup of home done", fmt.Sprintf("job %d, asked by dbus:0", id)} {
		if !strings.Contains(hc[1].body, want) {
			t.Errorf("the success ping's body lacks %q:\n%s", want, hc[1].body)
		}
	}
	ntfy := rec.wait(t, "/ntfy/topic-6b1d", 2, 30*time.Second)
	if got := []string{ntfy[0].header.Get("Title"), ntfy[1].header.Get("Title"), ntfy[1].header.Get("Priority"), ntfy[1].user, ntfy[1].pass}; !slices.Equal(got,
		[]string{host + ": backup of home started", host + ": backup of home done", "default", "ntfy-user", "ntfy-s3cret"}) {
		t.Errorf("ntfy got titles, priority and credentials %q", got)
	}
	hook := webhookEvents(t, rec.wait(t, "/hook", 2, 30*time.Second))
	if hook[0].Event != "start" || hook[1].Event != "success" || hook[1].Job != id || hook[1].Result != "done" || hook[1].ArchiveID != archive ||
		hook[1].Trigger != "dbus:0" || hook[1].Host != host || hook[1].Kind != "backup" || hook[1].Plan != "home" ||
		hook[1].StartedAt == nil || hook[1].FinishedAt == nil || hook[0].FinishedAt != nil {
		t.Errorf("the plan's webhook got %+v", hook)
	}
	if q := rec.requests("/hook")[0].query.Get("token"); q != "tok-9c2e" {
		t.Errorf("the webhook's query token is %q", q)
	}
	glob := rec.wait(t, "/global", 1, 30*time.Second)
	if ev := webhookEvents(t, glob); len(ev) != 1 || ev[0].Event != "success" || glob[0].user != "hook-user" {
		t.Errorf("settings.notify's webhook (success and failure only) got %+v as %q", ev, glob[0].user)
	}
	rec.wait(t, "/endless-7a1b", 2, 30*time.Second)

	// A reload adds an entry and a hook that fails: a failed backup.
	cfg, err = os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(cfg), "    notify:\n", fmt.Sprintf(`    hooks:
      before_snapshot: ["/usr/bin/false"]
    notify:
      - webhook: http://%s/after-reload-3c9d
`, server), 1)
	testutil.WriteSecret(t, e.config, edited)
	reloads := strings.Count(log.String(), "configuration reloaded")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() int { return b2i(strings.Count(log.String(), "configuration reloaded") > reloads) })
	failed := e.startJob(t, "StartBackup", "s", "home")
	job, _ := e.waitJob(t, failed, 3*time.Minute, time.Now())
	if job.Result != contract.ResultFailed {
		t.Fatalf("the backup with a failing hook ended %s", job.Result)
	}
	hc = rec.wait(t, "/hc/", 4, 30*time.Second)
	if hc[2].path != check+"/start" || hc[3].path != check+"/1" || hc[2].query.Get("rid") != hc[3].query.Get("rid") || hc[2].query.Get("rid") == hc[0].query.Get("rid") {
		t.Errorf("healthchecks got %s?%s then %s?%s for the failed backup; want %s/start then %s/1 (exit status 1) with a rid of their own",
			hc[2].path, hc[2].query.Encode(), hc[3].path, hc[3].query.Encode(), check, check)
	}
	if !strings.Contains(hc[3].body, "error: "+job.Error) {
		t.Errorf("the failure ping's body lacks the job's error %q:\n%s", job.Error, hc[3].body)
	}
	ntfy = rec.wait(t, "/ntfy/topic-6b1d", 4, 30*time.Second)
	if ntfy[3].header.Get("Priority") != "high" || ntfy[3].header.Get("Title") != host+": backup of home failed" || !strings.Contains(ntfy[3].body, job.Error) {
		t.Errorf("ntfy's failure: priority %q, title %q, message %q", ntfy[3].header.Get("Priority"), ntfy[3].header.Get("Title"), ntfy[3].body)
	}
	hook = webhookEvents(t, rec.wait(t, "/hook", 4, 30*time.Second))
	if hook[2].Event != "start" || hook[3].Event != "failure" || hook[3].Job != failed || hook[3].Result != "failed" || hook[3].Error != job.Error {
		t.Errorf("the plan's webhook got %+v for the failed backup (error %q)", hook[2:], job.Error)
	}
	if ev := webhookEvents(t, rec.wait(t, "/global", 2, 30*time.Second)); ev[1].Event != "failure" || ev[1].Job != failed {
		t.Errorf("settings.notify's webhook got %+v", ev)
	}
	if ev := webhookEvents(t, rec.wait(t, "/after-reload-3c9d", 2, 30*time.Second)); ev[0].Event != "start" || ev[1].Event != "failure" || ev[0].Job != failed {
		t.Errorf("the entry the reload added got %+v, want the failed backup's start and failure only", ev)
	}

	// The closed port had four reports (start, success, start, failure),
	// each tried three times: one warning, and the debug lines of the
	// next three.
	unreachable := "webhook call to " + closed + " for plan home"
	waitFor(t, 2*time.Minute, func() int { return b2i(strings.Count(log.String(), unreachable+" failed again") >= 3) })
	if warns := regexp.MustCompile(`level=WARN msg="`+regexp.QuoteMeta(unreachable)+` failed: [^"]*connection refused`).FindAllString(log.String(), -1); len(warns) != 1 {
		t.Errorf("the closed port's failures were logged %d times at level WARN, want once", len(warns))
	}
	// The slow endpoint (5 s, timeout 2 s) had as many, each three
	// attempts of 2 s: one warning too.
	slow := "webhook call to " + server + " for plan home failed"
	waitFor(t, 2*time.Minute, func() int { return b2i(strings.Count(log.String(), slow+" again") >= 1) })
	if warns := regexp.MustCompile(`level=WARN msg="`+regexp.QuoteMeta(slow)+`: no answer within 2s`).FindAllString(log.String(), -1); len(warns) != 1 {
		t.Errorf("the slow endpoint's failures were logged %d times at level WARN, want once", len(warns))
	}
	// The endless answers were hung up on: each ended at the server.
	waitFor(t, 30*time.Second, func() int {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return b2i(len(rec.endless) >= 2)
	})
	rec.mu.Lock()
	t.Logf("the endless answers got to write %v bytes before subvault hung up", rec.endless)
	for _, n := range rec.endless {
		if n >= 1<<30 {
			t.Errorf("subvault read an endless answer to the test's own bound (%d bytes)", n)
		}
	}
	rec.mu.Unlock()

	// Nothing of a URL but its host, anywhere subvault shows something.
	noNotifySecrets(t, "the daemon's log", log.String())
	out, err := e.busctl("--json=short", "call", contract.BusName, string(contract.ManagerPath), contract.ObjectManagerInterface, "GetManagedObjects")
	if err != nil || !strings.Contains(out, "home") {
		t.Fatalf("GetManagedObjects: %v %s", err, out)
	}
	noNotifySecrets(t, "GetManagedObjects", out)
	nobodyBus, err := testutil.AsNobody("busctl", "--address="+e.bus.Address, "--json=short", "call", contract.BusName,
		string(contract.ManagerPath), contract.ObjectManagerInterface, "GetManagedObjects").CombinedOutput()
	if err != nil || !strings.Contains(string(nobodyBus), "home") {
		t.Fatalf("GetManagedObjects as uid 65534: %v %s", err, nobodyBus)
	}
	noNotifySecrets(t, "GetManagedObjects as uid 65534", string(nobodyBus))
	bin := nobodyBinary(t)
	for _, args := range [][]string{{"plans"}, {"plans", "--json"}, {"status"}, {"status", "--json"}, {"jobs"}, {"jobs", "--json"},
		{"job", fmt.Sprint(failed)}, {"job", fmt.Sprint(failed), "--json"}} {
		code, stdout, stderr := e.cli(t, args...)
		if code != exitOK && code != exitFailure { // status exits 1 for the failed plan
			t.Errorf("subvault %v: exit %d: %s", args, code, stderr)
		}
		noNotifySecrets(t, fmt.Sprintf("subvault %v", args), stdout+stderr)
		cmd := testutil.AsNobody(bin, append(args, "--bus", e.bus.Address)...)
		cmd.Env = append(cmd.Env, "SUBVAULT_TEST_AS_MAIN=1")
		_, stdout, stderr = runCmd(t, cmd)
		noNotifySecrets(t, fmt.Sprintf("subvault %v as uid 65534", args), stdout+stderr)
	}
	checkOut, err := subvaultCmd("check-config", "--config", e.config).CombinedOutput()
	if err != nil {
		t.Fatalf("check-config: %v %s", err, checkOut)
	}
	noNotifySecrets(t, "subvault check-config", string(checkOut))
	if want := "    notify healthchecks " + server + ": start, success, failure, stalled of backup\n"; !strings.Contains(string(checkOut), want) {
		t.Errorf("check-config does not list %q:\n%s", want, checkOut)
	}
	if strings.Contains(string(checkOut), "warning") {
		t.Errorf("check-config warns about a configuration of mode 0600:\n%s", checkOut)
	}
	if out, err := testutil.AsNobody("cat", e.config).CombinedOutput(); err == nil {
		t.Errorf("uid 65534 reads the configuration (mode 0600): %s", out)
	}
	nobodyCheck := testutil.AsNobody(bin, "check-config", "--config", e.config)
	nobodyCheck.Env = append(nobodyCheck.Env, "SUBVAULT_TEST_AS_MAIN=1")
	if code, stdout, stderr := runCmd(t, nobodyCheck); code == exitOK {
		t.Errorf("uid 65534's check-config read the configuration: %s", stdout)
	} else {
		noNotifySecrets(t, "check-config as uid 65534", stdout+stderr)
	}

	// The hanging endpoint still holds a report: the daemon stops without
	// waiting for its timeout.
	stopping := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("the daemon's exit: %v", err)
	}
	t.Logf("the daemon stopped %v after SIGTERM, with an endpoint hanging", time.Since(stopping).Round(time.Millisecond))
	if took := time.Since(stopping); took > 45*time.Second {
		t.Errorf("the daemon took %v to stop: it waited for the hanging endpoint", took)
	}
	noNotifySecrets(t, "the daemon's log", log.String())
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// nobodyBinary is a copy of the test binary (which stands for subvault)
// that uid 65534 may run.
func nobodyBinary(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "subvault-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "subvault")
	testutil.Run(t, "cp", os.Args[0], bin)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// subvault run backup pings itself: start when the backup starts, success
// or failure at the end, to the plan's and settings' entries (healthchecks
// with one rid per run, a webhook with trigger foreground). Its stdout is
// the summary alone; a failing endpoint is a line on stderr, without its
// URL; and it waits for a hanging endpoint no longer than the entries'
// longest timeout.
func TestNotifyRunBackup(t *testing.T) {
	testutil.RequireRoot(t)
	rec := newPingRecorder(t)
	closed := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)) // nothing listens on it
	e := newRunEnv(t, 256)
	testutil.WriteFile(t, e.fs.Path("home", "a"), "hello")
	server := strings.TrimPrefix(rec.URL, "http://")
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	notify := fmt.Sprintf(`    repository: r
    notify:
      - healthchecks: http://hc-user:hc-pw-5e1f@%s/hc/0f7e2a3c-6c0e-4c52-9d3e-1b2a3c4d5e6f
      - webhook: http://%s/unreachable-8d3a
        timeout: 2s
      - webhook: http://%s/hang-4f2c
        timeout: 3s
`, server, closed, server)
	global := fmt.Sprintf("settings:\n  notify:\n    - webhook: http://hook-user:hook-pw-2d4c@%s/global\n", server)
	edited := strings.Replace(strings.Replace(string(cfg), "    repository: r\n", notify, 1), "settings:\n", global, 1)
	testutil.WriteSecret(t, e.config, edited)

	began := time.Now()
	code, stdout, stderr := runCmd(t, subvaultCmd("run", "backup", "home", "--config", e.config))
	took := time.Since(began)
	if code != exitOK {
		t.Fatalf("run backup: exit %d\n%s", code, stderr)
	}
	t.Logf("subvault run backup took %v with a closed port and a hanging endpoint among its entries (the longest timeout, the default, is 10s); stderr:\n%s", took.Round(time.Millisecond), stderr)
	if took > 60*time.Second {
		t.Errorf("subvault run backup took %v: it waited for the endpoints beyond their timeouts", took)
	}
	if !strings.HasPrefix(stdout, "plan home, job 1: archive ") || strings.Contains(stdout, "webhook") || strings.Contains(stdout, "ping") {
		t.Errorf("stdout is not the summary alone:\n%s", stdout)
	}
	if !strings.Contains(stderr, "webhook call to "+closed+" for plan home failed") {
		t.Errorf("stderr does not say the closed port's webhook failed:\n%s", stderr)
	}
	noNotifySecrets(t, "subvault run backup's output", stdout+stderr)

	hc := rec.requests("/hc/")
	const check = "/hc/0f7e2a3c-6c0e-4c52-9d3e-1b2a3c4d5e6f"
	if len(hc) != 2 || hc[0].path != check+"/start" || hc[1].path != check || hc[0].query.Get("rid") == "" || hc[0].query.Get("rid") != hc[1].query.Get("rid") {
		t.Fatalf("healthchecks got %v; want %s/start then %s with one rid", hc, check, check)
	}
	if !strings.Contains(hc[1].body, "job 1, asked by foreground") || !strings.Contains(hc[1].body, "backup of home done") {
		t.Errorf("the success ping's body:\n%s", hc[1].body)
	}
	glob := webhookEvents(t, rec.requests("/global"))
	if len(glob) != 2 || glob[0].Event != "start" || glob[0].Trigger != "foreground" || glob[1].Event != "success" || glob[1].Job != 1 ||
		glob[1].Result != "done" || glob[1].ArchiveID == "" || !strings.Contains(stdout, glob[1].ArchiveID) {
		t.Errorf("settings.notify's webhook got %+v", glob)
	}
	if len(rec.requests("/hang-4f2c")) == 0 {
		t.Errorf("the hanging endpoint got nothing: the test proves nothing")
	}

	// A failing run: start, then failure (exit status 1).
	testutil.WriteSecret(t, e.config, strings.Replace(edited, "    notify:\n", "    hooks:\n      before_snapshot: [\"/usr/bin/false\"]\n    notify:\n", 1))
	code, stdout, stderr = runCmd(t, subvaultCmd("run", "backup", "home", "--config", e.config))
	if code != exitFailure {
		t.Fatalf("run backup with a failing hook: exit %d\n%s", code, stderr)
	}
	if stdout != "" {
		t.Errorf("a failed run printed on stdout:\n%s", stdout)
	}
	hc = rec.requests("/hc/")
	if len(hc) != 4 || hc[2].path != check+"/start" || hc[3].path != check+"/1" || hc[2].query.Get("rid") != hc[3].query.Get("rid") || hc[2].query.Get("rid") == hc[0].query.Get("rid") {
		t.Fatalf("healthchecks got %v; want %s/start then %s/1 with a rid of their own", hc[2:], check, check)
	}
	glob = webhookEvents(t, rec.requests("/global"))
	if len(glob) != 4 || glob[3].Event != "failure" || glob[3].Result != "failed" || !strings.Contains(glob[3].Error, "/usr/bin/false") {
		t.Errorf("settings.notify's webhook got %+v for the failed run", glob[2:])
	}
	noNotifySecrets(t, "subvault run backup's output", stdout+stderr)

	// The emergency kit prints the repository's secrets, which a restore
	// needs; a notify URL is none of them.
	kit := t.TempDir()
	code, stdout, stderr = runCmd(t, subvaultCmd("emergency-kit", "--config", e.config, "--out", kit))
	if code != exitOK {
		t.Fatalf("emergency-kit: exit %d\n%s", code, stderr)
	}
	files, _ := filepath.Glob(filepath.Join(kit, "*"))
	if len(files) == 0 {
		t.Fatalf("emergency-kit wrote nothing; stdout %s", stdout)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		noNotifySecrets(t, "the emergency kit "+filepath.Base(f), string(data))
	}
}

// check-config lists each plan's notify entries by service and host, and
// warns when the file that holds their URLs may be read by others.
func TestCheckConfigNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	content := `repositories:
  local:
    url: /srv/restic
    password_file: /etc/subvault/local.pass
plans:
  home:
    subvolumes: [/home]
    repository: local
    notify:
      - healthchecks: https://hc-user:hc-pw-5e1f@hc.example.com/0f7e2a3c-6c0e-4c52-9d3e-1b2a3c4d5e6f
settings:
  notify:
    - ntfy: https://ntfy.example.com/topic-6b1d
      events: [failure, stalled]
`
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "check-config", "--config", path)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"    notify ntfy ntfy.example.com: failure, stalled of backup, prune, check, copy, restore\n",
		"    notify healthchecks hc.example.com: start, success, failure, stalled of backup\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("check-config does not list %q:\n%s", want, out)
		}
	}
	if want := "warning: " + path + " holds notify URLs, which are secrets, and others may read it (mode 0644): chmod 600 " + path; !strings.Contains(errOut, want) {
		t.Errorf("check-config does not warn %q:\n%s", want, errOut)
	}
	noNotifySecrets(t, "check-config", out+errOut)
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLI(t, "check-config", "--config", path); code != exitOK || errOut != "" {
		t.Errorf("mode 0600: exit %d, stderr %q", code, errOut)
	}
}

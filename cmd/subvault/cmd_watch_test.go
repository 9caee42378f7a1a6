package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/internal/testutil"
)

// TestWatchFollowsJobs: `subvault watch` prints a line when a job is queued,
// starts, passes each quarter, and ends; with --json, one object per event
// that parses.
func TestWatchFollowsJobs(t *testing.T) {
	e := newAPIEnv(t, 200)
	e.startDaemon(t)
	text, _ := testutil.StartProcess(t, "subvault watch", subvaultCmd("watch", "--bus", e.bus.Address))
	jsonOut, _ := testutil.StartProcess(t, "subvault watch --json", subvaultCmd("watch", "--json", "--bus", e.bus.Address))
	time.Sleep(500 * time.Millisecond) // both subscribed
	id := e.startJob(t, "StartBackup", "s", "home")
	if got := e.signals.waitRemoved(t, id, time.Minute); got != "done" {
		t.Fatalf("job ended %s", got)
	}
	wantLine := func(what string) {
		t.Helper()
		re := regexp.MustCompile(`(?m)^` + rfc3339 + fmt.Sprintf(` job %d backup home: `, id) + what + `$`)
		waitFor(t, 2*time.Second, func() int {
			if re.MatchString(text.String()) {
				return 1
			}
			return 0
		})
	}
	wantLine(`queued \(dbus:0\)`)
	wantLine(`started`)
	wantLine(`done`)
	if n := len(regexp.MustCompile(`: (25|50|75)%  `).FindAllString(text.String(), -1)); n == 0 || n > 3 {
		t.Errorf("%d quarter lines, want 1 to 3:\n%s", n, text.String())
	}
	if controlChars.MatchString(text.String()) {
		t.Errorf("piped watch output holds control characters:\n%q", text.String())
	}
	var events []string
	waitFor(t, 2*time.Second, func() int {
		events = nil
		for _, line := range strings.Split(strings.TrimSpace(jsonOut.String()), "\n") {
			var ev struct {
				Event string `json:"event"`
				Time  string `json:"time"`
				Job   *struct {
					ID    uint32 `json:"id"`
					State string `json:"state"`
				} `json:"job"`
			}
			if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Time == "" {
				t.Fatalf("watch --json line %q: %v", line, err)
			}
			if ev.Job != nil && ev.Job.ID == id {
				events = append(events, ev.Event)
			}
		}
		if len(events) > 0 && events[len(events)-1] == "job-finished" {
			return 1
		}
		return 0
	})
	if events[0] != "job-new" || len(events) > 8 {
		t.Errorf("watch --json events of job %d: %v; want job-new first, a few job-changed, job-finished last", id, events)
	}
}

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon/queue"
	"github.com/subvault/subvault/internal/testutil"
)

// docs/security.md, attack 5: an allowed user cancels root's and scheduled backups.
// The attacker is a real process of uid 65534 on the bus.

func init() {
	testutil.RegisterHostile("auth-skip-schedule", hostileSkipSchedule)
}

// editPlan adds lines to plan home's block (after its keep_snapshots) and
// replaces its schedule.
func (e *apiEnv) editPlan(t *testing.T, schedule, lines string) {
	t.Helper()
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(cfg), "      last: 5\n", "      last: 5\n"+lines, 1)
	edited = strings.Replace(edited, `    schedule: "0 3 * * *"`+"\n", "    schedule: "+strconv.Quote(schedule)+"\n", 1)
	if edited == string(cfg) || !strings.Contains(edited, lines) || !strings.Contains(edited, strconv.Quote(schedule)) {
		t.Fatalf("cannot edit the configuration:\n%s", cfg)
	}
	testutil.WriteFile(t, e.config, edited)
}

var startedReply = regexp.MustCompile(`(?m)^\s*uint32 (\d+)\s+object path "([^"]+)"\s*$`)

// startAsNobody calls StartBackup as uid 65534 and returns the job's id.
func (e *apiEnv) startAsNobody(t *testing.T, plan string) uint32 {
	t.Helper()
	got, out := e.sendAsNobody("StartBackup", "string:"+plan)
	m := startedReply.FindStringSubmatch(out)
	if got != "" || m == nil {
		t.Fatalf("as nobody, StartBackup %s: %s\n%s", plan, got, out)
	}
	id, _ := strconv.ParseUint(m[1], 10, 32)
	return uint32(id)
}

// stateRequests reads who asked for job id from the state file, as a
// later version would: the raw JSON of its "requests".
func (e *apiEnv) stateRequests(t *testing.T, id uint32) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(e.state, queue.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Jobs []map[string]any `json:"jobs"`
	}
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	for _, j := range s.Jobs {
		if n, _ := j["id"].(float64); uint32(n) == id {
			raw, _ := j["requests"].([]any)
			var out []map[string]any
			for _, r := range raw {
				m, _ := r.(map[string]any)
				out = append(out, m)
			}
			return out
		}
	}
	t.Fatalf("job %d is not in the state file:\n%s", id, data)
	return nil
}

// Attack 5 of docs/security.md: a user in allow_users starts a backup, root asks for
// one too and is given the same job; the user must not be able to cancel
// root's backup any more, nor one the schedule started (here the catch-up
// of a missed run). A backup only the user asked for stays theirs to
// cancel. The history says who asked.
func TestHostileAllowedUserCancelsRootsBackup(t *testing.T) {
	testutil.RequireNobody(t)
	e := newAPIEnv(t, 1)
	// The hook keeps each backup running while the callers come and go.
	e.editPlan(t, "0 3 * * *", "    catch_up: true\n    allow_users: [65534]\n    hooks:\n      before_snapshot: [\"/bin/sleep\", \"60\"]\n")
	lastRun, _ := json.Marshal(map[string]any{"version": 1, "jobs": []any{}, "plans": map[string]any{},
		"last_run": map[string]time.Time{"home/backup": time.Now().Add(-48 * time.Hour)}})
	testutil.WriteFile(t, filepath.Join(e.state, queue.StateFile), string(lastRun))
	e.startDaemonLogged(t)

	var catchUp uint32
	waitFor(t, 30*time.Second, func() int {
		for _, j := range e.jobs(t) {
			if j.Trigger == queue.TriggerCatchUp && j.Active() {
				catchUp = j.ID
			}
		}
		return int(catchUp)
	})
	if id := e.startAsNobody(t, "home"); id != catchUp {
		t.Fatalf("the user's StartBackup during the catch-up gave job %d, not the catch-up's %d", id, catchUp)
	}
	got, out := e.sendAsNobody("CancelJob", fmt.Sprintf("uint32:%d", catchUp))
	t.Logf("the user's CancelJob of the catch-up backup %d: %q %s", catchUp, got, strings.TrimSpace(out))
	if got != contract.ErrorAccessDenied || !strings.Contains(out, "org.subvault.manage") {
		t.Errorf("the user canceled the catch-up backup: %s %s; want AccessDenied naming the manage action", got, out)
	}
	e.call(t, nil, "CancelJob", "u", strconv.FormatUint(uint64(catchUp), 10))
	if result := e.signals.waitRemoved(t, catchUp, time.Minute); result != "canceled" {
		t.Fatalf("root's cancel of job %d: %s", catchUp, result)
	}

	id := e.startAsNobody(t, "home")
	if rootID := e.startJob(t, "StartBackup", "s", "home"); rootID != id {
		t.Fatalf("root's StartBackup gave job %d, the user's %d; the attack needs them to be one", rootID, id)
	}
	got, out = e.sendAsNobody("CancelJob", fmt.Sprintf("uint32:%d", id))
	t.Logf("the user's CancelJob of job %d, which root asked for too: %q %s", id, got, strings.TrimSpace(out))
	if got != contract.ErrorAccessDenied || !strings.Contains(out, "org.subvault.manage") || !strings.Contains(out, "uid 0") {
		t.Errorf("the user canceled root's backup: %s %s; want AccessDenied naming the manage action and root", got, out)
	}
	out, err := e.busctl("get-property", contract.BusName, string(contract.JobPath(id)), contract.JobInterface, "State", "Callers", "Triggers")
	if err != nil || out != "s \"running\"\nau 2 65534 0\nas 2 \"dbus:65534\" \"dbus:0\"\n" {
		t.Errorf("job %d after the user's cancel: %v\n%s", id, err, out)
	}
	if _, out, errOut := e.cli(t, "job", strconv.FormatUint(uint64(id), 10)); !strings.Contains(out, "asked for by:            dbus:65534, dbus:0\n") {
		t.Errorf("subvault job %d does not say who asked for it:\n%s%s", id, out, errOut)
	}
	e.call(t, nil, "CancelJob", "u", strconv.FormatUint(uint64(id), 10))
	if result := e.signals.waitRemoved(t, id, time.Minute); result != "canceled" {
		t.Errorf("root's cancel of job %d: %s", id, result)
	}
	requests := e.stateRequests(t, id)
	if len(requests) != 2 || requests[0]["trigger"] != "dbus:65534" || requests[1]["trigger"] != "dbus:0" || requests[1]["caller"] != float64(0) {
		t.Errorf("the state file records these requests of job %d: %v; want the user's, then root's", id, requests)
	}

	// Asking twice is still asking alone: the user's own backup is the
	// user's to cancel.
	own := e.startAsNobody(t, "home")
	if again := e.startAsNobody(t, "home"); again != own {
		t.Fatalf("the user's second StartBackup gave job %d, not %d", again, own)
	}
	if got, out := e.sendAsNobody("CancelJob", fmt.Sprintf("uint32:%d", own)); got != "" {
		t.Errorf("the user could not cancel its own backup %d: %s %s", own, got, out)
	}
	if result := e.signals.waitRemoved(t, own, time.Minute); result != "canceled" {
		t.Errorf("the user's cancel of its job %d: %s", own, result)
	}
	if requests := e.stateRequests(t, own); len(requests) != 1 {
		t.Errorf("job %d, asked for twice by one user, records %v", own, requests)
	}
}

// hostileSkipSchedule is the looping form of attack 5: before each
// scheduled run (NextRun is anyone's to read) the user starts a backup of
// its plan, so the scheduler finds one running; once the run is due the
// user cancels it. Arguments: bus address, plan, rounds.
func hostileSkipSchedule(args []string) error {
	if len(args) != 3 {
		return errors.New("want: address plan rounds")
	}
	rounds, err := strconv.Atoi(args[2])
	if err != nil {
		return err
	}
	conn, err := dbus.Connect(args[0])
	if err != nil {
		return err
	}
	defer conn.Close()
	manager := conn.Object(contract.BusName, contract.ManagerPath)
	planObj := conn.Object(contract.BusName, contract.PlanPath(args[1]))
	jobProp := func(id uint32, name string) string {
		v, err := conn.Object(contract.BusName, contract.JobPath(id)).GetProperty(contract.JobInterface + "." + name)
		if err != nil {
			return "(" + err.Error() + ")"
		}
		return fmt.Sprint(v.Value())
	}
	waitEnded := func(id uint32) {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if jobProp(id, "State") == string(queue.StateFinished) {
				return
			}
		}
	}
	cancel := func(id uint32) string {
		if err := manager.Call(contract.ManagerInterface+".CancelJob", 0, id).Err; err != nil {
			var derr dbus.Error
			if errors.As(err, &derr) {
				return derr.Name
			}
			return err.Error()
		}
		return "canceled"
	}
	for round := 1; round <= rounds; round++ {
		var next time.Time
		for {
			v, err := planObj.GetProperty(contract.PlanInterface + ".NextRun")
			if err != nil {
				return err
			}
			us, _ := v.Value().(uint64)
			next = time.UnixMicro(int64(us))
			if time.Until(next) > 1500*time.Millisecond {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		time.Sleep(time.Until(next.Add(-1500 * time.Millisecond)))
		var id uint32
		var path dbus.ObjectPath
		if err := manager.Call(contract.ManagerInterface+".StartBackup", 0, args[1]).Store(&id, &path); err != nil {
			return fmt.Errorf("round %d: StartBackup: %w", round, err)
		}
		time.Sleep(time.Until(next.Add(time.Second)))
		triggers := jobProp(id, "Triggers")
		fmt.Printf("round %d: run due %s, job %d trigger %s triggers %s: %s\n", round, next.Format("15:04:05.000"), id,
			jobProp(id, "Trigger"), triggers, cancel(id))
		waitEnded(id)
	}
	return nil
}

// Attack 5 of docs/security.md, the loop: the user made the scheduler skip every
// run and canceled each. A scheduled run that finds the plan's backup
// queued or running must count as asking for it, so that the user can no
// longer cancel it. The schedule fires every minute (the least a
// configuration allows), so two rounds bound the test.
func TestHostileAllowedUserSkipsScheduledRuns(t *testing.T) {
	testutil.RequireNobody(t)
	e := newAPIEnv(t, 1)
	e.editPlan(t, "* * * * *", "    allow_users: [65534]\n    hooks:\n      before_snapshot: [\"/bin/sleep\", \"3\"]\n")
	_, log := e.startDaemonLogged(t)

	out, err := testutil.RunHostile(t, 3*time.Minute, "auth-skip-schedule", e.bus.Address, "home", "2")
	t.Logf("the user's rounds:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	rounds := regexp.MustCompile(`(?m)^round \d+: .* job (\d+) trigger (\S+) triggers (.*): (\S+)$`).FindAllStringSubmatch(out, -1)
	if len(rounds) != 2 {
		t.Fatalf("%d rounds reported; want 2", len(rounds))
	}
	canceled := 0
	for _, r := range rounds {
		if r[4] == "canceled" {
			canceled++
		}
		if strings.Contains(r[3], string(queue.TriggerSchedule)) && r[4] != contract.ErrorAccessDenied {
			t.Errorf("the user's cancel of job %s, which the schedule asked for too (%s): %s; want AccessDenied", r[1], r[3], r[4])
		}
	}
	skipped := strings.Count(log.String(), "scheduled run skipped")
	t.Logf("%d of 2 rounds canceled by the user; the daemon logged %d scheduled runs skipped", canceled, skipped)
	if canceled != 0 || skipped != 0 {
		t.Errorf("the user still keeps scheduled backups from running: %d canceled, %d skipped", canceled, skipped)
	}
	// Every backup the schedule asked for ended done.
	for _, r := range rounds {
		id, _ := strconv.ParseUint(r[1], 10, 32)
		if result := e.signals.waitRemoved(t, uint32(id), time.Minute); result != "done" {
			t.Errorf("job %s, asked for by the user and the schedule: %s", r[1], result)
		}
	}
}

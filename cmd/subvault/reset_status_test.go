package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/internal/testutil"
)

// The reset as the command line shows it, against the real daemon: after a
// boot whose reset failed, subvault status says so (when, why) under
// "needs attention" and exits 1, --json has last_reset; the daemon logged
// reset-failed once; subvault snapshots reset lists the clean snapshot
// subvault reset init took; subvault rollback reset refuses a path the
// reset does not manage (exit 2).
func TestResetInStatusAndSnapshots(t *testing.T) {
	e := newAPIEnv(t, 0)
	sys := e.fs.Path("sys")
	testutil.Run(t, "btrfs", "subvolume", "create", sys)
	testutil.WriteFile(t, filepath.Join(sys, "etc", "machine-id"), "0123456789abcdef0123456789abcdef\n")
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, e.config, strings.Replace(string(cfg), "settings:\n",
		"reset:\n  subvolumes:\n    - path: "+sys+"\n      persist: ["+filepath.Join(sys, "etc", "machine-id")+"]\n      keep: {last: 3}\nsettings:\n", 1))
	code, out, errOut := runCmd(t, subvaultCmd("reset", "init", sys, "--config", e.config))
	if code != exitOK {
		t.Fatalf("reset init: exit %d: %s%s", code, out, errOut)
	}
	at := time.Now().Add(-5 * time.Minute).UTC().Truncate(time.Second)
	if err := os.MkdirAll(filepath.Join(e.state, "reset"), 0o700); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, filepath.Join(e.state, "reset", "last.json"), `{"time": "`+at.Format(time.RFC3339)+`", "results": [
  {"path": "`+sys+`", "result": "failed", "reason": "persisted path /etc/typo does not exist in the previous state", "state": "", "persisted": 0, "bytes": 0}]}`)
	_, log := e.startDaemonLogged(t)

	code, out, _ = e.cli(t, "status")
	t.Logf("status:\n%s", out)
	if code != exitFailure {
		t.Errorf("status after a failed reset: exit %d, want %d", code, exitFailure)
	}
	for _, want := range []string{
		"reset:   " + sys + " failed " + at.Local().Format(time.RFC3339) + ": persisted path /etc/typo does not exist in the previous state",
		"needs attention:\n  reset: " + sys + " was not reset at this boot: persisted path /etc/typo",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q", want)
		}
	}
	code, out, _ = e.cli(t, "status", "--json")
	var st struct {
		Daemon struct {
			LastReset struct {
				Time   time.Time `json:"time"`
				Path   string    `json:"path"`
				Result string    `json:"result"`
				Reason string    `json:"reason"`
			} `json:"last_reset"`
		} `json:"daemon"`
		Healthy bool `json:"healthy"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if r := st.Daemon.LastReset; code != exitFailure || st.Healthy || r.Path != sys || r.Result != "failed" || !r.Time.Equal(at) || !strings.Contains(r.Reason, "/etc/typo") {
		t.Errorf("status --json: exit %d, %+v", code, st)
	}
	if n := strings.Count(log.String(), "event=reset-failed"); n != 1 {
		t.Errorf("the daemon logged reset-failed %d times, want once:\n%s", n, log.String())
	}

	code, out, errOut = e.cli(t, "snapshots", "reset")
	t.Logf("snapshots reset:\n%s", out)
	if code != exitOK || !strings.Contains(out, "subvault-pinned@reset@") || !strings.Contains(out, "yes") {
		t.Errorf("snapshots reset: exit %d: %s%s; want the clean snapshot, kept", code, out, errOut)
	}
	clean := strings.Fields(strings.Split(out, "\n")[1])[0]
	code, _, errOut = e.cli(t, "rollback", "reset", clean, e.fs.Path("home"), "--yes")
	if code != exitUsage || !strings.Contains(errOut, "is not a subvolume the reset manages") {
		t.Errorf("rollback reset of home: exit %d: %s; want 2, not a reset subvolume", code, errOut)
	}
	code, out, errOut = e.cli(t, "rollback", "reset", clean, sys, "--dry-run")
	if code != exitOK || !strings.Contains(out, "Would prepare: The next boot comes up in "+clean) {
		t.Errorf("rollback reset --dry-run: exit %d: %s%s", code, out, errOut)
	}
}

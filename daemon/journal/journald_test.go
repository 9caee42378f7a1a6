package journal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/internal/testutil"
)

// TestRealJournald sends entries to a real systemd-journald, run in a
// private mount namespace with its own tmpfs /run so that it touches neither
// the host's journal nor its sockets, and reads them back with journalctl.
func TestRealJournald(t *testing.T) {
	testutil.RequireRoot(t) // systemd-journald runs in a private mount namespace
	const journald = "/lib/systemd/systemd-journald"
	if _, err := exec.LookPath(journald); err != nil {
		testutil.SkipOrFail(t, journald+" (apt-get install systemd)")
	}
	testutil.RequireCommand(t, "unshare", "util-linux")
	testutil.RequireCommand(t, "journalctl", "systemd")
	cmd := exec.Command("unshare", "--mount", "sh", "-ec", `
		mount --make-rprivate /
		mount -t tmpfs tmpfs /run
		mkdir -p /run/systemd/journal /run/log/journal
		exec `+journald)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// unshare and sh exec, so this pid is journald's; its /run is reachable
	// through /proc/PID/root.
	root := fmt.Sprintf("/proc/%d/root", cmd.Process.Pid)
	socket := filepath.Join(root, "run/systemd/journal/socket")
	var h slog.Handler
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var err error
		if h, err = NewJournalHandler(socket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("journald did not come up: %v\n%s", err, stderr.String())
		}
	}
	t.Cleanup(func() { h.(*journalHandler).sender.close() })

	log := slog.New(h).With("plan", "home", "job", "17")
	log.Error("backup failed", Event(EventJobFailed), "kind", "backup",
		"err", errors.New("cannot snapshot /home: read-only file system"),
		"stderr", "line one\nline two", "password", "hunter2")
	log.Warn("large", "blob", strings.Repeat("y", 600_000)) // goes as a memfd

	want := map[string]string{
		"MESSAGE":           "backup failed: cannot snapshot /home: read-only file system",
		"PRIORITY":          "3",
		"SYSLOG_IDENTIFIER": "subvault",
		"MESSAGE_ID":        "4272dd3a39e84179a165612825281157",
		"SUBVAULT_PLAN":     "home",
		"SUBVAULT_JOB":      "17",
		"SUBVAULT_KIND":     "backup",
		"SUBVAULT_STDERR":   "line one\nline two",
		"SUBVAULT_PASSWORD": Redacted,
	}
	var entries []map[string]any
	for deadline := time.Now().Add(10 * time.Second); len(entries) < 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("journald stored %d of 2 entries\n%s", len(entries), stderr.String())
		}
		out, err := exec.Command("journalctl", "--directory="+filepath.Join(root, "run/log/journal"),
			"--output=json", "--all", "SYSLOG_IDENTIFIER=subvault").Output()
		if err != nil {
			continue
		}
		entries = nil
		dec := json.NewDecoder(bytes.NewReader(out))
		for {
			var e map[string]any
			if err := dec.Decode(&e); err != nil {
				break
			}
			entries = append(entries, e)
		}
	}
	for name, v := range want {
		if got := jsonField(entries[0][name]); got != v {
			t.Errorf("%s = %q, want %q", name, got, v)
		}
	}
	if got := jsonField(entries[1]["SUBVAULT_BLOB"]); len(got) != 600_000 || jsonField(entries[1]["MESSAGE"]) != "large" {
		t.Errorf("large entry: MESSAGE %q, %d bytes of SUBVAULT_BLOB", jsonField(entries[1]["MESSAGE"]), len(got))
	}
}

// jsonField decodes a field of journalctl's JSON output: a string, or an
// array of byte values for what it does not print as text.
func jsonField(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []any:
		b := make([]byte, len(v))
		for i, x := range v {
			f, _ := x.(float64)
			b[i] = byte(f)
		}
		return string(b)
	}
	return fmt.Sprint(v)
}

package api

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/daemon"
	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/daemon/queue"
)

func TestChecks(t *testing.T) {
	good := []string{"home", "a", "A1_b.c-d", strings.Repeat("x", 64)}
	bad := []string{"", "../x", "a/b", ".home", "-x", "_x", strings.Repeat("x", 65), "a b", "é", "a\x00"}
	for _, n := range good {
		if err := checkName("plan", n); err != nil {
			t.Errorf("checkName(%q): %v", n, err)
		}
	}
	for _, n := range bad {
		if err := checkName("plan", n); err == nil || err.Name != contract.ErrorInvalidArgument {
			t.Errorf("checkName(%q) = %v", n, err)
		}
	}
	for _, p := range []string{"", "x", "./x", "/a/../b", "/a/", "//a", "/", "/a\x00", "/" + strings.Repeat("a", 4096)} {
		if err := checkPath("target", p); err == nil {
			t.Errorf("checkPath(%.40q) passed", p)
		}
	}
	if err := checkPath("target", "/srv/restore"); err != nil {
		t.Errorf("checkPath: %v", err)
	}
	for _, a := range []string{"latest", "abcd", "0123456789abcdef"} {
		if err := checkArchive(a); err != nil {
			t.Errorf("checkArchive(%q): %v", a, err)
		}
	}
	for _, a := range []string{"", "abc", "ABCD", "xyz1", "--help", strings.Repeat("a", 65)} {
		if err := checkArchive(a); err == nil {
			t.Errorf("checkArchive(%q) passed", a)
		}
	}
	if err := checkIncludes(make([]string, 1001)); err == nil {
		t.Error("1001 includes passed")
	}
	if err := checkSnapshotName("subvault@home@20260101T000000Z@1@home"); err != nil {
		t.Error(err)
	}
	long := invalidArgument("plan %s is bad", quoteArg(strings.Repeat("x", 65536)))
	if msg := long.Error(); len(msg) > 200 {
		t.Errorf("a 64 KiB argument makes a %d-byte message", len(msg))
	}
}

func TestSignatureCheck(t *testing.T) {
	msg := dbus.Message{Body: []any{int32(65)}}
	if err := checkSignature(msg, "s"); err == nil || err.Name != contract.ErrorInvalidArgument {
		t.Errorf("an int32 for a string: %v", err)
	}
	if err := checkSignature(dbus.Message{Body: []any{"a", []string{}}}, "sas"); err != nil {
		t.Error(err)
	}
	if err := checkSignature(dbus.Message{}, ""); err != nil {
		t.Error(err)
	}
}

func TestSummaryValues(t *testing.T) {
	var raw map[string]any
	d := json.NewDecoder(strings.NewReader(`{"files_new":21,"total_duration":1.5,"snapshot_id":"ab\u00e9","dry_run":false,"neg":-3,"nested":{"a":1},"nothing":null}`))
	d.UseNumber()
	if err := d.Decode(&raw); err != nil {
		t.Fatal(err)
	}
	v, _ := contract.Job{Summary: summaryValues(raw)}.Properties()["Summary"].Value().(map[string]dbus.Variant)
	want := map[string]string{"files_new": "t", "total_duration": "d", "snapshot_id": "s", "dry_run": "b", "neg": "x", "nested": "s"}
	for k, sig := range want {
		if got := v[k].Signature().String(); got != sig {
			t.Errorf("%s: %s, want %s", k, got, sig)
		}
	}
	if _, ok := v["nothing"]; ok {
		t.Error("null kept")
	}
	if v["files_new"].Value() != uint64(21) {
		t.Errorf("files_new %v", v["files_new"])
	}
}

func TestDaemonErrorNames(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
		msg  string
	}{
		{errString("boom"), contract.ErrorFailed, "boom"},
		{fmt.Errorf("%w: \"x\" (plans: home)", daemon.ErrNoSuchPlan), contract.ErrorNoSuchPlan, `no such plan: "x" (plans: home)`},
		{fmt.Errorf("%w: plan home has no snapshot s", daemon.ErrNoSuchSnapshot), contract.ErrorNoSuchSnapshot, "plan home has no snapshot s"},
		{fmt.Errorf("%w: job 3 is not queued or running", queue.ErrNoSuchJob), contract.ErrorNoSuchJob, "job 3 is not queued or running"},
		{fmt.Errorf("%w: nope", daemon.ErrNoSuchArchive), contract.ErrorNoSuchArchive, "nope"},
		{fmt.Errorf("%w: target /x is not empty;\nrestore elsewhere", daemon.ErrInvalidArgument), contract.ErrorInvalidArgument, "target /x is not empty; restore elsewhere"},
		{fmt.Errorf("cannot list /home/\xff: %w", errString("denied")), contract.ErrorFailed, `cannot list /home/\xff: denied`},
		{&config.Errors{List: []*config.Error{{File: "/etc/c.yaml", Line: 3, Key: "plans.x", Msg: "bad"}, {File: "/etc/c.yaml", Line: 9, Key: "y", Msg: "worse"}}},
			contract.ErrorInvalidConfig, ""},
	} {
		got := daemonError(c.err)
		msg, _ := got.Body[0].(string)
		if got.Name != c.want || (c.msg != "" && msg != c.msg) || strings.Contains(msg, "\n") {
			t.Errorf("%q: %s %q, want %s %q", c.err, got.Name, msg, c.want, c.msg)
		}
		if c.want == contract.ErrorInvalidConfig && (!strings.Contains(msg, "/etc/c.yaml:3") || !strings.Contains(msg, "/etc/c.yaml:9")) {
			t.Errorf("InvalidConfig message %q lacks the problems", msg)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

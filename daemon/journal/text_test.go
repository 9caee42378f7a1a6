package journal

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestTextMode(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(NewTextHandler(&out)).With("plan", "home")
	log.Debug("not printed")
	log.Error("backup failed", Event(EventJobFailed), "job", "3", "err", errors.New("cannot snapshot /home: read-only file system"))
	got := out.String()
	for _, want := range []string{
		"level=ERROR", `msg="backup failed"`, "plan=home", "event=job-failed", "job=3",
		`err="cannot snapshot /home: read-only file system"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("text line %q lacks %q", got, want)
		}
	}
	if strings.Count(got, "\n") != 1 || strings.Contains(got, "MESSAGE_ID") || strings.Contains(got, "not printed") {
		t.Errorf("want one plain line, got %q", got)
	}
}

func TestTextRedaction(t *testing.T) {
	var out bytes.Buffer
	const secret = "hunter2"
	log := slog.New(NewTextHandler(&out, WithLevel(slog.LevelDebug))).With("token", secret)
	log.Debug("m", "password", secret, slog.Group("env", "RESTIC_PASSWORD", secret), "secret", secret, "plan", "home")
	log.WithGroup("env").Info("m", "HOME", secret)
	if got := out.String(); strings.Contains(got, secret) || !strings.Contains(got, "password="+Redacted) ||
		!strings.Contains(got, "env.RESTIC_PASSWORD="+Redacted) || !strings.Contains(got, "plan=home") {
		t.Errorf("text output %q: want every secret redacted and the rest kept", got)
	}
}

// swapSeams points NewHandler at a fake stderr-is-journal answer and socket.
func swapSeams(t *testing.T, isJournal bool, socket string) {
	oldIs, oldSocket := stderrIsJournal, journalSocket
	t.Cleanup(func() { stderrIsJournal, journalSocket = oldIs, oldSocket })
	stderrIsJournal = func() bool { return isJournal }
	journalSocket = socket
}

func TestNewHandlerChoosesJournal(t *testing.T) {
	j := newFakeJournald(t)
	swapSeams(t, true, j.path)
	var out bytes.Buffer
	h := NewHandler(&out)
	jh, ok := h.(*journalHandler)
	if !ok {
		t.Fatalf("stderr is the journal and journald listens: got %T, want the journal handler", h)
	}
	t.Cleanup(func() { jh.sender.close() })
	slog.New(h).Info("hello", Event(EventDaemonStarted))
	if e := j.next(); e.get("MESSAGE") != "hello" || e.get("MESSAGE_ID") != "adc24c6a73c743d1a73f74fae34ceb53" {
		t.Errorf("entry %v", e)
	}
	if out.Len() != 0 {
		t.Errorf("the journal handler also wrote text: %q", out.String())
	}
}

func TestNewHandlerFallsBackToText(t *testing.T) {
	for _, c := range []struct {
		name      string
		isJournal bool
		socket    string
	}{
		{"stderr is not the journal", false, newFakeJournald(t).path},
		{"journald does not answer", true, filepath.Join(t.TempDir(), "no-socket")},
	} {
		t.Run(c.name, func(t *testing.T) {
			swapSeams(t, c.isJournal, c.socket)
			var out bytes.Buffer
			h := NewHandler(&out)
			if _, ok := h.(*slog.TextHandler); !ok {
				t.Fatalf("got %T, want a slog.TextHandler", h)
			}
			slog.New(h).Info("hello", "plan", "home")
			if got := out.String(); !strings.Contains(got, "msg=hello plan=home") {
				t.Errorf("text output %q", got)
			}
		})
	}
}

func TestNewJournalHandlerUnreachable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no-socket")
	if _, err := NewJournalHandler(path); err == nil || !strings.Contains(err.Error(), "cannot reach journald at "+path) {
		t.Errorf("error %v, want one naming the socket", err)
	}
}

func TestStderrIsJournalStream(t *testing.T) {
	var st unix.Stat_t
	if err := unix.Fstat(int(os.Stderr.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		env  string
		want bool
	}{
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino), true},
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), false},
		{"", false},
		{"garbage", false},
	} {
		t.Setenv("JOURNAL_STREAM", c.env)
		if got := stderrIsJournalStream(); got != c.want {
			t.Errorf("JOURNAL_STREAM=%q: %v, want %v", c.env, got, c.want)
		}
	}
}

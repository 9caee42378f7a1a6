package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/api/contract"
	"github.com/subvault/subvault/api/desktop"
)

func TestPrintable(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"/home/ann/notes.txt", "/home/ann/notes.txt"},
		{"/home/ann/Ünïcödé ✓ 日本語.txt", "/home/ann/Ünïcödé ✓ 日本語.txt"},
		{`back\slash and \x1b as text`, `back\slash and \x1b as text`},
		{"two words", "two words"},
		// C0 controls and DEL.
		{"\x1b]0;pwned\x07", `\x1b]0;pwned\x07`},
		{"\x1b[2J", `\x1b[2J`},
		{"a\nb\tc\rd\x00e", `a\x0ab\x09c\x0dd\x00e`},
		{"\x7f", `\x7f`},
		// C1 controls: CSI, OSC, ST and NEL as one character each.
		{"\u009b31m", `\u009b31m`},
		{"\u009d0;x\u009c", `\u009d0;x\u009c`},
		{"\u0085", `\u0085`},
		// The last C0, the first and last C1, and the characters around them.
		{"\x1f \x20 ~ \u0080 \u009f \u00a0", `\x1f   ~ \u0080 \u009f ` + "\u00a0"},
		// Bidirectional embeddings, overrides, isolates and marks.
		{"\u202etxt.exe", `\u202etxt.exe`},
		{"\u202a\u202b\u202c\u202d", `\u202a\u202b\u202c\u202d`},
		{"\u2066\u2067\u2068\u2069", `\u2066\u2067\u2068\u2069`},
		{"\u200e\u200f\u061c", `\u200e\u200f\u061c`},
		{"\u2065 \u206a \u2029 \u2028", "\u2065 \u206a " + `\u2029 \u2028`},
		// Bytes that are not UTF-8, as the daemon writes them.
		{"bad-\xff-name", `bad-\xff-name`},
		{"\xc2", `\xc2`},
		{"\xe2\x80", `\xe2\x80`},
		{"\xc2\x9b", `\u009b`}, // U+009B in UTF-8: a character, not two bytes
	} {
		got := printable(c.in)
		if got != c.want {
			t.Errorf("printable(%q) = %q, want %q", c.in, got, c.want)
		}
		if again := printable(got); again != got {
			t.Errorf("printable(%q) escapes its own output again: %q", got, again)
		}
	}
	if got := printableText("line one\x1b[2J\nline two\u202e\n"); got != `line one\x1b[2J`+"\n"+`line two\u202e`+"\n" {
		t.Errorf("printableText keeps line ends and escapes the rest: %q", got)
	}
}

// --json escapes what a terminal acts on and decodes to the same values.
func TestPrintableJSON(t *testing.T) {
	want := contract.Change{Kind: "added", Path: "/home/" + terminalAttack + "\x7f\u2066"}
	var b bytes.Buffer
	if err := json.NewEncoder(printableJSON{&b}).Encode(want); err != nil {
		t.Fatal(err)
	}
	if found := terminalControls(b.String()); len(found) > 0 {
		t.Errorf("JSON %s holds raw %v", b.String(), found)
	}
	var got contract.Change
	if err := json.Unmarshal(b.Bytes(), &got); err != nil || got != want {
		t.Errorf("JSON %s decodes to %+v (%v), want %+v", b.String(), got, err, want)
	}
}

// The status bar and the desktop notifications show the daemon's strings
// escaped too.
func TestBarAndNotificationsEscape(t *testing.T) {
	now := time.Date(2026, 3, 16, 12, 0, 0, 0, time.UTC)
	cause := "cannot read /home/box/" + terminalAttack
	// As the daemon publishes it: the cause in LastError and in the reason.
	failed := contract.Plan{Name: "home", Schedule: "0 3 * * *", LastBackup: now.Add(-time.Hour), LastResult: "failed", LastError: cause,
		Health: contract.HealthFailed, HealthReason: "last backup failed: " + cause}
	running := contract.Job{ID: 7, Kind: "backup\u202e", Plan: "home\x1b[2J", State: contract.StateRunning, Progress: 0.5}
	for _, encode := range []barFormat{waybarJSON, i3blocksJSON} {
		for _, line := range []barLine{
			renderBar([]contract.Plan{failed}, nil, now),
			renderBar([]contract.Plan{failed}, []contract.Job{running}, now),
			unreachableBar("cannot connect: " + terminalAttack),
		} {
			b, err := encode(line)
			if err != nil {
				t.Fatal(err)
			}
			var decoded map[string]any
			if err := json.Unmarshal(b, &decoded); err != nil {
				t.Fatalf("bar line %s: %v", b, err)
			}
			for k, v := range decoded {
				if s, ok := v.(string); ok && len(terminalControls(s)) > 0 {
					t.Errorf("bar line %s: %s holds %v", b, k, terminalControls(s))
				}
			}
		}
	}
	if tooltip := renderBar([]contract.Plan{failed}, nil, now).Tooltip; !strings.Contains(tooltip, terminalAttackShown) {
		t.Errorf("the tooltip does not show the cause escaped: %q", tooltip)
	}

	note, ok := jobNotification(contract.Job{ID: 3, Kind: "backup", Plan: "home\u202e", Result: contract.ResultFailed, Error: cause}, false)
	if !ok || note.Body != "cannot read /home/box/"+terminalAttackShown || note.Summary != `Backup of home\u202e failed` {
		t.Errorf("notification %+v (%v), want the cause and the plan escaped", note, ok)
	}
	// A stalled job is a failure to show, escaped the same way.
	note, ok = jobNotification(contract.Job{ID: 5, Kind: "check", Plan: "home", Result: contract.ResultStalled, Error: cause}, false)
	if !ok || note.Summary != "Check of home stalled" || note.Body != "cannot read /home/box/"+terminalAttackShown || note.Urgency != desktop.Critical {
		t.Errorf("stalled notification %+v (%v), want a critical one with the cause escaped", note, ok)
	}
	note, ok = jobNotification(contract.Job{ID: 4, Kind: "backup", Plan: "home", Result: contract.ResultDone, ArchiveID: "1a2b\x1b[2J"}, true)
	if !ok || strings.ContainsRune(note.Body, 0x1b) {
		t.Errorf("success notification %+v (%v) holds ESC", note, ok)
	}
}

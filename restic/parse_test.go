package restic

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// recorded is what restic printed for one case, from testdata/<version>/
// (made by testdata/record.sh with real restic 0.14 and 0.18).
type recorded struct {
	stdout, stderr []string
	rc             int
}

func recordedVersions(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob("testdata/0.*")
	if err != nil || len(dirs) < 2 {
		t.Fatalf("want recordings of two restic versions in testdata/, found %v (%v)", dirs, err)
	}
	for i := range dirs {
		dirs[i] = filepath.Base(dirs[i])
	}
	return dirs
}

func readRecorded(t *testing.T, version, name string) recorded {
	t.Helper()
	var rec recorded
	lines := func(ext string) []string {
		f, err := os.Open(filepath.Join("testdata", version, name+ext))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var out []string
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			out = append(out, sc.Text())
		}
		return out
	}
	rec.stdout, rec.stderr = lines(".stdout"), lines(".stderr")
	rc, err := os.ReadFile(filepath.Join("testdata", version, name+".rc"))
	if err != nil {
		t.Fatal(err)
	}
	rec.rc, _ = strconv.Atoi(strings.TrimSpace(string(rc)))
	return rec
}

// parseBackup feeds a recording through the same paths exec uses.
func parseBackup(rec recorded) (*backupParser, []BackupStatus, *outcome) {
	var statuses []BackupStatus
	p := &backupParser{onStatus: func(s BackupStatus) { statuses = append(statuses, s) }}
	out := &outcome{stderr: newStderrLog(), exitCode: rec.rc}
	for _, l := range rec.stdout {
		p.line([]byte(l))
	}
	for _, l := range rec.stderr {
		out.stderrLine([]byte(l), func(_ string, line []byte) { p.line(line) })
	}
	return p, statuses, out
}

func TestBackupRecorded(t *testing.T) {
	for _, v := range recordedVersions(t) {
		t.Run(v, func(t *testing.T) {
			p, statuses, _ := parseBackup(readRecorded(t, v, "backup-first"))
			if p.summary == nil {
				t.Fatal("no summary")
			}
			if p.summary.FilesNew != 21 || p.summary.SnapshotID == "" || p.summary.TotalFilesProcessed != 21 {
				t.Errorf("first backup summary = %+v", *p.summary)
			}
			// 0.18 prints no status at all for a backup this short.
			if len(statuses) > 0 && statuses[len(statuses)-1].PercentDone != 1 {
				t.Errorf("statuses = %+v, want them ending at 100%%", statuses)
			}
			_, statuses, _ = parseBackup(readRecorded(t, v, "interrupted"))
			if len(statuses) < 2 {
				t.Fatalf("interrupted backup: %d statuses", len(statuses))
			}
			last := statuses[len(statuses)-1]
			if last.TotalBytes != 20<<30 || last.BytesDone == 0 || last.PercentDone <= 0 || last.TotalFiles != 1 {
				t.Errorf("last status of a 20 GiB backup = %+v", last)
			}
			if n, ok := p.summary.Raw["files_new"].(json.Number); !ok || n.String() != "21" {
				t.Errorf("Raw[files_new] = %#v", p.summary.Raw["files_new"])
			}
			if _, ok := p.summary.Raw["message_type"]; ok {
				t.Error("Raw keeps message_type")
			}
			if strings.HasPrefix(v, "0.18") && p.summary.DataAddedPacked == 0 {
				t.Error("0.18 summary has data_added_packed, parsed 0")
			}

			p, _, _ = parseBackup(readRecorded(t, v, "backup-second"))
			if p.summary == nil || p.summary.FilesUnmodified != 21 || p.summary.FilesNew != 0 {
				t.Errorf("second backup summary = %+v", p.summary)
			}

			rec := readRecorded(t, v, "backup-partial")
			if rec.rc != 3 {
				t.Fatalf("recorded partial backup exit code %d, want 3", rec.rc)
			}
			p, _, _ = parseBackup(rec)
			if p.summary == nil || len(p.unreadable) != 1 {
				t.Fatalf("partial: summary %v, unreadable %+v", p.summary, p.unreadable)
			}
			f := p.unreadable[0]
			if !strings.HasPrefix(f.Path, "/sys/") || !strings.Contains(f.Message, "permission denied") || f.Message != "open "+f.Path+": permission denied" {
				t.Errorf("unreadable = %+v, want the sysfs file with \"open PATH: permission denied\"", f)
			}
		})
	}
}

func TestBackupParserTolerates(t *testing.T) {
	lines := []string{
		`Warning: something restic says in plain text`,
		``,
		`{"message_type":"status","percent_done":0.5,"total_files":10.0,"files_done":5.0,"total_bytes":1e6,"bytes_done":"500000","seconds_remaining":2.7,"new_field":{"x":1}}`,
		`{"message_type":"verbose_status","action":"new","item":"/a"}`,
		`{"message_type":"status","action":"scan_finished","duration":1.5}`,
		`{"message_type":"something_from_0_21","x":[1,2]}`,
		`{not json`,
		`{"message_type":"error","error":{},"during":"scan","item":"/gone"}`,
		`{"message_type":"error","error":"plain string error","during":"archival","item":"/s"}`,
		`{"message_type":"error","error":{"Op":"lstat","Path":"/p","Err":2},"during":"archival","item":"/p"}`,
		`{"message_type":"error","error":{"message":"read /m: input/output error"},"during":"archival","item":"/m"}`,
		`{"message_type":"error","error":{"message":"again"},"during":"archival","item":"/gone"}`,
		`{"message_type":"summary","files_new":1,"total_duration":1.5,"snapshot_id":"abc","data_added_packed":7,"future":true}`,
	}
	var statuses []BackupStatus
	p := &backupParser{onStatus: func(s BackupStatus) { statuses = append(statuses, s) }}
	for _, l := range lines {
		p.line([]byte(l))
	}
	if len(statuses) != 1 {
		t.Fatalf("statuses = %+v, want one", statuses)
	}
	s := statuses[0]
	if s.TotalFiles != 10 || s.FilesDone != 5 || s.TotalBytes != 1000000 || s.BytesDone != 500000 || s.SecondsRemaining != 2 || s.PercentDone != 0.5 {
		t.Errorf("status = %+v", s)
	}
	want := []UnreadableFile{
		{"/gone", "scan", "again"},
		{"/s", "archival", "plain string error"},
		{"/p", "archival", "lstat /p: no such file or directory"},
		{"/m", "archival", "read /m: input/output error"},
	}
	if len(p.unreadable) != len(want) {
		t.Fatalf("unreadable = %+v", p.unreadable)
	}
	for i := range want {
		if p.unreadable[i] != want[i] {
			t.Errorf("unreadable[%d] = %+v, want %+v", i, p.unreadable[i], want[i])
		}
	}
	if p.summary == nil || p.summary.FilesNew != 1 || p.summary.TotalDuration.Seconds() != 1.5 || p.summary.DataAddedPacked != 7 || p.summary.Raw["future"] != true {
		t.Errorf("summary = %+v", p.summary)
	}
}

func TestClassifyRecorded(t *testing.T) {
	cases := []struct {
		name     string
		kind     error
		contains string
	}{
		{"wrong-password", ErrWrongPassword, "wrong password (check password_file /etc/subvault/nas.pass)"},
		{"no-repository", ErrNoRepository, `does not exist (create it with "restic init", or set init: true for this repository)`},
		{"locked", ErrLocked, `is locked by another restic (host vm, pid `},
		{"unreachable-sftp", ErrUnreachable, "is unreachable: "},
		{"interrupted", ErrInterrupted, "was interrupted"},
	}
	repo := Repository{URL: "/srv/restic", PasswordFile: "/etc/subvault/nas.pass"}
	for _, v := range recordedVersions(t) {
		for _, c := range cases {
			t.Run(v+"/"+c.name, func(t *testing.T) {
				rec := readRecorded(t, v, c.name)
				_, _, out := parseBackup(rec)
				r := repo
				if strings.HasPrefix(c.name, "unreachable-sftp") {
					// recorded against sftp:nobody@127.0.0.1:/nope
					r.URL = "sftp:nobody@127.0.0.1:/nope"
				}
				e := classifyOutcome("backup", r, out)
				if !errors.Is(e, c.kind) {
					t.Fatalf("exit %d, stderr %q: kind %v, want %v (%s)", rec.rc, rec.stderr, e.Kind, c.kind, e)
				}
				if !strings.Contains(e.Error(), c.contains) {
					t.Errorf("message %q lacks %q", e, c.contains)
				}
				if strings.Contains(e.Error(), "\n") {
					t.Errorf("message %q is not one line", e)
				}
				t.Logf("exit %d -> %s", rec.rc, e)
			})
		}
		t.Run(v+"/unreachable-rest", func(t *testing.T) {
			rec := readRecorded(t, v, "unreachable-rest")
			_, _, out := parseBackup(rec)
			e := classifyOutcome("snapshots", Repository{URL: "rest:http://user:hunter2@127.0.0.1:1/"}, out)
			// 0.14 gives up at once; 0.18 retries until the recording's
			// SIGINT: then it is an interruption that names the cause.
			if !errors.Is(e, ErrUnreachable) && !errors.Is(e, ErrInterrupted) {
				t.Fatalf("kind %v (%s)", e.Kind, e)
			}
			if !strings.Contains(e.Error(), "connection refused") || !strings.Contains(e.Error(), "rest:http://user:***@127.0.0.1:1/") {
				t.Errorf("message %q should name the cause and the redacted url", e)
			}
			if strings.Contains(e.Error()+e.Stderr, "hunter2") {
				t.Errorf("password in the error: %q", e.Error()+e.Stderr)
			}
			t.Logf("exit %d -> %s", rec.rc, e)
		})
	}
}

// TestClassifyDeleteRefused: a prune against an append-only server (rclone
// serve restic --append-only, recorded) is one line that says the server
// refused the deletes and what to do, not 0.14's last line of a Go stack
// trace; the evidence stays in Stderr.
func TestClassifyDeleteRefused(t *testing.T) {
	repo := Repository{URL: "rest:http://127.0.0.1:8000/", PasswordFile: "/etc/subvault/nas.pass"}
	for _, v := range recordedVersions(t) {
		t.Run(v, func(t *testing.T) {
			rec := readRecorded(t, v, "forget-append-only")
			_, _, out := parseBackup(rec)
			e := classifyOutcome("forget", repo, out)
			if !errors.Is(e, ErrDeleteRefused) {
				t.Fatalf("kind %v (%s), want ErrDeleteRefused", e.Kind, e)
			}
			for _, want := range []string{"the server refused to delete archives (HTTP 403 Forbidden)", "set append_only: true"} {
				if !strings.Contains(e.Error(), want) {
					t.Errorf("message %q lacks %q", e, want)
				}
			}
			if strings.Contains(e.Error(), "\n") || strings.Contains(e.Error(), "goexit") || strings.Contains(e.Error(), ".go:") {
				t.Errorf("message %q is not one clean line", e)
			}
			if !strings.Contains(e.Stderr, "403") {
				t.Errorf("stderr evidence lost: %q", e.Stderr)
			}
			// The same text from a backup is not about deletes.
			if errors.Is(classifyOutcome("backup", repo, out), ErrDeleteRefused) {
				t.Errorf("a backup's failure is classified as a refused delete")
			}
			t.Logf("exit %d -> %s", rec.rc, e)
		})
	}
}

func TestClassifyByExitCodeAlone(t *testing.T) {
	repo := Repository{URL: "/r", PasswordCommand: "pass show x"}
	for code, kind := range map[int]error{10: ErrNoRepository, 11: ErrLocked, 12: ErrWrongPassword, 130: ErrInterrupted, 1: ErrFailed, 2: ErrFailed} {
		e := classifyOutcome("backup", repo, &outcome{exitCode: code, stderr: newStderrLog()})
		if !errors.Is(e, kind) {
			t.Errorf("exit %d: kind %v, want %v", code, e.Kind, kind)
		}
		if code == 12 && !strings.Contains(e.Error(), "check the output of password_command") {
			t.Errorf("exit 12 message %q should point at the password command, without repeating it", e)
		}
	}
	out := &outcome{exitCode: 1, stderr: newStderrLog(), secrets: []string{"s3cr3t-key"}}
	out.stderrLine([]byte("some progress line"), nil)
	out.stderrLine([]byte("Fatal: unable to do X with key s3cr3t-key"), nil)
	e := classifyOutcome("check", repo, out)
	if e.Error() != "restic check on repository /r failed: unable to do X with key ***" {
		t.Errorf("generic message = %q", e)
	}
	if strings.Contains(e.Stderr, "s3cr3t") {
		t.Errorf("Stderr keeps a secret: %q", e.Stderr)
	}
}

func TestForgetRecorded(t *testing.T) {
	for _, v := range recordedVersions(t) {
		rec := readRecorded(t, v, "forget-prune")
		res, err := parseForget([]byte(strings.Join(rec.stdout, "\n")))
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		// Two groups: the partial backup added /sys/... to its paths.
		if len(res.Groups) != 2 || len(res.Kept()) != 2 || len(res.Removed()) != 1 {
			t.Errorf("%s: groups %+v, kept %v, removed %v", v, res.Groups, res.Kept(), res.Removed())
		}
		for _, g := range res.Groups {
			if g.Host != "rec" || (len(g.Paths) == 1) != (len(g.Remove) == 1) {
				t.Errorf("%s: group %+v", v, g)
			}
		}
		if !strings.Contains(res.PruneOutput, "done") {
			t.Errorf("%s: prune output %q", v, res.PruneOutput)
		}
	}
	if res, err := parseForget([]byte("null\n")); err != nil || len(res.Groups) != 0 {
		t.Errorf("empty forget: %+v, %v", res, err)
	}
}

func TestSnapshotsRecorded(t *testing.T) {
	for _, v := range recordedVersions(t) {
		rec := readRecorded(t, v, "snapshots")
		var archives []Archive
		if err := json.Unmarshal(firstJSON([]byte(strings.Join(rec.stdout, "\n")), '['), &archives); err != nil {
			t.Fatal(err)
		}
		if len(archives) != 3 || archives[1].Parent != archives[0].ID || archives[0].Parent != "" || archives[0].ShortID != archives[0].ID[:8] || archives[0].Hostname != "rec" || archives[0].Time.IsZero() {
			t.Errorf("%s: archives %+v", v, archives)
		}
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]string{
		"restic 0.14.0 compiled with go1.19.8 on linux/amd64\n":     "0.14.0",
		"restic 0.18.0 compiled with go1.24.4 on linux/amd64":       "0.18.0",
		"restic 0.16.4-dev (compiled manually) compiled with go1.2": "0.16.4",
	} {
		v, err := ParseVersion(in)
		if err != nil || v.String() != want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %s", in, v, err, want)
		}
	}
	if _, err := ParseVersion("rustic 0.5"); err == nil {
		t.Error("ParseVersion accepted rustic")
	}
	v := Version{Major: 0, Minor: 17, Patch: 1}
	if !v.AtLeast(0, 17, 0) || v.AtLeast(0, 17, 2) || !v.AtLeast(0, 9, 9) || v.AtLeast(1, 0, 0) {
		t.Error("AtLeast is wrong")
	}
	table := "Name                        Type    Default  Description\n---\ndevice-id-for-hardlinks     alpha   false    store deviceID only\nsafe-forget-keep-tags  stable true x\n"
	if !featureIsOptIn(table, featureDeviceID) || featureIsOptIn(table, "safe-forget-keep-tags") || featureIsOptIn(table, "nope") {
		t.Error("featureIsOptIn is wrong")
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"rest:https://user:pa:ss@host:8000/repo": "rest:https://user:***@host:8000/repo",
		"rest:https://user@host/":                "rest:https://user@host/",
		"s3:https://s3.example.com/bucket":       "s3:https://s3.example.com/bucket",
		"sftp:backup@nas:/srv/restic":            "sftp:backup@nas:/srv/restic",
		"/srv/restic":                            "/srv/restic",
		"rest:http://:tok@h/x?a=b@c":             "rest:http://:***@h/x?a=b@c",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
	if pw := urlPassword("rest:https://user:pa:ss@host/"); pw != "pa:ss" {
		t.Errorf("urlPassword = %q", pw)
	}
}

func TestParseEnv(t *testing.T) {
	good := "# backend\n\nAWS_ACCESS_KEY_ID=AKIA123\nexport AWS_SECRET_ACCESS_KEY='se cr=et'\nB2_X=\"a\\\"b\"\nEMPTY=\n  SPACED = v  \n"
	vars, err := parseEnv("/etc/x.env", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	want := []EnvVar{{"AWS_ACCESS_KEY_ID", "AKIA123"}, {"AWS_SECRET_ACCESS_KEY", "se cr=et"}, {"B2_X", `a"b`}, {"EMPTY", ""}, {"SPACED", "v"}}
	if len(vars) != len(want) {
		t.Fatalf("vars = %+v", vars)
	}
	for i := range want {
		if vars[i] != want[i] {
			t.Errorf("vars[%d] = %+v, want %+v", i, vars[i], want[i])
		}
	}
	for _, c := range []struct{ in, msg string }{
		{"A=1\nnot a pair\n", "/etc/x.env:2: expected KEY=VALUE"},
		{"1BAD=x", `/etc/x.env:1: "1BAD" is not a valid variable name`},
		{"RESTIC_PASSWORD=hunter2", "/etc/x.env:1: RESTIC_PASSWORD may not be set in an env_file: it comes from the repository's password_file, password_command or credential setting"},
		{"export RESTIC_REPOSITORY=s3:x", "/etc/x.env:1: RESTIC_REPOSITORY may not be set in an env_file: it comes from the repository's url setting"},
		{"RESTIC_PASSWORD_COMMAND=x", "RESTIC_PASSWORD_COMMAND may not be set"},
		{"A=1\nA=2", "/etc/x.env:2: A is already set on line 1"},
		{"A=\"unterminated", "/etc/x.env:1: the value of A has an unmatched quote"},
		{"A=\"bad\\q\"", "/etc/x.env:1: the double-quoted value of A is not valid"},
	} {
		_, err := parseEnv("/etc/x.env", []byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("parseEnv(%q) = %v, want %q", c.in, err, c.msg)
		}
		if err != nil && (strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "s3:x")) {
			t.Errorf("error repeats a value: %v", err)
		}
	}
}

func TestEnvironmentIsMinimal(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	envFile := filepath.Join(dir, "env")
	os.WriteFile(pw, []byte("x\n"), 0o600)
	os.WriteFile(envFile, []byte("AWS_SECRET_ACCESS_KEY=verysecret\nRESTIC_FEATURES=foo\n"), 0o600)
	t.Setenv("SUBVAULT_DAEMON_ONLY", "1")
	r := &Runner{Repo: Repository{URL: "rest:https://u:urlpass@h/", PasswordFile: pw, EnvFile: envFile, CacheDir: "/c"}}
	env, secrets, err := r.environment(true, true)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(env, "\n")
	for _, want := range []string{"LANG=C.UTF-8", "RESTIC_REPOSITORY=rest:https://u:urlpass@h/", "RESTIC_PASSWORD_FILE=" + pw, "RESTIC_CACHE_DIR=/c", "AWS_SECRET_ACCESS_KEY=verysecret", "RESTIC_FEATURES=foo,device-id-for-hardlinks"} {
		if !strings.Contains(joined, want+"\n") && !strings.HasSuffix(joined, want) {
			t.Errorf("env lacks %s:\n%s", want, joined)
		}
	}
	if strings.Contains(joined, "SUBVAULT_DAEMON_ONLY") {
		t.Error("the daemon's own environment leaks into restic's")
	}
	if strings.Join(secrets, " ") != "urlpass verysecret" {
		t.Errorf("secrets = %q", secrets)
	}
	for _, repo := range []Repository{
		{URL: "/r"},
		{URL: "/r", PasswordFile: pw, PasswordCommand: "x"},
		{URL: "/r", PasswordFile: filepath.Join(dir, "missing")},
		{PasswordFile: pw},
	} {
		r := &Runner{Repo: repo}
		if _, _, err := r.environment(true, false); err == nil {
			t.Errorf("environment accepted %+v", repo)
		}
	}
}

func TestStderrLogIsBounded(t *testing.T) {
	s := newStderrLog()
	for i := 0; i < 100000; i++ {
		s.add([]byte("line " + strconv.Itoa(i) + strings.Repeat(" x", 20)))
	}
	text := s.String()
	if len(text) > stderrTailBytes+stderrHeadLines*stderrLineMax+100 {
		t.Errorf("kept %d bytes", len(text))
	}
	if !strings.HasPrefix(text, "line 0 ") || !strings.Contains(text, "line 99999 ") || !strings.Contains(text, "[...]") {
		t.Errorf("kept text does not have head, marker and tail")
	}
}

func TestLineWriter(t *testing.T) {
	var got []string
	w := &lineWriter{fn: func(l []byte) { got = append(got, string(l)) }}
	for _, chunk := range []string{"a", "b\nc\r\n", "", "d\n\ne"} {
		w.Write([]byte(chunk))
	}
	w.flush()
	if strings.Join(got, "|") != "ab|c|d||e" {
		t.Errorf("lines = %q", got)
	}
	if string(cleanTerminal([]byte("\x1b[2Ksignal interrupt received, cleaning up"))) != "signal interrupt received, cleaning up" {
		t.Error("cleanTerminal keeps the escape")
	}
}

func TestPartialErrorMessage(t *testing.T) {
	e := &PartialError{SnapshotID: "9e9cdd46", Files: []UnreadableFile{
		{Path: "/a", Message: "open /a: permission denied"}, {Path: "/b"}, {Path: "/c", Message: "x"}, {Path: "/d"}, {Path: "/e"}}}
	want := "archive 9e9cdd46 is incomplete: restic could not read 5 file(s): /a (permission denied), /b, /c (x), and 2 more"
	if e.Error() != want {
		t.Errorf("got  %q\nwant %q", e.Error(), want)
	}
}

func TestLockFromText(t *testing.T) {
	l := lockFromText("unable to create lock in backend: repository is already locked exclusively by PID 31376 on vm by root (UID 0, GID 0)\nlock was created at 2026-11-21 21:33:50 (2.9s ago)")
	if l == nil || l.PID != 31376 || l.Hostname != "vm" || !l.Exclusive || l.Username != "root" || l.Time.IsZero() {
		t.Errorf("lock = %+v", l)
	}
	if lockFromText("no lock here") != nil {
		t.Error("lock from nothing")
	}
}

// TestTempDirIsRestics: with TempDir set, restic's TMPDIR is that directory
// (made 0700 if missing), whatever the caller's TMPDIR.
func TestTempDirIsRestics(t *testing.T) {
	t.Setenv("TMPDIR", "/tmp")
	dir := filepath.Join(t.TempDir(), "cache", "tmp")
	r := &Runner{TempDir: dir}
	env, _, err := r.environment(false, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(env, "TMPDIR="+dir) || slices.Contains(env, "TMPDIR=/tmp") {
		t.Errorf("environment %q: want TMPDIR=%s only", env, dir)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("TempDir not made 0700: %v %v", fi, err)
	}
}

package restic

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The ssh command the recordings used (testdata/record-remote.sh), as the
// runner passes it: its key and known_hosts name the files in the messages.
var recordedSSH = []string{"-o", "sftp.command=ssh -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=30 -p 2222 -i /etc/subvault/nas.key -o UserKnownHostsFile=/etc/subvault/nas.known_hosts -l backup 127.0.0.1 -s sftp"}

// TestClassifyRemoteRecorded classifies what real restic 0.14 and 0.18
// printed against real servers that refused them or went away
// (testdata/record-remote.sh): each case its own kind and one line that
// names the host and what to do, never a secret, never "restic init" for a
// server that refused the credentials.
func TestClassifyRemoteRecorded(t *testing.T) {
	rest := Repository{URL: "rest:http://u:wrong-pass-9@127.0.0.1:8000/r", PasswordFile: "/p"}
	sftp := Repository{URL: "sftp:backup@127.0.0.1:/srv/restic", PasswordFile: "/p"}
	s3 := Repository{URL: "s3:http://127.0.0.1:8333/bucket", PasswordFile: "/p", EnvFile: "/etc/subvault/s3.env"}
	cases := []struct {
		name     string
		repo     Repository
		op       string
		kinds    []error // any of them: a recording stopped by SIGINT is also an interruption
		contains []string
	}{
		{"rest-unauthorized", rest, "snapshots", []error{ErrCredentials},
			[]string{"repository rest:http://u:***@127.0.0.1:8000/r: the server 127.0.0.1:8000 refused the credentials (HTTP 401", "check the user and password in the url"}},
		{"rest-init-unauthorized", rest, "init", []error{ErrCredentials},
			[]string{"the server 127.0.0.1:8000 refused the credentials (HTTP 401", "check the user and password in the url"}},
		{"rest-forbidden", rest, "snapshots", []error{ErrCredentials},
			[]string{"the server 127.0.0.1:8000 refused access (HTTP 403 Forbidden): check that the url's user may use this path on the server"}},
		{"rest-init-forbidden", rest, "init", []error{ErrCredentials},
			[]string{"the server 127.0.0.1:8000 refused access (HTTP 403"}},
		{"rest-wrong-port", rest, "backup", []error{ErrUnreachable},
			[]string{"is unreachable: cannot connect to 127.0.0.1:8000 (dial tcp 127.0.0.1:1: connect: connection refused)", "check that the server runs"}},
		{"rest-connection-lost", rest, "backup", []error{ErrConnectionLost},
			[]string{"127.0.0.1:8000", "connection refused"}},
		{"sftp-publickey", sftp, "snapshots", []error{ErrCredentials},
			[]string{"the server 127.0.0.1:2222 refused the ssh key /etc/subvault/nas.key (Permission denied (publickey)): add its public key (/etc/subvault/nas.key.pub) to ~backup/.ssh/authorized_keys on 127.0.0.1"}},
		{"sftp-hostkey-unknown", sftp, "snapshots", []error{ErrHostKey},
			[]string{"unknown host key for [127.0.0.1]:", "add it to /etc/subvault/nas.known_hosts (ssh-keyscan -p ", " 127.0.0.1), after checking its fingerprint"}},
		{"sftp-hostkey-changed", sftp, "snapshots", []error{ErrHostKey},
			[]string{"the host key of [127.0.0.1]:", "has changed (it now shows SHA256:", "remove the old one from /etc/subvault/nas.known_hosts (ssh-keygen -R '[127.0.0.1]:", "someone may be intercepting"}},
		{"sftp-connection-lost", sftp, "backup", []error{ErrConnectionLost},
			[]string{"restic backup on repository sftp:backup@127.0.0.1:/srv/restic lost its connection to 127.0.0.1:2222 (", "check the server and the network"}},
		{"s3-wrong-key-id", s3, "snapshots", []error{ErrCredentials},
			[]string{"the server 127.0.0.1:8333 refused the S3 credentials (InvalidAccessKeyId)", "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in env_file /etc/subvault/s3.env"}},
		{"s3-wrong-secret", s3, "snapshots", []error{ErrCredentials},
			[]string{"the server 127.0.0.1:8333 refused the S3 credentials (SignatureDoesNotMatch)"}},
		{"s3-init-wrong-secret", s3, "init", []error{ErrCredentials},
			[]string{"the server 127.0.0.1:8333 refused the S3 credentials"}},
		{"s3-wrong-port", s3, "snapshots", []error{ErrUnreachable},
			[]string{"127.0.0.1:8333", "connection refused"}},
		{"s3-connection-lost", s3, "backup", []error{ErrConnectionLost, ErrUnreachable},
			[]string{"127.0.0.1:8333", "connection refused"}},
	}
	for _, v := range recordedVersions(t) {
		for _, c := range cases {
			t.Run(v+"/"+c.name, func(t *testing.T) {
				if _, err := os.Stat(filepath.Join("testdata", v, c.name+".rc")); err != nil {
					t.Skipf("no recording (testdata/record-remote.sh records it when WEED is set): %v", err)
				}
				rec := readRecorded(t, v, c.name)
				_, _, out := parseBackup(rec)
				if strings.HasPrefix(c.repo.URL, "sftp:") {
					out.args = recordedSSH
				}
				if rec.rc == 124 && !strings.Contains(c.name, "connection-lost") {
					// restic 0.18 retried until the recording's SIGINT;
					// subvault stops it itself (TestFailFastOnRecordedRetries).
					out.gaveUp = "subvault stopped restic's retries"
				}
				e := classifyOutcome(c.op, c.repo, out)
				ok := false
				for _, k := range c.kinds {
					ok = ok || errors.Is(e, k)
				}
				if !ok {
					t.Fatalf("exit %d: kind %v (network %v), want one of %v: %s\nstderr:\n%s", rec.rc, e.Kind, e.Network, c.kinds, e, strings.Join(rec.stderr, "\n"))
				}
				for _, s := range c.contains {
					if !strings.Contains(e.Error(), s) {
						t.Errorf("message %q lacks %q", e, s)
					}
				}
				if IsNoRepository(e) || strings.Contains(e.Error(), "restic init") {
					t.Errorf("a refusal or an outage read as a missing repository: %s", e)
				}
				if strings.Contains(e.Error(), "\n") {
					t.Errorf("message %q is not one line", e)
				}
				if strings.Contains(e.Error()+e.Stderr, "wrong-pass-9") {
					t.Errorf("password in the error: %q", e.Error()+e.Stderr)
				}
				t.Logf("exit %d -> %v: %s", rec.rc, e.Kind, e)
			})
		}
	}
}

// TestFailFastOnRecordedRetries feeds restic 0.18's retry lines against a
// closed port (testdata/0.18.0/rest-wrong-port) at the times restic printed
// them: the runner gives up on the line whose next retry would come after
// OpenRetryWindow, and never on a retry once the repository is open.
func TestFailFastOnRecordedRetries(t *testing.T) {
	rec := readRecorded(t, "0.18.0", "rest-wrong-port")
	elapsed := time.Duration(0)
	stoppedAt := -1
	for i, l := range rec.stderr {
		if !retryRE.MatchString(l) {
			continue
		}
		if why := failFast([]byte(l), elapsed); why != "" {
			stoppedAt = i
			t.Logf("gave up at %s: %s", elapsed, why)
			break
		}
		m := retryAfterRE.FindStringSubmatch(l)
		d, _ := time.ParseDuration(m[1])
		elapsed += d
	}
	if stoppedAt < 0 {
		t.Fatalf("restic's retries of a closed port never ended:\n%s", strings.Join(rec.stderr, "\n"))
	}
	if elapsed > OpenRetryWindow {
		t.Errorf("gave up after %s, beyond the window %s", elapsed, OpenRetryWindow)
	}
	// restic 0.18 retries S3's refusal of the keys as well: it ends too.
	for _, name := range []string{"s3-wrong-key-id", "s3-wrong-secret", "s3-wrong-port"} {
		elapsed, stopped := time.Duration(0), false
		for _, l := range readRecorded(t, "0.18.0", name).stderr {
			if !retryRE.MatchString(l) {
				continue
			}
			if failFast([]byte(l), elapsed) != "" {
				stopped = true
				break
			}
			d, _ := time.ParseDuration(retryAfterRE.FindStringSubmatch(l)[1])
			elapsed += d
		}
		if !stopped || elapsed > OpenRetryWindow {
			t.Errorf("0.18.0/%s: restic's retries ended %v, after %s", name, stopped, elapsed)
		}
	}
	for _, name := range []string{"rest-connection-lost", "sftp-connection-lost", "s3-connection-lost"} {
		for _, v := range recordedVersions(t) {
			for _, l := range readRecorded(t, v, name).stderr {
				if why := failFast([]byte(l), time.Hour); why != "" {
					t.Errorf("%s/%s: a retry once the repository was open ends restic: %q", v, name, l)
				}
			}
		}
	}
	// A 401 is not retried by restic (it fails at once), but a 403 at open
	// would be: it ends as well.
	if failFast([]byte(`Stat(<config/>) returned error, retrying after 4s: unexpected HTTP response (403): 403 Forbidden`), 2*time.Second) == "" {
		t.Errorf("a forbidden config file is retried")
	}
}

// TestGaveUpIsUnreachable: restic stopped by failFast is an unreachable
// repository naming the host and that subvault stopped the retries, not an
// interruption.
func TestGaveUpIsUnreachable(t *testing.T) {
	rec := readRecorded(t, "0.18.0", "rest-wrong-port")
	_, _, out := parseBackup(rec)
	out.gaveUp = "subvault stopped restic's retries after 3.9s instead of letting it retry for up to 15 minutes"
	e := classifyOutcome("backup", Repository{URL: "rest:https://u:pw@nas.example:8000/r", PasswordFile: "/p"}, out)
	if !errors.Is(e, ErrUnreachable) || errors.Is(e, ErrInterrupted) {
		t.Fatalf("kind %v: %s", e.Kind, e)
	}
	want := "repository rest:https://u:***@nas.example:8000/r is unreachable: cannot connect to nas.example:8000 (dial tcp 127.0.0.1:1: connect: connection refused): check that the server runs and listens there, the url, and the network (subvault stopped restic's retries after 3.9s"
	if !strings.HasPrefix(e.Error(), want) {
		t.Errorf("message\n%s\nwant prefix\n%s", e, want)
	}
}

// TestInterruptedWhileRetrying: a job ended while restic retried (a cancel,
// a stall timeout) is an interruption that says which host was lost, and
// errors.Is sees the network kind too.
func TestInterruptedWhileRetrying(t *testing.T) {
	for _, v := range recordedVersions(t) {
		rec := readRecorded(t, v, "rest-connection-lost")
		_, _, out := parseBackup(rec)
		out.canceled = true
		e := classifyOutcome("backup", Repository{URL: "rest:http://nas:8000/r", PasswordFile: "/p"}, out)
		if !errors.Is(e, ErrInterrupted) || !errors.Is(e, ErrConnectionLost) {
			t.Errorf("%s: kind %v network %v: %s", v, e.Kind, e.Network, e)
		}
		if !strings.Contains(e.Error(), "while the connection to nas:8000 was lost: dial tcp") {
			t.Errorf("%s: %s", v, e)
		}
		t.Logf("%s: %s", v, e)
	}
}

func TestLocationHost(t *testing.T) {
	for loc, want := range map[string]string{
		"/srv/restic":                          "",
		"local:/srv/restic":                    "",
		"rest:https://u:secret@nas:8000/r":     "nas:8000",
		"rest:http://127.0.0.1:1/":             "127.0.0.1:1",
		"s3:https://s3.example.com/bucket/p":   "s3.example.com",
		"s3:s3.amazonaws.com/bucket":           "s3.amazonaws.com",
		"sftp:backup@nas:/srv/restic":          "nas",
		"sftp:nas:/srv/restic":                 "nas",
		"sftp://backup@nas:2222//srv/restic":   "nas:2222",
		"b2:bucket:path":                       "b2",
		"rclone:onedrive:backups":              "rclone remote onedrive",
		"rest:http://[::1]:8000/":              "[::1]:8000",
		"azure:container:/path":                "azure",
		"swift:container:/path":                "swift",
		"gs:bucket:/path":                      "gs",
		"rest:https://user:p%40ss@host.tld/x/": "host.tld",
	} {
		if got := locationHost(loc); got != want {
			t.Errorf("locationHost(%q) = %q, want %q", loc, got, want)
		}
		if strings.Contains(locationHost(loc), "secret") {
			t.Errorf("host of %q holds the password", loc)
		}
	}
}

func TestSSHCommand(t *testing.T) {
	got := sshCommand("sftp:backup@nas:/srv", []string{"--option=sftp.command=ssh -i '/etc/sub vault/key' -o UserKnownHostsFile=/k -l backup nas -s sftp", "snapshots"})
	want := []string{"ssh", "-i", "/etc/sub vault/key", "-o", "UserKnownHostsFile=/k", "-l", "backup", "nas", "-s", "sftp"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("from the option: %q, want %q", got, want)
	}
	if k := sshOption(got, "-i", "IdentityFile"); k != "/etc/sub vault/key" {
		t.Errorf("key %q", k)
	}
	if k := sshOption(got, "", "UserKnownHostsFile"); k != "/k" {
		t.Errorf("known hosts %q", k)
	}
	// CSV-quoted, as the repository's options are passed.
	got = sshCommand("sftp:nas:/srv", []string{`--option="sftp.command=ssh -o ""ProxyJump=a,b"" nas -s sftp"`})
	if strings.Join(got, " ") != `ssh -o ProxyJump=a,b nas -s sftp` {
		t.Errorf("csv: %q", got)
	}
	// restic's own command, bounded.
	got = sshCommand("sftp://backup@nas:2222//srv", nil)
	if strings.Join(got, " ") != "ssh -o BatchMode=yes -o ConnectTimeout=15 nas -p 2222 -l backup -s sftp" {
		t.Errorf("default: %q", got)
	}
}

// A local repository's errors are never the network's: a truncated pack
// file says "unexpected EOF" too.
func TestLocalRepositoryIsNeverANetworkFailure(t *testing.T) {
	out := &outcome{exitCode: 1, stderr: newStderrLog()}
	out.stderrLine([]byte("Load(<data/1234abcd>, 0, 0) returned error, retrying after 1s: unexpected EOF"), nil)
	out.stderrLine([]byte("Fatal: unable to load index: unexpected EOF"), nil)
	e := classifyOutcome("check", Repository{URL: "/srv/restic", PasswordFile: "/p"}, out)
	if errors.Is(e, ErrConnectionLost) || errors.Is(e, ErrUnreachable) || e.Host != "" {
		t.Errorf("local repository: %v (host %q): %s", e.Kind, e.Host, e)
	}
	out.canceled = true
	if e := classifyOutcome("check", Repository{URL: "/srv/restic", PasswordFile: "/p"}, out); e.Network != nil {
		t.Errorf("canceled local repository: network %v: %s", e.Network, e)
	}
}

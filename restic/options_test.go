package restic

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/internal/testutil"
)

func TestSFTPCommand(t *testing.T) {
	t.Parallel()
	bounds := "-o BatchMode=yes -o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=4"
	for _, tc := range []struct {
		url  string
		ssh  SSH
		want string
		err  string
	}{
		{"sftp:backup@nas:/srv/restic", SSH{Key: "/etc/subvault/nas.key"},
			"ssh -i /etc/subvault/nas.key -o IdentitiesOnly=yes " + bounds + " -l backup nas -s sftp", ""},
		{"sftp://backup@nas.lan:2222//srv/restic", SSH{Key: "/k", KnownHosts: "/etc/subvault/known hosts"},
			"ssh -i /k -o IdentitiesOnly=yes -o 'UserKnownHostsFile=/etc/subvault/known hosts' -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes " + bounds + " -p 2222 -l backup nas.lan -s sftp", ""},
		{"sftp:nas:/srv/restic", SSH{ConfigFile: "/etc/subvault/ssh_config"},
			"ssh -F /etc/subvault/ssh_config " + bounds + " nas -s sftp", ""},
		{"sftp://[::1]:22//r", SSH{Key: "/k"}, "ssh -i /k -o IdentitiesOnly=yes " + bounds + " -p 22 ::1 -s sftp", ""},
		{"sftp:a@b@host:/r", SSH{Key: "/k"}, "ssh -i /k -o IdentitiesOnly=yes " + bounds + " -l a@b host -s sftp", ""},
		{"rest:http://h/", SSH{Key: "/k"}, "", "not an sftp repository"},
		{"sftp:host", SSH{Key: "/k"}, "", "names no directory"},
		{"sftp:-oProxyCommand=x:/r", SSH{Key: "/k"}, "", "read by ssh as an option"},
		{"sftp:h:/r", SSH{Key: `/it's`}, "", "quote or a backslash"},
	} {
		got, err := SFTPCommand(tc.url, tc.ssh)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("SFTPCommand(%s, %+v) = %q, %v; want an error with %q", tc.url, tc.ssh, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("SFTPCommand(%s, %+v) =\n%q, %v; want\n%q", tc.url, tc.ssh, got, err, tc.want)
		}
	}
}

func TestBackendAndGlobalArgs(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]string{"/srv/r": "local", "local:/srv/r": "local", "sftp:h:/r": "sftp",
		"rest:http://h/": "rest", "s3:https://h/b": "s3", "b2:bucket:path": "b2", "rclone:remote:path": "rclone"} {
		if got := Backend(url); got != want {
			t.Errorf("Backend(%s) = %s, want %s", url, got, want)
		}
	}
	repo := Repository{Options: []Option{{"rest.connections", "2"}, {"sftp.command", `ssh -o "Ciphers=a,b" h`}}, LimitUpload: 10, LimitDownload: 20}
	want := []string{"--option=rest.connections=2", `--option="sftp.command=ssh -o ""Ciphers=a,b"" h"`, "--limit-upload=10", "--limit-download=20"}
	if got := repo.GlobalArgs(); !slices.Equal(got, want) {
		t.Errorf("GlobalArgs = %q, want %q", got, want)
	}
	if got := (Repository{}).GlobalArgs(); len(got) != 0 {
		t.Errorf("no options gave flags %q", got)
	}
}

// Every restic command gets the repository's options, whatever the restic
// version, and an option's value arrives as it was written, commas and
// spaces included: sftp.command here is a program that writes down the
// words it was given, in place of ssh.
func TestOptionsReachEveryCommand(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		dir := t.TempDir()
		record := filepath.Join(dir, "argv")
		fake := filepath.Join(dir, "fake ssh")
		script := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> '" + record + "'\necho END >> '" + record + "'\nexit 1\n"
		if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		pw := filepath.Join(dir, "pw")
		if err := os.WriteFile(pw, []byte("pw\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := &Runner{Binary: bin, Grace: 5 * time.Second, Repo: Repository{URL: "sftp:user@host:/srv/r", PasswordFile: pw,
			CacheDir: filepath.Join(dir, "cache"),
			Options:  []Option{{"sftp.command", "'" + fake + "' -o Ciphers=a,b 'two words' host -s sftp"}}}}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		calls := map[string]func() error{
			"init":      func() error { return r.Init(ctx) },
			"snapshots": func() error { _, err := r.Snapshots(ctx, SnapshotFilter{}); return err },
			"check":     func() error { return r.Check(ctx, "") },
			"unlock":    func() error { return r.Unlock(ctx) },
			"locks":     func() error { _, err := r.Locks(ctx); return err },
		}
		for name, call := range calls {
			os.Remove(record)
			err := call()
			if err == nil {
				t.Errorf("%s through a failing ssh succeeded", name)
			}
			got, rerr := os.ReadFile(record)
			if rerr != nil {
				t.Errorf("%s never ran sftp.command (%v): %v", name, rerr, err)
				continue
			}
			first, _, _ := strings.Cut(string(got), "END\n")
			if want := "-o\nCiphers=a,b\ntwo words\nhost\n-s\nsftp\n"; first != want {
				t.Errorf("%s: sftp.command got the words\n%s\nwant\n%s", name, first, want)
			}
		}
	})
}

// A backend option the restic at hand does not have is named in the error,
// with what to do.
func TestUnknownOptionMessage(t *testing.T) {
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		repo, pw := testutil.NewResticRepo(t, bin)
		r := &Runner{Binary: bin, Repo: Repository{URL: repo, PasswordFile: pw, CacheDir: filepath.Join(t.TempDir(), "cache"),
			Options: []Option{{"local.no-such-option", "1"}}}}
		_, err := r.Snapshots(context.Background(), SnapshotFilter{})
		var e *Error
		if !errors.As(err, &e) || !strings.Contains(e.Message, "this restic has no backend option local.no-such-option") {
			t.Fatalf("err = %v, want the unknown option named", err)
		}
	})
}

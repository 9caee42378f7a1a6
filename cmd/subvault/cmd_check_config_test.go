package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestCheckConfigAcceptsTheShippedExample(t *testing.T) {
	// Copied where root owns every directory above it, as /etc/subvault:
	// a clone in a user's home is that user's, and refused.
	example, err := os.ReadFile("../../packaging/config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, example, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "check-config", "--config", path)
	if code != exitOK {
		t.Fatalf("exit %d, want 0; stderr:\n%s", code, errOut)
	}
	if !strings.Contains(out, "valid") || !strings.Contains(out, "plan ") {
		t.Errorf("verdict does not say valid and list the plans:\n%s", out)
	}
}

func TestCheckConfigRefusesUnknownKeyWithFileAndLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	content := `repositories:
  local:
    url: /srv/restic
    password_file: /etc/subvault/local.pass
plans:
  home:
    subvolumes: [/home]
    repository: local
    shedule: "0 3 * * *"
`
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "check-config", "--config", path)
	if code != exitFailure {
		t.Fatalf("exit %d, want %d", code, exitFailure)
	}
	if out != "" {
		t.Errorf("a refused file printed a verdict on stdout: %q", out)
	}
	want := regexp.MustCompile(regexp.QuoteMeta(path) + `:9: plans\.home\.shedule: `)
	if !want.MatchString(errOut) {
		t.Errorf("stderr does not name file:line and key:\n%s", errOut)
	}
}

func TestCheckConfigMissingFile(t *testing.T) {
	code, _, errOut := runCLI(t, "check-config", "--config", "/nonexistent/subvault.yaml")
	if code != exitFailure || !strings.Contains(errOut, "/nonexistent/subvault.yaml") {
		t.Errorf("exit %d, stderr %q: want 1 and a message naming the file", code, errOut)
	}
}

// TestCheckConfigShowsTargets: the verdict lists each target and where it
// is, and each plan's sends: to which targets, when, and what each keeps.
func TestCheckConfigShowsTargets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	content := `repositories:
  local:
    url: /srv/restic
    password_file: /etc/subvault/local.pass
targets:
  usb:
    path: /mnt/usb/subvault
  disk:
    uuid: 0F6C1A2B-3C4D-4E5F-8A9B-0C1D2E3F4A5B
plans:
  home:
    subvolumes: [/home]
    repository: local
    send_to: [disk, usb]
  root:
    subvolumes: [/]
    repository: local
    send_to: [disk]
    send_schedule: "@daily"
    target_retention: {}
`
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "check-config", "--config", path)
	if code != exitOK {
		t.Fatalf("exit %d, want 0; stderr:\n%s", code, errOut)
	}
	for _, want := range []string{
		": valid: 1 repository, 2 targets, 2 plans\n",
		"  target disk: btrfs filesystem UUID 0f6c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b, directory subvault\n",
		"  target usb: directory /mnt/usb/subvault\n",
		"    send to disk, usb, after every backup, keeping last 10 on each\n",
		"    send to disk, schedule @daily, keeping the newest only on each\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verdict lacks %q:\n%s", want, out)
		}
	}
}

// TestCheckConfigShowsReset: the verdict lists each subvolume the reset
// manages with what it keeps, and warns (exit 0) when a reset of / throws
// away the state directory and the machine id at every boot.
func TestCheckConfigShowsReset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	content := `reset:
  subvolumes:
    - path: /
      persist: [/etc/ssh]
    - path: /home
      persist: [/home/me/.ssh]
      keep: {last: 3}
`
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "check-config", "--config", path)
	if code != exitOK {
		t.Fatalf("exit %d, want 0 (warnings do not refuse); stderr:\n%s", code, errOut)
	}
	for _, want := range []string{
		"reset / at every boot to clean snapshot latest, persisting /etc/ssh, keeping last 5 previous states",
		"reset /home at every boot to clean snapshot latest, persisting /home/me/.ssh, keeping last 3 previous states",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verdict lacks %q:\n%s", want, out)
		}
	}
	for _, want := range []string{"warning: the reset of / does not persist /var/lib/subvault", "warning: the reset of / does not persist /etc/machine-id"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
}

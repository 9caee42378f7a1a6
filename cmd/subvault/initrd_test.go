package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/subvault/subvault/internal/testutil"
)

const initrdConfig = "../../packaging/initrd-config"

// runInitrdConfig runs packaging/initrd-config on a file holding config, with
// this test binary as the subvault it validates the result with.
func runInitrdConfig(t *testing.T, config string) (code int, stdout, stderr string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	testutil.WriteFile(t, path, config)
	wrapper := filepath.Join(dir, "subvault")
	script := "#!/bin/sh\nSUBVAULT_TEST_AS_MAIN=1 exec " + os.Args[0] + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil { //nolint:gosec // an executable stand-in
		t.Fatal(err)
	}
	cmd := exec.Command("sh", initrdConfig, path)
	cmd.Env = append(os.Environ(), "SUBVAULT="+wrapper)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

// The initrd is readable by every user (/boot/initrd.img-* is 0644 on
// Debian), so what the hook and the dracut module put into it is the reset
// section and settings.state_dir alone: no repository URL, password file or
// notify URL.
func TestInitrdConfigTakesTheResetSectionOnly(t *testing.T) {
	code, out, errOut := runInitrdConfig(t, `repositories:
  nas:
    url: rest:https://backup:s3cret-in-url@nas.example/repo
    password_file: /etc/subvault/nas.pass
plans: {}
settings:
  state_dir: /var/lib/subvault-state   # kept: the reset writes its record there
  notify: [{ntfy: "https://ntfy.example/s3cret-topic"}]
reset:
  subvolumes:
    - path: /
      persist: [/etc/machine-id, /var/lib/subvault-state]
# the end
`)
	if code != 0 {
		t.Fatalf("initrd-config: exit %d, want 0\n%s", code, errOut)
	}
	for _, secret := range []string{"s3cret", "nas.pass", "ntfy"} {
		if strings.Contains(out, secret) {
			t.Errorf("the initrd's configuration holds %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{"state_dir: /var/lib/subvault-state", "reset:\n  subvolumes:\n    - path: /\n      persist: [/etc/machine-id, /var/lib/subvault-state]\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("the initrd's configuration lacks %q:\n%s", want, out)
		}
	}
	// what the hook writes is a configuration the reset accepts
	path := filepath.Join(t.TempDir(), "initrd.yaml")
	testutil.WriteFile(t, path, out)
	if code, stdout, stderr := runCLI(t, "check-config", "--config", path); code != exitOK {
		t.Errorf("check-config of the initrd's configuration: exit %d\n%s%s", code, stdout, stderr)
	}
}

// Without a reset section the reset is off: exit 1 and nothing, so the hook
// and the dracut module put nothing into the initrd.
func TestInitrdConfigWithoutReset(t *testing.T) {
	code, out, errOut := runInitrdConfig(t, "repositories: {}\nplans: {}\nsettings:\n  state_dir: /var/lib/x\n")
	if code != 1 || out != "" || errOut != "" {
		t.Errorf("initrd-config of a file without reset: exit %d, stdout %q, stderr %q; want exit 1 and nothing", code, out, errOut)
	}
}

// A reset section the daemon would refuse is refused here, when
// update-initramfs runs, with the file and line, instead of at boot.
func TestInitrdConfigRefuses(t *testing.T) {
	for _, c := range []struct{ name, config, want string }{
		{"settings in flow style", "settings: {state_dir: /x}\nreset:\n  subvolumes: [{path: /}]\n", "flow style"},
		{"a relative path", "reset:\n  subvolumes:\n    - path: home\n", "config.yaml:3:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := runInitrdConfig(t, c.config)
			if code != 2 || out != "" || !strings.Contains(errOut, c.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 2, nothing on stdout, and %q", code, out, errOut, c.want)
			}
		})
	}
}

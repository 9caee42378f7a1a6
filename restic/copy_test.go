package restic

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A copy's source reaches restic as RESTIC_FROM_* beside the destination,
// its secrets are scrubbed like the destination's, and two env files that
// give one variable two values are refused (restic has one environment).
func TestCopyEnvironment(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	srcEnv, dstEnv, clash := filepath.Join(dir, "src.env"), filepath.Join(dir, "dst.env"), filepath.Join(dir, "clash.env")
	os.WriteFile(pw, []byte("x\n"), 0o600)
	os.WriteFile(srcEnv, []byte("B2_ACCOUNT_KEY=source-secret\nSHARED=same\n"), 0o600)
	os.WriteFile(dstEnv, []byte("AWS_SECRET_ACCESS_KEY=dest-secret\nSHARED=same\n"), 0o600)
	os.WriteFile(clash, []byte("AWS_SECRET_ACCESS_KEY=another-secret\n"), 0o600)
	r := &Runner{Repo: Repository{URL: "s3:host/dst", PasswordFile: pw, EnvFile: dstEnv}}
	src := Repository{URL: "rest:https://u:srcpass@h/", PasswordCommand: "pass show src", EnvFile: srcEnv}
	env, secrets, err := r.environment(true, false, src)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(env, "\n") + "\n"
	for _, want := range []string{"RESTIC_REPOSITORY=s3:host/dst", "RESTIC_PASSWORD_FILE=" + pw,
		"RESTIC_FROM_REPOSITORY=rest:https://u:srcpass@h/", "RESTIC_FROM_PASSWORD_COMMAND=pass show src",
		"B2_ACCOUNT_KEY=source-secret", "AWS_SECRET_ACCESS_KEY=dest-secret", "SHARED=same"} {
		if !strings.Contains(joined, want+"\n") {
			t.Errorf("env lacks %s:\n%s", want, joined)
		}
	}
	for _, s := range []string{"srcpass", "source-secret", "dest-secret"} {
		if !strings.Contains(strings.Join(secrets, " "), s) {
			t.Errorf("secret %s is not scrubbed (secrets %q)", s, secrets)
		}
	}
	src.EnvFile = clash
	if _, _, err := r.environment(true, false, src); err == nil || !strings.Contains(err.Error(), "AWS_SECRET_ACCESS_KEY") ||
		strings.Contains(err.Error(), "secret\"") || strings.Contains(err.Error(), "another-secret") {
		t.Errorf("clashing env files: %v; want a refusal naming the variable, not its value", err)
	}
	// An env file may not set the source's variables either.
	os.WriteFile(clash, []byte("RESTIC_FROM_PASSWORD=x\n"), 0o600)
	if _, _, err := r.environment(true, false, src); err == nil || !strings.Contains(err.Error(), "RESTIC_FROM_PASSWORD may not be set") {
		t.Errorf("an env file setting RESTIC_FROM_PASSWORD: %v", err)
	}
}

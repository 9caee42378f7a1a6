package emergencykit

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/daemon/config"
	"github.com/subvault/subvault/restic"
)

func sampleKit(t *testing.T) *Kit {
	t.Helper()
	qr, err := NewQRCode("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	latest := restic.Archive{ShortID: "1a2b3c4d", Time: time.Date(2026, 11, 21, 3, 0, 0, 0, time.Local)}
	return &Kit{
		Host: "laptop", Made: time.Date(2026, 11, 22, 10, 0, 0, 0, time.Local), ConfigFile: "/etc/subvault/config.yaml",
		SubvaultVersion: "1.0", Restic: "restic 0.14.0 compiled with go1.19.8 on linux/amd64",
		Repositories: []Repository{
			{Name: "b2", URL: "b2:bucket:laptop", PasswordSource: "the output of password_command: pass show restic",
				PasswordProblem: "password_command pass failed", EnvFile: "/etc/subvault/b2.env",
				Env:     []restic.EnvVar{{Key: "B2_ACCOUNT_ID", Value: "0012"}, {Key: "B2_ACCOUNT_KEY", Value: "K00 'x'"}},
				Checked: "Not checked: the password could not be read.",
				Plans:   []Plan{{Name: "root", Subvolumes: []string{"/", "/var"}, Tag: "subvault:root"}}},
			{Name: "nas", URL: "rest:https://backup:s3cret@nas:8000/laptop/", URLHasCredentials: true,
				Password: "correct horse", PasswordSource: "password_file /etc/subvault/nas.pass", QR: qr,
				Checked: "Checked: the password above opened it.", Opened: true,
				Plans: []Plan{{Name: "home", Subvolumes: []string{"/home"}, Tag: "subvault:home", Archives: 3, Latest: &latest}}},
		},
	}
}

// The text kit: every command is a "$ " line in the order a person types
// them, secrets are marked, and what is missing says where it is kept.
func TestWriteText(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := sampleKit(t).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	var commands []string
	for _, line := range strings.Split(text, "\n") {
		if c, ok := strings.CutPrefix(strings.TrimLeft(line, " "), CommandPrefix); ok {
			commands = append(commands, c)
		}
	}
	want := []string{
		"export RESTIC_REPOSITORY=b2:bucket:laptop",
		"export B2_ACCOUNT_ID=0012",
		`export B2_ACCOUNT_KEY='K00 '\''x'\'''`,
		"read -r RESTIC_PASSWORD",
		"export RESTIC_PASSWORD",
		"restic snapshots --tag subvault:root --host laptop",
		"restic restore latest --tag subvault:root --host laptop --target /mnt/new --verify",
		"export RESTIC_REPOSITORY=rest:https://backup:s3cret@nas:8000/laptop/",
		"read -r RESTIC_PASSWORD",
		"export RESTIC_PASSWORD",
		"restic snapshots --tag subvault:home --host laptop",
		"restic restore latest --tag subvault:home --host laptop --target /mnt/new --verify",
	}
	if strings.Join(commands, "\n") != strings.Join(want, "\n") {
		t.Errorf("commands:\n%s\nwant:\n%s", strings.Join(commands, "\n"), strings.Join(want, "\n"))
	}
	for _, s := range []string{
		"subvault emergency kit: laptop, 2026-11-22",
		"Location: rest:https://backup:s3cret@nas:8000/laptop/ (secret: it holds a password)",
		"Password (secret): correct horse\n",
		"Password: NOT IN THIS KIT. It is kept in the output of password_command:",
		"Backend keys (secret): 2 from env_file /etc/subvault/b2.env",
		"3 archives; the latest when this kit was made: 1a2b3c4d of 2026-11-21 03:00",
		"written by restic 0.14.0 compiled with go1.19.8 on linux/amd64",
		"apt update && apt install restic",
		"https://github.com/restic/restic/releases",
		"The password as a QR code",
		"█",
	} {
		// Wrapped lines count as one.
		if !strings.Contains(text, s) && !strings.Contains(strings.Join(strings.Fields(text), " "), s) {
			t.Errorf("the text kit lacks %q:\n%s", s, text)
		}
	}
	for _, line := range strings.Split(text, "\n") {
		// Commands and secrets are never wrapped: they are typed as they are.
		if n := len([]rune(line)); n > 80 && !strings.Contains(line, "s3cret") && !strings.HasPrefix(line, "   "+CommandPrefix) {
			t.Errorf("line of %d columns: %q", n, line)
		}
		if strings.TrimRight(line, " ") != line {
			t.Errorf("trailing space: %q", line)
		}
	}
}

// The HTML kit is one file for A4 paper: the page rule, the QR code inline,
// escaped text, nothing fetched.
func TestWriteHTML(t *testing.T) {
	t.Parallel()
	k := sampleKit(t)
	k.Repositories[1].Password = `<b>"x"</b>`
	var b bytes.Buffer
	if err := k.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, s := range []string{
		"@page { size: A4;", "@media print", "break-inside: avoid",
		`<svg xmlns="http://www.w3.org/2000/svg" width="38mm"`,
		"&lt;b&gt;&#34;x&#34;&lt;/b&gt;",
		"export B2_ACCOUNT_KEY=&#39;K00 &#39;\\&#39;&#39;x&#39;\\&#39;&#39;&#39;",
		"restic restore latest --tag subvault:home --host laptop --target /mnt/new --verify",
	} {
		if !strings.Contains(page, s) {
			t.Errorf("the HTML kit lacks %q", s)
		}
	}
	for _, s := range []string{`<b>"x"`, "http://", "https://fonts", "<script", "<link", "<img"} {
		if s == "http://" {
			// Only the SVG namespace, which is a name, not a fetch.
			if strings.Count(page, s) != 1 {
				t.Errorf("the HTML kit refers to %d http:// addresses", strings.Count(page, s))
			}
			continue
		}
		if strings.Contains(page, s) {
			t.Errorf("the HTML kit holds %q", s)
		}
	}
}

// A QR code is square, has the three finder patterns, and its half-block
// drawing has the quiet zone around it.
func TestQRCode(t *testing.T) {
	t.Parallel()
	q, err := NewQRCode("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if q.Size < 21 || (q.Size-17)%4 != 0 {
		t.Fatalf("size %d is not a QR code's", q.Size)
	}
	for _, corner := range [][2]int{{0, 0}, {q.Size - 7, 0}, {0, q.Size - 7}} {
		for i := 0; i < 7; i++ {
			if !q.Dark(corner[0]+i, corner[1]) || !q.Dark(corner[0], corner[1]+i) || q.Dark(corner[0]+1, corner[1]+1) != false {
				t.Fatalf("no finder pattern at %v", corner)
			}
		}
	}
	lines := q.HalfBlocks()
	if len(lines) != (q.Size+2*quietZone+1)/2 {
		t.Errorf("%d lines for %d modules", len(lines), q.Size)
	}
	if strings.TrimSpace(lines[0]) != "" || strings.TrimSpace(lines[1]) != "" {
		t.Errorf("no quiet zone above: %q", lines[:2])
	}
	for _, l := range lines {
		if len([]rune(l)) != q.Size+2*quietZone {
			t.Errorf("line of %d columns, want %d", len([]rune(l)), q.Size+2*quietZone)
		}
	}
}

// Build: a missing plan is an error; a password that cannot be read is
// written down as where it is kept; a systemd credential outside the
// service too.
func TestBuildWithoutSecrets(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	cfg, err := config.Parse("test.yaml", []byte(`repositories:
  a:
    url: `+filepath.Join(dir, "repo")+`
    password_file: `+filepath.Join(dir, "missing")+`
  b:
    url: sftp:backup@nas:/srv/restic
    credential: restic-b
plans:
  one:
    subvolumes: [/home]
    repository: a
  two:
    subvolumes: [/srv]
    repository: b
settings:
  restic: `+filepath.Join(dir, "no-restic")+`
`))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := Build(ctx, cfg, Options{Plan: "three"}); err == nil || !strings.Contains(err.Error(), `no plan "three" in test.yaml (plans: one, two)`) {
		t.Errorf("unknown plan: %v", err)
	}
	k, err := Build(ctx, cfg, Options{Hostname: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	if len(k.Repositories) != 2 || k.Repositories[0].Name != "a" || k.Repositories[1].Name != "b" {
		t.Fatalf("repositories: %+v", k.Repositories)
	}
	a, b := k.Repositories[0], k.Repositories[1]
	if a.Password != "" || !strings.Contains(a.PasswordProblem, "no such file") || a.QR != nil || a.Opened {
		t.Errorf("a: %+v", a)
	}
	if b.Password != "" || !strings.Contains(b.PasswordSource, `systemd credential "restic-b"`) || !strings.Contains(b.PasswordProblem, "CREDENTIALS_DIRECTORY") {
		t.Errorf("b: %+v", b)
	}
	if len(b.Notes) != 1 || !strings.Contains(b.Notes[0], "SSH") {
		t.Errorf("an sftp repository has no note about the SSH key: %q", b.Notes)
	}
	if !strings.HasPrefix(k.Restic, "unknown: ") {
		t.Errorf("restic version of a missing binary: %q", k.Restic)
	}

	// The credential, when the service's directory is there.
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "restic-b"), []byte("from systemd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	k, err = Build(ctx, cfg, Options{Plan: "two", Hostname: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	if len(k.Repositories) != 1 || k.Repositories[0].Password != "from systemd" || k.Repositories[0].QR == nil {
		t.Errorf("with $CREDENTIALS_DIRECTORY: %+v", k.Repositories)
	}

	// A plan's copy_to repositories are in its kit too: the second copy.
	cfg.Plans["two"].CopyTo = []string{"a"}
	k, err = Build(ctx, cfg, Options{Plan: "two", Hostname: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	if len(k.Repositories) != 2 || k.Repositories[0].Name != "a" || len(k.Repositories[0].Plans) != 1 || k.Repositories[0].Plans[0].Name != "two" {
		t.Errorf("the kit of a plan with copy_to: [a]: %+v", k.Repositories)
	}
}

// A repository's options, ssh command and limits are in every restic
// command of the kit, quoted for the shell; the ssh files it names are
// written back at their paths by the kit's commands (the key readable by
// root alone), and one that cannot be read is said to be missing.
func TestKitCommandsCarryTheRepositoryFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := filepath.Join(dir, "etc", "nas.key")
	known := filepath.Join(dir, "etc", "nas known_hosts")
	keyText := "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA'quote'\n\n-----END OPENSSH PRIVATE KEY-----\n"
	knownText := "[nas]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI $x"
	if err := os.MkdirAll(filepath.Dir(key), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, []byte(keyText), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(known, []byte(knownText), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("test.yaml", []byte(`repositories:
  nas:
    url: sftp://backup@nas:2222//srv/restic
    password_command: /bin/echo pw
    ssh: {key: "`+key+`", known_hosts: "`+known+`", config_file: /nonexistent/ssh_config}
    limit_download: 4096
plans:
  home: {subvolumes: [/home], repository: nas}
settings:
  restic: /nonexistent/restic
`))
	if err != nil {
		t.Fatal(err)
	}
	k, err := Build(context.Background(), cfg, Options{Hostname: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	r := k.Repositories[0]
	cmds := k.PlanCommands(r, r.Plans[0])
	flags := "'--option=sftp.command=ssh -F /nonexistent/ssh_config -i " + key + " -o IdentitiesOnly=yes -o '\\''UserKnownHostsFile=" + known +
		"'\\'' -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -p 2222 -l backup nas -s sftp' --limit-download=4096"
	for i, want := range []string{
		"restic " + flags + " snapshots --tag subvault:home --host laptop",
		"restic " + flags + " restore latest --tag subvault:home --host laptop --target /mnt/new --verify",
	} {
		if cmds[i] != want {
			t.Errorf("command %d:\n%s\nwant\n%s", i, cmds[i], want)
		}
	}
	if len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "the files the ssh configuration names (IdentityFile, UserKnownHostsFile, ...) are NOT in this kit") {
		t.Errorf("the note: %q", r.Notes)
	}
	var text bytes.Buffer
	if err := k.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	flat := strings.Join(strings.Fields(text.String()), " ")
	for _, want := range []string{
		"ssh.key " + key + " (secret): written back at the same path",
		"ssh.config_file /nonexistent/ssh_config: NOT IN THIS KIT. It could not be read: open /nonexistent/ssh_config: no such file or directory",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("the text kit lacks %q:\n%s", want, text.String())
		}
	}

	// On the rescue machine: the open commands write the files back.
	if err := os.RemoveAll(filepath.Join(dir, "etc")); err != nil {
		t.Fatal(err)
	}
	var script []string
	for _, c := range k.OpenCommands(r) {
		if !strings.HasPrefix(c, "read ") && !strings.HasPrefix(c, "export RESTIC_PASSWORD") {
			script = append(script, c)
		}
	}
	if out, err := exec.Command("/bin/sh", "-euc", strings.Join(script, "\n")).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s\n%s", err, out, strings.Join(script, "\n"))
	}
	for path, want := range map[string]string{key: keyText, known: knownText + "\n"} {
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("%s written back as %q (%v), want %q", path, got, err, want)
		}
	}
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("the key is written back with mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
}

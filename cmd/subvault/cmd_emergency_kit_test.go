package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"image"
	"image/color"
	"image/png"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/subvault/subvault/daemon/emergencykit"
	"github.com/subvault/subvault/daemon/shell"
	"github.com/subvault/subvault/internal/testutil"
)

// TestEmergencyKitRestoresWithOnlyRestic backs up a tree, writes the kit,
// then does what a person with a bare machine and the paper does: the
// repository is a copy somewhere else (the original is moved away, so only
// the copy can answer), the restore goes to a new btrfs disk with the
// plan's subvolume made first, and the kit's "$ " lines run in /bin/sh with
// nothing but restic on PATH, an empty HOME and the password typed from the
// kit's text. The restored tree matches the original.
func TestEmergencyKitRestoresWithOnlyRestic(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		e := newKitEnv(t, bin)
		home := e.fs.Path("home")
		testutil.WriteFile(t, filepath.Join(home, "notes.txt"), "the file that matters\n")
		testutil.WriteFile(t, filepath.Join(home, "a dir", "with space.txt"), strings.Repeat("x", 100_000))
		testutil.WriteFile(t, filepath.Join(home, "deep", "er", "still", "f"), "")
		testutil.WriteFile(t, filepath.Join(home, "private"), "alice's\n")
		if err := os.Chmod(filepath.Join(home, "private"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(filepath.Join(home, "private"), 1234, 2345); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("notes.txt", filepath.Join(home, "link")); err != nil {
			t.Fatal(err)
		}

		var out, errOut bytes.Buffer
		if code := run([]string{"run", "backup", "home", "--config", e.config}, &out, &errOut); code != exitOK {
			t.Fatalf("backup: exit %d\n%s", code, errOut.String())
		}
		archive := regexp.MustCompile(`archive ([0-9a-f]{8})`).FindStringSubmatch(out.String())
		if archive == nil {
			t.Fatalf("no archive in the summary:\n%s", out.String())
		}

		kitDir := t.TempDir()
		out.Reset()
		errOut.Reset()
		if code := run([]string{"emergency-kit", "home", "--config", e.config, "--out", kitDir}, &out, &errOut); code != exitOK {
			t.Fatalf("emergency-kit: exit %d\n%s", code, errOut.String())
		}
		host, _ := os.Hostname()
		base := filepath.Join(kitDir, "subvault-emergency-kit-"+host+"-home-"+todayForKit())
		htmlPath, textPath := base+".html", base+".txt"
		for _, p := range []string{htmlPath, textPath} {
			if !strings.Contains(out.String(), "wrote "+p+"\n") {
				t.Errorf("stdout does not name %s:\n%s", p, out.String())
			}
			if !strings.Contains(errOut.String(), "  "+p+"\n") {
				t.Errorf("the warning does not name %s:\n%s", p, errOut.String())
			}
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %v, want 0600", p, st.Mode().Perm())
			}
		}
		if !strings.Contains(errOut.String(), "WARNING: these files hold the secrets") || !strings.Contains(errOut.String(), "delete the files") {
			t.Errorf("no warning about the secrets:\n%s", errOut.String())
		}
		text := readKitFile(t, textPath)
		if !strings.Contains(text, "Checked: the password above opened it") || !strings.Contains(text, "latest when this kit was made: "+archive[1]) {
			t.Errorf("the kit does not say it opened the repository and found archive %s:\n%s", archive[1], text)
		}
		if v := testutil.ResticVersion(bin); !strings.Contains(strings.Join(strings.Fields(text), " "), "written by restic "+v) {
			t.Errorf("the kit does not name restic %s:\n%s", v, text)
		}

		// The person's side: the password from the paper, the commands.
		password := kitField(t, text, emergencykit.TextPasswordLabel)
		if password != testutil.ResticPassword {
			t.Fatalf("the kit's password is %q, want %q", password, testutil.ResticPassword)
		}
		var commands []string
		for _, line := range strings.Split(text, "\n") {
			if c, ok := strings.CutPrefix(strings.TrimLeft(line, " "), emergencykit.CommandPrefix); ok {
				commands = append(commands, c)
			}
		}

		// The repository disk, mounted somewhere else.
		moved := filepath.Join(t.TempDir(), "usb", "restic-repo")
		testutil.Run(t, "mkdir", "-p", filepath.Dir(moved))
		testutil.Run(t, "cp", "-a", e.repo, moved)
		if err := os.Rename(e.repo, e.repo+".gone"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Rename(e.repo+".gone", e.repo) })
		// The new disk, with the plan's subvolume made where the
		// archive's files land below the target.
		newDisk := testutil.NewBtrfs(t, 256)
		testutil.Run(t, "mkdir", "-p", filepath.Dir(newDisk.Path(home)))
		testutil.Run(t, "btrfs", "subvolume", "create", newDisk.Path(home))

		rewritten := 0
		for i, c := range commands {
			if c == "export RESTIC_REPOSITORY="+shell.Quote(e.repo) {
				commands[i] = "export RESTIC_REPOSITORY=" + shell.Quote(moved)
				rewritten++
			}
			if strings.Contains(c, " --target "+emergencykit.RestoreTarget+" ") {
				commands[i] = strings.Replace(c, " --target "+emergencykit.RestoreTarget+" ", " --target "+shell.Quote(newDisk.Mount)+" ", 1)
				rewritten++
			}
		}
		if rewritten != 2 || len(commands) != 5 {
			t.Fatalf("expected 5 commands, one export of %s and one restore to %s:\n%s", e.repo, emergencykit.RestoreTarget, strings.Join(commands, "\n"))
		}
		t.Logf("the kit's commands, as run:\n%s", strings.Join(commands, "\n"))
		script := filepath.Join(t.TempDir(), "kit.sh")
		testutil.WriteFile(t, script, strings.Join(commands, "\n")+"\n")
		pathDir := t.TempDir()
		if err := os.Symlink(bin, filepath.Join(pathDir, "restic")); err != nil {
			t.Fatal(err)
		}
		sh := exec.Command("/bin/sh", "-eu", script)
		sh.Env = []string{"PATH=" + pathDir, "HOME=" + t.TempDir()}
		sh.Dir = t.TempDir()
		sh.Stdin = strings.NewReader(password + "\n")
		shOut, err := sh.CombinedOutput()
		if err != nil {
			t.Fatalf("the kit's commands failed: %v\n%s", err, shOut)
		}
		if !strings.Contains(string(shOut), archive[1]) {
			t.Errorf("restic snapshots did not list archive %s:\n%s", archive[1], shOut)
		}
		if !regexp.MustCompile(`finished verifying \d+ files`).Match(shOut) {
			t.Errorf("restic restore did not verify the files:\n%s", shOut)
		}
		kitCompareTrees(t, home, newDisk.Path(home))
	})
}

// TestEmergencyKitRefusals: not as root, over existing files, an unknown
// plan; --force and --format.
func TestEmergencyKitRefusals(t *testing.T) {
	testutil.RequireNobody(t)
	e := newKitEnv(t, testutil.Restic(t))

	// As nobody: refused before anything is read.
	dir, err := os.MkdirTemp("", "subvault-kit-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "subvault")
	testutil.Run(t, "cp", os.Args[0], bin)
	if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	cmd := testutil.AsNobody(bin, "emergency-kit", "--config", e.config, "--out", dir)
	cmd.Env = append(cmd.Env, "SUBVAULT_TEST_AS_MAIN=1")
	code, stdout, stderr := runCmd(t, cmd)
	if code != exitFailure || stdout != "" || !strings.Contains(stderr, "must run as root") {
		t.Errorf("as nobody: exit %d, stdout %q, stderr %q; want %d and \"must run as root\"", code, stdout, stderr, exitFailure)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("nobody's refused kit left files: %v", entries)
	}

	out := t.TempDir()
	var o, eo bytes.Buffer
	if code := run([]string{"emergency-kit", "nosuch", "--config", e.config, "--out", out}, &o, &eo); code != exitFailure || !strings.Contains(eo.String(), `no plan "nosuch"`) {
		t.Errorf("unknown plan: exit %d, %q", code, eo.String())
	}
	if code := run([]string{"emergency-kit", "--format", "pdf", "--config", e.config, "--out", out}, &o, &eo); code != exitUsage {
		t.Errorf("--format pdf: exit %d", code)
	}

	// --format text: the text file only. All plans: no plan in the name.
	o.Reset()
	if code := run([]string{"emergency-kit", "--format", "text", "--config", e.config, "--out", out}, &o, &eo); code != exitOK {
		t.Fatalf("--format text: exit %d\n%s", code, eo.String())
	}
	host, _ := os.Hostname()
	textPath := filepath.Join(out, "subvault-emergency-kit-"+host+"-"+todayForKit()+".txt")
	htmlPath := strings.TrimSuffix(textPath, ".txt") + ".html"
	if _, err := os.Stat(textPath); err != nil || strings.TrimSpace(o.String()) != "wrote "+textPath {
		t.Fatalf("--format text wrote %q (stat: %v)", o.String(), err)
	}
	before := readKitFile(t, textPath)

	// Existing files are kept: nothing at all is written, not even the
	// HTML that does not exist yet.
	eo.Reset()
	if code := run([]string{"emergency-kit", "--config", e.config, "--out", out}, &o, &eo); code != exitFailure ||
		!strings.Contains(eo.String(), textPath+" exists") || !strings.Contains(eo.String(), "--force") {
		t.Errorf("over an existing kit: exit %d, %q", code, eo.String())
	}
	if _, err := os.Stat(htmlPath); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused kit wrote %s (%v)", htmlPath, err)
	}
	if after := readKitFile(t, textPath); after != before {
		t.Error("a refused kit changed the existing file")
	}

	// --force replaces them, and a file that was readable by all is 0600
	// afterwards (a new file, not the old one rewritten).
	if err := os.Chmod(textPath, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"emergency-kit", "--force", "--config", e.config, "--out", out}, &o, &eo); code != exitOK {
		t.Fatalf("--force: exit %d\n%s", code, eo.String())
	}
	for _, p := range []string{textPath, htmlPath} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s after --force: %v, %v; want mode 0600", p, st, err)
		}
	}
	if leftovers, _ := filepath.Glob(filepath.Join(out, ".subvault-emergency-kit-*")); len(leftovers) != 0 {
		t.Errorf("temporary copies of the kit left behind: %v", leftovers)
	}
}

// TestEmergencyKitQRCodesDecode reads the QR code back from both files as a
// printer would draw it (the half blocks of the text, the SVG path of the
// HTML), renders each to a PNG and decodes it with zbarimg: both hold the
// password. An ASCII password with shell and HTML specials is read by
// zbarimg as it is; a non-ASCII one is checked byte for byte (-Sbinary: the
// code holds UTF-8 with no ECI header, and zbar guesses Shift JIS), and the
// kit warns that a phone may misread it.
func TestEmergencyKitQRCodesDecode(t *testing.T) {
	testutil.RequireRoot(t)
	zbarimg := testutil.RequireCommand(t, "zbarimg", "zbar-tools")
	e := newKitEnv(t, testutil.Restic(t))
	for _, c := range []struct {
		password, escaped string
		zbarArgs          []string
		note              bool
	}{
		{`it's a <long> "pass" phrase & #42 $HOME \n`, `it&#39;s a &lt;long&gt; &#34;pass&#34; phrase &amp; #42 $HOME \n`, nil, false},
		{"Grüße aus Köln", "Grüße aus Köln", []string{"-Sbinary"}, true},
	} {
		// A password that is not the repository's: the kit says so.
		testutil.WriteSecret(t, e.password, c.password+"\n")
		out := t.TempDir()
		var o, eo bytes.Buffer
		if code := run([]string{"emergency-kit", "--config", e.config, "--out", out}, &o, &eo); code != exitOK {
			t.Fatalf("exit %d\n%s", code, eo.String())
		}
		host, _ := os.Hostname()
		base := filepath.Join(out, "subvault-emergency-kit-"+host+"-"+todayForKit())
		text, page := readKitFile(t, base+".txt"), readKitFile(t, base+".html")
		if got := kitField(t, text, emergencykit.TextPasswordLabel); got != c.password {
			t.Errorf("the text's password line is %q, want %q", got, c.password)
		}
		if !strings.Contains(text, "NOT OPENED") || !strings.Contains(eo.String(), "NOT OPENED") {
			t.Errorf("a password that does not open the repository is not flagged:\n%s\n%s", text, eo.String())
		}
		if !strings.Contains(page, "@page { size: A4") || !strings.Contains(page, c.escaped) {
			t.Errorf("the HTML lacks the A4 page rule or the escaped password %s", c.escaped)
		}
		if got := strings.Contains(text, "some readers show them wrongly"); got != c.note {
			t.Errorf("%q: a note about non-ASCII letters: %v, want %v", c.password, got, c.note)
		}
		for _, kind := range []struct {
			name    string
			modules [][]bool
		}{
			{"text", qrFromHalfBlocks(t, text)},
			{"html", qrFromSVG(t, page)},
		} {
			pngPath := filepath.Join(t.TempDir(), kind.name+".png")
			// zbarimg applies an option to the images after it.
			writeQRPNG(t, pngPath, kind.modules)
			got, err := exec.Command(zbarimg, append(append([]string{"--quiet", "--raw"}, c.zbarArgs...), pngPath)...).Output()
			if err != nil {
				t.Errorf("%s: zbarimg cannot decode the QR code: %v", kind.name, err)
				continue
			}
			if s := strings.TrimSuffix(string(got), "\n"); s != c.password {
				t.Errorf("%s: the QR code holds %q, want %q", kind.name, s, c.password)
			}
		}
	}
}

// kitEnv is a runEnv: a btrfs with a subvolume home, a repository and a
// configuration, with the restic binary the test names.
type kitEnv = runEnv

func newKitEnv(t *testing.T, bin string) *kitEnv {
	t.Helper()
	return newRunEnvWith(t, bin, 256)
}

// todayForKit is the date in the kit's file name. (A test that runs across
// midnight fails once.)
func todayForKit() string { return time.Now().Format("2006-01-02") }

func readKitFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// kitField is the rest of the one line that starts with label after its
// indentation.
func kitField(t *testing.T, text, label string) string {
	t.Helper()
	var found []string
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimLeft(line, " "), label); ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d lines start with %q in the kit:\n%s", len(found), label, text)
	}
	return found[0]
}

// qrFromHalfBlocks reads the text kit's QR code back into modules, quiet
// zone included.
func qrFromHalfBlocks(t *testing.T, text string) [][]bool {
	t.Helper()
	lines := strings.Split(text, "\n")
	start := -1
	for i, l := range lines {
		if strings.Contains(l, "The password as a QR code") {
			start = i + 1
		}
	}
	if start < 0 {
		t.Fatalf("no QR code in the text kit:\n%s", text)
	}
	var rows [][]bool
	width := 0
	for _, l := range lines[start:] {
		if strings.Trim(l, " █▀▄") != "" {
			break // the text after the code
		}
		l = strings.TrimPrefix(l, "   ")
		top, bottom := make([]bool, 0, len(l)), make([]bool, 0, len(l))
		for _, r := range l {
			switch r {
			case '█':
				top, bottom = append(top, true), append(bottom, true)
			case '▀':
				top, bottom = append(top, true), append(bottom, false)
			case '▄':
				top, bottom = append(top, false), append(bottom, true)
			case ' ':
				top, bottom = append(top, false), append(bottom, false)
			}
		}
		width = max(width, len(top))
		rows = append(rows, top, bottom)
	}
	for i := range rows {
		for len(rows[i]) < width {
			rows[i] = append(rows[i], false)
		}
	}
	if width < 21 {
		t.Fatalf("the QR code is %d modules wide, less than the smallest QR code", width)
	}
	return rows
}

var svgViewBox = regexp.MustCompile(`<svg [^>]*viewBox="0 0 (\d+) (\d+)"`)
var svgRun = regexp.MustCompile(`M(\d+) (\d+)h(\d+)v1h-(\d+)z`)

// qrFromSVG reads the HTML kit's inline SVG back into modules.
func qrFromSVG(t *testing.T, page string) [][]bool {
	t.Helper()
	m := svgViewBox.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no SVG in the HTML kit")
	}
	side, _ := strconv.Atoi(m[1])
	rows := make([][]bool, side)
	for i := range rows {
		rows[i] = make([]bool, side)
	}
	runs := svgRun.FindAllStringSubmatch(page, -1)
	if len(runs) == 0 {
		t.Fatal("the SVG has no dark modules")
	}
	for _, r := range runs {
		x, _ := strconv.Atoi(r[1])
		y, _ := strconv.Atoi(r[2])
		n, _ := strconv.Atoi(r[3])
		for i := 0; i < n; i++ {
			rows[y][x+i] = true
		}
	}
	return rows
}

// writeQRPNG draws modules 8 pixels each, black on white, with a white
// border of its own.
func writeQRPNG(t *testing.T, path string, modules [][]bool) {
	t.Helper()
	const scale, border = 8, 4
	n := len(modules)
	img := image.NewGray(image.Rect(0, 0, (len(modules[0])+2*border)*scale, (n+2*border)*scale))
	for i := range img.Pix {
		img.Pix[i] = 0xff
	}
	for y, row := range modules {
		for x, dark := range row {
			if !dark {
				continue
			}
			for dy := 0; dy < scale; dy++ {
				for dx := 0; dx < scale; dx++ {
					img.SetGray((x+border)*scale+dx, (y+border)*scale+dy, color.Gray{})
				}
			}
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// kitCompareTrees fails the test for every difference between the trees
// under a and b: a path in one only, type, mode, owner, size, content,
// symlink target.
func kitCompareTrees(t *testing.T, a, b string) {
	t.Helper()
	seen := map[string]bool{}
	n := 0
	err := filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		if d.Name() == ".subvault-snapshots" {
			return filepath.SkipDir // never in an archive
		}
		seen[rel] = true
		n++
		other := filepath.Join(b, rel)
		sa, err := os.Lstat(p)
		if err != nil {
			return err
		}
		sb, err := os.Lstat(other)
		if err != nil {
			t.Errorf("%s: not restored (%v)", rel, err)
			return nil
		}
		ua, ub := sa.Sys().(*syscall.Stat_t), sb.Sys().(*syscall.Stat_t)
		if sa.Mode() != sb.Mode() || ua.Uid != ub.Uid || ua.Gid != ub.Gid {
			t.Errorf("%s: mode %v owner %d:%d, restored %v owner %d:%d", rel, sa.Mode(), ua.Uid, ua.Gid, sb.Mode(), ub.Uid, ub.Gid)
		}
		switch {
		case sa.Mode()&fs.ModeSymlink != 0:
			la, _ := os.Readlink(p)
			lb, _ := os.Readlink(other)
			if la != lb {
				t.Errorf("%s: symlink to %q, restored to %q", rel, la, lb)
			}
		case sa.Mode().IsRegular():
			if ha, hb := kitFileHash(t, p), kitFileHash(t, other); ha != hb || sa.Size() != sb.Size() {
				t.Errorf("%s: content differs (%d bytes, restored %d)", rel, sa.Size(), sb.Size())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(b, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if rel, _ := filepath.Rel(b, p); !seen[rel] {
			t.Errorf("%s: restored but not in the original", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 5 {
		t.Fatalf("only %d paths compared under %s", n, a)
	}
}

func kitFileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

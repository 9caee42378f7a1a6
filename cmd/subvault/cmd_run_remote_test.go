package main

import (
	"bytes"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/subvault/subvault/internal/testutil"
)

// `subvault run backup` against REST repositories that refuse it, as a user
// sees it: one line on stderr naming the server and what to do, in seconds,
// with restic 0.14 and 0.18; and no `restic init` on a server that refused
// the credentials although the repository says init: true.
func TestRunBackupSaysWhyTheServerRefused(t *testing.T) {
	testutil.RequireRoot(t)
	auth := testutil.NewRESTServer(t, testutil.RESTOptions{Auth: true})
	testutil.ForEachRestic(t, func(t *testing.T, bin string) {
		e := newRunEnvWith(t, bin, 256)
		testutil.WriteFile(t, e.fs.Path("home", "a"), "hello")
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := l.Addr().(*net.TCPAddr).Port
		l.Close()
		newRepo := "new-" + testutil.ResticName(bin)
		for _, c := range []struct {
			name, url string
			want      []string
		}{
			{"wrong credentials", auth.RepositoryAs(newRepo, auth.User, "wrong-secret-3"),
				[]string{fmt.Sprintf("the server 127.0.0.1:%d refused the credentials (HTTP 401 Unauthorized): check the user and password in the url", auth.Port)}},
			{"wrong port", fmt.Sprintf("rest:http://127.0.0.1:%d/r/", closed),
				[]string{fmt.Sprintf("is unreachable: cannot connect to 127.0.0.1:%d (dial tcp 127.0.0.1:%d: connect: connection refused)", closed, closed)}},
		} {
			t.Run(c.name, func(t *testing.T) {
				state := t.TempDir()
				config := filepath.Join(state, "config.yaml")
				testutil.WriteFile(t, config, fmt.Sprintf(`repositories:
  r:
    url: %s
    password_file: %s
    init: true
plans:
  home:
    subvolumes: [%s]
    repository: r
settings:
  state_dir: %s
  cache_dir: %s
  restic: %s
`, c.url, e.password, e.fs.Path("home"), state, filepath.Join(state, "cache"), bin))
				var out, errOut bytes.Buffer
				start := time.Now()
				code := run([]string{"run", "backup", "home", "--config", config}, &out, &errOut)
				took := time.Since(start)
				t.Logf("restic %s, %s: exit %d after %s; stderr:\n%s", testutil.ResticVersion(bin), c.name, code, took.Round(10*time.Millisecond), errOut.String())
				if code == exitOK {
					t.Fatalf("exit 0:\n%s", out.String())
				}
				for _, w := range c.want {
					if !strings.Contains(errOut.String(), w) {
						t.Errorf("stderr lacks %q", w)
					}
				}
				if strings.Contains(errOut.String()+out.String(), "wrong-secret-3") || strings.Contains(errOut.String(), "restic init") {
					t.Errorf("stderr shows the password or advises restic init")
				}
				if took > time.Minute {
					t.Errorf("took %s, want under a minute", took)
				}
			})
		}
		if entries, _ := filepath.Glob(filepath.Join(auth.RepositoryDir(newRepo), "*")); len(entries) > 0 {
			t.Errorf("init: true created a repository on a server that refused the credentials: %v", entries)
		}
	})
}

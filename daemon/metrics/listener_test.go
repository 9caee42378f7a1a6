package metrics

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/internal/testutil"
)

func init() {
	// scrape SOCKET: GET /metrics over the unix socket, print the status
	// and the first line.
	testutil.RegisterHostile("metrics-scrape", func(args []string) error {
		status, body, err := scrape(unixClient(args[0]), "http://subvault/metrics")
		if err != nil {
			return err
		}
		first, _, _ := strings.Cut(body, "\n")
		fmt.Printf("%d %s\n", status, first)
		return nil
	})
}

func init() {
	// flood ADDR: 400 idle connections, 100 sending a header a byte a
	// second, 100 with 20 requests each whose replies are never read;
	// prints "flooding", then "idle dropped" once the server closed an
	// idle one, and holds the rest until it is killed.
	testutil.RegisterHostile("metrics-flood", func(args []string) error {
		var conns []net.Conn
		dial := func() (net.Conn, error) {
			c, err := net.Dial("tcp", args[0])
			if err == nil {
				conns = append(conns, c)
			}
			return c, err
		}
		for range 400 {
			if _, err := dial(); err != nil {
				return err
			}
		}
		for range 100 {
			c, err := dial()
			if err != nil {
				return err
			}
			go func() {
				for _, b := range []byte("GET /metrics HTTP/1.1\r\nHost: x\r\n") {
					time.Sleep(time.Second)
					if _, err := c.Write([]byte{b}); err != nil {
						return
					}
				}
			}()
		}
		for range 100 {
			c, err := dial()
			if err != nil {
				return err
			}
			fmt.Fprint(c, strings.Repeat("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 20))
		}
		fmt.Println("flooding")
		start := time.Now()
		_ = conns[0].SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := bufio.NewReader(conns[0]).ReadByte(); err != nil && !strings.Contains(err.Error(), "timeout") {
			fmt.Printf("idle dropped after %v\n", time.Since(start).Round(100*time.Millisecond))
		} else {
			fmt.Printf("idle not dropped: %v\n", err)
		}
		time.Sleep(time.Hour) // holds the connections until killed
		return nil
	})
}

func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

func scrape(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func testService(t *testing.T) *Service {
	t.Helper()
	return NewService(fixedSnapshot, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// TestListenerTCP: GET /metrics on a loopback port serves the daemon's
// metrics and the Go runtime's and the process's, which promtool check
// metrics accepts; / is a tiny page, anything else 404, and another
// method 405.
func TestListenerTCP(t *testing.T) {
	t.Parallel()
	s := testService(t)
	l, err := Listen("127.0.0.1:0", s.served, s.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	base := "http://" + l.Addr().String()
	c := &http.Client{Timeout: 10 * time.Second}
	status, body, err := scrape(c, base+"/metrics")
	if err != nil || status != 200 {
		t.Fatalf("GET /metrics: %d %v", status, err)
	}
	for _, want := range []string{`subvault_last_backup_success{plan="home"} 0`, "go_goroutines ", "process_start_time_seconds "} {
		if !strings.Contains(body, want) {
			t.Errorf("the scrape lacks %q", want)
		}
	}
	promtoolCheck(t, []byte(body))
	if status, body, _ := scrape(c, base+"/"); status != 200 || !strings.Contains(body, `href="metrics"`) {
		t.Errorf("GET /: %d %q", status, body)
	}
	if status, _, _ := scrape(c, base+"/debug/pprof/"); status != 404 {
		t.Errorf("GET /debug/pprof/: %d, want 404", status)
	}
	resp, err := c.Post(base+"/metrics", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("POST /metrics: %d, want 405", resp.StatusCode)
	}
	if _, err := Listen("0.0.0.0:0", s.served, s.log); err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("Listen(0.0.0.0:0) = %v, want refused", err)
	}
}

// TestHostileListenerFlood: while uid 65534 holds hundreds of
// connections open without a request, sends a request's header a byte a
// second on a hundred more, and sends requests on a hundred others whose
// replies it never reads, every scrape of another client is answered in
// whole, long before those clients' own timeouts; the idle ones are
// dropped after the header timeout.
func TestHostileListenerFlood(t *testing.T) {
	s := testService(t)
	l, err := Listen("127.0.0.1:0", s.served, s.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	addr := l.Addr().String()
	h := testutil.StartHostile(t, "metrics-flood", addr)
	waitOutput(t, h, "flooding")
	// Each scrape must be answered well before the slow clients' own
	// timeouts (5 s for a header, 15 s for a reply): none waits for them.
	c := &http.Client{Timeout: 4 * time.Second}
	start := time.Now()
	var slowest time.Duration
	for i := range 30 {
		t0 := time.Now()
		status, body, err := scrape(c, "http://"+addr+"/metrics")
		if err != nil || status != 200 || !strings.Contains(body, "subvault_start_time_seconds 1.7961192e+09\n") {
			t.Errorf("scrape %d during the flood: %d %v (%d bytes)", i, status, err, len(body))
		}
		slowest = max(slowest, time.Since(t0))
	}
	t.Logf("30 scrapes during a flood of 600 connections by uid 65534: %v in all, the slowest %v", time.Since(start), slowest)
	// The idle ones are dropped after readHeaderTimeout.
	waitOutput(t, h, "idle dropped")
	t.Logf("uid 65534: %s", strings.TrimSpace(h.Output.String()))
}

// waitOutput waits up to 30 s for the hostile process to print want.
func waitOutput(t *testing.T, h *testutil.Hostile, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(h.Output.String(), want) {
		select {
		case <-h.Done():
			t.Fatalf("the hostile process ended without %q: %s", want, h.Output.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hostile process did not print %q: %s", want, h.Output.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// socketDir is a directory of root's, mode mode, that uid 65534 can reach.
func socketDir(t *testing.T, mode uint32, uid int) string {
	t.Helper()
	testutil.RequireRoot(t)
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(base, "run")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, uid); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestListenerUnix: the socket is made in root's directory, mode 0666, so
// that uid 65534 (a Prometheus agent) may scrape; a socket left by a dead
// daemon is replaced; Close removes it.
func TestListenerUnix(t *testing.T) {
	dir := socketDir(t, 0o755, 0)
	path := filepath.Join(dir, "metrics.sock")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	s := testService(t)
	l, err := Listen("unix:"+path, s.served, s.log)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != SocketMode {
		t.Fatalf("the socket: %v %v", fi, err)
	}
	out, err := testutil.RunHostile(t, 20*time.Second, "metrics-scrape", path)
	if err != nil || !strings.HasPrefix(out, "200 # HELP ") {
		t.Errorf("uid 65534's scrape: %v: %s", err, out)
	}
	status, body, err := scrape(unixClient(path), "http://subvault/metrics")
	if err != nil || status != 200 {
		t.Fatalf("scrape: %d %v", status, err)
	}
	promtoolCheck(t, []byte(body))
	l.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("the socket is still there after Close: %v", err)
	}
}

// TestHostileListenerUnix: the socket path's games are refused, and
// nothing that is not a socket is removed or followed: a directory
// another user owns, or others may write; a regular file or a link at the
// socket's path.
func TestHostileListenerUnix(t *testing.T) {
	s := testService(t)
	t.Run("another user's directory", func(t *testing.T) {
		dir := socketDir(t, 0o755, testutil.NobodyUID)
		_, err := Listen("unix:"+filepath.Join(dir, "metrics.sock"), s.served, s.log)
		if err == nil || !strings.Contains(err.Error(), "is owned by uid 65534") {
			t.Errorf("Listen = %v", err)
		}
	})
	t.Run("a directory all may write", func(t *testing.T) {
		dir := socketDir(t, 0o1777, 0)
		_, err := Listen("unix:"+filepath.Join(dir, "metrics.sock"), s.served, s.log)
		if err == nil || !strings.Contains(err.Error(), "mode 1777: others could swap the socket") {
			t.Errorf("Listen = %v", err)
		}
	})
	t.Run("a socket another process serves on", func(t *testing.T) {
		dir := socketDir(t, 0o755, 0)
		path := filepath.Join(dir, "metrics.sock")
		live, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer live.Close()
		_, err = Listen("unix:"+path, s.served, s.log)
		if err == nil || !strings.Contains(err.Error(), "another process listens on it") {
			t.Errorf("Listen = %v", err)
		}
		if c, err := net.Dial("unix", path); err != nil {
			t.Errorf("the other process's socket was taken away: %v", err)
		} else {
			c.Close()
		}
	})
	t.Run("a file at the path", func(t *testing.T) {
		dir := socketDir(t, 0o755, 0)
		path := filepath.Join(dir, "metrics.sock")
		testutil.WriteFile(t, path, "keep me")
		_, err := Listen("unix:"+path, s.served, s.log)
		if err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
			t.Errorf("Listen = %v", err)
		}
		if data, _ := os.ReadFile(path); string(data) != "keep me" {
			t.Errorf("the file was changed: %q", data)
		}
	})
	t.Run("a link at the path", func(t *testing.T) {
		dir := socketDir(t, 0o755, 0)
		path := filepath.Join(dir, "metrics.sock")
		elsewhere := socketDir(t, 0o777, testutil.NobodyUID)
		if err := os.Symlink(filepath.Join(elsewhere, "sock"), path); err != nil {
			t.Fatal(err)
		}
		_, err := Listen("unix:"+path, s.served, s.log)
		if err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
			t.Errorf("Listen = %v", err)
		}
		if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
			t.Errorf("made something through the link: %v", entries)
		}
	})
}

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
	"sync"
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

// TestListenerFlood: while hundreds of clients hold connections open
// without a request, send a request's header a byte at a time, or send a
// request and never read the reply, every scrape of another client is
// answered in whole, at once; the slow ones are dropped within the
// listener's timeouts, and the connections are all closed at the end.
func TestListenerFlood(t *testing.T) {
	t.Parallel()
	s := testService(t)
	l, err := Listen("127.0.0.1:0", s.served, s.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	addr := l.Addr().String()
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Errorf("dial: %v", err)
			return nil
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		return c
	}
	// Idle: connected, silent.
	for range 400 {
		dial()
	}
	// Slow: a header byte a second.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 100 {
		c := dial()
		if c == nil {
			break
		}
		wg.Go(func() {
			for _, b := range []byte("GET /metrics HTTP/1.1\r\nHost: x\r\n") {
				select {
				case <-stop:
					return
				case <-time.After(time.Second):
				}
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
			}
		})
	}
	// Requests whose replies nobody reads, many times over.
	for range 100 {
		c := dial()
		if c == nil {
			break
		}
		fmt.Fprint(c, strings.Repeat("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 20))
	}
	c := &http.Client{Timeout: 5 * time.Second}
	start := time.Now()
	var slowest time.Duration
	for i := range 30 {
		t0 := time.Now()
		status, body, err := scrape(c, "http://"+addr+"/metrics")
		if err != nil || status != 200 || !strings.HasSuffix(body, "subvault_start_time_seconds 1.7961192e+09\n") && !strings.Contains(body, "subvault_start_time_seconds 1.7961192e+09\n") {
			t.Errorf("scrape %d during the flood: %d %v (%d bytes)", i, status, err, len(body))
		}
		slowest = max(slowest, time.Since(t0))
	}
	t.Logf("30 scrapes during a flood of 600 connections: %v in all, the slowest %v", time.Since(start), slowest)
	if slowest > 3*time.Second {
		t.Errorf("a scrape took %v during the flood", slowest)
	}
	// The idle ones are dropped after readHeaderTimeout.
	mu.Lock()
	idle := conns[0]
	mu.Unlock()
	_ = idle.SetReadDeadline(time.Now().Add(readHeaderTimeout + 5*time.Second))
	if _, err := bufio.NewReader(idle).ReadByte(); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Errorf("an idle connection was not dropped within %v: %v", readHeaderTimeout, err)
	}
	close(stop)
	wg.Wait()
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

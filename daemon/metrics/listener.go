package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"

	"github.com/subvault/subvault/daemon/safefs"
)

// The listener's bounds: a client that sends no request, or reads no
// reply, is dropped within seconds, and only a few scrapes gather at once
// (the others wait for a few seconds at most).
const (
	readHeaderTimeout   = 5 * time.Second
	readTimeout         = 10 * time.Second
	writeTimeout        = 15 * time.Second
	idleTimeout         = 60 * time.Second
	maxHeaderBytes      = 8 << 10
	maxRequestsInFlight = 4
	// maxConnections bounds the connections open at once, so that a
	// flood of them cannot take the daemon's descriptors: one more is
	// closed as soon as it is accepted.
	maxConnections = 1024
)

// SocketMode is the mode of a unix socket the listener makes: anyone who
// can reach it may scrape; who can reach it is the directory's mode
// (docs/monitoring.md).
const SocketMode = 0o666

// Listener serves GET /metrics on one address until it is closed.
type Listener struct {
	addr   string
	server *http.Server
	ln     net.Listener
	done   chan struct{}
	// dir and name are a unix socket's directory (open) and name, to
	// remove it on close.
	dir  *os.File
	name string
	ino  uint64
}

// Listen serves what g gathers at addr (settings.metrics.listen: a
// loopback HOST:PORT, localhost meaning 127.0.0.1, or unix:/path), in a
// goroutine of its own, until Close.
func Listen(addr string, g prometheus.Gatherer, log *slog.Logger) (*Listener, error) {
	l := &Listener{addr: addr, done: make(chan struct{})}
	var err error
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		err = l.listenUnix(path)
	} else {
		err = l.listenTCP(addr)
	}
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	// promhttp's own MaxRequestsInFlight holds its slot while the reply
	// is written, so that four clients that do not read their replies
	// would have every other scrape refused until the write timeout: the
	// gathers are bounded instead, and a reply is written to each client
	// on its own connection's time.
	mux.Handle("GET /metrics", promhttp.HandlerFor(&boundedGatherer{g: g, slots: make(chan struct{}, maxRequestsInFlight)}, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelError),
		ErrorHandling: promhttp.HTTPErrorOnError,
	}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<html><head><title>subvault</title></head><body><a href=\"metrics\">metrics</a></body></html>\n")
	})
	l.server = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(l.done)
		if err := l.server.Serve(&limitListener{Listener: l.ln, slots: make(chan struct{}, maxConnections)}); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("the metrics listener stopped", "listen", addr, "err", err)
		}
	}()
	return l, nil
}

// Addr is the address it listens on (a TCP port chosen by the system is
// known here).
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

func (l *Listener) listenTCP(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("metrics listener %s: %w", addr, err)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("metrics listener %s: %s is not a loopback address", addr, host)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return fmt.Errorf("cannot listen for metrics scrapes on %s: %w (is another program on that port? choose another in settings.metrics.listen)", addr, err)
	}
	l.ln = ln
	return nil
}

// listenUnix makes the socket at path, in a directory root owns and
// nobody else may write (so that nobody can swap it or what is in it), a
// stale socket there removed first (never anything else), mode
// SocketMode.
func (l *Listener) listenUnix(path string) error {
	dirPath, name := filepath.Dir(path), filepath.Base(path)
	dir, err := safefs.OpenTrustedDir(dirPath)
	if err != nil {
		return fmt.Errorf("cannot make the metrics socket %s: %w", path, err)
	}
	fail := func(err error) error {
		dir.Close() //nolint:errcheck,gosec // failed already
		return fmt.Errorf("cannot make the metrics socket %s: %w", path, err)
	}
	st, err := safefs.Stat(dir)
	if err != nil {
		return fail(err)
	}
	if st.Uid != 0 && st.Uid != uint32(os.Geteuid()) || st.Mode&0o022 != 0 {
		return fail(fmt.Errorf("its directory %s is owned by uid %d, mode %04o: others could swap the socket; use a directory only root can write, such as /run/subvault", dirPath, st.Uid, st.Mode&0o7777))
	}
	dfd := int(dir.Fd())
	var old unix.Stat_t
	switch err := unix.Fstatat(dfd, name, &old, unix.AT_SYMLINK_NOFOLLOW); {
	case errors.Is(err, unix.ENOENT):
	case err != nil:
		return fail(err)
	case old.Mode&unix.S_IFMT == unix.S_IFSOCK:
		// A socket left by a daemon that died: bind would fail on it.
		if err := unix.Unlinkat(dfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fail(err)
		}
	default:
		return fail(fmt.Errorf("%s exists and is not a socket; remove it or choose another path", path))
	}
	// Bound through the directory's descriptor: the socket is made in
	// the directory checked above, whatever its path leads to now.
	via := fmt.Sprintf("/proc/self/fd/%d/%s", dfd, name)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: via, Net: "unix"})
	if err != nil {
		return fail(err)
	}
	ln.SetUnlinkOnClose(false) // through the descriptor, in Close
	var made unix.Stat_t
	if err := unix.Fstatat(dfd, name, &made, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		ln.Close() //nolint:errcheck,gosec // failed already
		return fail(err)
	}
	if err := unix.Fchmodat(dfd, name, SocketMode, 0); err != nil {
		ln.Close() //nolint:errcheck,gosec // failed already
		_ = unix.Unlinkat(dfd, name, 0)
		return fail(err)
	}
	l.ln, l.dir, l.name, l.ino = ln, dir, name, made.Ino
	return nil
}

// Close stops serving: the listener is closed, the scrapes under way get
// a second to end, and a unix socket it made is removed.
func (l *Listener) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := l.server.Shutdown(ctx); err != nil {
		_ = l.server.Close()
	}
	<-l.done
	if l.dir != nil {
		var st unix.Stat_t
		dfd := int(l.dir.Fd())
		if unix.Fstatat(dfd, l.name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK && st.Ino == l.ino {
			_ = unix.Unlinkat(dfd, l.name, 0)
		}
		l.dir.Close() //nolint:errcheck,gosec // a directory
	}
}

// boundedGatherer lets maxRequestsInFlight scrapes gather at once; one
// more waits for a slot for gatherWait at most, then fails (500).
type boundedGatherer struct {
	g     prometheus.Gatherer
	slots chan struct{}
}

const gatherWait = 5 * time.Second

func (b *boundedGatherer) Gather() ([]*dto.MetricFamily, error) {
	t := time.NewTimer(gatherWait)
	defer t.Stop()
	select {
	case b.slots <- struct{}{}:
	case <-t.C:
		return nil, errors.New("too many scrapes at once")
	}
	defer func() { <-b.slots }()
	return b.g.Gather()
}

// limitListener closes a connection accepted while slots are all taken,
// at once: the others go on, and the daemon keeps its descriptors.
type limitListener struct {
	net.Listener
	slots chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &limitConn{Conn: c, slots: l.slots}, nil
		default:
			c.Close() //nolint:errcheck,gosec // refused
		}
	}
}

type limitConn struct {
	net.Conn
	slots chan struct{}
	once  sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.slots })
	return err
}

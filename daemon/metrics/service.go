package metrics

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// When the textfile is written: at most once a Debounce after a change
// (a running job's progress changes it ten times a second), and every
// Refresh whatever happens, so that the next run and overdue stay true and
// the file's age shows that the daemon is alive.
const (
	Debounce = time.Second
	Refresh  = time.Minute
)

// Service publishes the metrics where the configuration says: the
// textfile and the HTTP listener. The textfile holds the daemon's metrics
// only (node_exporter refuses a file with go_* or process_* metrics of its
// own); the listener adds the Go runtime's and the process's.
type Service struct {
	log      *slog.Logger
	textfile *prometheus.Registry
	served   *prometheus.Registry
	dirty    chan struct{}

	mu       sync.Mutex
	dir      string // settings.metrics.textfile in force
	listen   string // settings.metrics.listen in force
	listener *Listener
	// lastErr is the textfile's last error, logged once until it changes
	// or a write succeeds.
	lastErr string
	// written is told of every write of the textfile (tests).
	written func(error)
}

// NewService publishes what snapshot returns once Configure says where.
func NewService(snapshot func() Snapshot, log *slog.Logger) *Service {
	c := NewCollector(snapshot)
	textfile := prometheus.NewPedanticRegistry()
	textfile.MustRegister(c)
	served := prometheus.NewRegistry()
	served.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Service{log: log, textfile: textfile, served: served, dirty: make(chan struct{}, 1)}
}

// TextfileGatherer gathers what the textfile holds.
func (s *Service) TextfileGatherer() prometheus.Gatherer { return s.textfile }

// Configure puts settings.metrics in force: the textfile directory (its
// leftover temporary files removed, the file written at once) and the
// listener (stopped, and started on the new address, when it changed).
// A listener that cannot start is logged and returned; the daemon goes
// on without it.
func (s *Service) Configure(dir, listen string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if dir != s.dir {
		s.dir, s.lastErr = dir, ""
		if dir != "" {
			if err := RemoveTemporary(dir); err != nil {
				s.log.Warn("cannot remove the metrics' leftover temporary files", "textfile", dir, "err", err)
			}
		}
	}
	s.Changed()
	if listen == s.listen && (listen == "") == (s.listener == nil) {
		return nil
	}
	if s.listener != nil {
		s.listener.Close()
		s.listener = nil
		s.log.Info("metrics listener stopped", "listen", s.listen)
	}
	s.listen = listen
	if listen == "" {
		return nil
	}
	l, err := Listen(listen, s.served, s.log)
	if err != nil {
		s.log.Error("metrics are not served: fix settings.metrics.listen and reload", "listen", listen, "err", err)
		return err
	}
	s.listener = l
	s.log.Info("metrics served", "listen", listen, "url", "/metrics")
	return nil
}

// Changed asks for the textfile to be written again (debounced); it never
// blocks, so a queue listener may call it.
func (s *Service) Changed() {
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

// Run writes the textfile after changes and every Refresh until ctx is
// done, then stops the listener. The file stays: its age tells that the
// daemon stopped.
func (s *Service) Run(ctx context.Context) {
	refresh := time.NewTicker(Refresh)
	defer refresh.Stop()
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			if s.listener != nil {
				s.listener.Close()
				s.listener, s.listen = nil, ""
			}
			s.mu.Unlock()
			return
		case <-s.dirty:
			if debounce == nil {
				debounce = time.After(Debounce)
			}
		case <-debounce:
			debounce = nil
			s.write()
		case <-refresh.C:
			s.write()
		}
	}
}

// Write writes the textfile now (the daemon's last write, as it stops).
func (s *Service) Write() { s.write() }

// write writes the textfile, when one is configured; a failure is logged
// once until it changes.
func (s *Service) write() {
	s.mu.Lock()
	dir, written := s.dir, s.written
	s.mu.Unlock()
	if dir == "" {
		return
	}
	err := WriteTextfile(dir, s.textfile)
	s.mu.Lock()
	switch {
	case err == nil && s.lastErr != "":
		s.log.Info("metrics textfile written again", "textfile", dir)
		s.lastErr = ""
	case err != nil && err.Error() != s.lastErr:
		s.log.Error("cannot write the metrics textfile; tried again at every change and every minute", "textfile", dir, "err", err)
		s.lastErr = err.Error()
	}
	s.mu.Unlock()
	if written != nil {
		written(err)
	}
}

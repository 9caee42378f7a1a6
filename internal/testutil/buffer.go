package testutil

import (
	"bytes"
	"sync"
)

// SyncBuffer collects output written from several goroutines or processes'
// pipes (a logger, a child's stdout and stderr) and reads it back safely.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

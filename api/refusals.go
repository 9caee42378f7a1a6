package api

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/subvault/subvault/daemon/journal"
)

// The refusals of one caller that are logged in a row; the rest of the
// interval is only counted, and the count logged when it ends.
const (
	RefusalsLogged   = 5
	RefusalsInterval = time.Minute
)

// refusalLog logs refused calls, each caller's first few in an interval
// and then only their number: a user flooding the daemon with calls it
// refuses would otherwise flood the journal, whose rate limit then drops
// the messages that matter. Callers are told apart by uid (a user may open
// any number of connections); one the bus could not identify counts as uid
// -1.
type refusalLog struct {
	log      *slog.Logger
	burst    int
	interval time.Duration

	mu     sync.Mutex
	counts map[int64]*refusalCount
	timer  *time.Timer // runs while counts holds anything
}

type refusalCount struct{ logged, suppressed int }

func newRefusalLog(log *slog.Logger) *refusalLog {
	return &refusalLog{log: log, burst: RefusalsLogged, interval: RefusalsInterval, counts: map[int64]*refusalCount{}}
}

// add logs one refusal of uid at level, with the caller's source position
// (attrs name the event), unless uid has had its share of the interval;
// then it is counted.
func (r *refusalLog) add(level slog.Level, uid int64, msg string, attrs ...any) {
	r.mu.Lock()
	c := r.counts[uid]
	if c == nil {
		c = &refusalCount{}
		r.counts[uid] = c
	}
	if r.timer == nil {
		r.timer = time.AfterFunc(r.interval, r.flush)
	}
	suppress := c.logged >= r.burst
	if suppress {
		c.suppressed++
	} else {
		c.logged++
	}
	r.mu.Unlock()
	if suppress || !r.log.Enabled(context.Background(), level) {
		return
	}
	var pcs [1]uintptr
	runtime.Callers(2, pcs[:]) // the caller of add
	rec := slog.NewRecord(time.Now(), level, msg, pcs[0])
	rec.Add(attrs...)
	_ = r.log.Handler().Handle(context.Background(), rec)
}

// flush logs how many refusals of each caller were left out, and begins a
// new interval.
func (r *refusalLog) flush() {
	r.mu.Lock()
	counts := r.counts
	r.counts = map[int64]*refusalCount{}
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	r.mu.Unlock()
	for uid, c := range counts {
		if c.suppressed == 0 {
			continue
		}
		who := fmt.Sprintf("uid %d", uid)
		if uid < 0 {
			who = "callers the bus did not identify"
		}
		r.log.Warn(fmt.Sprintf("%d more refusals of %s in the last %s", c.suppressed, who, intervalWords(r.interval)),
			journal.Event(journal.EventRefusalsSuppressed), "uid", uid, "count", c.suppressed, "logged", c.logged)
	}
}

func intervalWords(d time.Duration) string {
	if d == time.Minute {
		return "minute"
	}
	return d.String()
}

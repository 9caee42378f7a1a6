package daemon

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/subvault/subvault/restic"
)

func caller(uid uint32) context.Context { return WithCaller(context.Background(), uid) }

// Two slots per caller, four in all for users and root's aside; a call
// beyond them is refused after the wait, saying whose bound it met.
func TestReadLimiterRefuses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newReadLimiter(2, 4, 2, 10*time.Millisecond)
		take := func(uid uint32) {
			t.Helper()
			if _, _, err := l.acquire(caller(uid)); err != nil {
				t.Fatalf("uid %d: %v", uid, err)
			}
		}
		take(1000)
		take(1000)
		if _, _, err := l.acquire(caller(1000)); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "uid 1000 already has 2") {
			t.Errorf("a third call of one caller: %v", err)
		}
		take(1001)
		take(1001)
		if _, _, err := l.acquire(caller(1002)); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "4 calls") {
			t.Errorf("a fifth call in all: %v", err)
		}
		// Root is not kept out by the users' calls, and has its own bound.
		take(0)
		take(0)
		if _, _, err := l.acquire(caller(0)); !errors.Is(err, ErrBusy) {
			t.Errorf("root's third call: %v", err)
		}
	})
}

// A waiting call gets the slot a release frees; a call that holds a slot
// takes no second one; a caller's queue is bounded, and a waiting call
// whose caller left gives up.
func TestReadLimiterWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newReadLimiter(2, 4, 2, time.Hour)
		_, a1, err := l.acquire(caller(1000))
		if err != nil {
			t.Fatal(err)
		}
		ctx, a2, err := l.acquire(caller(1000))
		if err != nil {
			t.Fatal(err)
		}
		inner, innerRelease, err := l.acquire(ctx)
		if err != nil || inner != ctx {
			t.Errorf("a nested call: %v", err)
		}
		innerRelease()

		got := make(chan error)
		go func() {
			_, release, err := l.acquire(caller(1000))
			if err == nil {
				release()
			}
			got <- err
		}()
		waitWaiting(t, l, 1000, 1)
		a1()
		a1() // a second release is harmless
		if err := <-got; err != nil {
			t.Errorf("a waiting call after a release: %v", err)
		}

		_, a1, err = l.acquire(caller(1000))
		if err != nil {
			t.Fatal(err)
		}
		leaving, leave := context.WithCancel(caller(1000))
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, _, err := l.acquire(leaving); !errors.Is(err, context.Canceled) {
					t.Errorf("a waiting call whose caller left: %v", err)
				}
			}()
		}
		waitWaiting(t, l, 1000, 2)
		if _, _, err := l.acquire(caller(1000)); !errors.Is(err, ErrBusy) {
			t.Errorf("a call beyond the queue: %v", err)
		}
		leave()
		wg.Wait()
		a1()
		a2()
		l.mu.Lock()
		defer l.mu.Unlock()
		if len(l.waiting) != 0 || len(l.running) != 0 || l.total != 0 {
			t.Errorf("left behind: waiting %v, running %v, total %d", l.waiting, l.running, l.total)
		}
	})
}

// waitWaiting checks, once every goroutine of the bubble waits, that uid
// has n calls waiting for a slot.
func waitWaiting(t *testing.T, l *readLimiter, uid int64, n int) {
	t.Helper()
	synctest.Wait()
	l.mu.Lock()
	w := l.waiting[uid]
	l.mu.Unlock()
	if w != n {
		t.Fatalf("uid %d has %d calls waiting, want %d", uid, w, n)
	}
}

// Callers that miss the cache together share one fetch; the list is then
// served until it is invalidated or too old; a fetch that an invalidation
// overtook is not kept; when the caller that fetches leaves, a waiting one
// fetches instead.
func TestArchiveCache(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newArchiveCache(time.Minute)
		now := time.Unix(1000, 0)
		c.now = func() time.Time { return now }
		var fetches atomic.Int32
		release := make(chan struct{})
		fetch := func(ctx context.Context) ([]restic.Archive, error) {
			n := fetches.Add(1)
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return []restic.Archive{{ID: strconv.Itoa(int(n))}}, nil
		}
		var wg sync.WaitGroup
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				list, err := c.get(context.Background(), "r", fetch)
				if err != nil || len(list) != 1 || list[0].ID != "1" {
					t.Errorf("a caller among 20: %v %v", list, err)
				}
			}()
		}
		synctest.Wait() // one fetches, the others wait for it
		if n := fetches.Load(); n != 1 {
			t.Fatalf("20 callers at once: %d fetches under way, want 1", n)
		}
		close(release)
		wg.Wait()
		for range 1000 {
			if _, err := c.get(context.Background(), "r", fetch); err != nil {
				t.Fatal(err)
			}
		}
		if n := fetches.Load(); n != 1 {
			t.Errorf("20 callers at once, then 1000 in a row: %d fetches, want 1", n)
		}
		c.invalidate("other")
		if c.get(context.Background(), "r", fetch); fetches.Load() != 1 {
			t.Error("another repository's invalidation dropped this one's list")
		}
		c.invalidate("r")
		if list, _ := c.get(context.Background(), "r", fetch); fetches.Load() != 2 || list[0].ID != "2" {
			t.Errorf("after an invalidation: %v, %d fetches", list, fetches.Load())
		}
		now = now.Add(time.Minute)
		if c.get(context.Background(), "r", fetch); fetches.Load() != 3 {
			t.Error("a list a minute old was served")
		}

		// An invalidation during a fetch: its list is returned, not kept.
		overtaken := func(ctx context.Context) ([]restic.Archive, error) {
			c.invalidate("")
			return fetch(ctx)
		}
		c.invalidate("r")
		c.get(context.Background(), "r", overtaken)
		if c.get(context.Background(), "r", fetch); fetches.Load() != 5 {
			t.Errorf("a list fetched across an invalidation was kept: %d fetches", fetches.Load())
		}

		// The fetching caller leaves: a waiting one fetches for itself.
		c.invalidate("r")
		block := make(chan struct{})
		leaving, leave := context.WithCancel(context.Background())
		started := make(chan struct{})
		go func() {
			_, err := c.get(leaving, "r", func(ctx context.Context) ([]restic.Archive, error) {
				close(started)
				<-ctx.Done()
				return nil, ctx.Err()
			})
			if !errors.Is(err, context.Canceled) {
				t.Errorf("the caller that left: %v", err)
			}
			close(block)
		}()
		<-started
		got := make(chan error)
		go func() {
			_, err := c.get(context.Background(), "r", fetch)
			got <- err
		}()
		leave()
		<-block
		if err := <-got; err != nil || fetches.Load() != 6 {
			t.Errorf("a caller waiting for one that left: %v, %d fetches", err, fetches.Load())
		}

		// A failure is every waiting caller's answer, not a fetch each.
		c.invalidate("r")
		failed := errors.New("repository unreachable")
		hold := make(chan struct{})
		var failures atomic.Int32
		errs := make(chan error, 5)
		for range 5 {
			go func() {
				_, err := c.get(context.Background(), "r", func(context.Context) ([]restic.Archive, error) {
					failures.Add(1)
					<-hold
					return nil, failed
				})
				errs <- err
			}()
		}
		synctest.Wait() // one fetches, the others wait for it
		close(hold)
		for range 5 {
			if err := <-errs; !errors.Is(err, failed) {
				t.Errorf("a caller of a failed fetch: %v", err)
			}
		}
		if n := failures.Load(); n != 1 {
			t.Errorf("5 callers of a failing repository ran %d fetches, want 1", n)
		}
	})
}

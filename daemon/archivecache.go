package daemon

import (
	"context"
	"sync"
	"time"

	"github.com/subvault/subvault/restic"
)

// archiveCacheTTL is how long a repository's archive list is served without
// asking restic again, when no job of the daemon's has ended on it: what
// changes it behind the daemon's back (another host's backups, restic run
// by hand, subvault run) shows within this time.
const archiveCacheTTL = time.Minute

// archiveCache holds each repository's archive list, every plan's archives
// in it, so that ListArchives and Diff run restic snapshots once however
// often they are called: once per repository until a job of the daemon's
// ends on it (a backup, a prune: anything that may change its archives),
// the configuration is reloaded, or the list is archiveCacheTTL old.
// Callers that miss it together share one restic run.
type archiveCache struct {
	ttl time.Duration
	now func() time.Time

	mu    sync.Mutex
	repos map[string]*repoArchives // by repository URL
}

type repoArchives struct {
	// gen counts invalidations: a list fetched across one is not kept.
	gen      uint64
	list     []restic.Archive
	fetched  time.Time
	valid    bool
	inflight *archiveFetch
}

// archiveFetch is one restic run that several callers wait for.
type archiveFetch struct {
	done chan struct{}
	list []restic.Archive
	err  error
	// canceled: the caller that ran it went away; the others try again.
	canceled bool
}

func newArchiveCache(ttl time.Duration) *archiveCache {
	return &archiveCache{ttl: ttl, now: time.Now, repos: map[string]*repoArchives{}}
}

// get returns the repository's archives: the cached list, another caller's
// run of fetch that is under way, or a run of fetch by this caller. The
// list is shared: callers must not change it.
func (c *archiveCache) get(ctx context.Context, repo string, fetch func(context.Context) ([]restic.Archive, error)) ([]restic.Archive, error) {
	for {
		c.mu.Lock()
		r := c.repos[repo]
		if r == nil {
			r = &repoArchives{}
			c.repos[repo] = r
		}
		if r.valid && c.now().Sub(r.fetched) < c.ttl {
			list := r.list
			c.mu.Unlock()
			return list, nil
		}
		if f := r.inflight; f != nil {
			c.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if !f.canceled {
				return f.list, f.err
			}
			continue
		}
		f := &archiveFetch{done: make(chan struct{})}
		r.inflight = f
		gen := r.gen
		c.mu.Unlock()

		f.list, f.err = fetch(ctx)
		f.canceled = f.err != nil && ctx.Err() != nil
		c.mu.Lock()
		r.inflight = nil
		if f.err == nil && r.gen == gen {
			r.list, r.fetched, r.valid = f.list, c.now(), true
		}
		c.mu.Unlock()
		close(f.done)
		return f.list, f.err
	}
}

// invalidate drops the repository's list; "" drops every repository's.
func (c *archiveCache) invalidate(repo string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for url, r := range c.repos {
		if repo == "" || url == repo {
			r.valid = false
			r.list = nil
			r.gen++
		}
	}
}

// known returns the repository's list when the cache holds one fetched
// since the last invalidation, however old; it never runs restic.
func (c *archiveCache) known(repo string) ([]restic.Archive, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.repos[repo]
	if r == nil || !r.valid {
		return nil, false
	}
	return r.list, true
}

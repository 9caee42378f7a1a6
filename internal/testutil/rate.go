package testutil

import "time"

// MaxInOneSecond is the most of the times ts (in order) that fall in any
// one-second window: what a "at most N a second" promise is checked with.
func MaxInOneSecond(ts []time.Time) int {
	best := 0
	for i := range ts {
		n := 0
		for k := i; k < len(ts) && ts[k].Sub(ts[i]) < time.Second; k++ {
			n++
		}
		best = max(best, n)
	}
	return best
}

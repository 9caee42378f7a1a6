//go:build race

package api

// raceEnabled: the race detector slows everything down several times, so
// timing bounds do not hold.
const raceEnabled = true

//go:build race

package route

// The race detector makes sync.Pool drop items at random, so regexp (which
// pools its matchers) allocates now and then: allocation counts are only
// asserted without it.
func init() { raceEnabled = true }

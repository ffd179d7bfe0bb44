package route

import "github.com/sluicelb/sluice/pkg/config"

// suggest returns the candidate closest to s when it is close enough to be a
// likely typo, or "" (the same rule as the configuration parser's).
func suggest(s string, candidates []string) string { return config.Suggest(s, candidates) }

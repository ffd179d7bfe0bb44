package config

import "sort"

// suggest returns the candidate closest to word, or "" when none is close
// enough to be a plausible typo. Distance is the optimal string alignment
// distance (Levenshtein plus adjacent transpositions, so "defualt" is one edit
// from "default"); the allowed distance grows with the word's length.
func suggest(word string, candidates []string) string {
	if word == "" {
		return ""
	}
	limit := 1
	switch n := len(word); {
	case n >= 12:
		limit = 3
	case n >= 6:
		limit = 2
	}
	sorted := append([]string(nil), candidates...)
	sort.Strings(sorted)
	best, bestD := "", limit+1
	for _, c := range sorted {
		if c == word {
			continue
		}
		if d := osaDistance(word, c, bestD); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// didYouMean formats a suggestion suffix: "; did you mean 'x'?" or "".
func didYouMean(word string, candidates []string) string {
	if s := suggest(word, candidates); s != "" {
		return "; did you mean '" + s + "'?"
	}
	return ""
}

// osaDistance computes the optimal string alignment distance between a and b,
// giving up (returning max) once every path is at least max.
func osaDistance(a, b string, max int) int {
	if d := len(a) - len(b); d >= max || -d >= max {
		return max
	}
	if len(a) > 64 || len(b) > 64 {
		return max // keywords are short; do not spend time on long garbage
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			v := min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				v = min(v, prev2[j-2]+1)
			}
			cur[j] = v
			rowMin = min(rowMin, v)
		}
		if rowMin >= max {
			return max
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return min(prev[len(b)], max)
}

// suggestIn prefers a suggestion among the words valid where the typo was
// made, then among all the words of the kind (which will then be reported as
// misplaced, still a step closer).
func suggestIn(word string, here, all []string) string {
	if s := didYouMean(word, here); s != "" {
		return s
	}
	return didYouMean(word, all)
}

// Suggest returns the candidate closest to word when it is a plausible typo
// of it, or "": the one spelling-suggestion rule for every package that
// reports configuration errors.
func Suggest(word string, candidates []string) string { return suggest(word, candidates) }

// EditDistance is the optimal string alignment distance between a and b,
// capped at max.
func EditDistance(a, b string, max int) int { return osaDistance(a, b, max) }

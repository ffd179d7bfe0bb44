// Package procstat reads a Linux process tree's memory and file-descriptor use from /proc, and raises this
// process's RLIMIT_NOFILE. It is shared by the benchmark programs scripts/bench/idleconns and
// scripts/bench/queuebench. Every reading covers a PID and all its descendants, so a proxy made of a master and
// workers (nginx) is measured as a whole.
package procstat

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RaiseNoFile sets the RLIMIT_NOFILE soft limit to the hard limit and returns it.
func RaiseNoFile() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, err
		}
	}
	return rl.Cur, nil
}

// Reading is a settled memory reading of a process tree.
type Reading struct {
	RSS, Anon int64 // VmRSS and RssAnon, KiB
	Took      time.Duration
	Samples   int
	Stable    bool // the final window lay within the tolerance (rather than maxWait or the deadline ending it)
}

// Settle samples the RSS of pid and its descendants every 250ms until the last 8 samples (2s) lie within
// max(64 KiB, 0.2%), or until maxWait, or (unless deadline is zero) until less than 2s is left before deadline.
// It returns the median of the final window. An error reading the tree's root ends it.
func Settle(pid int, maxWait time.Duration, deadline time.Time) (Reading, error) {
	const window = 8
	start := time.Now()
	var rss, anon []int64
	for {
		r, a, err := RSS(pid)
		if err != nil {
			return Reading{}, fmt.Errorf("reading memory of pid %d: %w", pid, err)
		}
		rss, anon = append(rss, r), append(anon, a)
		if len(rss) >= window {
			w := rss[len(rss)-window:]
			lo, hi := w[0], w[0]
			for _, v := range w {
				lo, hi = min(lo, v), max(hi, v)
			}
			tol := max(int64(64), hi/500)
			elapsed := time.Since(start)
			if hi-lo <= tol || elapsed >= maxWait || (!deadline.IsZero() && time.Until(deadline) < 2*time.Second) {
				return Reading{
					RSS: median(w), Anon: median(anon[len(anon)-window:]),
					Took: elapsed, Samples: len(rss), Stable: hi-lo <= tol,
				}, nil
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func median(v []int64) int64 {
	s := append([]int64(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// RSS returns VmRSS and RssAnon (KiB) summed over pid and its descendants. Only a failure to read pid itself is
// an error; a descendant that has just exited is skipped.
func RSS(pid int) (rss, anon int64, err error) {
	pids := append([]int{pid}, Descendants(pid)...)
	for i, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			if i == 0 {
				return 0, 0, err
			}
			continue // a child that just exited
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			v, _ := strconv.ParseInt(f[1], 10, 64)
			switch f[0] {
			case "VmRSS:":
				rss += v
			case "RssAnon:":
				anon += v
			}
		}
	}
	return rss, anon, nil
}

// Descendants returns the PIDs of pid's children, their children and so on (from /proc/PID/task/*/children).
func Descendants(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
				out = append(out, Descendants(c)...)
			}
		}
	}
	return out
}

// CountFDs returns the number of open file descriptors of pid and its descendants.
func CountFDs(pid int) int {
	n := 0
	for _, p := range append([]int{pid}, Descendants(pid)...) {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
		if err == nil {
			n += len(ents)
		}
	}
	return n
}

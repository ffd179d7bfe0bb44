package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// raiseNoFile sets the RLIMIT_NOFILE soft limit to the hard limit and returns it.
func raiseNoFile() (uint64, error) {
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

type memReading struct {
	rss, anon int64 // KiB
	took      time.Duration
	samples   int
	stable    bool
}

// settle samples the RSS every 250ms until the last 8 samples (2s) lie within max(64 KiB, 0.2%), or until maxWait.
// It returns the median of the final window. (Same rule as scripts/bench/idleconns.)
func settle(pid int, maxWait time.Duration) memReading {
	const window = 8
	start := time.Now()
	var rss, anon []int64
	for {
		r, a, err := readRSS(pid)
		if err != nil {
			fatalf("reading memory of pid %d: %v", pid, err)
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
			if hi-lo <= tol || elapsed >= maxWait {
				return memReading{
					rss: median(w), anon: median(anon[len(anon)-window:]),
					took: elapsed, samples: len(rss), stable: hi-lo <= tol,
				}
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

// readRSS returns VmRSS and RssAnon (KiB) summed over pid and its descendants.
func readRSS(pid int) (rss, anon int64, err error) {
	pids := append([]int{pid}, descendants(pid)...)
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

func descendants(pid int) []int {
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
				out = append(out, descendants(c)...)
			}
		}
	}
	return out
}

func countFDs(pid int) int {
	n := 0
	for _, p := range append([]int{pid}, descendants(pid)...) {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
		if err == nil {
			n += len(ents)
		}
	}
	return n
}

func threads(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// proxySockets reads /proc/net/tcp and returns, for the established sockets whose local port is port (the
// proxy's accepted client connections), how many there are and how many still hold unread bytes (rx_queue > 0,
// i.e. a request the proxy has not read yet).
func proxySockets(port int) (established, unread int, err error) {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		fl := strings.Fields(sc.Text())
		if len(fl) < 5 || fl[3] != "01" || !strings.HasSuffix(fl[1], want) {
			continue
		}
		established++
		if _, rx, ok := strings.Cut(fl[4], ":"); ok && strings.Trim(rx, "0") != "" {
			unread++
		}
	}
	return established, unread, sc.Err()
}

// haproxyQueue asks HAProxy's stats socket for the current queue lengths (qcur) of every backend and server.
func haproxyQueue(path string) (string, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "show stat\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	var parts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 || strings.HasPrefix(line, "#") || f[1] == "FRONTEND" {
			continue
		}
		parts = append(parts, f[0]+"/"+f[1]+":"+f[2])
	}
	return strings.Join(parts, ","), nil
}

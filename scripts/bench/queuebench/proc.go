package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluicelb/sluice/scripts/bench/internal/procstat"
)

// settle waits for the proxy's RSS to settle (procstat.Settle, the same rule as scripts/bench/idleconns, with no
// deadline: the run has its own overall bound); it exits if the proxy cannot be read.
func settle(pid int, maxWait time.Duration) procstat.Reading {
	r, err := procstat.Settle(pid, maxWait, time.Time{})
	if err != nil {
		fatalf("%v", err)
	}
	return r
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

// proxyQueue scrapes a Prometheus exporter (HAProxy's and sluice's use the same names and labels, with the prefix
// haproxy_ or sluice_) and returns the current queue lengths as "be=N,be/s1=M" (backend queue, server queues).
func proxyQueue(url string) (string, error) {
	resp, err := ctlClient.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	var parts []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		name, rest, ok := strings.Cut(line, "{")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		var kind string
		switch {
		case strings.HasSuffix(name, "_backend_current_queue"):
			kind = "be"
		case strings.HasSuffix(name, "_server_current_queue"):
			kind = "srv"
		default:
			continue
		}
		labels, value, _ := strings.Cut(rest, "} ")
		id := labelValue(labels, "proxy")
		if kind == "srv" {
			id += "/" + labelValue(labels, "server")
		}
		parts = append(parts, id+"="+strings.TrimSpace(value))
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if len(parts) == 0 {
		return "", fmt.Errorf("%s: no *_current_queue metrics", url)
	}
	return strings.Join(parts, ","), nil
}

func labelValue(labels, key string) string {
	for _, kv := range strings.Split(labels, ",") {
		k, v, _ := strings.Cut(kv, "=")
		if strings.TrimSpace(k) == key {
			return strings.Trim(v, `"`)
		}
	}
	return "?"
}

// clkTck is USER_HZ, the unit of /proc/*/stat and /proc/stat times: 100 on every Linux architecture Go supports.
const clkTck = 100

// procTicks returns utime+stime (clock ticks) of pid and its descendants, all threads included.
func procTicks(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	var sum int64
	for _, p := range append([]int{pid}, procstat.Descendants(pid)...) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // f[0] is the state (field 3): utime/stime are fields 14/15 -> f[11], f[12]
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		sum += u + st
	}
	return sum
}

// hostTicks returns the busy time of all CPUs (user+nice+system+irq+softirq+steal) from /proc/stat.
func hostTicks() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var sum int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		sum += v
	}
	return sum
}

// selfCPU returns this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuWindow measures, over a stretch of wall time, the CPU used by the proxy, the backend, this client and
// everything else on the host (the noise), in % of one core.
type cpuWindow struct {
	proxyPid, backendPid int
	t0                   time.Time
	host, proxy, backend int64
	self                 time.Duration
}

func startCPU(proxyPid, backendPid int) *cpuWindow {
	return &cpuWindow{proxyPid: proxyPid, backendPid: backendPid, t0: time.Now(), host: hostTicks(),
		proxy: procTicks(proxyPid), backend: procTicks(backendPid), self: selfCPU()}
}

// stop returns proxy%, backend%, client%, other% (-1 for an unknown pid).
func (w *cpuWindow) stop() (proxy, backend, client, other float64) {
	wall := time.Since(w.t0).Seconds()
	pct := func(ticks int64) float64 { return float64(ticks) / clkTck / wall * 100 }
	host := pct(hostTicks() - w.host)
	proxy, backend = -1, -1
	known := 0.0
	if w.proxyPid > 0 {
		proxy = pct(procTicks(w.proxyPid) - w.proxy)
		known += proxy
	}
	if w.backendPid > 0 {
		backend = pct(procTicks(w.backendPid) - w.backend)
		known += backend
	}
	client = (selfCPU() - w.self).Seconds() / wall * 100
	other = max(0, host-known-client)
	return
}

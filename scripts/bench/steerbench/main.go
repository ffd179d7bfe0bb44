//go:build linux

// Command steerbench is the benchmark of scripts/bench/steer.sh: kernel
// steering (pkg/kernel Steerer) against a direct connection to the backend
// and against userspace proxies, on loopback, in one run.
//
//	steerbench [-sluice PATH] [-results DIR] [-rounds 3] [-dur 3s] [-conc 1] [-lat-n 20000] [-size 64]
//
// It runs (as root):
//   - two echo backends (B1, B2), in this process;
//   - "goproxy": a minimal userspace TCP proxy in this process (a goroutine
//     pair per connection, io.Copy with half-close);
//   - "sluice" (with -sluice): the sluice binary with a mode tcp config of
//     two listeners over B1+B2, FE (steered) and FP (proxied);
//   - a Steerer attached to a cgroup it creates, steering FE to B1/B2
//     (round robin). Without -sluice, FE is a listener of this process that
//     only counts what falls through (nothing should);
//   - a client process (this binary, -role client) started inside that
//     cgroup, which measures, target by target, rounds interleaved:
//     connection rate: for -dur, -conc loops of connect, 1-byte echo,
//     close (blocking system calls on locked threads; the setup time is
//     from socket() to the echo's return), and request/response latency:
//     one connection, -lat-n ping-pongs of -size bytes.
//
// Targets: direct (B1), steered (FE), sluice (FP), goproxy. The report is a
// table of medians over rounds, with ratios to direct; "other%" is the worst
// CPU share used by processes other than the benchmark's during a run (on a
// busy host the figures are noise). Last, direct and steered are measured
// paired, alternating operation by operation (one connection to each, or
// one ping-pong on each), so that drift and noise hit both alike: that
// steered/direct ratio is the one to quote.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluicelb/sluice/pkg/kernel"
	"golang.org/x/sys/unix"
)

func main() {
	role := flag.String("role", "run", "run | client (internal)")
	sluice := flag.String("sluice", "", "sluice binary (empty: no sluice row)")
	results := flag.String("results", "", "directory for sluice.cfg, sluice.log and raw.jsonl (default: a temp dir)")
	rounds := flag.Int("rounds", 3, "rounds (targets interleaved in each)")
	dur := flag.Duration("dur", 3*time.Second, "connection-rate run length")
	conc := flag.Int("conc", 1, "concurrent connect loops in the connection-rate run")
	latN := flag.Int("lat-n", 20000, "ping-pongs per latency run")
	size := flag.Int("size", 64, "ping-pong message size")
	targets := flag.String("targets", "direct,steered,sluice,goproxy", "targets, in run order")
	flag.Parse()
	if *role == "client" {
		runClient(os.Stdin, os.Stdout)
		return
	}
	if err := run(config{*sluice, *results, *rounds, *dur, *conc, *latN, *size, strings.Split(*targets, ",")}); err != nil {
		fmt.Fprintln(os.Stderr, "steerbench:", err)
		os.Exit(1)
	}
}

type config struct {
	sluice, results string
	rounds          int
	dur             time.Duration
	conc, latN      int
	size            int
	targets         []string
}

// result is one measurement, as the client prints it.
type result struct {
	Kind   string  `json:"kind"` // conn | lat
	Target string  `json:"target"`
	Round  int     `json:"round"`
	N      int     `json:"n"`
	Errors int     `json:"errors"`
	Rate   float64 `json:"rate"` // conn/s or round trips/s
	P50    float64 `json:"p50_us"`
	P99    float64 `json:"p99_us"`
	Mean   float64 `json:"mean_us"`
	Other  float64 `json:"other_pct"` // filled in by the runner
	Err    string  `json:"err,omitempty"`
	// Paired runs: the second target's figures, measured alternately
	// with the first's, operation by operation.
	B *result `json:"b,omitempty"`
}

func run(cfg config) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("needs root (eBPF, cgroups)")
	}
	if cfg.results == "" {
		if cfg.results, err = os.MkdirTemp("", "steerbench-"); err != nil {
			return err
		}
	}
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()

	b1, err := echoServer()
	if err != nil {
		return err
	}
	b2, err := echoServer()
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() { b1.Close(); b2.Close() })
	backends := []netip.AddrPort{addrOf(b1), addrOf(b2)}

	gp, err := goProxy(backends)
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() { gp.Close() })

	addrs := map[string]netip.AddrPort{"direct": backends[0], "goproxy": addrOf(gp)}
	var fe netip.AddrPort
	var sluicePID int
	if cfg.sluice != "" {
		var fp netip.AddrPort
		fe, fp, sluicePID, err = startSluice(cfg, backends, &cleanups)
		if err != nil {
			fmt.Fprintf(os.Stderr, "steerbench: sluice row skipped: %v\n", err)
		} else {
			addrs["sluice"] = fp
		}
	}
	if !fe.IsValid() {
		// A listener that only catches what falls through.
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		cleanups = append(cleanups, func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		fe = addrOf(ln)
	}
	addrs["steered"] = fe

	root, err := cgroupRoot()
	if err != nil {
		return err
	}
	cg := filepath.Join(root, fmt.Sprintf("sluice-steerbench-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		return fmt.Errorf("create cgroup: %w", err)
	}
	cleanups = append(cleanups, func() { removeCgroup(cg) })
	st, err := kernel.OpenSteerer(kernel.SteerOptions{Cgroup: cg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() { st.Close() })
	svc := kernel.SteerService{Frontend: fe, Algo: kernel.SteerRoundRobin}
	for _, b := range backends {
		svc.Servers = append(svc.Servers, kernel.SteerServer{Addr: b, Weight: 1, Usable: true})
	}
	if err := st.SetServices([]kernel.SteerService{svc}); err != nil {
		return err
	}

	cl, err := startClient(cg)
	if err != nil {
		return err
	}
	cleanups = append(cleanups, cl.stop)
	ours := []int{os.Getpid(), cl.cmd.Process.Pid}
	if sluicePID != 0 {
		ours = append(ours, sluicePID)
	}

	var targets []string
	for _, t := range cfg.targets {
		if _, ok := addrs[t]; ok {
			targets = append(targets, t)
		} else if t != "sluice" {
			return fmt.Errorf("unknown target %q", t)
		}
	}
	raw, err := os.Create(filepath.Join(cfg.results, "raw.jsonl"))
	if err != nil {
		return err
	}
	defer raw.Close()
	var all []result
	measure := func(cmd string) (result, error) {
		c0, o0 := cpuTicks(ours)
		t0 := time.Now()
		r, err := cl.do(cmd)
		c1, o1 := cpuTicks(ours)
		if secs := time.Since(t0).Seconds(); secs > 0 {
			r.Other = max(0, float64((c1-c0)-(o1-o0))/clkTck/secs*100)
		}
		if err != nil {
			return r, err
		}
		json.NewEncoder(raw).Encode(r)
		all = append(all, r)
		return r, nil
	}
	// Warm-up and a check that each path works.
	for _, t := range targets {
		if r, err := measure(fmt.Sprintf("lat %s %s 500 %d 0", t, addrs[t], cfg.size)); err != nil || r.Errors > 0 {
			return fmt.Errorf("%s does not work: %v %s", t, err, r.Err)
		}
	}
	for round := 1; round <= cfg.rounds; round++ {
		for _, t := range targets {
			if _, err := measure(fmt.Sprintf("conn %s %s %s %d %d", t, addrs[t], cfg.dur, cfg.conc, round)); err != nil {
				return err
			}
		}
	}
	for round := 1; round <= cfg.rounds; round++ {
		for _, t := range targets {
			if _, err := measure(fmt.Sprintf("lat %s %s %d %d %d", t, addrs[t], cfg.latN, cfg.size, round)); err != nil {
				return err
			}
		}
	}
	// Paired: direct and steered alternately, one operation each, so that
	// whatever else the host does hits both alike.
	var paired []result
	if slices.Contains(targets, "direct") && slices.Contains(targets, "steered") {
		for round := 1; round <= cfg.rounds; round++ {
			for _, kind := range []string{"pairconn", "pairlat"} {
				arg := cfg.dur.String()
				if kind == "pairlat" {
					arg = strconv.Itoa(cfg.latN)
				}
				r, err := measure(fmt.Sprintf("%s direct %s %s %s %d %d", kind, addrs["direct"], addrs["steered"], arg, cfg.size, round))
				if err != nil {
					return err
				}
				paired = append(paired, r)
			}
		}
	}
	stats := st.Stats()
	report(os.Stdout, cfg, targets, all, stats, fe)
	reportPaired(os.Stdout, cfg, paired)
	return nil
}

// reportPaired prints the medians of the paired runs.
func reportPaired(w io.Writer, cfg config, paired []result) {
	if len(paired) == 0 {
		return
	}
	fmt.Fprintf(w, "\npaired, direct and steered alternating operation by operation (%d rounds, median):\n", cfg.rounds)
	fmt.Fprintf(w, "%-22s %9s %9s %9s %9s %9s %9s %10s\n", "", "direct", "steered", "direct", "steered", "direct", "steered", "steered/")
	fmt.Fprintf(w, "%-22s %9s %9s %9s %9s %9s %9s %10s\n", "", "p50 µs", "p50 µs", "p99 µs", "p99 µs", "mean µs", "mean µs", "direct")
	for _, kind := range []string{"pairconn", "pairlat"} {
		var a50, b50, a99, b99, am, bm []float64
		for _, r := range paired {
			if r.Kind != kind || r.B == nil {
				continue
			}
			a50, b50 = append(a50, r.P50), append(b50, r.B.P50)
			a99, b99 = append(a99, r.P99), append(b99, r.B.P99)
			am, bm = append(am, r.Mean), append(bm, r.B.Mean)
		}
		name := "connect+echo+close"
		if kind == "pairlat" {
			name = fmt.Sprintf("ping-pong %d B", cfg.size)
		}
		fmt.Fprintf(w, "%-22s %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %10.3f\n", name,
			median(a50), median(b50), median(a99), median(b99), median(am), median(bm), ratio(median(bm), median(am)))
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// report prints the table of medians.
func report(w io.Writer, cfg config, targets []string, all []result, st kernel.SteerStats, fe netip.AddrPort) {
	med := func(kind, target string, f func(result) float64) (float64, []float64, float64, int) {
		var v []float64
		other, errs := 0.0, 0
		for _, r := range all {
			if r.Kind == kind && r.Target == target && r.Round > 0 {
				v = append(v, f(r))
				other = max(other, r.Other)
				errs += r.Errors
			}
		}
		if len(v) == 0 {
			return 0, nil, 0, 0
		}
		s := slices.Clone(v)
		slices.Sort(s)
		return s[len(s)/2], v, other, errs
	}
	fmt.Fprintf(w, "connection setup: %d loop(s) of connect + 1-byte echo + close, %s per round, %d rounds (median)\n", cfg.conc, cfg.dur, cfg.rounds)
	fmt.Fprintf(w, "%-8s %10s %8s %9s %9s  %-24s %7s %6s\n", "target", "conn/s", "xdirect", "p50 µs", "p99 µs", "rounds conn/s", "other%", "errors")
	dRate, _, _, _ := med("conn", "direct", func(r result) float64 { return r.Rate })
	for _, t := range targets {
		rate, rounds, other, errs := med("conn", t, func(r result) float64 { return r.Rate })
		p50, _, _, _ := med("conn", t, func(r result) float64 { return r.P50 })
		p99, _, _, _ := med("conn", t, func(r result) float64 { return r.P99 })
		fmt.Fprintf(w, "%-8s %10.0f %8.3f %9.1f %9.1f  %-24s %7.0f %6d\n", t, rate, ratio(rate, dRate), p50, p99, join(rounds, "%.0f"), other, errs)
	}
	fmt.Fprintf(w, "\nrequest/response: one connection, %d ping-pongs of %d bytes, %d rounds (median)\n", cfg.latN, cfg.size, cfg.rounds)
	fmt.Fprintf(w, "%-8s %10s %8s %9s %9s %9s  %-24s %7s\n", "target", "rt/s", "xdirect", "p50 µs", "p99 µs", "mean µs", "rounds p50 µs", "other%")
	dRT, _, _, _ := med("lat", "direct", func(r result) float64 { return r.Rate })
	for _, t := range targets {
		rt, _, other, _ := med("lat", t, func(r result) float64 { return r.Rate })
		p50, rounds, _, _ := med("lat", t, func(r result) float64 { return r.P50 })
		p99, _, _, _ := med("lat", t, func(r result) float64 { return r.P99 })
		mean, _, _, _ := med("lat", t, func(r result) float64 { return r.Mean })
		fmt.Fprintf(w, "%-8s %10.0f %8.3f %9.1f %9.1f %9.1f  %-24s %7.0f\n", t, rt, ratio(rt, dRT), p50, p99, mean, join(rounds, "%.1f"), other)
	}
	if s, ok := st.Service(fe); ok {
		fmt.Fprintf(w, "\nkernel: frontend %s steered %d, fell through %d\n", fe, s.Steered, s.FallThrough)
	}
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func join(v []float64, f string) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf(f, x)
	}
	return strings.Join(s, " ")
}

func addrOf(ln net.Listener) netip.AddrPort {
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// echoServer writes back every byte it reads.
func echoServer() (net.Listener, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 16<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln, nil
}

// goProxy is the simplest userspace TCP proxy: round robin over backends,
// two copying goroutines per connection, half-close passed on.
func goProxy(backends []netip.AddrPort) (net.Listener, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	var next atomic.Uint64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := backends[next.Add(1)%uint64(len(backends))]
				u, err := net.Dial("tcp4", b.String())
				if err != nil {
					return
				}
				defer u.Close()
				done := make(chan struct{}, 2)
				pipe := func(dst, src *net.TCPConn) {
					io.Copy(dst, src)
					dst.CloseWrite()
					done <- struct{}{}
				}
				go pipe(u.(*net.TCPConn), c.(*net.TCPConn))
				go pipe(c.(*net.TCPConn), u.(*net.TCPConn))
				<-done
				<-done
			}()
		}
	}()
	return ln, nil
}

// startSluice runs the sluice binary with two mode tcp listeners over the
// backends: fe (to be steered) and fp (proxied).
func startSluice(cfg config, backends []netip.AddrPort, cleanups *[]func()) (fe, fp netip.AddrPort, pid int, err error) {
	ports, err := freePorts(2)
	if err != nil {
		return fe, fp, 0, err
	}
	fe = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ports[0])
	fp = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ports[1])
	var b strings.Builder
	b.WriteString("defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n")
	for _, l := range []struct {
		name string
		addr netip.AddrPort
	}{{"steered", fe}, {"proxied", fp}} {
		fmt.Fprintf(&b, "\nlisten %s\n    bind %s\n    balance roundrobin\n", l.name, l.addr)
		for i, s := range backends {
			fmt.Fprintf(&b, "    server s%d %s\n", i+1, s)
		}
	}
	conf := filepath.Join(cfg.results, "sluice.cfg")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return fe, fp, 0, err
	}
	logf, err := os.Create(filepath.Join(cfg.results, "sluice.log"))
	if err != nil {
		return fe, fp, 0, err
	}
	cmd := exec.Command(cfg.sluice, "-f", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fe, fp, 0, err
	}
	*cleanups = append(*cleanups, func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
	deadline := time.Now().Add(15 * time.Second)
	for _, a := range []netip.AddrPort{fe, fp} {
		for !listening(a) {
			if time.Now().After(deadline) || cmd.ProcessState != nil {
				return netip.AddrPort{}, netip.AddrPort{}, 0, fmt.Errorf("sluice not listening on %s (see %s)", a, logf.Name())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return fe, fp, cmd.Process.Pid, nil
}

// listening says whether a socket listens on a (from /proc/net/tcp, without
// connecting: a probe would be a client).
func listening(a netip.AddrPort) bool {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false
	}
	ip := a.Addr().As4()
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], a.Port())
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 3 && f[1] == want && f[3] == "0A" {
			return true
		}
	}
	return false
}

// freePorts picks loopback ports outside the ephemeral range that nothing
// uses.
func freePorts(n int) ([]uint16, error) {
	var out []uint16
	for p := 10000 + os.Getpid()%10000; len(out) < n && p < 32000; p++ {
		ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		out = append(out, uint16(p))
	}
	if len(out) < n {
		return nil, errors.New("no free ports")
	}
	return out, nil
}

func cgroupRoot() (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		for i := 6; i+1 < len(f); i++ {
			if f[i] == "-" && f[i+1] == "cgroup2" && f[3] == "/" {
				return f[4], nil
			}
		}
	}
	return "", errors.New("no cgroup2 mount")
}

func removeCgroup(dir string) {
	for range 200 {
		if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "steerbench: could not remove cgroup %s\n", dir)
}

var clkTck = 100.0 // USER_HZ, what /proc/stat and /proc/PID/stat count in

// cpuTicks returns the busy ticks of the whole host and of the given
// processes (with their threads).
func cpuTicks(pids []int) (host, ours float64) {
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
		for i, x := range f[1:] {
			if i == 3 || i == 4 { // idle, iowait
				continue
			}
			v, _ := strconv.ParseFloat(x, 64)
			host += v
		}
	}
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		u, _ := strconv.ParseFloat(f[11], 64)
		k, _ := strconv.ParseFloat(f[12], 64)
		ours += u + k
	}
	return host, ours
}

// client is the measuring process, in the steered cgroup.
type client struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
	mu  sync.Mutex
}

func startClient(cg string) (*client, error) {
	dir, err := os.Open(cg)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	cmd := exec.Command(os.Args[0], "-role", "client")
	// Blocking system calls on locked threads: no preemption signals.
	cmd.Env = append(os.Environ(), "GODEBUG=asyncpreemptoff=1")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start client in %s: %w", cg, err)
	}
	return &client{cmd: cmd, in: in, out: bufio.NewScanner(out)}, nil
}

func (c *client) do(cmd string) (result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var r result
	if _, err := fmt.Fprintln(c.in, cmd); err != nil {
		return r, err
	}
	if !c.out.Scan() {
		return r, fmt.Errorf("client gone: %v", c.out.Err())
	}
	if err := json.Unmarshal(c.out.Bytes(), &r); err != nil {
		return r, fmt.Errorf("client said %q: %w", c.out.Text(), err)
	}
	if r.Err != "" && r.N == 0 {
		return r, errors.New(r.Err)
	}
	return r, nil
}

func (c *client) stop() {
	c.in.Close()
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

// runClient serves commands, one JSON result line each:
//
//	conn TARGET ADDR DUR CONC ROUND
//	lat TARGET ADDR N SIZE ROUND
//	pairconn TARGET ADDR_A ADDR_B DUR SIZE ROUND   (A and B alternately; B's figures in .B)
//	pairlat TARGET ADDR_A ADDR_B N SIZE ROUND
func runClient(r io.Reader, w io.Writer) {
	sc := bufio.NewScanner(r)
	enc := json.NewEncoder(w)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		var res result
		switch {
		case len(f) == 6 && f[0] == "conn":
			d, _ := time.ParseDuration(f[3])
			conc, _ := strconv.Atoi(f[4])
			res = connRate(netip.MustParseAddrPort(f[2]), d, conc)
		case len(f) == 6 && f[0] == "lat":
			n, _ := strconv.Atoi(f[3])
			size, _ := strconv.Atoi(f[4])
			res = latency(netip.MustParseAddrPort(f[2]), n, size)
		case len(f) == 7 && f[0] == "pairconn":
			d, _ := time.ParseDuration(f[4])
			res = pairConn(netip.MustParseAddrPort(f[2]), netip.MustParseAddrPort(f[3]), d)
		case len(f) == 7 && f[0] == "pairlat":
			n, _ := strconv.Atoi(f[4])
			size, _ := strconv.Atoi(f[5])
			res = pairLatency(netip.MustParseAddrPort(f[2]), netip.MustParseAddrPort(f[3]), n, size)
		default:
			res.Err = "bad command " + sc.Text()
		}
		if len(f) >= 6 {
			res.Kind, res.Target = f[0], f[1]
			res.Round, _ = strconv.Atoi(f[len(f)-1])
		}
		enc.Encode(res)
	}
}

func sockaddr(a netip.AddrPort) *unix.SockaddrInet4 {
	return &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}
}

// connRate runs conc loops of socket, connect, 1-byte echo, close for d.
func connRate(addr netip.AddrPort, d time.Duration, conc int) result {
	var (
		mu   sync.Mutex
		lat  []time.Duration
		errs int
		msg  string
		wg   sync.WaitGroup
	)
	sa := sockaddr(addr)
	start := time.Now()
	end := start.Add(d)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var mine []time.Duration
			var e int
			var m string
			buf := []byte{'x'}
			for time.Now().Before(end) {
				t0 := time.Now()
				if err := oneConn(sa, buf); err != nil {
					e++
					m = err.Error()
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += e
			if m != "" {
				msg = m
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	r := summarize(lat, time.Since(start))
	r.Errors, r.Err = errs, msg
	return r
}

func oneConn(sa *unix.SockaddrInet4, buf []byte) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, sa); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if _, err := unix.Write(fd, buf); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if n, err := unix.Read(fd, buf); err != nil || n != 1 {
		return fmt.Errorf("read: %d %v", n, err)
	}
	return nil
}

// The client runs with asyncpreemptoff, so its blocking system calls are
// not interrupted by the runtime; a failed call is counted as an error.

// pairConn alternates one connection to a and one to b for d.
func pairConn(a, b netip.AddrPort, d time.Duration) result {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sas := [2]*unix.SockaddrInet4{sockaddr(a), sockaddr(b)}
	var lat [2][]time.Duration
	var errs int
	var msg string
	buf := []byte{'x'}
	start := time.Now()
	for end := start.Add(d); time.Now().Before(end); {
		for i, sa := range sas {
			t0 := time.Now()
			if err := oneConn(sa, buf); err != nil {
				errs++
				msg = err.Error()
				continue
			}
			lat[i] = append(lat[i], time.Since(t0))
		}
	}
	el := time.Since(start)
	r, rb := summarize(lat[0], el), summarize(lat[1], el)
	r.Errors, r.Err, r.B = errs, msg, &rb
	return r
}

// pairLatency alternates ping-pongs on a connection to a and one to b.
func pairLatency(a, b netip.AddrPort, n, size int) result {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var fds [2]int
	for i, ap := range []netip.AddrPort{a, b} {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return result{Err: err.Error()}
		}
		defer unix.Close(fd)
		if err := unix.Connect(fd, sockaddr(ap)); err != nil {
			return result{Err: "connect: " + err.Error()}
		}
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		fds[i] = fd
	}
	msg, buf := make([]byte, size), make([]byte, size)
	var lat [2][]time.Duration
	warm := min(1000, n/10)
	start := time.Now()
	for k := range n + warm {
		if k == warm {
			start = time.Now()
		}
		for i, fd := range fds {
			t0 := time.Now()
			if err := pingPong(fd, msg, buf); err != nil {
				return result{Err: err.Error(), Errors: 1}
			}
			if k >= warm {
				lat[i] = append(lat[i], time.Since(t0))
			}
		}
	}
	el := time.Since(start)
	r, rb := summarize(lat[0], el), summarize(lat[1], el)
	r.B = &rb
	return r
}

func pingPong(fd int, msg, buf []byte) error {
	if _, err := unix.Write(fd, msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	for got := 0; got < len(buf); {
		m, err := unix.Read(fd, buf[got:])
		if err != nil || m == 0 {
			return fmt.Errorf("read: %d %v", m, err)
		}
		got += m
	}
	return nil
}

// latency makes n ping-pongs of size bytes on one connection.
func latency(addr netip.AddrPort, n, size int) result {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return result{Err: err.Error()}
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, sockaddr(addr)); err != nil {
		return result{Err: "connect: " + err.Error()}
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	msg := make([]byte, size)
	buf := make([]byte, size)
	lat := make([]time.Duration, 0, n)
	warm := min(1000, n/10)
	start := time.Now()
	for i := range n + warm {
		if i == warm {
			start = time.Now()
		}
		t0 := time.Now()
		if err := pingPong(fd, msg, buf); err != nil {
			return result{Err: err.Error(), Errors: 1}
		}
		if i >= warm {
			lat = append(lat, time.Since(t0))
		}
	}
	return summarize(lat, time.Since(start))
}

func summarize(lat []time.Duration, elapsed time.Duration) result {
	if len(lat) == 0 {
		return result{}
	}
	slices.SortFunc(lat, cmp.Compare)
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	return result{
		N:    len(lat),
		Rate: float64(len(lat)) / elapsed.Seconds(),
		P50:  us(lat[len(lat)/2]),
		P99:  us(lat[len(lat)*99/100]),
		Mean: us(sum / time.Duration(len(lat))),
	}
}

// Command tunnel is the tunnel benchmark's toolbox (see README.md):
//
//	tunnel forward -mode splice|copy -listen ADDR -to ADDR   a tiny TCP forwarder (the target under test)
//	tunnel echo -listen ADDR                                  an echo server (latency backend)
//	tunnel latency -addr ADDR -n N -size S                    request/response round trips: p50/p99
//	tunnel idle -addr ADDR -pid PID -n N                      RSS growth of PID per idle tunnel
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluicelb/sluice/pkg/kernel"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tunnel forward|echo|latency|idle [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	var err error
	switch os.Args[1] {
	case "forward":
		mode := fs.String("mode", "splice", "splice or copy")
		listen := fs.String("listen", "127.0.0.1:0", "listen address")
		to := fs.String("to", "", "backend address")
		fs.Parse(os.Args[2:])
		err = forward(*mode, *listen, *to)
	case "echo":
		listen := fs.String("listen", "127.0.0.1:0", "listen address")
		fs.Parse(os.Args[2:])
		err = echo(*listen)
	case "latency":
		addr := fs.String("addr", "", "address to connect to")
		n := fs.Int("n", 20000, "round trips")
		size := fs.Int("size", 64, "message size")
		fs.Parse(os.Args[2:])
		err = latency(*addr, *n, *size)
	case "idle":
		addr := fs.String("addr", "", "forwarder address")
		pid := fs.Int("pid", 0, "forwarder PID")
		n := fs.Int("n", 5000, "idle tunnels")
		fs.Parse(os.Args[2:])
		err = idle(*addr, *pid, *n)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tunnel:", err)
		os.Exit(1)
	}
}

func forward(mode, listen, to string) error {
	ln, err := net.Listen("tcp4", listen)
	if err != nil {
		return err
	}
	var s *kernel.Splicer
	if mode == "splice" {
		// SPLICE_SNDBUF / SPLICE_MAXQ (bytes) override the defaults, for measuring them.
		var cfg kernel.SplicerConfig
		cfg.SndBuf, _ = strconv.Atoi(os.Getenv("SPLICE_SNDBUF"))
		cfg.MaxQueue, _ = strconv.Atoi(os.Getenv("SPLICE_MAXQ"))
		if s, err = kernel.OpenSplicer(slog.New(slog.NewTextHandler(os.Stderr, nil)), cfg); err != nil {
			return err
		}
		defer s.Close()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() { <-ctx.Done(); ln.Close() }()
	fmt.Println("ready", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return nil
		}
		go func() {
			a := c.(*net.TCPConn)
			bc, err := net.Dial("tcp4", to)
			if err != nil {
				a.Close()
				return
			}
			b := bc.(*net.TCPConn)
			if s != nil {
				p, err := s.Splice(a, b)
				if err == nil {
					p.Wait(ctx, time.Hour, 0, 0)
					return
				}
				if !errors.Is(err, kernel.ErrSpliceFallback) {
					a.Close()
					b.Close()
					return
				}
			}
			done := make(chan struct{}, 2)
			cp := func(dst, src *net.TCPConn) { io.Copy(dst, src); dst.CloseWrite(); done <- struct{}{} }
			go cp(b, a)
			go cp(a, b)
			<-done
			<-done
			a.Close()
			b.Close()
		}()
	}
}

func echo(listen string) error {
	ln, err := net.Listen("tcp4", listen)
	if err != nil {
		return err
	}
	fmt.Println("ready", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() { io.Copy(c, c); c.Close() }()
	}
}

func latency(addr string, n, size int) error {
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	msg, got := make([]byte, size), make([]byte, size)
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n+n/10; i++ {
		t0 := time.Now()
		if _, err := c.Write(msg); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, got); err != nil {
			return err
		}
		if i >= n/10 { // warm-up excluded
			lat = append(lat, time.Since(t0))
		}
	}
	slices.Sort(lat)
	p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	fmt.Printf("p50_us %.1f p99_us %.1f n %d\n", p(0.5), p(0.99), len(lat))
	return nil
}

func rssKiB(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			v, _ := strconv.Atoi(f[1])
			return v
		}
	}
	return 0
}

// settled samples RSS every 250 ms until 8 samples in a row agree within
// max(64 KiB, 0.2%) (at most 15 s), as scripts/bench/idleconns does.
func settled(pid int) int {
	var last []int
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		last = append(last, rssKiB(pid))
		if len(last) >= 8 {
			w := last[len(last)-8:]
			lo, hi := slices.Min(w), slices.Max(w)
			if hi-lo <= max(64, hi/500) {
				return hi
			}
		}
	}
	return last[len(last)-1]
}

func idle(addr string, pid, n int) error {
	var rl syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	rl.Cur = rl.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	before := settled(pid)
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	buf := make([]byte, 1)
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			return fmt.Errorf("conn %d: %w", i, err)
		}
		conns = append(conns, c)
		// One round trip so the tunnel is set up (spliced) before it idles.
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte{1}); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return fmt.Errorf("conn %d round trip: %w", i, err)
		}
	}
	after := settled(pid)
	fmt.Printf("rss_before_kib %d rss_after_kib %d kib_per_tunnel %.2f n %d\n", before, after, float64(after-before)/float64(n), n)
	return nil
}

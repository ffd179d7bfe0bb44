//go:build linux

// Command sourcebench measures how many new connections per second a source
// pool sustains toward one server without error, for scripts/bench/source.sh,
// which runs it inside network namespaces it creates.
//
//	sourcebench server -listen 198.18.0.1:8080
//	    accept, read each connection until EOF, close (the client closes first,
//	    so TIME_WAIT lands on the client's side); prints "ready"
//	sourcebench dial -server 198.18.0.1:8080 -source 198.18.0.2,198.18.0.3 -rate 6 -duration 90s
//	    open and close -rate connections per second (0: as fast as possible,
//	    until the first error or -duration) through userspace/source's Pool,
//	    with a sock_diag snapshot of the namespace every -scan as the kernel's
//	    view; prints one RESULT line
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicelb/sluice/internal/netnstest"
	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/userspace/source"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sourcebench server|dial [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "server":
		err = server(os.Args[2:])
	case "dial":
		err = dial(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q (server or dial)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sourcebench:", err)
		os.Exit(1)
	}
}

func server(args []string) error {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	listen := fs.String("listen", "198.18.0.1:8080", "address to accept on")
	fs.Parse(args)
	ln, err := net.Listen("tcp4", *listen)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			io.Copy(io.Discard, c)
			c.Close()
		}()
	}
}

// snapshot keeps a sock_diag scan fresh, as the daemon keeps the kernel
// counters' snapshot.
type snapshot struct {
	cur atomic.Pointer[netnstest.Sockets]
}

func (s *snapshot) run(ctx context.Context, every time.Duration) error {
	scan := func() error {
		k, err := netnstest.ScanSockets()
		if err == nil {
			s.cur.Store(k)
		}
		return err
	}
	if err := scan(); err != nil {
		return err
	}
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				scan()
			}
		}
	}()
	return nil
}

func dial(args []string) error {
	fs := flag.NewFlagSet("dial", flag.ExitOnError)
	to := fs.String("server", "198.18.0.1:8080", "server ip:port")
	spec := fs.String("source", "", "the `source` setting (addresses, ranges, CIDR, :ports)")
	rate := fs.Float64("rate", 0, "new connections per second; 0 = as fast as possible until the first error")
	duration := fs.Duration("duration", 90*time.Second, "how long to run")
	scanEvery := fs.Duration("scan", 100*time.Millisecond, "sock_diag snapshot interval")
	label := fs.String("label", "", "a name for the RESULT line")
	fs.Parse(args)
	pool, err := source.ParsePool(config.Source{Addr: *spec})
	if err != nil {
		return err
	}
	server, err := netip.ParseAddrPort(*to)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var snap snapshot
	if err := snap.run(ctx, *scanEvery); err != nil {
		return err
	}

	var (
		mu                      sync.Mutex
		ok, exhausted, other    int
		firstErr                time.Duration = -1
		firstErrMsg, lastErrMsg string
		perSource               = map[string]int{}
		wg                      sync.WaitGroup
		sem                     = make(chan struct{}, 256)
		stop                    atomic.Bool
		start                   = time.Now()
		attempted               int
		errsWindow, okWindow    int
		windowStart, windowEnd  = 60 * time.Second, 120 * time.Second
	)
	one := func() {
		defer wg.Done()
		defer func() { <-sem }()
		c, src, err := pool.Dial(ctx, server, snap.cur.Load(), 5*time.Second)
		at := time.Since(start)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if errors.Is(err, source.ErrExhausted) {
				exhausted++
			} else {
				other++
			}
			if firstErr < 0 {
				firstErr, firstErrMsg = at, err.Error()
			}
			lastErrMsg = err.Error()
			if at >= windowStart && at < windowEnd {
				errsWindow++
			}
			if *rate == 0 {
				stop.Store(true)
			}
			return
		}
		c.Close()
		ok++
		if at >= windowStart && at < windowEnd {
			okWindow++
		}
		perSource[src.String()]++
	}
	if *rate == 0 {
		for time.Since(start) < *duration && !stop.Load() {
			sem <- struct{}{}
			wg.Add(1)
			attempted++
			one() // one at a time: the count before the first error is exact
		}
	} else {
		interval := time.Duration(float64(time.Second) / *rate)
		next := start
		for time.Since(start) < *duration {
			sem <- struct{}{}
			wg.Add(1)
			attempted++
			go one()
			next = next.Add(interval)
			time.Sleep(time.Until(next))
		}
	}
	wg.Wait()
	elapsed := time.Since(start)

	var srcs []string
	for s, n := range perSource {
		srcs = append(srcs, fmt.Sprintf("%s=%d", s, n))
	}
	sort.Strings(srcs)
	fe := "-"
	if firstErr >= 0 {
		fe = fmt.Sprintf("%.2fs", firstErr.Seconds())
	}
	// From 60 s on, tuples come back as fast as they were taken 60 s
	// earlier; over one whole TIME_WAIT (60-120 s) the successes average
	// the sustainable rate.
	steady, errs := "-", "-"
	if elapsed >= windowEnd {
		steady = fmt.Sprintf("%.2f", float64(okWindow)/(windowEnd-windowStart).Seconds())
		errs = fmt.Sprint(errsWindow)
	}
	fmt.Printf("RESULT label=%s sources=%d ports=%d target_rate=%.2f duration=%.1fs attempted=%d ok=%d exhausted=%d other_errors=%d achieved_rate=%.2f ok_rate_60_120s=%s errors_60_120s=%s first_error_at=%s per_source=%s\n",
		*label, len(pool.Addrs()), pool.Ports(), *rate, elapsed.Seconds(), attempted, ok, exhausted, other,
		float64(ok)/elapsed.Seconds(), steady, errs, fe, strings.Join(srcs, ","))
	if firstErrMsg != "" {
		fmt.Printf("FIRST_ERROR %s\n", firstErrMsg)
		fmt.Printf("LAST_ERROR %s\n", lastErrMsg)
	}
	return nil
}

// Command wsidle is the load generator of scripts/bench/ws-idle.sh (memory per idle WebSocket tunnel) and of the
// latency part of scripts/bench/tcp.sh. One binary, four modes:
//
//	wsidle -mode backend -listen 127.0.0.1:B
//	    WebSocket echo backend (github.com/coder/websocket): any path under /websockets upgrades and echoes every
//	    message; GET / answers 200 (readiness checks through a proxy's default backend); GET /stats reports the
//	    live and total WebSocket connections ("live=N total=M").
//
//	wsidle -mode ws -addr 127.0.0.1:P -n 5000 [-backend-listen 127.0.0.1:B] [-until signal|stdin|DURATION]
//	    Opens n WebSocket connections to ws://ADDR/websockets/echo (through the proxy), does one echo on each to
//	    prove the tunnel, prints "READY ..." and holds them idle until told to stop: SIGINT/SIGTERM always,
//	    stdin EOF with -until stdin (the default), or after a duration (-until 0: do not hold, e.g. a warm-up).
//	    Then it does a second echo on every connection (the tunnel survived the idle time), prints a RESULT
//	    line and closes them. With -backend-listen it also runs the echo backend itself (then it holds 2n fds).
//
//	wsidle -mode echo -listen 127.0.0.1:E
//	    Raw TCP echo server (for the latency test).
//
//	wsidle -mode latency -addr 127.0.0.1:P -n 20000 -size 64
//	    One TCP connection, n sequential ping-pongs of size bytes (write, then read the echo back in full),
//	    prints p50/p90/p99/p99.9/max/mean in µs as a RESULT line.
//
// Every mode raises its RLIMIT_NOFILE soft limit to the hard limit first.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/sluicelb/sluice/scripts/bench/internal/procstat"
)

func main() {
	var (
		mode     = flag.String("mode", "", "backend | ws | echo | latency (required)")
		listen   = flag.String("listen", "", "backend/echo: listen address host:port")
		addr     = flag.String("addr", "", "ws/latency: address to connect to (the proxy, or the server directly)")
		n        = flag.Int("n", 0, "ws: WebSocket connections to open (default 5000); latency: ping-pongs (default 20000)")
		label    = flag.String("label", "", "name printed in the RESULT line (default: -addr)")
		path     = flag.String("path", "/websockets/echo", "ws: request path (must match the proxy's WebSocket ACL)")
		conc     = flag.Int("concurrency", 100, "ws: connections being opened at once")
		until    = flag.String("until", "stdin", "ws: hold the connections until: signal | stdin (EOF, or a signal) | a duration (0: no hold)")
		maxHold  = flag.Duration("max-hold", 10*time.Minute, "ws: stop holding after this long whatever happens")
		bkListen = flag.String("backend-listen", "", "ws: also run the WebSocket echo backend on this address, in this process")
		size     = flag.Int("size", 64, "latency: message size in bytes")
		warmup   = flag.Int("warmup", 1000, "latency: ping-pongs before measuring")
		timeout  = flag.Duration("timeout", 120*time.Second, "ws: overall limit for opening and checking; latency: overall limit")
	)
	flag.Parse()
	limit, err := procstat.RaiseNoFile()
	if err != nil {
		fatalf("raising RLIMIT_NOFILE: %v", err)
	}
	if *label == "" {
		*label = *addr
	}
	switch *mode {
	case "backend":
		if *listen == "" {
			fatalf("-mode backend needs -listen")
		}
		runBackend(*listen)
	case "echo":
		if *listen == "" {
			fatalf("-mode echo needs -listen")
		}
		runEcho(*listen)
	case "ws":
		if *addr == "" {
			fatalf("-mode ws needs -addr")
		}
		if *n == 0 {
			*n = 5000
		}
		need := uint64(*n) + 64
		if *bkListen != "" {
			need += uint64(*n)
		}
		if limit < need {
			fatalf("RLIMIT_NOFILE hard limit %d is below the %d descriptors needed; lower -n", limit, need)
		}
		fmt.Printf("RLIMIT_NOFILE soft limit raised to %d\n", limit)
		os.Exit(runWS(wsOpts{addr: *addr, n: *n, label: *label, path: *path, conc: *conc, until: *until,
			maxHold: *maxHold, backend: *bkListen, timeout: *timeout}))
	case "latency":
		if *addr == "" {
			fatalf("-mode latency needs -addr")
		}
		if *n == 0 {
			*n = 20000
		}
		os.Exit(runLatency(*addr, *label, *n, *warmup, *size, *timeout))
	default:
		flag.Usage()
		os.Exit(2)
	}
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "wsidle: "+format+"\n", a...)
	os.Exit(1)
}

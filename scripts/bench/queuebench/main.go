// Command queuebench measures a proxy's server queue (maxconn reached, requests wait in the proxy): the memory each
// queued request costs the proxy process, and the dispatch latency from a server slot becoming free to the next
// queued request reaching the server.
//
// It has two parts, run as separate processes so that none of them shares a file-descriptor limit or a Go runtime
// with another:
//
//	queuebench backend -listen 127.0.0.1:B -control 127.0.0.1:C
//	queuebench run -addr 127.0.0.1:P -control 127.0.0.1:C -n 10000 [-pid PID]
//
// The backend answers every HTTP/1.1 request with a small 200 at once, unless it is told to hold (then it keeps
// each request until told to release). It timestamps, for every request, the arrival of its first byte and the
// moment the last byte of its response was written, and serves these over its control port.
//
// run fills the proxy's queue: it tells the backend to hold, opens -n client connections through the proxy and sends
// one GET on each; the backend then holds the maxconn requests the proxy let through and the others wait in the
// proxy. Once the proxy has read every request (no unread bytes on its client sockets) it optionally reads the
// proxy's VmRSS (before/after, settled), then releases the backend, reads every response (bounded), and pairs each
// response's last byte with the next request's first byte at the backend: the dispatch latency.
//
// Used by scripts/bench/queue.sh; see scripts/bench/README.md.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "backend":
		backendMain(os.Args[2:])
	case "run":
		runMain(os.Args[2:])
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: queuebench backend -listen ADDR -control ADDR\n       queuebench run -addr PROXY -control ADDR -n N [-pid PID] ...\n(-h after the subcommand for its flags)")
	os.Exit(2)
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "queuebench: "+format+"\n", a...)
	os.Exit(1)
}

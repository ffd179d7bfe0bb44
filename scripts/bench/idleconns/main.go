// Command idleconns measures how much resident memory a proxy process spends per idle keep-alive client connection.
//
// It reads the proxy's VmRSS (summed over -pid and its descendants, so an nginx master+worker works too) after a
// warm-up, opens -n client connections to -addr, sends one keep-alive GET on each and reads the whole response, so
// every connection has been fully used and is now idle in the proxy; it then waits for the RSS to settle (nothing is
// forced in the proxy), reads it again and prints before, after and (after-before)/n. It also checks that the proxy
// really holds the connections: its open file descriptors grew by about n, and the connections are still open
// (not closed by the proxy) at the end.
//
// Used by scripts/bench/idle-conns.sh; runnable alone:
//
//	go run ./scripts/bench/idleconns -addr 127.0.0.1:8080 -pid $(pidof-your-proxy) -n 10000
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluicelb/sluice/scripts/bench/internal/procstat"
)

func main() {
	var (
		addr        = flag.String("addr", "", "proxy address host:port (required)")
		pid         = flag.Int("pid", 0, "PID of the proxy process to measure (required; descendants are included)")
		n           = flag.Int("n", 10000, "idle connections to open")
		concurrency = flag.Int("concurrency", 100, "connections being opened at once")
		warmup      = flag.Int("warmup", 2000, "warm-up requests before the first RSS reading")
		settleMax   = flag.Duration("settle", 15*time.Second, "longest wait for the RSS to stabilise")
		timeout     = flag.Duration("timeout", 50*time.Second, "overall time limit (keep it below the proxy's idle timeouts)")
		label       = flag.String("label", "", "name printed in the RESULT line")
		path        = flag.String("path", "/", "request path")
	)
	flag.Parse()
	if *addr == "" || *pid <= 0 || *n <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	if *label == "" {
		*label = *addr
	}
	deadline := time.Now().Add(*timeout)
	go func() { // hard bound, whatever happens below
		time.Sleep(*timeout + 5*time.Second)
		fmt.Fprintln(os.Stderr, "idleconns: overall timeout")
		os.Exit(3)
	}()

	limit, err := procstat.RaiseNoFile()
	if err != nil {
		fatalf("raising RLIMIT_NOFILE: %v", err)
	}
	if need := uint64(*n) + 64; limit < need {
		fatalf("RLIMIT_NOFILE hard limit %d is below the %d descriptors needed; lower -n or raise the hard limit", limit, need)
	}
	fmt.Printf("client RLIMIT_NOFILE soft limit raised to %d\n", limit)

	req := []byte("GET " + *path + " HTTP/1.1\r\nHost: " + *addr + "\r\nUser-Agent: sluice-idleconns\r\n\r\n")

	// Warm-up: a few connections each doing many requests, then closed, so pools, buffers and the upstream
	// connection exist before the baseline is taken.
	if err := doWarmup(*addr, req, *warmup); err != nil {
		fatalf("warm-up: %v", err)
	}
	before := settle(*pid, *settleMax, deadline)
	fdBefore := procstat.CountFDs(*pid)
	fmt.Printf("before: VmRSS %d KiB (RssAnon %d KiB), %d fds\n", before.RSS, before.Anon, fdBefore)

	// Open n connections, one request each, keep them.
	conns := make([]net.Conn, *n)
	var (
		next, done, failed, closedByServer atomic.Int64
		firstErr                           atomic.Value
		wg                                 sync.WaitGroup
	)
	start := time.Now()
	for w := 0; w < *concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= *n || time.Now().After(deadline) {
					return
				}
				c, keep, err := oneRequest(*addr, req, deadline)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				if !keep {
					closedByServer.Add(1)
				}
				conns[i] = c
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	openTime := time.Since(start)
	fmt.Printf("opened %d/%d connections in %v (%d failed, %d answered Connection: close)\n",
		done.Load(), *n, openTime.Round(time.Millisecond), failed.Load(), closedByServer.Load())
	if e := firstErr.Load(); e != nil {
		fmt.Printf("first error: %s\n", e)
	}
	if done.Load() == 0 {
		fatalf("no connection succeeded")
	}

	after := settle(*pid, *settleMax, deadline)
	fdAfter := procstat.CountFDs(*pid)
	alive, dead := probe(conns)
	ok := done.Load()
	perConn := float64(after.RSS-before.RSS) / float64(ok)
	perConnAnon := float64(after.Anon-before.Anon) / float64(ok)
	fmt.Printf("after:  VmRSS %d KiB (RssAnon %d KiB), %d fds (+%d), settled in %v over %d samples\n",
		after.RSS, after.Anon, fdAfter, fdAfter-fdBefore, after.Took.Round(time.Millisecond), after.Samples)
	fmt.Printf("still open at the end: %d, closed by the proxy: %d\n", alive, dead)
	fmt.Printf("per idle connection: %.2f KiB VmRSS (%.2f KiB RssAnon)\n", perConn, perConnAnon)
	fmt.Printf("RESULT label=%s n=%d ok=%d alive=%d rss_before_kib=%d rss_after_kib=%d per_conn_kib=%.2f anon_per_conn_kib=%.2f fds_delta=%d open_s=%.2f stable=%t\n",
		*label, *n, ok, alive, before.RSS, after.RSS, perConn, perConnAnon, fdAfter-fdBefore, openTime.Seconds(), after.Stable && before.Stable)
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	if int64(alive) != ok || failed.Load() > 0 {
		os.Exit(1)
	}
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "idleconns: "+format+"\n", a...)
	os.Exit(1)
}

// settle waits for the proxy's RSS to settle (procstat.Settle); it exits if the proxy cannot be read.
func settle(pid int, maxWait time.Duration, deadline time.Time) procstat.Reading {
	r, err := procstat.Settle(pid, maxWait, deadline)
	if err != nil {
		fatalf("%v", err)
	}
	return r
}

func doWarmup(addr string, req []byte, total int) error {
	const conns = 10
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for w := 0; w < conns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			br := bufio.NewReader(c)
			for i := 0; i < total/conns; i++ {
				if _, err := c.Write(req); err != nil {
					errs <- err
					return
				}
				if _, err := readResponse(br); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs // nil if the channel is empty
}

// oneRequest dials, sends req, reads the full response and returns the connection, now idle.
func oneRequest(addr string, req []byte, deadline time.Time) (net.Conn, bool, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, false, err
	}
	c.SetDeadline(minTime(deadline, time.Now().Add(10*time.Second)))
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, false, err
	}
	// A fresh small bufio.Reader per connection; the response is fully consumed so nothing stays buffered.
	keep, err := readResponse(bufio.NewReaderSize(c, 4096))
	if err != nil {
		c.Close()
		return nil, false, err
	}
	c.SetDeadline(time.Time{})
	return c, keep, nil
}

// readResponse reads one complete response; it reports whether the connection stays open.
func readResponse(br *bufio.Reader) (bool, error) {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return false, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("status %s", resp.Status)
	}
	return !resp.Close, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// probe checks, without blocking, whether each connection is still open: recv(MSG_PEEK|MSG_DONTWAIT) gives EAGAIN
// on an open idle connection and 0 (EOF) or an error once the proxy closed it.
func probe(conns []net.Conn) (alive, dead int) {
	buf := make([]byte, 1)
	for _, c := range conns {
		if c == nil {
			continue
		}
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			dead++
			continue
		}
		open := false
		rc.Control(func(fd uintptr) {
			n, _, err := syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			_ = n
			open = errors.Is(err, syscall.EAGAIN) // EOF (n == 0) or unsolicited data: not an open idle connection
		})
		if open {
			alive++
		} else {
			dead++
		}
	}
	return alive, dead
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// ---- backend ---------------------------------------------------------------------------------------------------

// backendStats counts the backend's WebSocket connections.
type backendStats struct {
	live, total atomic.Int64
}

func backendHandler(st *backendStats) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/websockets/", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			return // Accept has answered
		}
		st.live.Add(1)
		st.total.Add(1)
		defer st.live.Add(-1)
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		ctx := context.Background()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				return // closed by the client (or the proxy)
			}
			if err := c.Write(ctx, typ, msg); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "live=%d total=%d\n", st.live.Load(), st.total.Load())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "wsidle backend\n")
	})
	return mux
}

// startBackend listens on addr and serves the echo backend in the background.
func startBackend(addr string) (*backendStats, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	st := &backendStats{}
	srv := &http.Server{Handler: backendHandler(st), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fatalf("backend: %v", err)
		}
	}()
	return st, nil
}

func runBackend(addr string) {
	if _, err := startBackend(addr); err != nil {
		fatalf("backend: %v", err)
	}
	fmt.Printf("backend listening on %s\n", addr)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}

// ---- clients ---------------------------------------------------------------------------------------------------

type wsOpts struct {
	addr, label, path, until, backend string
	n, conc                           int
	maxHold, timeout                  time.Duration
}

// echo sends one message on c and checks that the same comes back.
func echo(c *websocket.Conn, msg string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		return err
	}
	_, got, err := c.Read(ctx)
	if err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echo mismatch: sent %q, got %q", msg, got)
	}
	return nil
}

// parallel runs f(i) for i in [0,n) on conc goroutines; it stops handing out work after deadline.
func parallel(n, conc int, deadline time.Time, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || time.Now().After(deadline) {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}

func runWS(o wsOpts) int {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	var bst *backendStats
	if o.backend != "" {
		var err error
		if bst, err = startBackend(o.backend); err != nil {
			fatalf("backend: %v", err)
		}
		fmt.Printf("backend listening on %s\n", o.backend)
	}
	// No proxy from the environment, no pooling games: every Dial is one new TCP connection.
	hc := &http.Client{Transport: &http.Transport{
		Proxy:       nil,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}}
	url := "ws://" + o.addr + o.path
	deadline := time.Now().Add(o.timeout)

	conns := make([]*websocket.Conn, o.n)
	var failed atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	start := time.Now()
	parallel(o.n, o.conc, deadline, func(i int) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: hc})
		cancel()
		if err != nil {
			if resp != nil {
				err = fmt.Errorf("%w (HTTP %s)", err, resp.Status)
			}
			fail(err)
			return
		}
		c.SetReadLimit(1 << 20)
		if err := echo(c, fmt.Sprintf("hello %d", i), 10*time.Second); err != nil {
			c.CloseNow()
			fail(err)
			return
		}
		conns[i] = c
	})
	openTime := time.Since(start)
	ok := 0
	for _, c := range conns {
		if c != nil {
			ok++
		}
	}
	bk := ""
	if bst != nil {
		bk = fmt.Sprintf(" backend_live=%d", bst.live.Load())
	}
	// The readiness line the driver waits for.
	fmt.Printf("READY n=%d ok=%d failed=%d open_s=%.2f%s\n", o.n, ok, failed.Load(), openTime.Seconds(), bk)
	if e := firstErr.Load(); e != nil {
		fmt.Printf("first error: %s\n", e)
	}

	// Hold, idle.
	holdStart := time.Now()
	stop := make(chan string, 1)
	switch o.until {
	case "signal":
	case "stdin":
		go func() {
			io.Copy(io.Discard, os.Stdin)
			stop <- "stdin closed"
		}()
	default:
		d, err := time.ParseDuration(o.until)
		if err != nil {
			fatalf("-until %q: want signal, stdin or a duration", o.until)
		}
		go func() {
			time.Sleep(d)
			stop <- "hold time over"
		}()
	}
	var why string
	select {
	case s := <-sig:
		why = "signal " + s.String()
	case why = <-stop:
	case <-time.After(o.maxHold):
		why = "max-hold reached"
	}
	held := time.Since(holdStart)
	signal.Reset(syscall.SIGINT, syscall.SIGTERM) // a second signal ends us at once

	// Every tunnel must still carry bytes after the idle time.
	var alive, dead atomic.Int64
	var deadErr atomic.Value
	checkStart := time.Now()
	parallel(o.n, o.conc, time.Now().Add(60*time.Second), func(i int) {
		c := conns[i]
		if c == nil {
			return
		}
		if err := echo(c, fmt.Sprintf("still there %d", i), 5*time.Second); err != nil {
			dead.Add(1)
			deadErr.CompareAndSwap(nil, err.Error())
			return
		}
		alive.Add(1)
	})
	checkTime := time.Since(checkStart)
	if e := deadErr.Load(); e != nil {
		fmt.Printf("first dead tunnel: %s\n", e)
	}
	if bst != nil {
		bk = fmt.Sprintf(" backend_live=%d", bst.live.Load())
	}
	fmt.Printf("stopped (%s) after holding %.1fs\n", why, held.Seconds())
	fmt.Printf("RESULT label=%s n=%d ok=%d failed=%d alive=%d open_s=%.2f held_s=%.1f check_s=%.2f%s\n",
		o.label, o.n, ok, failed.Load(), alive.Load(), openTime.Seconds(), held.Seconds(), checkTime.Seconds(), bk)
	for _, c := range conns {
		if c != nil {
			c.CloseNow()
		}
	}
	if ok != o.n || alive.Load() != int64(ok) {
		return 1
	}
	return 0
}

package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

// event is one request as the backend saw it; times are ns since the backend started (monotonic clock).
type event struct {
	seq    int64 // X-Seq header sent by the client (-1 if absent)
	arrive int64 // first byte of the request read
	done   int64 // just before the response (all of it, one write) is written
	conn   int64 // backend-side connection number
}

type backend struct {
	start   time.Time
	maxHold time.Duration

	mu        sync.Mutex
	gate      chan struct{} // non-nil while holding: requests wait for it to close
	active    int64         // requests read and not yet answered
	maxActive int64         // since the last reset
	received  int64         // since the last reset
	accepted  int64         // connections, since the last reset
	connSeq   int64
	events    []event
}

// stats is what the control port's /stats returns.
type stats struct {
	Held      bool  `json:"held"`
	Active    int64 `json:"active"`
	MaxActive int64 `json:"max_active"`
	Received  int64 `json:"received"`
	Accepted  int64 `json:"accepted"`
	Events    int   `json:"events"`
}

var response = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n")

func backendMain(args []string) {
	fs := flag.NewFlagSet("backend", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "HTTP address the proxy sends requests to")
	control := fs.String("control", "127.0.0.1:0", "control address (/hold, /release, /reset, /stats, /events)")
	maxHold := fs.Duration("max-hold", 5*time.Minute, "longest a request is held even if nobody releases it")
	lifetime := fs.Duration("lifetime", 0, "exit after this long (0 = run until killed)")
	fs.Parse(args)

	b := &backend{start: time.Now(), maxHold: *maxHold}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fatalf("listen %s: %v", *listen, err)
	}
	cln, err := net.Listen("tcp", *control)
	if err != nil {
		fatalf("listen %s: %v", *control, err)
	}
	fmt.Printf("backend on %s, control on %s\n", ln.Addr(), cln.Addr())
	if *lifetime > 0 {
		go func() {
			time.Sleep(*lifetime)
			fmt.Fprintln(os.Stderr, "backend: lifetime over, exiting")
			os.Exit(3)
		}()
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/hold", func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		if b.gate == nil {
			b.gate = make(chan struct{})
		}
		b.mu.Unlock()
		b.writeStats(w)
	})
	mux.HandleFunc("/release", func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		if b.gate != nil {
			close(b.gate)
			b.gate = nil
		}
		b.mu.Unlock()
		b.writeStats(w)
	})
	mux.HandleFunc("/reset", func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.events = b.events[:0]
		b.maxActive = b.active
		b.received, b.accepted = 0, 0
		b.mu.Unlock()
		b.writeStats(w)
	})
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) { b.writeStats(w) })
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		evs := append([]event(nil), b.events...)
		b.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		var buf []byte
		for _, e := range evs {
			buf = strconv.AppendInt(buf, e.seq, 10)
			buf = append(buf, ' ')
			buf = strconv.AppendInt(buf, e.arrive, 10)
			buf = append(buf, ' ')
			buf = strconv.AppendInt(buf, e.done, 10)
			buf = append(buf, ' ')
			buf = strconv.AppendInt(buf, e.conn, 10)
			buf = append(buf, '\n')
		}
		w.Write(buf)
	})
	go func() {
		if err := http.Serve(cln, mux); err != nil {
			fatalf("control server: %v", err)
		}
	}()

	for {
		c, err := ln.Accept()
		if err != nil {
			fatalf("accept: %v", err)
		}
		b.mu.Lock()
		b.accepted++
		b.connSeq++
		id := b.connSeq
		b.mu.Unlock()
		go b.serve(c, id)
	}
}

func (b *backend) writeStats(w http.ResponseWriter) {
	b.mu.Lock()
	s := stats{Held: b.gate != nil, Active: b.active, MaxActive: b.maxActive, Received: b.received,
		Accepted: b.accepted, Events: len(b.events)}
	b.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(s)
}

func (b *backend) now() int64 { return int64(time.Since(b.start)) }

var (
	crlfcrlf   = []byte("\r\n\r\n")
	hdrSeq     = []byte("\r\nx-seq:")
	hdrCL      = []byte("\r\ncontent-length:")
	hdrConnCls = []byte("\r\nconnection: close")
)

// serve answers requests on one connection, one at a time (GET without body is all the client sends; a
// Content-Length body is skipped for robustness).
func (b *backend) serve(c net.Conn, id int64) {
	defer c.Close()
	buf := make([]byte, 8192)
	r, w := 0, 0
	for {
		arrive := int64(-1)
		if r < w {
			arrive = b.now() // already buffered (pipelined): count from now
		}
		var head []byte
		for {
			if i := bytes.Index(buf[r:w], crlfcrlf); i >= 0 {
				head = buf[r : r+i+4]
				break
			}
			if w == len(buf) {
				if r == 0 {
					return // head too large
				}
				w = copy(buf, buf[r:w])
				r = 0
			}
			n, err := c.Read(buf[w:])
			if n > 0 && arrive < 0 {
				arrive = b.now()
			}
			w += n
			if err != nil {
				return
			}
		}
		lower := bytes.ToLower(head)
		seq := headerInt(lower, hdrSeq, -1)
		bodyLen := headerInt(lower, hdrCL, 0)
		closeAfter := bytes.Contains(lower, hdrConnCls)
		r += len(head)
		for bodyLen > 0 { // skip a body
			if r == w {
				r, w = 0, 0
				n, err := c.Read(buf)
				w = n
				if err != nil && n == 0 {
					return
				}
			}
			k := min(int64(w-r), bodyLen)
			r += int(k)
			bodyLen -= k
		}
		if r == w {
			r, w = 0, 0
		}

		b.mu.Lock()
		b.active++
		b.received++
		b.maxActive = max(b.maxActive, b.active)
		gate := b.gate
		b.mu.Unlock()
		if gate != nil {
			t := time.NewTimer(b.maxHold)
			select {
			case <-gate:
			case <-t.C:
			}
			t.Stop()
		}
		// The slot is about to be freed: stamp before the write, so that the next request (which a correct proxy
		// can only send after reading this response) always arrives after it. Stamping after the write would race
		// with the proxy on the other core and could even put the next arrival first.
		b.mu.Lock()
		b.active--
		done := b.now()
		b.events = append(b.events, event{seq: seq, arrive: arrive, done: done, conn: id})
		b.mu.Unlock()
		_, err := c.Write(response)
		if err != nil || closeAfter {
			return
		}
	}
}

// headerInt returns the integer value of the header whose lower-cased "\r\nname:" prefix is key, or def.
func headerInt(lowerHead, key []byte, def int64) int64 {
	i := bytes.Index(lowerHead, key)
	if i < 0 {
		return def
	}
	v := lowerHead[i+len(key):]
	if j := bytes.IndexByte(v, '\r'); j >= 0 {
		v = v[:j]
	}
	n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
	if err != nil {
		return def
	}
	return n
}

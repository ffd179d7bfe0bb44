package admin

import (
	"context"
	"sync"
	"time"

	"github.com/sluicelb/sluice/userspace/proxy"
)

// History keeps the recent values of a few gauges of a proxy, sampled at a
// fixed period, for the sparklines of the stats page: current sessions of
// each frontend, current sessions and queue of each backend and of each
// server. Each series is a ring buffer of the last keep samples. Objects
// that vanish from the snapshot (after a reload) are forgotten; objects that
// appear start with an empty series. All methods are safe for concurrent use.
type History struct {
	src   interface{ Stats() proxy.Stats }
	every time.Duration
	keep  int

	mu        sync.Mutex
	samples   int // samples taken, ever
	frontends map[string]*pair
	backends  map[string]*pair
	servers   map[serverKey]*pair
}

type serverKey struct{ backend, server string }

// pair is the sessions and queue series of one object (queue unused for
// frontends).
type pair struct {
	sessions, queue ring
	seen            int // sample number at which the object was last present
}

// ring is a fixed-capacity ring buffer of int64.
type ring struct {
	buf   []int64
	start int // index of the oldest value
	n     int
}

func (r *ring) push(v int64) {
	if len(r.buf) == 0 {
		return
	}
	if r.n < len(r.buf) {
		r.buf[(r.start+r.n)%len(r.buf)] = v
		r.n++
		return
	}
	r.buf[r.start] = v
	r.start = (r.start + 1) % len(r.buf)
}

// values returns a copy, oldest first.
func (r *ring) values() []int64 {
	out := make([]int64, r.n)
	for i := range out {
		out[i] = r.buf[(r.start+i)%len(r.buf)]
	}
	return out
}

// Series are the samples of one object, oldest first, one every Every.
// Queue is nil for a frontend. Both are empty when the object is unknown.
type Series struct {
	Sessions []int64
	Queue    []int64
}

// NewHistory returns a History of src that samples every `every` and keeps
// `keep` samples per series (every=5s, keep=120: ten minutes). Start it with
// Run. every <= 0 defaults to 5s, keep < 2 to 2.
func NewHistory(src interface{ Stats() proxy.Stats }, every time.Duration, keep int) *History {
	if every <= 0 {
		every = 5 * time.Second
	}
	if keep < 2 {
		keep = 2
	}
	return &History{
		src: src, every: every, keep: keep,
		frontends: map[string]*pair{}, backends: map[string]*pair{}, servers: map[serverKey]*pair{},
	}
}

// Run samples the source at once, then every period, until ctx is done.
func (h *History) Run(ctx context.Context) {
	t := time.NewTicker(h.every)
	defer t.Stop()
	for {
		h.Record(h.src.Stats())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Record adds one sample taken from st. Run calls it; it is exported for a
// caller that already holds a snapshot, and for tests.
func (h *History) Record(st proxy.Stats) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.samples++
	get := func(p *pair) *pair {
		if p == nil {
			p = &pair{sessions: ring{buf: make([]int64, h.keep)}, queue: ring{buf: make([]int64, h.keep)}}
		}
		p.seen = h.samples
		return p
	}
	for _, f := range st.Frontends {
		p := get(h.frontends[f.Name])
		h.frontends[f.Name] = p
		p.sessions.push(f.CurrSessions)
	}
	for _, b := range st.Backends {
		p := get(h.backends[b.Name])
		h.backends[b.Name] = p
		p.sessions.push(b.CurrSessions)
		p.queue.push(b.QueueCur)
		for _, s := range b.Servers {
			k := serverKey{b.Name, s.Name}
			p := get(h.servers[k])
			h.servers[k] = p
			p.sessions.push(s.Cur)
			p.queue.push(s.QueueCur)
		}
	}
	// Forget what this sample did not contain.
	for k, p := range h.frontends {
		if p.seen != h.samples {
			delete(h.frontends, k)
		}
	}
	for k, p := range h.backends {
		if p.seen != h.samples {
			delete(h.backends, k)
		}
	}
	for k, p := range h.servers {
		if p.seen != h.samples {
			delete(h.servers, k)
		}
	}
}

// Every is the sampling period.
func (h *History) Every() time.Duration { return h.every }

// Keep is the number of samples kept per series.
func (h *History) Keep() int { return h.keep }

// Frontend returns the current-sessions series of a frontend.
func (h *History) Frontend(name string) Series {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p := h.frontends[name]; p != nil {
		return Series{Sessions: p.sessions.values()}
	}
	return Series{}
}

// Backend returns the sessions and queue series of a backend.
func (h *History) Backend(name string) Series {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.backends[name].series()
}

// Server returns the sessions and queue series of backend/server.
func (h *History) Server(backend, server string) Series {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.servers[serverKey{backend, server}].series()
}

func (p *pair) series() Series {
	if p == nil {
		return Series{}
	}
	return Series{Sessions: p.sessions.values(), Queue: p.queue.values()}
}

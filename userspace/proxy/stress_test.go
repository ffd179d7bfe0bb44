package proxy

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMixedTrafficStress sends many clients' worth of mixed requests —
// small and large bodies, chunked and not, pipelined or one at a time,
// connections closed at random — and checks every response belongs to its
// request, in order. It exercises the event loop's fast path and every
// hand-over to the goroutine code and back.
func TestMixedTrafficStress(t *testing.T) { bothPaths(t, testMixedTrafficStress) }

func testMixedTrafficStress(t *testing.T) {
	echo := func(w *rawWriter, r *http.Request, body []byte) {
		sum := sha256.Sum256(body)
		reply := r.Method + " " + r.URL.RequestURI() + " " + hex.EncodeToString(sum[:8])
		switch r.URL.Query().Get("resp") {
		case "chunked":
			fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(reply), reply)
		case "big":
			pad := strings.Repeat("p", 40000)
			w.reply(200, reply+"|"+pad)
		default:
			w.reply(200, reply)
		}
	}
	s1 := newTestBackend(t, "s1", echo)
	s2 := newTestBackend(t, "s2", echo)
	addr := startProxy(t, basicCfg+"    server s1 {s1} maxconn 3\n    server s2 {s2} maxconn 3\n    timeout queue 10s\n", nil, s1, s2)

	const clients, perClient = 16, 60
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for ci := 0; ci < clients; ci++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(ci), 7))
			if err := stressClient(addr, ci, perClient, rng); err != nil {
				errs <- fmt.Errorf("client %d: %w", ci, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if p := max(s1.peak.Load(), s2.peak.Load()); p > 3 {
		t.Errorf("peak %d at a maxconn 3 server", p)
	}
}

type stressReq struct {
	raw  string
	want string // the echo line the response must start with
	head bool
}

func stressClient(addr string, ci, n int, rng *rand.Rand) error {
	var c net.Conn
	var br *bufio.Reader
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for i := 0; i < n; {
		if c == nil || rng.IntN(10) == 0 {
			if c != nil {
				c.Close()
			}
			var err error
			if c, err = net.Dial("tcp", addr); err != nil {
				return err
			}
			c.SetDeadline(time.Now().Add(20 * time.Second))
			br = bufio.NewReader(c)
		}
		// A batch of 1-3 requests, pipelined when more than one.
		batch := 1 + rng.IntN(3)
		var reqs []stressReq
		for k := 0; k < batch && i < n; k++ {
			reqs = append(reqs, makeStressReq(ci, i, rng))
			i++
		}
		var all strings.Builder
		for _, r := range reqs {
			all.WriteString(r.raw)
		}
		if _, err := io.WriteString(c, all.String()); err != nil {
			return err
		}
		for _, r := range reqs {
			method := "GET"
			if r.head {
				method = "HEAD"
			}
			res, err := http.ReadResponse(br, &http.Request{Method: method})
			if err != nil {
				return fmt.Errorf("request %q: %w", r.want, err)
			}
			body, err := io.ReadAll(res.Body)
			if err != nil {
				return fmt.Errorf("request %q: body: %w", r.want, err)
			}
			if res.StatusCode != 200 {
				return fmt.Errorf("request %q: status %d", r.want, res.StatusCode)
			}
			if !r.head && !strings.HasPrefix(string(body), r.want) {
				return fmt.Errorf("response %.80q does not answer %q", body, r.want)
			}
		}
	}
	return nil
}

func makeStressReq(ci, i int, rng *rand.Rand) stressReq {
	path := fmt.Sprintf("/c%d/r%d", ci, i)
	q := []string{"", "?resp=chunked", "?resp=big"}[rng.IntN(3)]
	var body []byte
	method := "GET"
	chunked := false
	switch rng.IntN(5) {
	case 0:
		method = "POST"
		body = make([]byte, rng.IntN(200))
	case 1:
		method = "POST"
		body = make([]byte, 20000+rng.IntN(100000))
		chunked = rng.IntN(2) == 0
	case 2:
		method = "HEAD"
	}
	for j := range body {
		body[j] = byte('a' + rng.IntN(26))
	}
	var b strings.Builder
	b.WriteString(method + " " + path + q + " HTTP/1.1\r\nHost: t\r\n")
	if chunked {
		b.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		rest := body
		for len(rest) > 0 {
			k := min(len(rest), 1+rng.IntN(30000))
			b.WriteString(strconv.FormatInt(int64(k), 16) + "\r\n")
			b.Write(rest[:k])
			b.WriteString("\r\n")
			rest = rest[k:]
		}
		b.WriteString("0\r\n\r\n")
	} else {
		if len(body) > 0 {
			b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
		}
		b.WriteString("\r\n")
		b.Write(body)
	}
	sum := sha256.Sum256(body)
	return stressReq{raw: b.String(), want: method + " " + path + q + " " + hex.EncodeToString(sum[:8]), head: method == "HEAD"}
}

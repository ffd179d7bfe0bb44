package proxy

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestMalformedRequestsNeverReachBackend sends the checklist's framing
// attacks (items 1-9) as raw bytes and asserts the status and that the
// backend saw nothing at all: no request and no connection.
func TestMalformedRequestsNeverReachBackend(t *testing.T) {
	bothPaths(t, testMalformedRequestsNeverReachBackend)
}

func testMalformedRequestsNeverReachBackend(t *testing.T) {
	b := newTestBackend(t, "s1", nil)
	addr := startProxy(t, basicCfg+"    server s1 {s1}\n", nil, b)
	const h = "Host: t\r\n"
	bigHeaders := strings.Repeat("X-Filler: "+strings.Repeat("a", 1000)+"\r\n", 66)
	manyHeaders := strings.Repeat("X-A: b\r\n", 101)
	cases := []struct {
		name   string
		raw    string
		status []int
	}{
		// 1
		{"CL and TE", "POST / HTTP/1.1\r\n" + h + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []int{400}},
		// 2
		{"two CLs", "POST / HTTP/1.1\r\n" + h + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", []int{400}},
		{"CL list", "POST / HTTP/1.1\r\n" + h + "Content-Length: 5, 6\r\n\r\nhello!", []int{400}},
		// 3
		{"empty CL", "POST / HTTP/1.1\r\n" + h + "Content-Length:\r\n\r\n", []int{400}},
		{"CL plus", "POST / HTTP/1.1\r\n" + h + "Content-Length: +5\r\n\r\nhello", []int{400}},
		{"CL minus", "POST / HTTP/1.1\r\n" + h + "Content-Length: -5\r\n\r\n", []int{400}},
		{"CL hex", "POST / HTTP/1.1\r\n" + h + "Content-Length: 0x5\r\n\r\nhello", []int{400}},
		{"CL underscore", "POST / HTTP/1.1\r\n" + h + "Content-Length: 5_0\r\n\r\n", []int{400}},
		{"CL inner space", "POST / HTTP/1.1\r\n" + h + "Content-Length: 5 5\r\n\r\n", []int{400}},
		{"CL overflow", "POST / HTTP/1.1\r\n" + h + "Content-Length: 99999999999999999999\r\n\r\n", []int{400}},
		// 4
		{"TE twice", "POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", []int{400}},
		{"TE gzip", "POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: gzip\r\n\r\n", []int{400, 501}},
		{"TE chunked gzip", "POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked, gzip\r\n\r\n", []int{400, 501}},
		{"TE xchunked", "POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: xchunked\r\n\r\n", []int{400, 501}},
		{"TE vtab", "POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: \vchunked\r\n\r\n0\r\n\r\n", []int{400}},
		{"TE in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []int{400}},
		// 5 (the head is fine: these are caught before anything is sent)
		{"chunk size not hex", "POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", []int{400}},
		{"chunk size empty", "POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n", []int{400}},
		{"chunk size overflow", "POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nx\r\n0\r\n\r\n", []int{400}},
		{"chunk bare LF", "POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", []int{400}},
		{"chunk ext CR", "POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n\r\n5;a=\rb\r\nhello\r\n0\r\n\r\n", []int{400}},
		// 6
		{"obs-fold", "GET / HTTP/1.1\r\n" + h + "X-A: 1\r\n  folded\r\n\r\n", []int{400}},
		// 7
		{"space before colon", "POST / HTTP/1.1\r\n" + h + "Content-Length : 5\r\n\r\nhello", []int{400}},
		{"empty header name", "GET / HTTP/1.1\r\n" + h + ": x\r\n\r\n", []int{400}},
		{"no colon", "GET / HTTP/1.1\r\n" + h + "NoColon\r\n\r\n", []int{400}},
		// 8
		{"NUL in value", "GET / HTTP/1.1\r\n" + h + "X-A: a\x00b\r\n\r\n", []int{400}},
		{"bare CR in value", "GET / HTTP/1.1\r\n" + h + "X-A: a\rb\r\n\r\n", []int{400}},
		{"bare LF in value", "GET / HTTP/1.1\r\n" + h + "X-A: a\nb\r\n\r\n", []int{400}},
		{"NUL in Host", "GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", []int{400}},
		{"hash in target", "GET /a#b HTTP/1.1\r\n" + h + "\r\n", []int{400}},
		{"space in target", "GET /a b HTTP/1.1\r\n" + h + "\r\n", []int{400}},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", []int{400}},
		{"two Hosts", "GET / HTTP/1.1\r\n" + h + h + "\r\n", []int{400}},
		// 9
		{"headers over 64 KiB", "GET / HTTP/1.1\r\n" + h + bigHeaders + "\r\n", []int{431}},
		{"101 headers", "GET / HTTP/1.1\r\n" + h + manyHeaders + "\r\n", []int{431}},
		{"HTTP/2.0", "GET / HTTP/2.0\r\n" + h + "\r\n", []int{505}},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", []int{400}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := b.conns.Load()
			out := rawExchange(t, addr, tc.raw)
			got := status(out)
			ok := false
			for _, s := range tc.status {
				ok = ok || got == s
			}
			if !ok {
				t.Fatalf("status %d, want %v; response %q", got, tc.status, firstLine(out))
			}
			if !strings.Contains(out, "Connection: close") {
				t.Errorf("error response does not close the connection")
			}
			if n := b.conns.Load() - before; n != 0 {
				t.Fatalf("backend saw %d connection(s); a malformed request must never reach it", n)
			}
		})
	}
	if n := b.requests.Load(); n != 0 {
		t.Fatalf("backend saw %d requests", n)
	}
}

func firstLine(s string) string {
	if i := strings.Index(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

// Checklist 17: headers trickling in at one byte per 100 ms get 408 once
// timeout http-request (a total deadline for the head) expires, not when
// the client stops sending.
func TestSlowHeaders408(t *testing.T) { bothPaths(t, testSlowHeaders408) }

func testSlowHeaders408(t *testing.T) {
	b := newTestBackend(t, "s1", nil)
	cfg := strings.Replace(basicCfg, "timeout client 5s", "timeout client 5s\n    timeout http-request 600ms", 1)
	addr := startProxy(t, cfg+"    server s1 {s1}\n", nil, b)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	done := make(chan string)
	go func() {
		out, _ := io.ReadAll(c)
		done <- string(out)
	}()
	req := "GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + strings.Repeat("a", 100)
	for i := 0; i < len(req); i++ {
		if _, err := c.Write([]byte{req[i]}); err != nil {
			break // closed by the proxy: expected after the timeout
		}
		select {
		case out := <-done:
			el := time.Since(start)
			if status(out) != 408 {
				t.Fatalf("got %q, want 408", firstLine(out))
			}
			if el < 550*time.Millisecond || el > 1500*time.Millisecond {
				t.Fatalf("408 after %v, want ~600ms", el)
			}
			if b.conns.Load() != 0 {
				t.Fatalf("backend saw the slow request")
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("no 408 while the client kept trickling headers for %v", time.Since(start))
}

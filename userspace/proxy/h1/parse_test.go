package h1

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// wantStatus asserts that err is an *Error with the given status.
func wantStatus(t *testing.T, err error, status int) {
	t.Helper()
	var he *Error
	if !errors.As(err, &he) {
		t.Fatalf("err = %v, want *Error with status %d", err, status)
	}
	if he.Status != status {
		t.Fatalf("status = %d (%s), want %d", he.Status, he.Reason, status)
	}
}

func TestParseRequestValid(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		body    string // bytes after the head; not part of HeadLen
		method  string
		target  string
		path    string
		query   string // "-" for nil
		minor   int
		cl      int64
		chunked bool
		close   bool
		upgrade bool
		expect  bool
		nhdr    int
	}{
		{
			name: "GET", in: "GET /a/b?x=1&y HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
			method: "GET", target: "/a/b?x=1&y", path: "/a/b", query: "x=1&y", minor: 1, cl: -1, nhdr: 2,
		},
		{
			name: "POST with Content-Length", in: "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n", body: "hello",
			method: "POST", target: "/upload", path: "/upload", query: "-", minor: 1, cl: 5, nhdr: 2,
		},
		{
			name: "POST chunked", in: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", body: "5\r\nhello\r\n0\r\n\r\n",
			method: "POST", target: "/", path: "/", query: "-", minor: 1, cl: -1, chunked: true, nhdr: 2,
		},
		{
			name: "chunked any case", in: "POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: ChUnKeD\r\n\r\n",
			method: "POST", target: "/", path: "/", query: "-", minor: 1, cl: -1, chunked: true, nhdr: 2,
		},
		{
			name: "HTTP/1.0 without keep-alive closes", in: "GET / HTTP/1.0\r\n\r\n",
			method: "GET", target: "/", path: "/", query: "-", minor: 0, cl: -1, close: true,
		},
		{
			name: "HTTP/1.0 keep-alive", in: "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
			method: "GET", target: "/", path: "/", query: "-", minor: 0, cl: -1, nhdr: 1,
		},
		{
			name: "HTTP/1.0 with Content-Length", in: "POST /f HTTP/1.0\r\nContent-Length: 3\r\n\r\n", body: "abc",
			method: "POST", target: "/f", path: "/f", query: "-", minor: 0, cl: 3, close: true, nhdr: 1,
		},
		{
			name: "HTTP/1.1 Connection close", in: "GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, close\r\n\r\n",
			method: "GET", target: "/", path: "/", query: "-", minor: 1, cl: -1, close: true, nhdr: 2,
		},
		{
			name: "absolute-form", in: "GET http://example.com:8080/p/q?r=s HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
			method: "GET", target: "http://example.com:8080/p/q?r=s", path: "/p/q", query: "r=s", minor: 1, cl: -1, nhdr: 1,
		},
		{
			name: "absolute-form without path", in: "GET https://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
			method: "GET", target: "https://example.com", path: "", query: "-", minor: 1, cl: -1, nhdr: 1,
		},
		{
			// Regression: the query used to be lost when no '/' followed the authority.
			name: "absolute-form query without path", in: "GET http://example.com?admin=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
			method: "GET", target: "http://example.com?admin=1", path: "", query: "admin=1", minor: 1, cl: -1, nhdr: 1,
		},
		{
			name: "OPTIONS *", in: "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
			method: "OPTIONS", target: "*", path: "*", query: "-", minor: 1, cl: -1, nhdr: 1,
		},
		{
			name: "CONNECT authority-form", in: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
			method: "CONNECT", target: "example.com:443", path: "example.com:443", query: "-", minor: 1, cl: -1, nhdr: 1,
		},
		{
			name: "leading CRLF", in: "\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
			method: "GET", target: "/", path: "/", query: "-", minor: 1, cl: -1, nhdr: 1,
		},
		{
			name: "two leading CRLF", in: "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
			method: "GET", target: "/", path: "/", query: "-", minor: 1, cl: -1, nhdr: 1,
		},
		{
			name: "identical duplicate Content-Length in a list", in: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n", body: "hello",
			method: "POST", target: "/", path: "/", query: "-", minor: 1, cl: 5, nhdr: 2,
		},
		{
			name: "identical duplicate Content-Length headers", in: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
			method: "POST", target: "/", path: "/", query: "-", minor: 1, cl: 5, nhdr: 3,
		},
		{
			name: "Content-Length 0", in: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
			method: "POST", target: "/", path: "/", query: "-", minor: 1, cl: 0, nhdr: 2,
		},
		{
			name: "Content-Length 2^63-1", in: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\n",
			method: "POST", target: "/", path: "/", query: "-", minor: 1, cl: 1<<63 - 1, nhdr: 2,
		},
		{
			name: "OWS around values and empty value", in: "GET / HTTP/1.1\r\nHost:h\r\nX-Empty:\r\nX-Pad: \t v \t\r\n\r\n",
			method: "GET", target: "/", path: "/", query: "-", minor: 1, cl: -1, nhdr: 3,
		},
		{
			name: "obs-text in a value", in: "GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n",
			method: "GET", target: "/", path: "/", query: "-", minor: 1, cl: -1, nhdr: 2,
		},
		{
			name: "upgrade and expect", in: "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nExpect: 100-continue\r\n\r\n",
			method: "GET", target: "/ws", path: "/ws", query: "-", minor: 1, cl: -1, upgrade: true, expect: true, nhdr: 4,
		},
		{
			name: "Upgrade without Connection upgrade", in: "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
			method: "GET", target: "/", path: "/", query: "-", minor: 1, cl: -1, nhdr: 2,
		},
		{
			name: "extension method", in: "PURGE /x HTTP/1.1\r\nHost: h\r\n\r\n",
			method: "PURGE", target: "/x", path: "/x", query: "-", minor: 1, cl: -1, nhdr: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var req Request
			p := []byte(tt.in + tt.body)
			if err := ParseRequest(p, &req); err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			if req.HeadLen != len(tt.in) {
				t.Errorf("HeadLen = %d, want %d", req.HeadLen, len(tt.in))
			}
			if string(req.Method) != tt.method || string(req.Target) != tt.target || string(req.Path) != tt.path {
				t.Errorf("method, target, path = %q %q %q, want %q %q %q", req.Method, req.Target, req.Path, tt.method, tt.target, tt.path)
			}
			if tt.query == "-" {
				if req.Query != nil {
					t.Errorf("Query = %q, want nil", req.Query)
				}
			} else if string(req.Query) != tt.query {
				t.Errorf("Query = %q, want %q", req.Query, tt.query)
			}
			if req.Major != 1 || req.Minor != tt.minor {
				t.Errorf("version = %d.%d, want 1.%d", req.Major, req.Minor, tt.minor)
			}
			if req.ContentLength != tt.cl || req.Chunked != tt.chunked {
				t.Errorf("ContentLength, Chunked = %d %v, want %d %v", req.ContentLength, req.Chunked, tt.cl, tt.chunked)
			}
			if req.Close != tt.close || req.Upgrade != tt.upgrade || req.Expect100 != tt.expect {
				t.Errorf("Close, Upgrade, Expect100 = %v %v %v, want %v %v %v", req.Close, req.Upgrade, req.Expect100, tt.close, tt.upgrade, tt.expect)
			}
			if len(req.Headers) != tt.nhdr {
				t.Errorf("%d headers, want %d", len(req.Headers), tt.nhdr)
			}
			for _, h := range req.Headers {
				if !strings.HasSuffix(string(h.Line), "\r\n") || !strings.HasPrefix(string(h.Line), string(h.Name)+":") {
					t.Errorf("header %q: Line %q does not span the raw line", h.Name, h.Line)
				}
			}
			if req.HasBody() != (tt.chunked || tt.cl > 0) {
				t.Errorf("HasBody = %v", req.HasBody())
			}
		})
	}
}

func TestParseRequestHeaderValues(t *testing.T) {
	var req Request
	in := "GET / HTTP/1.1\r\nHost:h\r\nX-Empty:\r\nX-Pad: \t v  w \t\r\n\r\n"
	if err := ParseRequest([]byte(in), &req); err != nil {
		t.Fatal(err)
	}
	want := []struct{ name, value, line string }{
		{"Host", "h", "Host:h\r\n"},
		{"X-Empty", "", "X-Empty:\r\n"},
		{"X-Pad", "v  w", "X-Pad: \t v  w \t\r\n"},
	}
	for i, w := range want {
		h := req.Headers[i]
		if string(h.Name) != w.name || string(h.Value) != w.value || string(h.Line) != w.line {
			t.Errorf("header %d = %q %q %q, want %q %q %q", i, h.Name, h.Value, h.Line, w.name, w.value, w.line)
		}
	}
}

// TestParseRequestKeepsConnFacts checks that the connection facts the caller
// set survive a parse, and that everything else is reset.
func TestParseRequestKeepsConnFacts(t *testing.T) {
	req := Request{SrcPort: 1234, DstPort: 80, Chunked: true, Close: true}
	if err := ParseRequest([]byte("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), &req); err != nil {
		t.Fatal(err)
	}
	if req.SrcPort != 1234 || req.DstPort != 80 || req.Chunked || req.Close || req.ContentLength != -1 {
		t.Fatalf("req = %+v", req)
	}
}

// TestParseRequestReject covers checklist items 1-9.
func TestParseRequestReject(t *testing.T) {
	const host = "Host: h\r\n"
	tests := []struct {
		name   string
		in     string
		status int
	}{
		// 1. CL and TE together.
		{"CL and TE", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"TE and CL", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", 400},
		// 2. Conflicting Content-Length.
		{"two different CL", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
		{"CL list 5, 6", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5, 6\r\n\r\n", 400},
		{"CL list then different CL", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5, 5\r\nContent-Length: 6\r\n\r\n", 400},
		// 3. Malformed Content-Length.
		{"empty CL", "POST / HTTP/1.1\r\n" + host + "Content-Length:\r\n\r\n", 400},
		{"blank CL", "POST / HTTP/1.1\r\n" + host + "Content-Length:  \r\n\r\n", 400},
		{"CL +5", "POST / HTTP/1.1\r\n" + host + "Content-Length: +5\r\n\r\n", 400},
		{"CL -5", "POST / HTTP/1.1\r\n" + host + "Content-Length: -5\r\n\r\n", 400},
		{"CL 0x5", "POST / HTTP/1.1\r\n" + host + "Content-Length: 0x5\r\n\r\n", 400},
		{"CL 5_0", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5_0\r\n\r\n", 400},
		{"CL space 5 space 5", "POST / HTTP/1.1\r\n" + host + "Content-Length:  5 5\r\n\r\n", 400},
		{"CL 5.0", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5.0\r\n\r\n", 400},
		{"CL 2^63", "POST / HTTP/1.1\r\n" + host + "Content-Length: 9223372036854775808\r\n\r\n", 400},
		{"CL 2^64", "POST / HTTP/1.1\r\n" + host + "Content-Length: 18446744073709551616\r\n\r\n", 400},
		{"CL huge", "POST / HTTP/1.1\r\n" + host + "Content-Length: 99999999999999999999999999\r\n\r\n", 400},
		{"CL empty list element", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5,,5\r\n\r\n", 400},
		{"CL leading comma", "POST / HTTP/1.1\r\n" + host + "Content-Length: ,5\r\n\r\n", 400},
		{"CL trailing comma", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5,\r\n\r\n", 400},
		{"CL only comma", "POST / HTTP/1.1\r\n" + host + "Content-Length: ,\r\n\r\n", 400},
		// 4. Transfer-Encoding other than exactly chunked as the final coding. A
		// coding list that is malformed or does not end in chunked cannot be
		// framed at all and is a 400; "gzip, chunked" is well-formed, framed
		// by chunked, but sluice does not implement gzip as a transfer coding,
		// so it is a 501, which the checklist allows for an unknown coding.
		{"TE chunked, chunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked, chunked\r\n\r\n", 400},
		{"TE chunked twice in two headers", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"TE gzip", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip\r\n\r\n", 400},
		{"TE chunked, gzip", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked, gzip\r\n\r\n", 400},
		{"TE chunked then gzip header", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
		{"TE xchunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: xchunked\r\n\r\n", 400},
		{"TE chunkedx", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunkedx\r\n\r\n", 400},
		{"TE gzip, chunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip, chunked\r\n\r\n", 501},
		{"TE vertical tab", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: \vchunked\r\n\r\n", 400},
		{"TE vertical tab inside", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chun\vked\r\n\r\n", 400},
		{"TE form feed", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\f\r\n\r\n", 400},
		{"TE empty", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding:\r\n\r\n", 400},
		{"TE quoted", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: \"chunked\"\r\n\r\n", 400},
		{"TE chunked with parameter", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked;q=1\r\n\r\n", 400},
		{"TE space inside", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chun ked\r\n\r\n", 400},
		// Regression: empty list elements around chunked were ignored, and the
		// line was forwarded as it is to a server that may not ignore them.
		{"TE leading comma", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: , chunked\r\n\r\n", 400},
		{"TE trailing comma", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked,\r\n\r\n", 400},
		{"TE only comma then chunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: ,\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"TE and CL in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400},
		// 6. obs-fold.
		{"obs-fold space", "GET / HTTP/1.1\r\n" + host + "X: a\r\n b\r\n\r\n", 400},
		{"obs-fold tab", "GET / HTTP/1.1\r\n" + host + "X: a\r\n\tb\r\n\r\n", 400},
		{"obs-fold hiding TE", "POST / HTTP/1.1\r\n" + host + "X: a\r\n Transfer-Encoding: chunked\r\n\r\n", 400},
		{"space before first header", "GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400},
		// 7. Header name syntax.
		{"space before colon", "POST / HTTP/1.1\r\n" + host + "Content-Length : 5\r\n\r\n", 400},
		{"tab before colon", "POST / HTTP/1.1\r\n" + host + "Content-Length\t: 5\r\n\r\n", 400},
		{"empty header name", "GET / HTTP/1.1\r\n" + host + ": v\r\n\r\n", 400},
		{"line without colon", "GET / HTTP/1.1\r\n" + host + "NoColonHere\r\n\r\n", 400},
		{"non-token name", "GET / HTTP/1.1\r\n" + host + "X(y): v\r\n\r\n", 400},
		{"NUL in name", "GET / HTTP/1.1\r\n" + host + "X\x00Y: v\r\n\r\n", 400},
		// 8. Bad bytes in values and targets.
		{"NUL in value", "GET / HTTP/1.1\r\n" + host + "X: a\x00b\r\n\r\n", 400},
		{"bare CR in value", "GET / HTTP/1.1\r\n" + host + "X: a\rb\r\n\r\n", 400},
		{"bare CR at end of value", "GET / HTTP/1.1\r\n" + host + "X: a\r\r\n\r\n", 400},
		{"bare LF in value", "GET / HTTP/1.1\r\n" + host + "X: a\nb\r\n\r\n", 400},
		{"bare LF line end", "GET / HTTP/1.1\r\n" + host + "X: a\n\r\n", 400},
		{"bare LF ends head", "GET / HTTP/1.1\r\n" + host + "\n", 400},
		{"bare LF after request line", "GET / HTTP/1.1\n" + host + "\r\n", 400},
		{"bare CR in request line", "GET /\r HTTP/1.1\r\n" + host + "\r\n", 400},
		{"bare CR incomplete", "GET / HTTP/1.1\r\nX: a\rb", 400},
		{"DEL in value", "GET / HTTP/1.1\r\n" + host + "X: a\x7fb\r\n\r\n", 400},
		{"VT in value", "GET / HTTP/1.1\r\n" + host + "X: a\vb\r\n\r\n", 400},
		{"NUL in Host", "GET / HTTP/1.1\r\nHost: h\x00.example\r\n\r\n", 400},
		{"slash in Host", "GET / HTTP/1.1\r\nHost: h/admin\r\n\r\n", 400},
		{"at in Host", "GET / HTTP/1.1\r\nHost: user@h\r\n\r\n", 400},
		{"space in Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"hash in target", "GET /a#frag HTTP/1.1\r\n" + host + "\r\n", 400},
		{"space in target", "GET /a b HTTP/1.1\r\n" + host + "\r\n", 400},
		{"tab in target", "GET /a\tb HTTP/1.1\r\n" + host + "\r\n", 400},
		{"NUL in target", "GET /a\x00 HTTP/1.1\r\n" + host + "\r\n", 400},
		{"obs-text in target", "GET /caf\xc3\xa9 HTTP/1.1\r\n" + host + "\r\n", 400},
		{"empty target", "GET  HTTP/1.1\r\n" + host + "\r\n", 400},
		{"relative target", "GET a/b HTTP/1.1\r\n" + host + "\r\n", 400},
		// Regression: anything before "://" was taken as a scheme, so the
		// path an ACL saw ("/y") was not the one the server saw.
		{"bogus scheme", "GET admin/://x/y HTTP/1.1\r\n" + host + "\r\n", 400},
		{"scheme starting with digit", "GET 1http://x/y HTTP/1.1\r\n" + host + "\r\n", 400},
		{"double space", "GET  / HTTP/1.1\r\n" + host + "\r\n", 400},
		{"no version", "GET /\r\n" + host + "\r\n", 400},
		{"lower-case version", "GET / http/1.1\r\n" + host + "\r\n", 400},
		{"trailing space after version", "GET / HTTP/1.1 \r\n" + host + "\r\n", 400},
		{"two-digit minor", "GET / HTTP/1.10\r\n" + host + "\r\n", 400},
		{"non-token method", "G(T / HTTP/1.1\r\n" + host + "\r\n", 400},
		{"empty method", " / HTTP/1.1\r\n" + host + "\r\n", 400},
		{"empty request line", "\r\n\r\n\r\nGET / HTTP/1.1\r\n" + host + "\r\n", 400},
		// Host.
		{"missing Host on 1.1", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400},
		{"two different Hosts", "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400},
		// Regression: HTTP/1.2 and up are 1.1 for the proxy, which needs Host too.
		{"missing Host on 1.9", "GET / HTTP/1.9\r\n\r\n", 400},
		// Versions.
		{"HTTP/2.0", "GET / HTTP/2.0\r\n" + host + "\r\n", 505},
		{"HTTP/0.9", "GET / HTTP/0.9\r\n" + host + "\r\n", 505},
		{"HTTP/3.0", "GET / HTTP/3.0\r\n" + host + "\r\n", 505},
		{"PRI preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var req Request
			wantStatus(t, ParseRequest([]byte(tt.in), &req), tt.status)
		})
	}
}

// bigHead returns a GET head of exactly n bytes (n >= 64).
func bigHead(n int) string {
	const pre, post = "GET / HTTP/1.1\r\nHost: h\r\nX: ", "\r\n\r\n"
	return pre + strings.Repeat("a", n-len(pre)-len(post)) + post
}

func TestParseRequestLimits(t *testing.T) {
	var req Request
	t.Run("head of exactly MaxHeaderBytes", func(t *testing.T) {
		in := bigHead(MaxHeaderBytes)
		if err := ParseRequest([]byte(in+"trailing body"), &req); err != nil {
			t.Fatal(err)
		}
		if req.HeadLen != MaxHeaderBytes {
			t.Fatalf("HeadLen = %d", req.HeadLen)
		}
	})
	t.Run("head one byte over", func(t *testing.T) {
		wantStatus(t, ParseRequest([]byte(bigHead(MaxHeaderBytes+1)), &req), 431)
	})
	t.Run("head far over", func(t *testing.T) {
		wantStatus(t, ParseRequest([]byte(bigHead(MaxHeaderBytes*2)), &req), 431)
	})
	t.Run("incomplete head over the limit", func(t *testing.T) {
		in := "GET / HTTP/1.1\r\nHost: h\r\nX: " + strings.Repeat("a", MaxHeaderBytes)
		wantStatus(t, ParseRequest([]byte(in), &req), 431)
	})
	t.Run("incomplete request line over the limit", func(t *testing.T) {
		in := "GET /" + strings.Repeat("a", MaxHeaderBytes)
		wantStatus(t, ParseRequest([]byte(in), &req), 431)
	})
	t.Run("incomplete head at the limit", func(t *testing.T) {
		in := bigHead(MaxHeaderBytes)
		if err := ParseRequest([]byte(in[:len(in)-1]), &req); err != ErrIncomplete {
			t.Fatalf("err = %v, want ErrIncomplete", err)
		}
	})
	many := func(n int) string {
		var b strings.Builder
		b.WriteString("GET / HTTP/1.1\r\nHost: h\r\n")
		for i := 1; i < n; i++ {
			b.WriteString("X-" + strconv.Itoa(i) + ": v\r\n")
		}
		b.WriteString("\r\n")
		return b.String()
	}
	t.Run("MaxHeaders headers", func(t *testing.T) {
		if err := ParseRequest([]byte(many(MaxHeaders)), &req); err != nil {
			t.Fatal(err)
		}
		if len(req.Headers) != MaxHeaders {
			t.Fatalf("%d headers", len(req.Headers))
		}
	})
	t.Run("MaxHeaders+1 headers", func(t *testing.T) {
		wantStatus(t, ParseRequest([]byte(many(MaxHeaders+1)), &req), 431)
	})
}

var validRequests = []string{
	"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /a?b HTTP/1.0\r\n\r\n",
	"\r\nPOST /x HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5, 5\r\nConnection: keep-alive\r\n\r\n",
	"\r\n\r\nPOST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-Empty:\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET http://h:1/p?q HTTP/1.1\r\nHost: h:1\r\nX:\t a \t\r\n\r\n",
}

// TestParseRequestPrefixes checks that every proper prefix of a valid request
// head is ErrIncomplete, never an error or a success.
func TestParseRequestPrefixes(t *testing.T) {
	for _, in := range validRequests {
		var req Request
		if err := ParseRequest([]byte(in), &req); err != nil || req.HeadLen != len(in) {
			t.Fatalf("%q: err %v, HeadLen %d", in, err, req.HeadLen)
		}
		for i := 0; i < len(in); i++ {
			if err := ParseRequest([]byte(in[:i]), &req); err != ErrIncomplete {
				t.Errorf("%q: prefix of %d bytes: err = %v, want ErrIncomplete", in, i, err)
			}
		}
	}
}

func TestEachToken(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"a", []string{"a"}},
		{" a , b ,, c\t", []string{"a", "b", "c"}},
		{",,,", nil},
		{"close, Upgrade", []string{"close", "Upgrade"}},
	}
	for _, tt := range tests {
		var got []string
		EachToken([]byte(tt.in), func(tok []byte) bool { got = append(got, string(tok)); return true })
		if strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("EachToken(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	n := 0
	EachToken([]byte("a, b, c"), func([]byte) bool { n++; return false })
	if n != 1 {
		t.Errorf("EachToken did not stop: %d calls", n)
	}
}

func TestEqualFold(t *testing.T) {
	for _, tt := range []struct {
		b, s string
		want bool
	}{
		{"Content-Length", "content-length", true},
		{"CONTENT-LENGTH", "content-length", true},
		{"content-lengt", "content-length", false},
		{"Content_Length", "content-length", false},
		{"\xc3\xa9", "\xc3\xa9", true},
		{"", "", true},
	} {
		if got := EqualFold([]byte(tt.b), tt.s); got != tt.want {
			t.Errorf("EqualFold(%q, %q) = %v", tt.b, tt.s, got)
		}
	}
}

func TestRequestHelpers(t *testing.T) {
	var req Request
	for _, tt := range []struct {
		in         string
		proto      string
		idempotent bool
		head       bool
	}{
		{"GET / HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1", true, false},
		{"HEAD / HTTP/1.0\r\n\r\n", "HTTP/1.0", true, true},
		{"POST / HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1", false, false},
		{"PUT / HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1", true, false},
		{"DELETE / HTTP/1.2\r\nHost: h\r\n\r\n", "HTTP/1.1", true, false},
		{"get / HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1", false, false}, // methods are case-sensitive
	} {
		if err := ParseRequest([]byte(tt.in), &req); err != nil {
			t.Fatalf("%q: %v", tt.in, err)
		}
		if req.Proto() != tt.proto || req.Idempotent() != tt.idempotent || req.IsHead() != tt.head {
			t.Errorf("%q: Proto %s Idempotent %v IsHead %v", tt.in, req.Proto(), req.Idempotent(), req.IsHead())
		}
	}
}

// browserGET is a typical browser navigation request.
const browserGET = "GET /search?q=sluice&lang=en HTTP/1.1\r\n" +
	"Host: www.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" +
	"Accept-Language: en-US,en;q=0.5\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
	"Referer: https://www.example.com/\r\n" +
	"Connection: keep-alive\r\n" +
	"Cookie: session=3f2a9c1e7b; theme=dark\r\n" +
	"Upgrade-Insecure-Requests: 1\r\n" +
	"Sec-Fetch-Dest: document\r\n" +
	"Sec-Fetch-Mode: navigate\r\n" +
	"\r\n"

func TestParseRequestAllocs(t *testing.T) {
	p := []byte(browserGET)
	req := Request{Headers: make([]Header, 0, 32)}
	allocs := testing.AllocsPerRun(100, func() {
		if err := ParseRequest(p, &req); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("ParseRequest allocates %v times per request, want 0", allocs)
	}
	// Rejecting garbage does not allocate either.
	bad := []byte("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
	allocs = testing.AllocsPerRun(100, func() { _ = ParseRequest(bad, &req) })
	if allocs != 0 {
		t.Fatalf("rejecting a request allocates %v times, want 0", allocs)
	}
}

func BenchmarkParseRequest(b *testing.B) {
	p := []byte(browserGET)
	req := Request{Headers: make([]Header, 0, 32)}
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if err := ParseRequest(p, &req); err != nil {
			b.Fatal(err)
		}
	}
}

func TestAbsoluteFormHostMustMatch(t *testing.T) {
	var req Request
	if err := ParseRequest([]byte("GET http://Public.example/x HTTP/1.1\r\nHost: public.example\r\n\r\n"), &req); err != nil {
		t.Fatalf("matching Host refused: %v", err)
	}
	err := ParseRequest([]byte("GET http://admin.internal/x HTTP/1.1\r\nHost: public.example\r\n\r\n"), &req)
	var he *Error
	if !errors.As(err, &he) || he.Status != 400 {
		t.Fatalf("authority and Host disagree: err %v, want 400", err)
	}
}

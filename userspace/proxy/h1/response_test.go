package h1

import (
	"strings"
	"testing"
)

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		status    int
		minor     int
		line      string
		cl        int64
		chunked   bool
		close     bool
		keepAlive bool
		body      BodyKind // for a GET
		headBody  BodyKind // for a HEAD
	}{
		{
			name: "200 with Content-Length", in: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
			status: 200, minor: 1, line: "HTTP/1.1 200 OK", cl: 5, body: BodyLength,
		},
		{
			name: "Content-Length 0", in: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
			status: 200, minor: 1, line: "HTTP/1.1 200 OK", cl: 0, body: BodyNone,
		},
		{
			name: "identical Content-Length list", in: "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n",
			status: 200, minor: 1, line: "HTTP/1.1 200 OK", cl: 7, body: BodyLength,
		},
		{
			name: "chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
			status: 200, minor: 1, line: "HTTP/1.1 200 OK", cl: -1, chunked: true, body: BodyChunked,
		},
		{
			name: "gzip, chunked is chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
			status: 200, minor: 1, line: "HTTP/1.1 200 OK", cl: -1, chunked: true, body: BodyChunked,
		},
		{
			// RFC 9112 6.3: TE overrides CL; the server connection is not
			// reused after such a response.
			name: "chunked and Content-Length", in: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
			status: 200, minor: 1, line: "HTTP/1.1 200 OK", cl: -1, chunked: true, close: true, body: BodyChunked,
		},
		{
			name: "TE not ending in chunked reads to close", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
			status: 200, minor: 1, line: "HTTP/1.1 200 OK", cl: -1, close: true, body: BodyClose,
		},
		{
			name: "chunked, chunked reads to close", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
			status: 200, minor: 1, line: "HTTP/1.1 200 OK", cl: -1, close: true, body: BodyClose,
		},
		{
			name: "close-delimited", in: "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
			status: 200, minor: 1, line: "HTTP/1.1 200 OK", cl: -1, close: true, body: BodyClose,
		},
		{
			name: "no framing on 1.1", in: "HTTP/1.1 200 OK\r\n\r\n",
			status: 200, minor: 1, line: "HTTP/1.1 200 OK", cl: -1, body: BodyClose,
		},
		{
			name: "no reason phrase", in: "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n",
			status: 404, minor: 1, line: "HTTP/1.1 404", cl: 0, body: BodyNone,
		},
		{
			name: "empty reason phrase", in: "HTTP/1.1 200 \r\nContent-Length: 1\r\n\r\n",
			status: 200, minor: 1, line: "HTTP/1.1 200 ", cl: 1, body: BodyLength,
		},
		{
			name: "reason with spaces and obs-text", in: "HTTP/1.1 418 I'm a\tteapot \xe2\x98\x95\r\nContent-Length: 1\r\n\r\n",
			status: 418, minor: 1, line: "HTTP/1.1 418 I'm a\tteapot \xe2\x98\x95", cl: 1, body: BodyLength,
		},
		{
			name: "101", in: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: abc=\r\n\r\n",
			status: 101, minor: 1, line: "HTTP/1.1 101 Switching Protocols", cl: -1, body: BodyNone,
		},
		{
			name: "100 Continue", in: "HTTP/1.1 100 Continue\r\n\r\n",
			status: 100, minor: 1, line: "HTTP/1.1 100 Continue", cl: -1, body: BodyNone,
		},
		{
			name: "204 ignores Content-Length", in: "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
			status: 204, minor: 1, line: "HTTP/1.1 204 No Content", cl: 10, body: BodyNone,
		},
		{
			name: "304 ignores Content-Length", in: "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
			status: 304, minor: 1, line: "HTTP/1.1 304 Not Modified", cl: 10, body: BodyNone,
		},
		{
			name: "304 chunked has no body", in: "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
			status: 304, minor: 1, line: "HTTP/1.1 304 Not Modified", cl: -1, chunked: true, body: BodyNone,
		},
		{
			name: "HTTP/1.0 closes", in: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
			status: 200, minor: 0, line: "HTTP/1.0 200 OK", cl: 2, close: true, body: BodyLength,
		},
		{
			name: "HTTP/1.0 keep-alive", in: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
			status: 200, minor: 0, line: "HTTP/1.0 200 OK", cl: 2, keepAlive: true, body: BodyLength,
		},
		{
			name: "HTTP/1.0 keep-alive without length", in: "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n",
			status: 200, minor: 0, line: "HTTP/1.0 200 OK", cl: -1, keepAlive: true, body: BodyClose,
		},
		{
			// RFC 9112 6.1: TE in HTTP/1.0 is faulty framing; close after.
			name: "HTTP/1.0 keep-alive chunked", in: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
			status: 200, minor: 0, line: "HTTP/1.0 200 OK", cl: -1, chunked: true, close: true, keepAlive: true, body: BodyChunked,
		},
		{
			name: "HTTP/1.1 keep-alive token is no-op", in: "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
			status: 200, minor: 1, line: "HTTP/1.1 200 OK", cl: 2, body: BodyLength,
		},
		{
			name: "HTTP/1.2", in: "HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\n",
			status: 200, minor: 2, line: "HTTP/1.2 200 OK", cl: 2, body: BodyLength,
		},
		{
			name: "status 999", in: "HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\n",
			status: 999, minor: 1, line: "HTTP/1.1 999 Odd", cl: 2, body: BodyLength,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var res Response
			if err := ParseResponse([]byte(tt.in+"body bytes"), &res); err != nil {
				t.Fatalf("ParseResponse: %v", err)
			}
			if res.HeadLen != len(tt.in) || res.Status != tt.status || res.Major != 1 || res.Minor != tt.minor || string(res.StatusLine) != tt.line {
				t.Errorf("HeadLen %d status %d version %d.%d line %q, want %d %d 1.%d %q",
					res.HeadLen, res.Status, res.Major, res.Minor, res.StatusLine, len(tt.in), tt.status, tt.minor, tt.line)
			}
			if res.ContentLength != tt.cl || res.Chunked != tt.chunked || res.Close != tt.close || res.KeepAlive != tt.keepAlive {
				t.Errorf("ContentLength %d Chunked %v Close %v KeepAlive %v, want %d %v %v %v",
					res.ContentLength, res.Chunked, res.Close, res.KeepAlive, tt.cl, tt.chunked, tt.close, tt.keepAlive)
			}
			if got := res.Body(false); got != tt.body {
				t.Errorf("Body(false) = %d, want %d", got, tt.body)
			}
			if got := res.Body(true); got != BodyNone {
				t.Errorf("Body(true) = %d, want BodyNone: a response to HEAD has no body", got)
			}
		})
	}
}

func TestParseResponseFields(t *testing.T) {
	var res Response
	in := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
	if err := ParseResponse([]byte(in), &res); err != nil {
		t.Fatal(err)
	}
	if string(res.UpgradeTo) != "websocket" || string(res.Accept) != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" || len(res.Headers) != 3 {
		t.Fatalf("UpgradeTo %q Accept %q, %d headers", res.UpgradeTo, res.Accept, len(res.Headers))
	}
}

func TestParseResponseInvalid(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"HTTP/2.0", "HTTP/2.0 200 OK\r\n\r\n"},
		{"HTTP/1.x", "HTTP/1.x 200 OK\r\n\r\n"},
		{"lower-case", "http/1.1 200 OK\r\n\r\n"},
		{"two-digit status", "HTTP/1.1 20 OK\r\n\r\n"},
		{"four-digit status", "HTTP/1.1 2000 OK\r\n\r\n"},
		{"status below 100", "HTTP/1.1 099 Low\r\n\r\n"},
		{"non-digit status", "HTTP/1.1 2x0 OK\r\n\r\n"},
		{"no space after version", "HTTP/1.1200 OK\r\n\r\n"},
		{"two spaces after version", "HTTP/1.1  200 OK\r\n\r\n"},
		{"tab before reason", "HTTP/1.1 200\tOK\r\n\r\n"},
		{"empty status line", "\r\n\r\n"},
		{"garbage", "garbage\r\n\r\n"},
		{"bare LF status line", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"},
		// Regression: the reason phrase was not checked, and it is
		// forwarded to the client as it is.
		{"bare CR in reason", "HTTP/1.1 200 OK\rSet-Cookie: a=b\r\n\r\n"},
		{"NUL in reason", "HTTP/1.1 200 O\x00K\r\n\r\n"},
		{"bad Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n"},
		{"conflicting Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"},
		{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n"},
		{"NUL in header", "HTTP/1.1 200 OK\r\nX: a\x00\r\n\r\n"},
		{"header section too large", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", MaxHeaderBytes) + "\r\n\r\n"},
		{"incomplete head too large", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", MaxHeaderBytes)},
		// Regression: a status line longer than the limit was a 431.
		{"incomplete status line too large", "HTTP/1.1 200 " + strings.Repeat("a", MaxHeaderBytes)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var res Response
			wantStatus(t, ParseResponse([]byte(tt.in), &res), 502)
		})
	}
}

func TestParseResponsePrefixes(t *testing.T) {
	for _, in := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
		"HTTP/1.0 404\r\nConnection: keep-alive\r\nX:\r\n\r\n",
	} {
		var res Response
		for i := 0; i < len(in); i++ {
			if err := ParseResponse([]byte(in[:i]), &res); err != ErrIncomplete {
				t.Errorf("%q: prefix of %d bytes: err = %v, want ErrIncomplete", in, i, err)
			}
		}
	}
}

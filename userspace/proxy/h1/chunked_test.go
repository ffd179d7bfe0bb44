package h1

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

// chunkResult is what a Chunked made of a byte stream.
type chunkResult struct {
	n    int    // bytes consumed
	data []byte // the decoded data bytes
	done bool
	err  error
}

// feedChunked feeds pieces to a fresh Chunked one after another, the way a
// proxy does as reads complete, until the body ends or fails.
func feedChunked(pieces [][]byte) chunkResult {
	var c Chunked
	var r chunkResult
	for _, p := range pieces {
		for len(p) > 0 && !c.Done() {
			n, data, err := c.Next(p)
			if data {
				r.data = append(r.data, p[:n]...)
			}
			r.n += n
			p = p[n:]
			if err != nil {
				r.err = err
				return r
			}
			if n == 0 && !c.Done() {
				panic("Chunked.Next consumed nothing")
			}
		}
		if c.Done() {
			break
		}
	}
	r.done = c.Done()
	return r
}

// splits returns ways to cut p: whole, byte by byte, and random pieces.
func splits(p []byte, rng *rand.Rand) [][][]byte {
	out := [][][]byte{{p}}
	var bytewise [][]byte
	for i := range p {
		bytewise = append(bytewise, p[i:i+1])
	}
	out = append(out, bytewise)
	for range 20 {
		var pieces [][]byte
		rest := p
		for len(rest) > 0 {
			k := 1 + rng.IntN(min(len(rest), 7))
			pieces = append(pieces, rest[:k])
			rest = rest[k:]
		}
		out = append(out, pieces)
	}
	return out
}

func TestChunkedValid(t *testing.T) {
	tests := []struct {
		name string
		body string
		data string
	}{
		{"empty body", "0\r\n\r\n", ""},
		{"one chunk", "5\r\nhello\r\n0\r\n\r\n", "hello"},
		{"two chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world"},
		{"uppercase hex", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789"},
		{"lowercase hex", "a\r\n0123456789\r\n0\r\n\r\n", "0123456789"},
		{"leading zeros", "0005\r\nhello\r\n000\r\n\r\n", "hello"},
		{"16 hex digits", "0000000000000005\r\nhello\r\n0000000000000000\r\n\r\n", "hello"},
		{"extension", "5;name=value\r\nhello\r\n0;last\r\n\r\n", "hello"},
		{"extensions with quoted string", "5;a=\"b c\";d\r\nhello\r\n0\r\n\r\n", "hello"},
		{"BWS before extension", "5 ;a=b\r\nhello\r\n0\t;x\r\n\r\n", "hello"},
		{"BWS after size", "5 \r\nhello\r\n0\t\r\n\r\n", "hello"},
		{"trailer", "5\r\nhello\r\n0\r\nExpires: never\r\n\r\n", "hello"},
		{"two trailers", "5\r\nhello\r\n0\r\nA: 1\r\nB-c:\r\n\r\n", "hello"},
		{"trailer with obs-text", "0\r\nX: caf\xc3\xa9\r\n\r\n", ""},
		{"data holding CRLF and hex", "7\r\n0\r\n\r\nab\r\n0\r\n\r\n", "0\r\n\r\nab"},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const after = "GET /next HTTP/1.1\r\n\r\n"
			p := []byte(tt.body + after)
			for _, pieces := range splits(p, rng) {
				r := feedChunked(pieces)
				if r.err != nil || !r.done {
					t.Fatalf("%d pieces: done %v err %v", len(pieces), r.done, r.err)
				}
				if r.n != len(tt.body) {
					t.Fatalf("%d pieces: consumed %d bytes, want %d (bytes after the end must stay)", len(pieces), r.n, len(tt.body))
				}
				if string(r.data) != tt.data {
					t.Fatalf("%d pieces: data %q, want %q", len(pieces), r.data, tt.data)
				}
			}
			// Scan agrees and stops at the end.
			var c Chunked
			n, err := c.Scan(p)
			if err != nil || n != len(tt.body) || !c.Done() {
				t.Fatalf("Scan = %d, %v, Done %v", n, err, c.Done())
			}
			if n, _, err := c.Next([]byte(after)); n != 0 || err != nil {
				t.Fatalf("Next after Done = %d, %v", n, err)
			}
			// Every proper prefix is neither done nor an error.
			for i := range len(tt.body) {
				var c Chunked
				if n, err := c.Scan(p[:i]); err != nil || n != i || c.Done() {
					t.Fatalf("prefix %d: Scan = %d, %v, Done %v", i, n, err, c.Done())
				}
			}
		})
	}
}

func TestChunkedInvalid(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"non-hex size", "g\r\nhello\r\n0\r\n\r\n"},
		{"hex prefix", "0x5\r\nhello\r\n0\r\n\r\n"},
		{"empty size", "\r\nhello\r\n0\r\n\r\n"},
		{"only extension", ";x\r\n"},
		{"negative size", "-5\r\nhello\r\n0\r\n\r\n"},
		{"plus size", "+5\r\nhello\r\n0\r\n\r\n"},
		{"leading space", " 5\r\nhello\r\n0\r\n\r\n"},
		{"junk after size", "5 x\r\nhello\r\n0\r\n\r\n"},
		{"two sizes", "5 5\r\nhello\r\n0\r\n\r\n"},
		{"size over 64 bits", "10000000000000000\r\n"},
		{"size far over 64 bits", "fffffffffffffffffffffffff\r\n"},
		// Regression: more than 16 digits were accepted when they led with
		// zeros, where net/http (and others) stop at 16.
		{"17 digits of leading zeros", "00000000000000005\r\nhello\r\n0\r\n\r\n"},
		{"17 zeros as last chunk", "00000000000000000\r\n\r\n"},
		{"bare LF after size", "5\nhello\r\n0\r\n\r\n"},
		{"bare LF after extension", "5;a\nhello\r\n0\r\n\r\n"},
		{"bare CR after size", "5\rhello\r\n0\r\n\r\n"},
		{"CR inside extension", "5;a\rb\r\nhello\r\n0\r\n\r\n"},
		{"NUL inside extension", "5;a\x00b\r\nhello\r\n0\r\n\r\n"},
		{"LF inside extension", "5;a\nb\r\nhello\r\n0\r\n\r\n"},
		{"missing CRLF after data", "5\r\nhelloX\r\n0\r\n\r\n"},
		{"LF only after data", "5\r\nhello\n0\r\n\r\n"},
		{"CR only after data", "5\r\nhello\r0\r\n\r\n"},
		{"data too long", "3\r\nhello\r\n0\r\n\r\n"},
		{"bare LF after last chunk", "0\r\n\n"},
		{"bare LF ends trailer", "0\r\nX: y\n\r\n"},
		{"bare CR in trailer", "0\r\nX: a\rb\r\n\r\n"},
		{"NUL in trailer", "0\r\nX: a\x00b\r\n\r\n"},
		{"obs-fold trailer", "0\r\n X: y\r\n\r\n"},
		{"trailer folded", "0\r\nX: y\r\n z\r\n\r\n"},
		{"trailer empty name", "0\r\n: y\r\n\r\n"},
		// Regression: a trailer line without a colon, or with a space in the
		// name, was accepted (and would be forwarded as it is).
		{"trailer without colon", "0\r\nGET /admin HTTP/1.1\r\n\r\n"},
		{"trailer space before colon", "0\r\nX : y\r\n\r\n"},
		{"trailer name with bad byte", "0\r\nX(y): z\r\n\r\n"},
		{"size line too long", "5;" + strings.Repeat("a", maxChunkLine) + "\r\nhello\r\n0\r\n\r\n"},
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want chunkResult
			for i, pieces := range splits([]byte(tt.body), rng) {
				r := feedChunked(pieces)
				if r.err == nil {
					t.Fatalf("%d pieces: no error (done %v after %d bytes)", len(pieces), r.done, r.n)
				}
				wantStatus(t, r.err, 400)
				if i == 0 {
					want = r
				} else if r.n != want.n || !bytes.Equal(r.data, want.data) {
					t.Fatalf("%d pieces: failed after %d bytes, want %d", len(pieces), r.n, want.n)
				}
			}
		})
	}
}

func TestChunkedLimits(t *testing.T) {
	t.Run("longest size line", func(t *testing.T) {
		// maxChunkLine counts the line and its CR.
		ext := strings.Repeat("a", maxChunkLine-3)
		r := feedChunked([][]byte{[]byte("5;" + ext + "\r\nhello\r\n0\r\n\r\n")})
		if r.err != nil || !r.done {
			t.Fatalf("done %v err %v", r.done, r.err)
		}
		r = feedChunked([][]byte{[]byte("5;" + ext + "a\r\nhello\r\n0\r\n\r\n")})
		if r.err == nil {
			t.Fatal("a size line over the limit was accepted")
		}
	})
	t.Run("largest size", func(t *testing.T) {
		var c Chunked
		n, err := c.Scan([]byte("ffffffffffffffff\r\nabc"))
		if err != nil || n != 21 {
			t.Fatalf("Scan = %d, %v", n, err)
		}
		if in, left := c.InData(); !in || left != 1<<64-1-3 {
			t.Fatalf("InData = %v, %d", in, left)
		}
	})
	t.Run("trailer section too large", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("0\r\n")
		for b.Len() <= maxTrailerSize {
			b.WriteString("X: " + strings.Repeat("v", 1000) + "\r\n")
		}
		b.WriteString("\r\n")
		r := feedChunked([][]byte{[]byte(b.String())})
		wantStatus(t, r.err, 400)
	})
}

func TestChunkedInData(t *testing.T) {
	var c Chunked
	p := []byte("5\r\nhello\r\n0\r\n\r\n")
	n, data, err := c.Next(p)
	if n != 3 || data || err != nil {
		t.Fatalf("Next = %d %v %v", n, data, err)
	}
	if in, left := c.InData(); !in || left != 5 {
		t.Fatalf("InData = %v %d", in, left)
	}
	n, data, err = c.Next(p[3:5])
	if n != 2 || !data || err != nil {
		t.Fatalf("Next = %d %v %v", n, data, err)
	}
	if in, left := c.InData(); !in || left != 3 {
		t.Fatalf("InData = %v %d", in, left)
	}
}

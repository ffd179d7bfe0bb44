package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strings"
	"testing"
)

// Run each fuzzer briefly with, for example:
//
//	go test -run '^$' -fuzz '^FuzzChunked$' -fuzztime 30s -fuzzminimizetime 5s ./userspace/proxy/h1
//
// (a short -fuzzminimizetime: minimizing a large interesting input otherwise
// takes most of a 30 s run).

// FuzzParseRequest checks that ParseRequest never panics, that what it
// accepts is self-consistent, and that net/http.ReadRequest agrees on where
// the head ends and how the body is framed.
//
// sluice is stricter than net/http on purpose (bare LF, obs-fold, TE in
// HTTP/1.0, CL with TE, Host checks, limits...): sluice rejecting what
// net/http accepts is fine. The reverse is a finding, except for these
// intentional differences:
//   - up to two empty lines before the request line are skipped
//     (RFC 9112 2.2); net/http does not skip any, so they are stripped before
//     asking it;
//   - a Content-Length list of identical values ("5, 5") is one value
//     (RFC 9110 8.6); net/http rejects the list, so such inputs are not
//     compared;
//   - net/http also parses the request-target as a URL and rejects what
//     url.ParseRequestURI does not take (bad percent-encoding, ...); that
//     is about the target's meaning, not the framing, and is not compared.
func FuzzParseRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte) {
		var req Request
		err := ParseRequest(p, &req)
		if err == ErrIncomplete {
			if len(p) > MaxHeaderBytes {
				t.Fatalf("ErrIncomplete for %d bytes, over MaxHeaderBytes", len(p))
			}
			return
		}
		if err != nil {
			var he *Error
			if !errors.As(err, &he) {
				t.Fatalf("error %v is not an *Error", err)
			}
			switch he.Status {
			case 400, 431, 501, 505:
			default:
				t.Fatalf("status %d for a request", he.Status)
			}
			return
		}

		head := p[:req.HeadLen]
		if req.HeadLen > MaxHeaderBytes || !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
			t.Fatalf("HeadLen %d: head %q", req.HeadLen, head)
		}
		if req.Chunked && req.ContentLength >= 0 {
			t.Fatalf("both chunked and Content-Length %d", req.ContentLength)
		}
		if len(req.Headers) > MaxHeaders {
			t.Fatalf("%d headers", len(req.Headers))
		}
		// The head alone parses the same; a byte less is incomplete.
		var r2 Request
		if err := ParseRequest(head, &r2); err != nil || r2.HeadLen != req.HeadLen ||
			r2.ContentLength != req.ContentLength || r2.Chunked != req.Chunked || r2.Close != req.Close {
			t.Fatalf("head alone: err %v, %+v", err, r2)
		}
		if err := ParseRequest(head[:len(head)-1], &r2); err != ErrIncomplete {
			t.Fatalf("head minus one byte: err %v, want ErrIncomplete", err)
		}

		compareReadRequest(t, p, &req)
	})
}

// compareReadRequest checks that net/http accepts a request sluice accepted
// and agrees on its framing.
func compareReadRequest(t *testing.T, p []byte, req *Request) {
	off := 0
	for k := 0; k < 2 && bytes.HasPrefix(p[off:], []byte("\r\n")); k++ {
		off += 2
	}
	for i := range req.Headers {
		h := &req.Headers[i]
		if EqualFold(h.Name, "content-length") && bytes.IndexByte(h.Value, ',') >= 0 {
			return // intentional: "5, 5"
		}
	}
	in := p[off:]
	src := bytes.NewReader(in)
	br := bufio.NewReaderSize(src, len(in)+16)
	hr, err := http.ReadRequest(br)
	if err != nil {
		if _, ok := errors.AsType[*url.Error](err); ok {
			return // intentional: URL semantics
		}
		t.Fatalf("sluice accepted, net/http rejected: %v", err)
	}
	if consumed := len(in) - br.Buffered() - src.Len(); consumed != req.HeadLen-off {
		t.Fatalf("head ends at %d for sluice, %d for net/http", req.HeadLen, consumed+off)
	}
	goChunked := len(hr.TransferEncoding) == 1 && hr.TransferEncoding[0] == "chunked"
	switch {
	case req.Chunked != goChunked:
		t.Fatalf("chunked: sluice %v, net/http %q", req.Chunked, hr.TransferEncoding)
	case req.Chunked:
		if hr.ContentLength != -1 {
			t.Fatalf("chunked, but net/http ContentLength %d", hr.ContentLength)
		}
	case req.ContentLength >= 0:
		if hr.ContentLength != req.ContentLength {
			t.Fatalf("Content-Length: sluice %d, net/http %d", req.ContentLength, hr.ContentLength)
		}
	default: // no body
		if hr.ContentLength != 0 || hr.Body != http.NoBody {
			t.Fatalf("no body for sluice, net/http ContentLength %d", hr.ContentLength)
		}
	}
	if req.Close != hr.Close {
		t.Fatalf("Close: sluice %v, net/http %v", req.Close, hr.Close)
	}
	if string(req.Method) != hr.Method || req.Major != hr.ProtoMajor || req.Minor != hr.ProtoMinor || string(req.Target) != hr.RequestURI {
		t.Fatalf("request line: sluice %s %s 1.%d, net/http %s %s %d.%d",
			req.Method, req.Target, req.Minor, hr.Method, hr.RequestURI, hr.ProtoMajor, hr.ProtoMinor)
	}
}

// FuzzChunked checks that Chunked never panics, gives the same answer
// however its input is split, and agrees with net/http's chunked decoder
// (httputil.NewChunkedReader, then the trailer section read as net/http
// does, with textproto): when sluice says the body ends after n bytes, the
// reference decodes the same data from the same n bytes; sluice accepts no
// framing that the reference rejects.
//
// sluice is stricter on purpose (trailer syntax, bare LF in trailers, CTLs
// in extensions...). Intentional differences the other way:
//   - BWS between the chunk size and ';' ("5 ;ext") is allowed by the
//     chunk-ext grammar (RFC 9112 7.1.1); net/http's parser rejects it;
//   - net/http gives up when the framing overhead outgrows the data by 16
//     KiB ("too much non-data"), a resource bound of a decoder; sluice bounds
//     each size line (4 KiB) and the trailer section (64 KiB) instead.
func FuzzChunked(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte, seed uint64) {
		whole := feedChunked([][]byte{p})
		if whole.n > len(p) || (whole.err != nil && whole.done) {
			t.Fatalf("consumed %d of %d bytes, done %v, err %v", whole.n, len(p), whole.done, whole.err)
		}
		if whole.err != nil {
			wantStatus(t, whole.err, 400)
		}
		// Any split gives the same answer.
		rng := rand.New(rand.NewPCG(seed, seed>>1|1))
		var pieces [][]byte
		for rest := p; len(rest) > 0; {
			k := 1 + rng.IntN(min(len(rest), 9))
			pieces = append(pieces, rest[:k])
			rest = rest[k:]
		}
		split := feedChunked(pieces)
		if split.n != whole.n || split.done != whole.done || (split.err == nil) != (whole.err == nil) || !bytes.Equal(split.data, whole.data) {
			t.Fatalf("split in %d: n %d done %v err %v; whole: n %d done %v err %v",
				len(pieces), split.n, split.done, split.err, whole.n, whole.done, whole.err)
		}
		// Scan agrees with Next.
		var c Chunked
		if n, err := c.Scan(p); n != whole.n || (err == nil) != (whole.err == nil) || c.Done() != whole.done {
			t.Fatalf("Scan = %d, %v; Next: %d, %v", n, err, whole.n, whole.err)
		}

		ref := refChunked(p)
		switch {
		case whole.done:
			if ref.err != nil {
				if strings.Contains(ref.err.Error(), "too much non-data") {
					return // intentional: a decoder's resource bound
				}
				if norm, ok := withoutBWS(p[:whole.n]); ok {
					// Intentional: "5 ;ext". Without the BWS, net/http
					// must agree on everything.
					ref = refChunked(norm)
					if ref.err != nil || ref.n != len(norm) || !bytes.Equal(ref.data, whole.data) {
						t.Fatalf("without BWS %q: net/http n %d err %v data %q; sluice data %q", norm, ref.n, ref.err, ref.data, whole.data)
					}
					return
				}
				t.Fatalf("sluice: body ends after %d bytes; net/http: %v", whole.n, ref.err)
			}
			if ref.n != whole.n {
				t.Fatalf("body ends after %d bytes for sluice, %d for net/http", whole.n, ref.n)
			}
			if !bytes.Equal(ref.data, whole.data) {
				t.Fatalf("data: sluice %q, net/http %q", whole.data, ref.data)
			}
		case whole.err == nil:
			// sluice wants more: net/http must not have found the end.
			if ref.err == nil {
				t.Fatalf("sluice needs more than %d bytes; net/http ends the body after %d", len(p), ref.n)
			}
		}
	})
}

// refChunked decodes a chunked body with net/http's code.
func refChunked(p []byte) chunkResult {
	src := bytes.NewReader(p)
	// Bigger than any line in p, so ErrLineTooLong comes from net/http's
	// own 4 KiB line bound and not from the buffer.
	br := bufio.NewReaderSize(src, len(p)+16)
	var r chunkResult
	r.data, r.err = io.ReadAll(httputil.NewChunkedReader(br))
	if r.err == nil {
		// As net/http's body.readTrailer.
		if b, _ := br.Peek(2); string(b) == "\r\n" {
			br.Discard(2)
		} else if _, err := textproto.NewReader(br).ReadMIMEHeader(); err != nil {
			r.err = err
			if err == io.EOF {
				r.err = io.ErrUnexpectedEOF
			}
		}
	}
	r.n = len(p) - br.Buffered() - src.Len()
	r.done = r.err == nil
	return r
}

// withoutBWS returns body, a whole chunked body sluice accepted, with the
// BWS between chunk sizes and ';' removed, and whether there was any.
func withoutBWS(body []byte) ([]byte, bool) {
	var c Chunked
	out := make([]byte, 0, len(body))
	found := false
	line := 0 // where the current framing line starts in out
	for len(body) > 0 {
		n, data, err := c.Next(body)
		if err != nil || n == 0 {
			break
		}
		if data {
			out = append(out, body[:n]...)
			line = len(out)
			body = body[n:]
			continue
		}
		for _, b := range body[:n] {
			if b == ';' {
				ln := out[line:]
				i := 0
				for i < len(ln) && isHex(ln[i]) {
					i++
				}
				j := i
				for j < len(ln) && (ln[j] == ' ' || ln[j] == '\t') {
					j++
				}
				if i > 0 && j > i && j == len(ln) {
					out, found = out[:line+i], true
				}
			}
			out = append(out, b)
			if b == '\n' {
				line = len(out)
			}
		}
		body = body[n:]
	}
	return out, found
}

func isHex(b byte) bool { _, ok := unhex(b); return ok }

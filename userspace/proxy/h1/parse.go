package h1

import (
	"bytes"
	"errors"
)

// ErrIncomplete means the buffer does not hold a whole head yet.
var ErrIncomplete = errors.New("h1: incomplete message head")

// Error is a framing error with the status a proxy answers with.
type Error struct {
	Status int    // 400, 431, 501, 505, or 502 for responses
	Reason string // short, for logs
}

func (e *Error) Error() string { return "h1: " + e.Reason }

func bad(reason string) error        { return &Error{Status: 400, Reason: reason} }
func tooLarge(reason string) error   { return &Error{Status: 431, Reason: reason} }
func notImpl(reason string) error    { return &Error{Status: 501, Reason: reason} }
func badVersion(reason string) error { return &Error{Status: 505, Reason: reason} }

// Errors are preallocated where they are common so that rejecting garbage
// costs nothing either.
var (
	errLF          = bad("bare LF or CR in head")
	errObsFold     = bad("obs-fold header line")
	errHeaderName  = bad("invalid header name")
	errHeaderValue = bad("invalid character in header value")
	errNoColon     = bad("header line without colon")
	errTooMany     = tooLarge("too many headers")
	errTooLarge    = tooLarge("header section too large")
	errMethod      = bad("invalid method")
	errTarget      = bad("invalid request target")
	errVersion     = bad("invalid HTTP version")
	errCL          = bad("invalid Content-Length")
	errCLConflict  = bad("conflicting Content-Length")
	errTE          = bad("invalid Transfer-Encoding")
	errTEUnknown   = notImpl("unsupported transfer coding")
	errCLTE        = bad("both Content-Length and Transfer-Encoding")
	errHost        = bad("missing or invalid Host")
	errStatusLine  = &Error{Status: 502, Reason: "invalid status line"}
)

// tchar per RFC 9110 5.6.2.
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return
}()

// vchar for header values: VCHAR, obs-text, SP and HTAB. CTLs (NUL, CR, LF,
// VT...) and DEL are refused.
var vchar = func() (t [256]bool) {
	for c := 0x21; c <= 0x7e; c++ {
		t[c] = true
	}
	for c := 0x80; c <= 0xff; c++ {
		t[c] = true
	}
	t[' '] = true
	t['\t'] = true
	return
}()

// targetChar: visible ASCII except '#'.
var targetChar = func() (t [256]bool) {
	for c := 0x21; c <= 0x7e; c++ {
		t[c] = true
	}
	t['#'] = false
	return
}()

// line returns the line at p (without CRLF) and the length including CRLF.
// A LF not preceded by CR, or a CR not followed by LF, is an error.
func line(p []byte) (ln []byte, n int, err error) {
	i := bytes.IndexByte(p, '\n')
	if i < 0 {
		// A CR followed by something else than LF is bare.
		if j := bytes.IndexByte(p, '\r'); j >= 0 && j+1 < len(p) {
			return nil, 0, errLF
		}
		return nil, 0, ErrIncomplete
	}
	if i == 0 || p[i-1] != '\r' {
		return nil, 0, errLF
	}
	return p[:i-1], i + 1, nil
}

// ParseRequest parses the request head at the start of p into req. It returns
// ErrIncomplete when p does not hold the whole head yet (the caller enforces
// MaxHeaderBytes by the size of p), or an *Error.
func ParseRequest(p []byte, req *Request) error {
	hdrs := req.Headers[:0]
	*req = Request{Headers: hdrs, ContentLength: -1, Src: req.Src, SrcPort: req.SrcPort, DstPort: req.DstPort}
	off := 0
	// RFC 9112 2.2: ignore at least one empty line before the request line.
	for k := 0; k < 2 && len(p)-off >= 2 && p[off] == '\r' && p[off+1] == '\n'; k++ {
		off += 2
	}
	ln, n, err := line(p[off:])
	if err != nil {
		if err == ErrIncomplete && len(p) > MaxHeaderBytes {
			return errTooLarge
		}
		return err
	}
	if err := parseRequestLine(ln, req); err != nil {
		return err
	}
	off += n
	if err := parseHeaders(p, off, &req.Headers, &req.HeadLen); err != nil {
		return err
	}
	return req.interpret()
}

func parseRequestLine(ln []byte, req *Request) error {
	sp := bytes.IndexByte(ln, ' ')
	if sp <= 0 {
		return errMethod
	}
	for _, c := range ln[:sp] {
		if !tchar[c] {
			return errMethod
		}
	}
	req.Method = ln[:sp]
	rest := ln[sp+1:]
	sp = bytes.IndexByte(rest, ' ')
	if sp <= 0 {
		return errTarget
	}
	target := rest[:sp]
	for _, c := range target {
		if !targetChar[c] {
			return errTarget
		}
	}
	req.Target = target
	v := rest[sp+1:]
	if len(v) != 8 || string(v[:5]) != "HTTP/" || v[6] != '.' || v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9' {
		return errVersion
	}
	req.Major, req.Minor = int(v[5]-'0'), int(v[7]-'0')
	if req.Major != 1 {
		return badVersion("unsupported HTTP version")
	}
	// Split the path and query; absolute-form keeps only the path part.
	t := target
	if t[0] != '/' {
		if t[0] == '*' && len(t) == 1 {
			req.Path = t
			return nil
		}
		if i := bytes.Index(t, []byte("://")); i > 0 && validScheme(t[:i]) {
			// The authority ends at the path or, when there is no path,
			// at the query.
			t = t[i+3:]
			j := bytes.IndexAny(t, "/?")
			if j < 0 {
				req.authority, t = t, nil
			} else {
				req.authority, t = t[:j], t[j:]
			}
		} else if string(req.Method) == "CONNECT" {
			req.Path = target
			return nil
		} else {
			return errTarget
		}
	}
	if q := bytes.IndexByte(t, '?'); q >= 0 {
		req.Path, req.Query = t[:q], t[q+1:]
	} else {
		req.Path = t
	}
	if len(req.Path) == 0 {
		req.Path = nil // absolute-form without a path
	}
	return nil
}

// validScheme reports whether s is a URI scheme (RFC 3986 3.1):
// ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
func validScheme(s []byte) bool {
	for i, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return len(s) > 0
}

// parseHeaders parses header lines from p[off:] up to the empty line,
// appending to *hdrs and setting *headLen to the end of the head.
func parseHeaders(p []byte, off int, hdrs *[]Header, headLen *int) error {
	h := *hdrs
	defer func() { *hdrs = h }()
	for {
		if off > MaxHeaderBytes {
			return errTooLarge
		}
		rest := p[off:]
		if len(rest) >= 2 && rest[0] == '\r' && rest[1] == '\n' {
			*headLen = off + 2
			if *headLen > MaxHeaderBytes {
				return errTooLarge
			}
			return nil
		}
		if len(rest) == 0 || (len(rest) == 1 && rest[0] == '\r') {
			if len(p) > MaxHeaderBytes {
				return errTooLarge
			}
			return ErrIncomplete
		}
		if rest[0] == ' ' || rest[0] == '\t' {
			return errObsFold
		}
		ln, n, err := line(rest)
		if err != nil {
			if err == ErrIncomplete && len(p) > MaxHeaderBytes {
				return errTooLarge
			}
			return err
		}
		c := bytes.IndexByte(ln, ':')
		if c < 0 {
			return errNoColon
		}
		if c == 0 {
			return errHeaderName
		}
		name := ln[:c]
		for _, ch := range name {
			if !tchar[ch] {
				return errHeaderName
			}
		}
		v := ln[c+1:]
		for _, ch := range v {
			if !vchar[ch] {
				return errHeaderValue
			}
		}
		v = trimOWS(v)
		if len(h) == MaxHeaders {
			return errTooMany
		}
		h = append(h, Header{Name: name, Value: v, Line: rest[:n]})
		off += n
	}
}

func trimOWS(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// EqualFold reports whether b equals the lower-case ASCII string s, ignoring
// ASCII case in b.
func EqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// EachToken calls f for each comma-separated, OWS-trimmed, non-empty element
// of a list header value (RFC 9110 5.6.1). It stops when f returns false.
func EachToken(v []byte, f func(tok []byte) bool) {
	for len(v) > 0 {
		i := bytes.IndexByte(v, ',')
		var tok []byte
		if i < 0 {
			tok, v = v, nil
		} else {
			tok, v = v[:i], v[i+1:]
		}
		tok = trimOWS(tok)
		if len(tok) > 0 && !f(tok) {
			return
		}
	}
}

// parseCL parses a Content-Length value: one or more comma-separated equal
// decimal numbers (RFC 9110 8.6 allows identical duplicates).
func parseCL(v []byte) (int64, error) {
	n := int64(-1)
	var err error
	EachToken(v, func(tok []byte) bool {
		var x int64
		for _, c := range tok {
			if c < '0' || c > '9' {
				err = errCL
				return false
			}
			if x > (1<<63-1-int64(c-'0'))/10 {
				err = errCL
				return false
			}
			x = x*10 + int64(c-'0')
		}
		if n >= 0 && x != n {
			err = errCLConflict
			return false
		}
		n = x
		return true
	})
	if err != nil {
		return 0, err
	}
	if n < 0 { // empty value or only commas
		return 0, errCL
	}
	// Reject empty list elements like "5,,5" or ", 5" too: strict.
	if emptyListElement(v) {
		return 0, errCL
	}
	return n, nil
}

// emptyListElement reports whether the OWS-trimmed list value v has an empty
// element: a leading or trailing comma, or two commas with only OWS between.
// RFC 9110 5.6.1 lets a recipient ignore them, but framing headers are
// forwarded as they are, to servers that may not.
func emptyListElement(v []byte) bool {
	for i := 0; i < len(v); i++ {
		if v[i] == ',' {
			j := i + 1
			for j < len(v) && (v[j] == ' ' || v[j] == '\t') {
				j++
			}
			if j == len(v) || v[j] == ',' || i == 0 {
				return true
			}
		}
	}
	return false
}

// teState accumulates Transfer-Encoding headers: chunked must be present
// exactly once and last.
type teState struct {
	seen    bool
	chunked bool // the last coding so far is chunked
	count   int  // number of chunked codings
	unknown bool // a well-formed coding other than chunked
	err     error
}

func (t *teState) add(v []byte) {
	t.seen = true
	if len(v) == 0 || emptyListElement(v) {
		t.err = errTE
		return
	}
	EachToken(v, func(tok []byte) bool {
		for _, c := range tok {
			if !tchar[c] {
				t.err = errTE
				return false
			}
		}
		if EqualFold(tok, "chunked") {
			t.count++
			t.chunked = true
		} else {
			t.chunked = false
			t.unknown = true
		}
		return true
	})
}

func (t *teState) result() (chunked bool, err error) {
	switch {
	case t.err != nil:
		return false, t.err
	case t.count > 1:
		return false, errTE
	case !t.chunked:
		if t.unknown && t.count == 0 {
			return false, errTE // a request body must end with chunked
		}
		return false, errTE
	case t.unknown:
		return false, errTEUnknown // gzip, chunked: well-formed but not supported
	}
	return true, nil
}

func (req *Request) interpret() error {
	var te teState
	hosts := 0
	keepAlive := false
	for i := range req.Headers {
		h := &req.Headers[i]
		n := h.Name
		switch len(n) {
		case 4:
			if EqualFold(n, "host") {
				hosts++
				for _, c := range h.Value {
					if c <= ' ' || c == 0x7f || c == '/' || c == '?' || c == '#' || c == '@' {
						return errHost
					}
				}
				// RFC 9112 3.2.2: with an absolute-form target the
				// authority wins over Host. ACLs read Host and servers may
				// read either, so they must agree.
				if req.authority != nil && !EqualFoldBytes(h.Value, req.authority) {
					return errHost
				}
			}
		case 6:
			if EqualFold(n, "expect") && EqualFold(h.Value, "100-continue") {
				req.Expect100 = true
			}
		case 7:
			if EqualFold(n, "upgrade") && len(h.Value) > 0 {
				req.Upgrade = true // confirmed with Connection: upgrade below
			}
		case 10:
			if EqualFold(n, "connection") {
				EachToken(h.Value, func(tok []byte) bool {
					switch {
					case EqualFold(tok, "close"):
						req.Close = true
					case EqualFold(tok, "keep-alive"):
						keepAlive = true
					case EqualFold(tok, "upgrade"):
						req.connUpgrade = true
					}
					return true
				})
			}
		case 14:
			if EqualFold(n, "content-length") {
				cl, err := parseCL(h.Value)
				if err != nil {
					return err
				}
				if req.ContentLength >= 0 && req.ContentLength != cl {
					return errCLConflict
				}
				req.ContentLength = cl
			}
		case 17:
			if EqualFold(n, "transfer-encoding") {
				te.add(h.Value)
			}
		}
	}
	if hosts > 1 || (hosts == 0 && req.Minor >= 1) {
		return errHost
	}
	if te.seen {
		if req.Minor == 0 {
			return errTE // RFC 9112 6.1: TE in HTTP/1.0 is faulty framing
		}
		chunked, err := te.result()
		if err != nil {
			return err
		}
		if req.ContentLength >= 0 {
			return errCLTE
		}
		req.Chunked = chunked
	}
	if req.Minor == 0 && !keepAlive {
		req.Close = true
	}
	req.Upgrade = req.Upgrade && req.connUpgrade
	return nil
}

// HasBody reports whether a request body follows the head.
func (req *Request) HasBody() bool { return req.Chunked || req.ContentLength > 0 }

// Idempotent reports whether the method is idempotent (RFC 9110 9.2.2).
func (req *Request) Idempotent() bool {
	switch string(req.Method) {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// IsHead reports whether this is a HEAD request.
func (req *Request) IsHead() bool { return string(req.Method) == "HEAD" }

// EqualFoldBytes reports whether a and b are equal ignoring ASCII case.
func EqualFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

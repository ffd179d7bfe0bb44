package h1

// Response is a parsed response head. Slices alias the upstream buffer.
type Response struct {
	Major, Minor int
	Status       int
	StatusLine   []byte // without CRLF
	Headers      []Header

	ContentLength int64 // -1 when absent
	Chunked       bool
	Close         bool // the server will close after this response
	KeepAlive     bool // HTTP/1.0 server offered keep-alive
	UpgradeTo     []byte
	HeadLen       int
	Accept        []byte // Sec-WebSocket-Accept
}

var errResTooLarge = &Error{Status: 502, Reason: "response: header section too large"}

// ParseResponse parses a response head at the start of p.
func ParseResponse(p []byte, res *Response) error {
	hdrs := res.Headers[:0]
	*res = Response{Headers: hdrs, ContentLength: -1}
	ln, n, err := line(p)
	if err != nil {
		if err == ErrIncomplete && len(p) > MaxHeaderBytes {
			return errResTooLarge
		}
		if err != ErrIncomplete {
			return errStatusLine
		}
		return err
	}
	// HTTP/1.x SP 3DIGIT SP reason
	if len(ln) < 12 || string(ln[:5]) != "HTTP/" || ln[6] != '.' || ln[5] != '1' || ln[7] < '0' || ln[7] > '9' || ln[8] != ' ' {
		return errStatusLine
	}
	res.Major, res.Minor = 1, int(ln[7]-'0')
	st := 0
	for _, c := range ln[9:12] {
		if c < '0' || c > '9' {
			return errStatusLine
		}
		st = st*10 + int(c-'0')
	}
	if st < 100 || (len(ln) > 12 && ln[12] != ' ') {
		return errStatusLine
	}
	// The reason phrase is forwarded as it is: no CTLs (a bare CR!).
	for _, c := range ln[12:] {
		if !vchar[c] {
			return errStatusLine
		}
	}
	res.Status = st
	res.StatusLine = ln
	if err := parseHeaders(p, n, &res.Headers, &res.HeadLen); err != nil {
		if e, ok := err.(*Error); ok {
			return &Error{Status: 502, Reason: "response: " + e.Reason}
		}
		return err
	}
	var te teState
	keepAlive := false
	for i := range res.Headers {
		h := &res.Headers[i]
		switch len(h.Name) {
		case 7:
			if EqualFold(h.Name, "upgrade") {
				res.UpgradeTo = h.Value
			}
		case 10:
			if EqualFold(h.Name, "connection") {
				EachToken(h.Value, func(tok []byte) bool {
					switch {
					case EqualFold(tok, "close"):
						res.Close = true
					case EqualFold(tok, "keep-alive"):
						keepAlive = true
					}
					return true
				})
			}
		case 14:
			if EqualFold(h.Name, "content-length") {
				cl, err := parseCL(h.Value)
				if err != nil || (res.ContentLength >= 0 && cl != res.ContentLength) {
					return &Error{Status: 502, Reason: "response: invalid Content-Length"}
				}
				res.ContentLength = cl
			}
		case 17:
			if EqualFold(h.Name, "transfer-encoding") {
				te.add(h.Value)
			}
		case 20:
			if EqualFold(h.Name, "sec-websocket-accept") {
				res.Accept = h.Value
			}
		}
	}
	if te.seen {
		// RFC 9112 6.3: chunked last means chunked framing (and CL is
		// ignored, the connection closed after); otherwise the body runs
		// to the close.
		// gzip, chunked is forwarded as is: its framing is chunked.
		// Content-Length with Transfer-Encoding, or Transfer-Encoding in
		// HTTP/1.0, is faulty framing (RFC 9112 6.1): the server
		// connection is not reused.
		res.Chunked = te.err == nil && te.chunked && te.count == 1
		if !res.Chunked || res.ContentLength >= 0 || res.Minor == 0 {
			res.Close = true
		}
		res.ContentLength = -1
	}
	if res.Minor == 0 {
		res.KeepAlive = keepAlive
		if !keepAlive {
			res.Close = true
		}
	}
	return nil
}

// BodyKind says how a response body is delimited.
type BodyKind int

const (
	BodyNone BodyKind = iota
	BodyLength
	BodyChunked
	BodyClose // delimited by the server closing the connection
)

// Body returns how the body of res is framed, given the request method.
func (res *Response) Body(head bool) BodyKind {
	switch {
	case head, res.Status < 200, res.Status == 204, res.Status == 304:
		return BodyNone
	case res.Chunked:
		return BodyChunked
	case res.ContentLength >= 0:
		if res.ContentLength == 0 {
			return BodyNone
		}
		return BodyLength
	}
	return BodyClose
}

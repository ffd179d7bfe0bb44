// Package h1 is sluice's strict HTTP/1.x message framing: request and
// response head parsing, limits, and the chunked transfer coding. It works on
// byte slices owned by the caller and allocates nothing per message; it does
// no I/O and knows nothing of routing or backends.
package h1

import "net/netip"

// Limits for a request head (checklist items 9).
const (
	MaxHeaderBytes = 64 << 10
	MaxHeaders     = 100
)

// Header is one header field; Name and Value alias the connection's buffer
// (Value has surrounding whitespace trimmed).
type Header struct {
	Name  []byte
	Value []byte
	// Line spans the whole raw line (name through CRLF) in the buffer, for
	// forwarding it unchanged.
	Line []byte
}

// Request is a parsed request head plus the connection facts ACLs fetch.
// All slices alias the connection's read buffer and are valid until the next
// request is parsed.
type Request struct {
	Method  []byte
	Target  []byte // request-target as sent (origin-form, absolute-form, ...)
	Path    []byte // Target without scheme://authority and without ?query
	Query   []byte // after '?', without it; nil if absent
	Major   int
	Minor   int
	Headers []Header

	Src     netip.Addr // client address
	SrcPort uint16
	DstPort uint16 // the port the client connected to

	// Framing decided by the parser.
	ContentLength int64 // -1 when not given
	Chunked       bool
	Close         bool // the client asked to close after this request (or HTTP/1.0 without keep-alive)
	Upgrade       bool // Connection: upgrade with an Upgrade header
	Expect100     bool

	connUpgrade bool
	authority   []byte // of an absolute-form target

	HeadLen int // bytes of the head including the final CRLFCRLF
}

// Proto returns "HTTP/1.1" or "HTTP/1.0" without allocating.
func (r *Request) Proto() string {
	if r.Minor == 0 {
		return "HTTP/1.0"
	}
	return "HTTP/1.1"
}

package proxy

import (
	"crypto/sha1"
	"encoding/base64"
	"time"

	"github.com/sluicelb/sluice/userspace/proxy/h1"
	"github.com/sluicelb/sluice/userspace/tunnel"
)

// wsGUID is RFC 6455's key suffix for Sec-WebSocket-Accept.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// wsCheck classifies an upgrade request. It returns ws=true for a valid
// WebSocket opening handshake (RFC 6455 4.1), status 400 for a WebSocket
// upgrade that is not one (no or bad Sec-WebSocket-Key, a version other
// than 13, not a bodiless GET over HTTP/1.1), and ws=false, status 0 for
// anything else: other upgrades (h2c...) are stripped and never tunnelled.
func wsCheck(req *h1.Request) (ws bool, status int) {
	if !req.Upgrade {
		return false, 0
	}
	isWS := false
	var key, version []byte
	keys := 0
	for i := range req.Headers {
		h := &req.Headers[i]
		switch {
		case h1.EqualFold(h.Name, "upgrade"):
			h1.EachToken(h.Value, func(tok []byte) bool {
				if h1.EqualFold(tok, "websocket") {
					isWS = true
				}
				return !isWS
			})
		case h1.EqualFold(h.Name, "sec-websocket-key"):
			key = h.Value
			keys++
		case h1.EqualFold(h.Name, "sec-websocket-version"):
			version = h.Value
		}
	}
	if !isWS {
		return false, 0
	}
	if string(req.Method) != "GET" || req.Minor != 1 || req.HasBody() || keys != 1 || string(version) != "13" {
		return false, 400
	}
	var raw [18]byte
	if n, err := base64.StdEncoding.Decode(raw[:], key); err != nil || n != 16 || len(key) != 24 {
		return false, 400
	}
	return true, 0
}

// wsAccept is the Sec-WebSocket-Accept a server must answer to key.
func wsAccept(key []byte) string {
	h := sha1.New()
	h.Write(key)
	h.Write([]byte(wsGUID))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// wsKey returns the request's Sec-WebSocket-Key.
func wsKey(req *h1.Request) []byte {
	for i := range req.Headers {
		if h := &req.Headers[i]; h1.EqualFold(h.Name, "sec-websocket-key") {
			return h.Value
		}
	}
	return nil
}

// wsValid101 reports whether a 101 answers the handshake correctly: an
// Upgrade to websocket and the Sec-WebSocket-Accept that proves the server
// read the key (RFC 6455 4.2.2).
func wsValid101(req *h1.Request, res *h1.Response) bool {
	up := false
	h1.EachToken(res.UpgradeTo, func(tok []byte) bool {
		up = up || h1.EqualFold(tok, "websocket")
		return !up
	})
	return up && string(res.Accept) == wsAccept(wsKey(req))
}

// tunnelWS relays a valid 101 to the client and runs the tunnel until it
// ends. The client and server connections belong to the tunnel from then
// on. Bytes already read behind either head (frames pipelined behind the
// handshake) go out first.
func (s *session) tunnelWS(be *backend, srv *server, uc *upConn, tm *timings) outcome {
	st := s.st
	res := &uc.res
	st.out = responseHead(st.out[:0], res, 1, false, false)
	st.out = st.out[:len(st.out)-2]
	st.out = append(st.out, "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"...)
	// The server's bytes behind its 101 follow the head in the same write.
	st.out = append(st.out, uc.buf[uc.r+res.HeadLen:uc.w]...)
	s.c.SetWriteDeadline(time.Now().Add(s.fe.timeoutClient))
	n, err := s.io.Write(st.out)
	if err != nil {
		uc.release(false, time.Time{})
		return outcome{status: 101, bytes: int64(n), term: termCD}
	}
	var toServer []byte
	if st.r < st.w {
		toServer = append([]byte(nil), st.buf[st.r:st.w]...)
		st.r = st.w
	}
	// Nothing of the HTTP state is needed while the tunnel lives but the
	// log line: give the buffers back, drop the parsed heads (their header
	// slices) and the output buffer, so that an idle tunnel holds little
	// more than its two goroutines.
	putBuf(uc.buf)
	uc.buf = nil
	uc.res = h1.Response{}
	if st.buf != nil {
		putBuf(st.buf)
		st.buf, st.r, st.w = nil, 0, 0
	}
	st.req = h1.Request{Method: st.req.Method[:0:0]}
	st.out = nil
	s.c.SetDeadline(time.Time{})
	uc.c.SetDeadline(time.Time{})
	t := s.p.tunnels.New(tunnel.Info{
		Kind: tunnel.WebSocket, Frontend: s.fe.name, Backend: be.name, Server: srv.q.Name, Client: s.src,
		KernelSplice: kernelSplice(s.fe, be),
	}, s.c, uc.c, be.tunnelTimeouts(s.fe))
	r := t.Run(toServer, nil)
	return outcome{status: 101, bytes: int64(n) + r.Down, term: r.Term}
}

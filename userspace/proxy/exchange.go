package proxy

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/sluicelb/sluice/userspace/proxy/h1"
)

var ctxNone = context.Background()

// coalesce is the largest body part appended to a head so both go out in
// one write.
const coalesce = 8 << 10

// earlyResponseGrace is how long a response that arrives before the
// request body is fully sent waits for the upload to finish before the
// client connection is marked for closing.
const earlyResponseGrace = 50 * time.Millisecond

// uploader streams the rest of a request body from the client to the server
// while the response is awaited, so that 100-continue and early responses
// work.
type uploader struct {
	done    chan error
	aborted atomic.Bool
	ck      h1.Chunked // framing state of a chunked body
}

// exchange sends the request on uc and relays the response.
func (s *session) exchange(be *backend, srv *server, uc *upConn, tm *timings) (o outcome) {
	s.upstream.Store(uc.c)
	defer s.upstream.Store(nil)
	st := s.st
	req := &st.req
	fe := s.fe
	headEnd := s.reqStart + req.HeadLen

	// The part of the body already buffered.
	var ck h1.Chunked
	var remaining int64
	take := 0
	bodyDone := true
	switch {
	case req.Chunked:
		n, err := ck.Scan(st.buf[headEnd:st.w])
		if err != nil {
			uc.release(false, time.Time{})
			return outcome{status: 400, gen: true, term: termPR}
		}
		take, bodyDone = n, ck.Done()
	case req.ContentLength > 0:
		take = int(min(int64(st.w-headEnd), req.ContentLength))
		remaining = req.ContentLength - int64(take)
		bodyDone = remaining == 0
	}
	body := st.buf[headEnd : headEnd+take]
	st.out = s.requestHead(be, st.out[:0])
	if len(body) <= coalesce {
		st.out = append(st.out, body...)
		body = nil
	}
	now := time.Now()
	uc.c.SetDeadline(now.Add(be.timeoutServer))
	if _, err := uc.io.Write(st.out); err != nil {
		uc.release(false, now)
		return outcome{status: 502, gen: true, term: termSH, notSent: true}
	}
	if len(body) > 0 {
		if _, err := uc.io.Write(body); err != nil {
			uc.release(false, now)
			return outcome{status: 502, gen: true, term: termSH}
		}
	}
	st.r = headEnd + take

	var up *uploader
	if !bodyDone {
		up = &uploader{done: make(chan error, 1), ck: ck}
		go s.upload(be, uc, up, remaining)
	}
	// stopUpload ends the uploader, if any, and returns its result.
	uploadErr := error(nil)
	uploadOK := up == nil
	stopUpload := func() {
		if up == nil {
			return
		}
		up.aborted.Store(true)
		s.c.SetReadDeadline(time.Unix(1, 0))
		uploadErr = <-up.done
		uploadOK = uploadErr == nil
		up = nil
	}

	// Response head(s).
	sent := time.Now()
	res := &uc.res
	for {
		err := s.readResponse(be, uc)
		if err != nil {
			upDone := up == nil
			if up != nil {
				select {
				case uploadErr = <-up.done:
					up, upDone = nil, true
				default:
				}
			}
			stopUpload()
			uc.release(false, time.Time{})
			var he *h1.Error
			switch {
			case upDone && uploadErr != nil && errors.As(uploadErr, &he):
				return outcome{status: he.Status, gen: true, term: termPR}
			case upDone && uploadErr != nil:
				return outcome{status: 400, term: termCD} // client gone: nothing to answer
			case errors.As(err, &he):
				return outcome{status: 502, gen: true, term: termSH}
			case isTimeout(err):
				return outcome{status: 504, gen: true, term: termsH}
			}
			// The server closed or reset before answering: a reused
			// idle connection it had just closed, or a crash.
			return outcome{status: 502, gen: true, term: termSH, retry: uc.w == 0 && bodyDone && take == 0}
		}
		if res.Status >= 100 && res.Status < 200 && res.Status != 101 {
			if req.Minor == 1 {
				st.out = responseHead(st.out[:0], res, 1, false, false)
				s.c.SetWriteDeadline(time.Now().Add(fe.timeoutClient))
				if _, err := s.io.Write(st.out); err != nil {
					stopUpload()
					uc.release(false, time.Time{})
					return outcome{status: -1, term: termCD}
				}
			}
			uc.r += res.HeadLen
			continue
		}
		break
	}
	tm.response = time.Since(sent)
	if res.Status == 101 {
		stopUpload()
		if s.ws && wsValid101(req, res) {
			return s.tunnelWS(be, srv, uc, tm)
		}
		// Only WebSocket upgrades are forwarded (others are stripped),
		// and a 101 that does not prove the server read the key is not
		// one: a protocol error from the server.
		uc.release(false, time.Time{})
		return outcome{status: 502, gen: true, term: termSH}
	}

	if up != nil {
		// The response head came while the body was still going up: it
		// is usually the last bytes being reported, so give the uploader
		// a moment; a server that answered early, without reading the
		// body, leaves it pending and the connection closes after.
		t := time.NewTimer(earlyResponseGrace)
		select {
		case uploadErr = <-up.done:
			up, uploadOK = nil, uploadErr == nil
		case <-t.C:
		}
		t.Stop()
	}
	var pending func() bool
	if up != nil {
		pending = func() bool { stopUpload(); return uploadOK }
	}
	o.status, o.term = res.Status, termOK
	return s.relayResponse(be, uc, o, uploadOK, pending)
}

// relayResponse relays the response whose head has been parsed into uc.res
// at uc.r, then releases uc. uploadOK says whether the request body went
// through; pending, if not nil, waits for a request body still uploading and
// reports whether it completed.
func (s *session) relayResponse(be *backend, uc *upConn, o outcome, uploadOK bool, pending func() bool) outcome {
	st := s.st
	req := &st.req
	res := &uc.res
	fe := s.fe
	kind := res.Body(req.IsHead())
	dechunk := kind == h1.BodyChunked && req.Minor == 0
	closeClient := req.Close || kind == h1.BodyClose || dechunk || !uploadOK || pending != nil || s.p.closing.Load()
	st.out = responseHead(st.out[:0], res, req.Minor, closeClient, dechunk)
	uc.r += res.HeadLen
	s.c.SetWriteDeadline(time.Now().Add(fe.timeoutClient))

	var werr, rerr error
	switch kind {
	case h1.BodyNone:
		werr = s.writeOut(&o)
	case h1.BodyLength:
		werr, rerr = s.relayLength(be, uc, &o, res.ContentLength)
	case h1.BodyChunked:
		werr, rerr = s.relayChunked(be, uc, &o, dechunk)
	case h1.BodyClose:
		werr, rerr = s.relayClose(be, uc, &o)
	}
	if pending != nil {
		uploadOK = pending()
	}
	switch {
	case werr != nil:
		o.term = termCD
		if isTimeout(werr) {
			o.term = termcD
		}
		uc.release(false, time.Time{})
		return o
	case rerr != nil:
		o.term = termSD
		if isTimeout(rerr) {
			o.term = termsD
		}
		uc.release(false, time.Time{})
		return o
	}
	keepServer := !res.Close && !fe.serverClose && !be.serverClose && kind != h1.BodyClose && uploadOK
	uc.release(keepServer, time.Now())
	o.keep = !closeClient && uploadOK
	return o
}

// readResponse reads until a whole response head is in uc's buffer at uc.r.
func (s *session) readResponse(be *backend, uc *upConn) error {
	for {
		err := h1.ParseResponse(uc.buf[uc.r:uc.w], &uc.res)
		if err != h1.ErrIncomplete {
			return err
		}
		var ok bool
		if uc.buf, uc.r, uc.w, ok = makeRoom(uc.buf, uc.r, uc.w); !ok {
			return &h1.Error{Status: 502, Reason: "response head too large"}
		}
		n, err := uc.io.Read(uc.buf[uc.w:])
		uc.w += n
		if n == 0 && err == nil {
			err = io.ErrUnexpectedEOF
		}
		if err != nil && n == 0 {
			return err
		}
	}
}

// writeOut writes st.out to the client.
func (s *session) writeOut(o *outcome) error {
	n, err := s.io.Write(s.st.out)
	o.bytes += int64(n)
	return err
}

// fillUp reads more from the server into uc's buffer (which must be empty),
// at most max bytes.
func fillUp(be *backend, uc *upConn, max int64) error {
	uc.r, uc.w = 0, 0
	lim := len(uc.buf)
	if max > 0 && int64(lim) > max {
		lim = int(max)
	}
	uc.c.SetReadDeadline(time.Now().Add(be.timeoutServer))
	n, err := uc.io.Read(uc.buf[:lim])
	uc.w = n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (s *session) writeClient(o *outcome, p []byte) error {
	s.c.SetWriteDeadline(time.Now().Add(s.fe.timeoutClient))
	n, err := s.io.Write(p)
	o.bytes += int64(n)
	return err
}

// relayLength relays a Content-Length body.
func (s *session) relayLength(be *backend, uc *upConn, o *outcome, cl int64) (werr, rerr error) {
	st := s.st
	rem := cl
	take := min(int64(uc.w-uc.r), rem)
	if take <= coalesce || len(st.out)+int(take) <= bufSize {
		st.out = append(st.out, uc.buf[uc.r:uc.r+int(take)]...)
		uc.r += int(take)
		rem -= take
		if werr = s.writeOut(o); werr != nil {
			return
		}
	} else if werr = s.writeOut(o); werr != nil {
		return
	}
	for rem > 0 {
		if uc.r == uc.w {
			if rerr = fillUp(be, uc, rem); rerr != nil {
				return
			}
		}
		n := min(int64(uc.w-uc.r), rem)
		if werr = s.writeClient(o, uc.buf[uc.r:uc.r+int(n)]); werr != nil {
			return
		}
		uc.r += int(n)
		rem -= n
	}
	return
}

// relayChunked relays a chunked body as it is, or decoded for an HTTP/1.0
// client.
func (s *session) relayChunked(be *backend, uc *upConn, o *outcome, dechunk bool) (werr, rerr error) {
	st := s.st
	var ck h1.Chunked
	pending := st.out // head not written yet
	for {
		for uc.r < uc.w && !ck.Done() {
			n, data, err := ck.Next(uc.buf[uc.r:uc.w])
			if err != nil {
				return nil, err
			}
			if !dechunk || data {
				pending = append(pending, uc.buf[uc.r:uc.r+n]...)
			}
			uc.r += n
			if len(pending) >= bufSize {
				st.out = pending
				if werr = s.writeClient(o, pending); werr != nil {
					return
				}
				pending = pending[:0]
			}
		}
		if ck.Done() {
			break
		}
		if len(pending) > 0 {
			st.out = pending
			if werr = s.writeClient(o, pending); werr != nil {
				return
			}
			pending = pending[:0]
		}
		if rerr = fillUp(be, uc, 0); rerr != nil {
			return
		}
	}
	st.out = pending
	if len(pending) > 0 {
		werr = s.writeClient(o, pending)
	}
	return
}

// relayClose relays a body delimited by the server closing the connection.
func (s *session) relayClose(be *backend, uc *upConn, o *outcome) (werr, rerr error) {
	st := s.st
	st.out = append(st.out, uc.buf[uc.r:uc.w]...)
	uc.r = uc.w
	if werr = s.writeOut(o); werr != nil {
		return
	}
	for {
		err := fillUp(be, uc, 0)
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return nil, nil
			}
			return nil, err
		}
		if werr = s.writeClient(o, uc.buf[:uc.w]); werr != nil {
			return
		}
		uc.r = uc.w
	}
}

var errBodyAborted = errors.New("request body aborted")

// upload copies the rest of the request body from the client to the server.
// It owns the client read buffer while it runs.
func (s *session) upload(be *backend, uc *upConn, up *uploader, remaining int64) {
	up.done <- s.uploadBody(be, uc, up, remaining)
}

func (s *session) uploadBody(be *backend, uc *upConn, up *uploader, remaining int64) error {
	st := s.st
	ck := &up.ck
	st.r, st.w = 0, 0
	for {
		lim := len(st.buf)
		if !st.req.Chunked && int64(lim) > remaining {
			lim = int(remaining)
		}
		s.c.SetReadDeadline(time.Now().Add(s.fe.timeoutClient))
		if up.aborted.Load() {
			return errBodyAborted
		}
		n, err := s.io.Read(st.buf[:lim])
		if n > 0 {
			m := n
			if st.req.Chunked {
				var cerr error
				m, cerr = ck.Scan(st.buf[:n])
				if cerr != nil {
					uc.c.Close()
					return cerr
				}
				st.r, st.w = m, n // bytes after the body: next pipelined request
			} else {
				remaining -= int64(n)
				st.r, st.w = n, n
			}
			uc.c.SetWriteDeadline(time.Now().Add(be.timeoutServer))
			if _, werr := uc.io.Write(st.buf[:m]); werr != nil {
				return werr
			}
			if (st.req.Chunked && ck.Done()) || (!st.req.Chunked && remaining == 0) {
				return nil
			}
		}
		if err != nil {
			if !up.aborted.Load() {
				uc.c.Close() // the server must not wait for the rest
			}
			if err == io.EOF {
				return errBodyAborted
			}
			return err
		}
	}
}

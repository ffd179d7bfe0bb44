//go:build linux

package kernel

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"time"
)

// spliceStream is a deterministic byte stream: a 1 MiB random block, each
// copy of it stamped with its index, so that loss, duplication and reordering
// all change the SHA-256 of what arrives.
type spliceStream struct {
	block []byte
}

func newSpliceStream(seed uint64) *spliceStream {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, 1<<20)
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return &spliceStream{block: b}
}

// send writes n bytes of the stream to w, hashing them into h (may be nil).
func (s *spliceStream) send(w io.Writer, n int64, h hash.Hash) error {
	buf := make([]byte, len(s.block))
	for i := int64(0); n > 0; i++ {
		copy(buf, s.block)
		binary.LittleEndian.PutUint64(buf, uint64(i))
		binary.LittleEndian.PutUint64(buf[len(buf)/2:], ^uint64(i))
		chunk := buf
		if int64(len(chunk)) > n {
			chunk = chunk[:n]
		}
		if h != nil {
			h.Write(chunk)
		}
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		n -= int64(len(chunk))
	}
	return nil
}

// spliceRecvHash reads r to EOF and returns the byte count and SHA-256.
func spliceRecvHash(r io.Reader) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 1<<20))
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return n, sum, err
}

// spliceSendHash writes n bytes of a stream to c, closes its write side, and
// returns the SHA-256 of what it wrote.
func spliceSendHash(c *net.TCPConn, seed uint64, n int64) ([32]byte, error) {
	h := sha256.New()
	err := newSpliceStream(seed).send(c, n, h)
	if err == nil {
		err = c.CloseWrite()
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, err
}

type spliceXfer struct {
	sent, got    [32]byte
	n            int64
	sendErr, err error
	elapsed      time.Duration
}

func (x spliceXfer) check(want int64) error {
	switch {
	case x.sendErr != nil:
		return fmt.Errorf("send: %w", x.sendErr)
	case x.err != nil:
		return fmt.Errorf("receive: %w", x.err)
	case x.n != want:
		return fmt.Errorf("received %d bytes, want %d", x.n, want)
	case x.sent != x.got:
		return errors.New("SHA-256 differs")
	}
	return nil
}

// spliceTransfer moves n bytes from src to dst (a stream, then src's FIN) and
// reports what was sent and received.
func spliceTransfer(src, dst *net.TCPConn, seed uint64, n int64) <-chan spliceXfer {
	ch := make(chan spliceXfer, 1)
	go func() {
		start := time.Now()
		var x spliceXfer
		sent := make(chan struct{})
		go func() {
			x.sent, x.sendErr = spliceSendHash(src, seed, n)
			close(sent)
		}()
		x.n, x.got, x.err = spliceRecvHash(dst)
		<-sent
		x.elapsed = time.Since(start)
		ch <- x
	}()
	return ch
}

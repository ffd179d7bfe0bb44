// Package streamtest has what tests moving large byte streams through sluice
// share: a reproducible pseudo-random stream and its SHA-256 at either end.
package streamtest

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
)

// Send writes n pseudo-random bytes (the same for the same seed) and returns
// the SHA-256 of what it wrote; it stops early at a write error.
func Send(w io.Writer, n int64, seed uint64) [32]byte {
	r := rand.NewChaCha8([32]byte{byte(seed)})
	h := sha256.New()
	buf := make([]byte, 256<<10)
	for n > 0 {
		b := buf[:min(int64(len(buf)), n)]
		r.Read(b)
		h.Write(b)
		if _, err := w.Write(b); err != nil {
			break
		}
		n -= int64(len(b))
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// Hash reads r to its end and returns the SHA-256 of what it read.
func Hash(r io.Reader) [32]byte {
	h := sha256.New()
	io.CopyBuffer(h, r, make([]byte, 256<<10))
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

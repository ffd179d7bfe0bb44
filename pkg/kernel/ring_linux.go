//go:build linux

package kernel

import (
	"errors"
	"log/slog"
	"time"

	"github.com/cilium/ebpf/ringbuf"
)

// readRing calls f with each record r delivers, until r is closed. A read
// error other than closing is logged (what: the reader's purpose) and
// retried after 10 ms.
func readRing(r *ringbuf.Reader, log *slog.Logger, what string, f func(sample []byte)) {
	var rec ringbuf.Record
	for {
		if err := r.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				return
			}
			log.Warn(what, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		f(rec.RawSample)
	}
}

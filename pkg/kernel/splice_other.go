//go:build !linux

package kernel

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"time"
)

// Splicer is the kernel splice of tunnels; only Linux has it.
type Splicer struct{}

// OpenSplicer always fails with ErrSpliceUnsupported outside Linux.
func OpenSplicer(logger *slog.Logger, cfg SplicerConfig) (*Splicer, error) {
	return nil, fmt.Errorf("splice: %w on %s", ErrSpliceUnsupported, runtime.GOOS)
}

// Close does nothing.
func (s *Splicer) Close() error { return nil }

// Totals returns zero counters.
func (s *Splicer) Totals() (SpliceTotals, error) { return SpliceTotals{}, nil }

// Splice always falls back to userspace copy outside Linux.
func (s *Splicer) Splice(a, b *net.TCPConn) (*SplicedPair, error) {
	return nil, fmt.Errorf("splice: %w", ErrSpliceFallback)
}

// SplicedPair is never created outside Linux.
type SplicedPair struct{}

// Stats returns zero counters.
func (p *SplicedPair) Stats() SpliceStats { return SpliceStats{} }

// Wait returns at once.
func (p *SplicedPair) Wait(ctx context.Context, idle, clientFin, serverFin time.Duration) (SpliceResult, error) {
	return SpliceResult{End: SpliceEndError}, fmt.Errorf("splice: %w", ErrSpliceUnsupported)
}

//go:build linux

package kernel

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// spliceEpoll watches the sockets of all spliced pairs for state changes
// only: each is registered edge-triggered for EPOLLRDHUP (EPOLLERR and
// EPOLLHUP are implied), not EPOLLIN/EPOLLOUT. The kernel wakes an epoll
// entry only when the wake-up's key intersects its events, and skb arrivals
// and send-space wake-ups carry EPOLLIN / EPOLLOUT keys, so the moving bytes
// never wake this process; FIN (sk_state_change, no key), RST and errors do.
// The epoll descriptor itself sits in Go's netpoller: one goroutine, no
// thread per pair.
type spliceEpoll struct {
	file *os.File
	rc   syscall.RawConn
	mu   sync.Mutex
	subs map[uint64]*SplicedPair
	done chan struct{}
}

func newSpliceEpoll() (*spliceEpoll, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("epoll nonblock: %w", err)
	}
	e := &spliceEpoll{file: os.NewFile(uintptr(fd), "splice-epoll"), subs: make(map[uint64]*SplicedPair), done: make(chan struct{})}
	if e.rc, err = e.file.SyscallConn(); err != nil {
		e.file.Close()
		return nil, fmt.Errorf("epoll rawconn: %w", err)
	}
	go e.run()
	return e, nil
}

func (e *spliceEpoll) run() {
	defer close(e.done)
	events := make([]unix.EpollEvent, 256)
	for {
		var n int
		err := e.rc.Read(func(fd uintptr) bool {
			var werr error
			n, werr = unix.EpollWait(int(fd), events, 0)
			if werr != nil {
				n = 0
			}
			return n > 0
		})
		if err != nil {
			return // closed
		}
		e.mu.Lock()
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if p := e.subs[id]; p != nil {
				p.wake()
			}
		}
		e.mu.Unlock()
	}
}

// spliceEpollBase are the events every spliced socket is watched for. While
// Wait drains an overflow it adds EPOLLIN on the source and EPOLLOUT on the
// destination.
const spliceEpollBase = unix.EPOLLRDHUP | unix.EPOLLET

func (e *spliceEpoll) ctl(op int, p *SplicedPair, i int, events uint32) error {
	var err error
	cerr := e.rc.Control(func(epfd uintptr) {
		ev := &unix.EpollEvent{Events: events, Fd: int32(uint32(p.id)), Pad: int32(uint32(p.id >> 32))}
		if e := unix.EpollCtl(int(epfd), op, p.fd[i], ev); e != nil {
			err = fmt.Errorf("epoll_ctl %s: %w", sideName(i), e)
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// mod changes the events watched on side i of p.
func (e *spliceEpoll) mod(p *SplicedPair, i int, events uint32) error {
	return e.ctl(unix.EPOLL_CTL_MOD, p, i, events)
}

// add watches p's sockets. A state already reached (a FIN that arrived before
// the splice) is reported at once: epoll_ctl polls the file on insertion.
func (e *spliceEpoll) add(p *SplicedPair) error {
	e.mu.Lock()
	e.subs[p.id] = p
	e.mu.Unlock()
	for i := range p.fd {
		if err := e.ctl(unix.EPOLL_CTL_ADD, p, i, spliceEpollBase); err != nil {
			e.remove(p)
			return err
		}
	}
	return nil
}

func (e *spliceEpoll) remove(p *SplicedPair) {
	for i := range p.fd {
		e.ctl(unix.EPOLL_CTL_DEL, p, i, 0)
	}
	e.mu.Lock()
	delete(e.subs, p.id)
	e.mu.Unlock()
}

func (e *spliceEpoll) close() {
	e.file.Close()
	<-e.done
}

package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// gcGrace is how long an unregistered address must have been gone before its
// zero counters are deleted: a sockops program that looked the address up
// just before it was unregistered may still add to its counter, and
// programs run for microseconds, so seconds are a wide margin.
const gcGrace = 5 * time.Second

// ebpfCounters owns the loaded count programs, their maps and links. Every
// object is referenced here for as long as the Counters live: dropping the
// last reference closes the fd and detaches the program.
type ebpfCounters struct {
	objs    countObjects
	sockops link.Link
	iter    *link.Iter
	cgroup  string

	gen uint32 // last scan pass; only touched under Counters.scanMu

	// Unregistered addresses whose counters still wait to be deleted
	// (under Counters.mu).
	goneServers   map[netip.AddrPort]time.Time
	goneFrontends map[netip.AddrPort]time.Time
}

func openEBPF(cgroup string) (_ *ebpfCounters, err error) {
	e := &ebpfCounters{
		cgroup:        cgroup,
		goneServers:   make(map[netip.AddrPort]time.Time),
		goneFrontends: make(map[netip.AddrPort]time.Time),
	}
	if err := loadCountObjects(&e.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load count programs: %+v", ve)
		}
		return nil, fmt.Errorf("load count programs: %w", err)
	}
	defer func() {
		if err != nil {
			e.close()
		}
	}()

	links, err := attachCgroup(cgroup, cgroupProg{e.objs.CountSockops, ebpf.AttachCGroupSockOps})
	if err != nil {
		return nil, err
	}
	e.sockops = links[0]
	e.iter, err = link.AttachIter(link.IterOptions{Program: e.objs.CountScan})
	if err != nil {
		return nil, fmt.Errorf("attach iter/tcp: %w", err)
	}
	return e, nil
}

func (e *ebpfCounters) close() error {
	var errs []error
	if e.iter != nil {
		errs = append(errs, e.iter.Close())
	}
	if e.sockops != nil {
		errs = append(errs, e.sockops.Close())
	}
	errs = append(errs, e.objs.Close())
	return errors.Join(errs...)
}

// setAddrs makes m hold exactly next (old is what it holds now) and
// remembers the removed addresses for gc. Counters are left alone: those of
// an address that comes back go on from where they were.
func (e *ebpfCounters) setAddrs(m *ebpf.Map, gone map[netip.AddrPort]time.Time, old, next addrSet) error {
	one := uint8(1)
	for a := range next {
		if _, ok := old[a]; ok {
			continue
		}
		k := toEndpoint(a)
		if err := m.Put(&k, &one); err != nil {
			return fmt.Errorf("register %s: %w", a, err)
		}
		delete(gone, a)
	}
	now := time.Now()
	for a := range old {
		if _, ok := next[a]; ok {
			continue
		}
		k := toEndpoint(a)
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("unregister %s: %w", a, err)
		}
		gone[a] = now
	}
	return nil
}

// gc deletes the zero counters of addresses unregistered for gcGrace. No
// program adds to them any more, and a zero means no counted socket will
// subtract from them, so the delete cannot lose a count.
func (e *ebpfCounters) gc(now time.Time) {
	e.gcMap(now, e.goneServers, e.objs.ServerEstablished, e.objs.PairEstablished)
	e.gcMap(now, e.goneFrontends, e.objs.FrontendEstablished, nil)
}

func (e *ebpfCounters) gcMap(now time.Time, gone map[netip.AddrPort]time.Time, perAddr, perPair *ebpf.Map) {
	due := make(map[countEndpoint]netip.AddrPort)
	for a, t := range gone {
		if now.Sub(t) >= gcGrace {
			due[toEndpoint(a)] = a
		}
	}
	if len(due) == 0 {
		return
	}
	busy := make(map[countEndpoint]bool)
	for k := range due {
		var v int64
		if err := perAddr.Lookup(&k, &v); err == nil && v != 0 {
			busy[k] = true
		} else if err == nil {
			_ = perAddr.Delete(&k)
		}
	}
	if perPair != nil {
		var (
			k     countPair
			v     int64
			zeros []countPair
		)
		it := perPair.Iterate()
		for it.Next(&k, &v) {
			if _, ok := due[k.Server]; !ok {
				continue
			}
			if v != 0 {
				busy[k.Server] = true
			} else {
				zeros = append(zeros, k)
			}
		}
		// Deleting while iterating a hash map can restart the walk.
		for i := range zeros {
			_ = perPair.Delete(&zeros[i])
		}
	}
	for k, a := range due {
		if !busy[k] {
			delete(gone, a)
		}
	}
}

func (e *ebpfCounters) lookup(m *ebpf.Map, key any) int {
	var v int64
	if err := m.Lookup(key, &v); err != nil || v < 0 {
		return 0
	}
	return int(v)
}

func (e *ebpfCounters) established(server netip.AddrPort) int {
	k := toEndpoint(server)
	return e.lookup(e.objs.ServerEstablished, &k)
}

func (e *ebpfCounters) sourceEstablished(src netip.Addr, server netip.AddrPort) int {
	k := countPair{Src: toEndpoint(netip.AddrPortFrom(src, 0)), Server: toEndpoint(server)}
	return e.lookup(e.objs.PairEstablished, &k)
}

func (e *ebpfCounters) frontendEstablished(fe netip.AddrPort) int {
	k := toEndpoint(fe)
	return e.lookup(e.objs.FrontendEstablished, &k)
}

func (e *ebpfCounters) lost() uint64 {
	var v uint64
	if err := e.objs.Lost.Get(&v); err != nil {
		return 0
	}
	return v
}

// scan runs one iter/tcp pass and collects its results. Passes must not
// overlap (Counters.scanMu).
//
// The iterator walks the network namespace of the thread that opens it (the
// kernel takes current's netns when the iterator fd is created), so a
// daemon that moves threads between namespaces must call Scan from one in
// the namespace it wants to see.
func (e *ebpfCounters) scan() (map[pairKey]Counts, error) {
	e.gen++
	if e.gen == 0 {
		e.gen = 1
	}
	if err := e.objs.ScanGen.Set(e.gen); err != nil {
		return nil, fmt.Errorf("scan sockets: set pass number: %w", err)
	}
	r, err := e.iter.Open()
	if err != nil {
		return nil, fmt.Errorf("scan sockets: %w", err)
	}
	err = drain(r)
	if cerr := r.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("scan sockets: %w", err)
	}

	pairs := make(map[pairKey]Counts)
	var (
		k     countPair
		v     countOccupancy
		stale []countPair
	)
	it := e.objs.Occupancy.Iterate()
	for it.Next(&k, &v) {
		if v.Gen != e.gen {
			stale = append(stale, k)
			continue
		}
		pairs[pairKey{k.Src.addrPort().Addr(), k.Server.addrPort()}] = Counts{
			Established: int(v.Established),
			TimeWait:    int(v.TimeWait),
			Occupied:    int(v.Occupied),
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("scan sockets: read results: %w", err)
	}
	for i := range stale {
		_ = e.objs.Occupancy.Delete(&stale[i])
	}
	return pairs, nil
}

// drain reads the iterator to its end; the program writes nothing, so this
// is one read unless the kernel stops early. It returns EAGAIN when a read
// covered a million sockets without output; the next read resumes.
func drain(r io.Reader) error {
	buf := make([]byte, 4096)
	for again := 0; ; {
		_, err := r.Read(buf)
		switch {
		case err == io.EOF:
			return nil
		case errors.Is(err, unix.EAGAIN) && again < 64:
			again++
		case err != nil:
			return err
		}
	}
}

func toEndpoint(ap netip.AddrPort) countEndpoint {
	a := ap.Addr().Unmap()
	e := countEndpoint{Port: ap.Port()}
	if a.Is4() {
		b := a.As4()
		e.Ip[0] = binary.NativeEndian.Uint32(b[:])
		e.Family = unix.AF_INET
		return e
	}
	b := a.As16()
	for i := range e.Ip {
		e.Ip[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	e.Family = unix.AF_INET6
	return e
}

func (e countEndpoint) addrPort() netip.AddrPort {
	if e.Family == unix.AF_INET {
		var b [4]byte
		binary.NativeEndian.PutUint32(b[:], e.Ip[0])
		return netip.AddrPortFrom(netip.AddrFrom4(b), e.Port)
	}
	var b [16]byte
	for i, w := range e.Ip {
		binary.NativeEndian.PutUint32(b[4*i:], w)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(b), e.Port)
}

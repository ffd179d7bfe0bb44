package kernel

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Test switch: match the daemon by its init-namespace tgid even where the
// kernel has bpf_get_ns_current_pid_tgid (the fallback of older kernels).
var steerForceInitPID = false

// procPIDInitIno is the inode number of the initial pid namespace
// (PROC_PID_INIT_INO): the same on every Linux.
const procPIDInitIno = 0xEFFFFFFC

// Steerer owns the loaded steer programs, their maps and links. Its methods
// are safe for concurrent use; a nil *Steerer steers nothing (Acquire always
// succeeds, the readers return zeros).
type Steerer struct {
	log       *slog.Logger
	cgroup    string
	objs      steerObjects
	links     []link.Link
	onRelease func(netip.AddrPort)
	events    *ringbuf.Reader
	eventsWG  sync.WaitGroup
	initPID   bool // the kernel matches the daemon by init-namespace tgid

	// Shared memory of the mmapable maps (see bpf/steer_maps.h for who
	// writes what). Valid until Close.
	svcMem, tableMem, countMem []byte

	// mu keeps the shared memory mapped: the hot readers (Acquire,
	// Release, Established, ...) hold it shared while they touch it, Close
	// and the removal of slots hold it exclusively, briefly. Nothing waits
	// for an RCU grace period while holding it.
	mu     sync.RWMutex
	closed bool
	view   atomic.Pointer[slotView] // copy on write; removals under mu (exclusive)

	// cfgMu serialises SetServices, SetServerUsable, Stats and Close, and
	// guards what follows.
	cfgMu  sync.Mutex
	svcs   map[netip.AddrPort]*steerSvc // by frontend
	ids    idPool                       // service ids (index into steer_services, 2 tables each)
	unref  map[uint32]uint64            // slots no service uses, since grace epoch
	slotIx idPool
	epoch  uint64 // 1 + RCU grace periods waited for (see grace)
	// deleted is the epoch of the last frontend removal (0: none): a hash
	// map element may be reused by the next insertion, so none happens
	// before a grace period (a program may still read the deleted one).
	deleted uint64
}

// slotView maps server addresses to their steer_counts slots and back; it
// is immutable once published.
type slotView struct {
	slots map[netip.AddrPort]uint32
	addrs []netip.AddrPort // slot -> address (invalid: free)
}

func (v *slotView) clone() *slotView {
	n := &slotView{slots: make(map[netip.AddrPort]uint32, len(v.slots)), addrs: slices.Clone(v.addrs)}
	maps.Copy(n.slots, v.slots)
	return n
}

// steerSvc is one registered frontend.
type steerSvc struct {
	id      uint32
	spec    SteerService
	table   steerSteerTable // what the active table holds
	active  uint32          // which of the service's two tables is live
	flipped uint64          // epoch of the last flip: the other table may still be read until grace
}

// idPool hands out small integers below max; released ones are reused only
// after an RCU grace period (a program may still be using them).
type idPool struct {
	next  uint32
	max   uint32
	freed []pooled
}

type pooled struct {
	id    uint32
	epoch uint64 // released in this epoch: reusable once epoch has advanced
}

// OpenSteerer loads bpf/steer.c and attaches its programs to the steered
// cgroup with links (they go away with the process, even on SIGKILL). Errors
// wrap ErrSteerUnsupported when the kernel or the privileges do not allow
// steering.
func OpenSteerer(opts SteerOptions) (_ *Steerer, err error) {
	log := opts.logger()
	maxSvcs, maxAddrs := opts.MaxServices, opts.MaxServerAddrs
	if maxSvcs <= 0 {
		maxSvcs = DefaultSteerMaxServices
	}
	if maxAddrs <= 0 {
		maxAddrs = DefaultSteerMaxServers
	}
	if missing := missingCaps(); len(missing) > 0 {
		return nil, fmt.Errorf("kernel steering: %w: missing %s", ErrSteerUnsupported, strings.Join(missing, ", "))
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("kernel steering: %w: raise RLIMIT_MEMLOCK: %w", ErrSteerUnsupported, err)
	}
	cg := opts.Cgroup
	if cg == "" {
		if cg, err = cgroup2Root(); err != nil {
			return nil, fmt.Errorf("kernel steering: %w: %w", ErrSteerUnsupported, err)
		}
	}
	if err := checkCgroup2(cg); err != nil {
		return nil, fmt.Errorf("kernel steering: %w: %w", ErrSteerUnsupported, err)
	}
	for _, at := range []ebpf.AttachType{ebpf.AttachCGroupInet4Connect, ebpf.AttachCgroupInet4GetPeername} {
		if err := probeProg(ebpf.CGroupSockAddr, at, "", 1); err != nil {
			return nil, fmt.Errorf("kernel steering: %w: %w", ErrSteerUnsupported, err)
		}
	}
	d, err := daemonIdentity(opts.DaemonPID)
	if err != nil {
		return nil, fmt.Errorf("kernel steering: %w", err)
	}
	nsPID := !steerForceInitPID && features.HaveProgramHelper(ebpf.CGroupSockAddr, asm.FnGetNsCurrentPidTgid) == nil
	if !nsPID {
		if d.nsIno != procPIDInitIno {
			return nil, fmt.Errorf("kernel steering: %w: the daemon runs in a pid namespace and this kernel has no bpf_get_ns_current_pid_tgid for cgroup programs (Linux 6.10): its own connections could not be told apart", ErrSteerUnsupported)
		}
	}

	spec, err := loadSteer()
	if err != nil {
		return nil, fmt.Errorf("kernel steering: %w: %w", ErrSteerUnsupported, err)
	}
	spec.Maps[steerMapSteerFrontends].MaxEntries = uint32(maxSvcs)
	spec.Maps[steerMapSteerServices].MaxEntries = uint32(maxSvcs)
	spec.Maps[steerMapSteerTables].MaxEntries = uint32(2 * maxSvcs)
	spec.Maps[steerMapSteerCounts].MaxEntries = uint32(maxAddrs)
	if err := spec.Variables[steerVarSteerNsPid].Set(b2u(nsPID)); err != nil {
		return nil, fmt.Errorf("kernel steering: set steer_ns_pid: %w", err)
	}
	s := &Steerer{
		log:       log,
		cgroup:    cg,
		onRelease: opts.OnRelease,
		initPID:   !nsPID,
		svcs:      make(map[netip.AddrPort]*steerSvc),
		ids:       idPool{max: uint32(maxSvcs)},
		unref:     make(map[uint32]uint64),
		slotIx:    idPool{max: uint32(maxAddrs)},
		epoch:     1,
	}
	s.view.Store(&slotView{slots: map[netip.AddrPort]uint32{}, addrs: make([]netip.AddrPort, maxAddrs)})
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("kernel steering: load programs: %w: %+v", ErrSteerUnsupported, ve)
		}
		return nil, fmt.Errorf("kernel steering: load programs: %w: %w", ErrSteerUnsupported, err)
	}
	defer func() {
		if err != nil {
			s.teardown()
		}
	}()
	if err := s.mapMemory(); err != nil {
		return nil, fmt.Errorf("kernel steering: %w", err)
	}
	cfg := steerSteerConfig{PidnsDev: d.nsDev, PidnsIno: d.nsIno, Tgid: d.tgid}
	if err := s.objs.SteerDaemon.Put(uint32(0), &cfg); err != nil {
		return nil, fmt.Errorf("kernel steering: register the daemon: %w", err)
	}
	if s.events, err = ringbuf.NewReader(s.objs.SteerEvents); err != nil {
		return nil, fmt.Errorf("kernel steering: ring buffer reader: %w", err)
	}
	if err := s.attach(); err != nil {
		return nil, fmt.Errorf("kernel steering: %w: %w", ErrSteerUnsupported, err)
	}
	s.eventsWG.Add(1)
	go s.readEvents()
	match := "tgid in its pid namespace"
	if s.initPID {
		match = "init-namespace tgid (kernel without bpf_get_ns_current_pid_tgid for cgroup programs)"
	}
	log.Info("kernel steering: eBPF", "cgroup", cg, "daemon_pid", d.callerPID, "daemon_match", match,
		"detail", "connect() to a steered frontend from this cgroup goes straight to a server with room")
	return s, nil
}

// attach links the programs to the cgroup: first those that give places
// back and restore peer names, last those that take places.
func (s *Steerer) attach() error {
	links, err := attachCgroup(s.cgroup,
		cgroupProg{s.objs.SteerRelease, ebpf.AttachCgroupInetSockRelease},
		cgroupProg{s.objs.SteerSockops, ebpf.AttachCGroupSockOps},
		cgroupProg{s.objs.SteerGetpeername4, ebpf.AttachCgroupInet4GetPeername},
		cgroupProg{s.objs.SteerGetpeername6, ebpf.AttachCgroupInet6GetPeername},
		cgroupProg{s.objs.SteerConnect4, ebpf.AttachCGroupInet4Connect},
		cgroupProg{s.objs.SteerConnect6, ebpf.AttachCGroupInet6Connect},
	)
	if err != nil {
		return err
	}
	s.links = append(s.links, links...)
	return nil
}

// mapMemory maps the three shared arrays and checks that their layout is
// the one the Go types describe.
func (s *Steerer) mapMemory() error {
	var err error
	if s.svcMem, err = mmapArray(s.objs.SteerServices, unsafe.Sizeof(steerSteerService{})); err != nil {
		return err
	}
	if s.tableMem, err = mmapArray(s.objs.SteerTables, unsafe.Sizeof(steerSteerTable{})); err != nil {
		return err
	}
	s.countMem, err = mmapArray(s.objs.SteerCounts, unsafe.Sizeof(steerSteerConns{}))
	return err
}

func mmapArray(m *ebpf.Map, size uintptr) ([]byte, error) {
	if uintptr(m.ValueSize()) != size || size%8 != 0 {
		return nil, fmt.Errorf("map %s: value size %d, Go type %d", m, m.ValueSize(), size)
	}
	n := int(size) * int(m.MaxEntries())
	page := os.Getpagesize()
	n = (n + page - 1) / page * page
	b, err := unix.Mmap(m.FD(), 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap map %s: %w", m, err)
	}
	return b, nil
}

func (s *Steerer) service(id uint32) *steerSteerService {
	return (*steerSteerService)(unsafe.Pointer(&s.svcMem[uintptr(id)*unsafe.Sizeof(steerSteerService{})]))
}

func (s *Steerer) table(id, which uint32) *steerSteerTable {
	return (*steerSteerTable)(unsafe.Pointer(&s.tableMem[uintptr(2*id+which)*unsafe.Sizeof(steerSteerTable{})]))
}

func (s *Steerer) counts(slot uint32) *steerSteerConns {
	return (*steerSteerConns)(unsafe.Pointer(&s.countMem[uintptr(slot)*unsafe.Sizeof(steerSteerConns{})]))
}

// readEvents passes the kernel's release events to OnRelease.
func (s *Steerer) readEvents() {
	defer s.eventsWG.Done()
	readRing(s.events, s.log, "kernel steering: read release events", func(sample []byte) {
		if len(sample) < 4 || s.onRelease == nil {
			return
		}
		slot := binary.NativeEndian.Uint32(sample)
		var addr netip.AddrPort
		if v := s.view.Load(); slot < uint32(len(v.addrs)) {
			addr = v.addrs[slot]
		}
		if addr.IsValid() {
			s.onRelease(addr)
		}
	})
}

// Cgroup is the cgroup whose processes are steered.
func (s *Steerer) Cgroup() string {
	if s == nil {
		return ""
	}
	return s.cgroup
}

// SetServices replaces the steered frontends and their servers (at start
// and on reload). The kernel switches each changed service over atomically
// (it never sees half a table); connections already steered keep their
// places, and the counts of a server address that stays carry on.
func (s *Steerer) SetServices(list []SteerService) error {
	if s == nil {
		return ErrSteerClosed
	}
	svcs, err := normalizeServices(list)
	if err != nil {
		return fmt.Errorf("kernel steering: %w", err)
	}
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	if s.isClosed() {
		return ErrSteerClosed
	}

	// Capacity first, so that a failure changes nothing.
	view := s.view.Load()
	want := make(map[netip.AddrPort]bool, len(svcs))
	newAddrs := make(map[netip.AddrPort]bool)
	keep := make(map[uint32]bool) // slots the new services use
	newSvcs, gone := 0, 0
	for _, sv := range svcs {
		want[sv.Frontend] = true
		if s.svcs[sv.Frontend] == nil {
			newSvcs++
		}
		for _, srv := range sv.Servers {
			if slot, ok := view.slots[srv.Addr]; ok {
				keep[slot] = true
			} else {
				newAddrs[srv.Addr] = true
			}
		}
	}
	for fe := range s.svcs {
		if !want[fe] {
			gone++
		}
	}
	if n := s.ids.available() + gone; newSvcs > n {
		return fmt.Errorf("kernel steering: %d new frontends, room for %d (MaxServices)", newSvcs, n)
	}
	if len(newAddrs) > s.slotIx.available() {
		s.reclaimSlots(keep)
	}
	if n := s.slotIx.available(); len(newAddrs) > n {
		return fmt.Errorf("kernel steering: %d new server addresses, room for %d (MaxServerAddrs)", len(newAddrs), n)
	}

	var errs []error
	// Removed frontends first (their ids may serve new ones): unreachable,
	// then off. Ids and hash map elements are reused only after a grace
	// period.
	for fe, cur := range s.svcs {
		if want[fe] {
			continue
		}
		k := toSteerAddr(fe)
		if err := s.objs.SteerFrontends.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("unregister frontend %s: %w", fe, err))
		}
		atomic.StoreUint32(&s.service(cur.id).Enabled, 0)
		s.ids.release(cur.id, s.epoch)
		s.deleted = s.epoch
		delete(s.svcs, fe)
	}

	if len(newAddrs) > 0 {
		// Fresh slots (or ones freed before a grace period): no program or
		// reader can be using them.
		view = view.clone()
		for a := range newAddrs {
			slot := s.alloc(&s.slotIx)
			*s.counts(slot) = steerSteerConns{}
			view.slots[a] = slot
			view.addrs[slot] = a
		}
		s.view.Store(view)
	}
	used := make(map[uint32]bool)
	for _, sv := range svcs {
		for _, srv := range sv.Servers {
			used[view.slots[srv.Addr]] = true
		}
	}

	for _, sv := range svcs {
		cur := s.svcs[sv.Frontend]
		if cur == nil {
			// A fresh id, or one released before a grace period: no
			// program can be reading its tables or counters.
			cur = &steerSvc{id: s.alloc(&s.ids), spec: sv}
			svc := s.service(cur.id)
			*svc = steerSteerService{Active: svc.Active}
			cur.active = svc.Active & 1
			s.install(cur, s.buildTable(sv), true)
			atomic.StoreUint32(&svc.Enabled, 1)
			k := toSteerAddr(sv.Frontend)
			if s.deleted >= s.epoch {
				s.grace()
			}
			if err := s.objs.SteerFrontends.Put(&k, &cur.id); err != nil {
				atomic.StoreUint32(&svc.Enabled, 0)
				s.ids.release(cur.id, s.epoch)
				errs = append(errs, fmt.Errorf("register frontend %s: %w", sv.Frontend, err))
				continue
			}
			s.svcs[sv.Frontend] = cur
			continue
		}
		cur.spec = sv
		s.install(cur, s.buildTable(sv), false)
	}
	s.gcSlots(used, true)
	return errors.Join(errs...)
}

// buildTable is the kernel's table for sv.
func (s *Steerer) buildTable(sv SteerService) steerSteerTable {
	var t steerSteerTable
	t.Algo, _ = steerAlgo(sv.Algo)
	t.Nservers = uint32(len(sv.Servers))
	slots := s.view.Load().slots
	weights := make([]int, len(sv.Servers))
	fam4 := sv.Frontend.Addr().Is4()
	for i, srv := range sv.Servers {
		t.Servers[i] = steerSteerServer{
			Addr:    toSteerAddr(srv.Addr),
			Slot:    slots[srv.Addr],
			Maxconn: uint32(srv.MaxConn),
			Weight:  uint32(srv.Weight),
			Usable:  b2u(srv.Usable),
		}
		// The sequence holds the servers that can take connections, so
		// that each gets its share; the kernel still checks each turn.
		if srv.Usable && srv.Addr.Addr().Is4() == fam4 {
			weights[i] = srv.Weight
		}
	}
	seq := wrrSequence(weights, steerWRRSlots)
	copy(t.Wrr[:], seq)
	t.WrrLen = uint32(len(seq))
	return t
}

// install makes t the live table of cur (if it differs): it writes the
// inactive table, then flips. The inactive table may still be read by a
// program that looked `active` up before the previous flip: wait for an RCU
// grace period first if none has passed since (fresh: a service id no
// program can reach yet).
func (s *Steerer) install(cur *steerSvc, t steerSteerTable, fresh bool) {
	if !fresh && t == cur.table {
		return
	}
	if !fresh && cur.flipped >= s.epoch {
		s.grace()
	}
	next := cur.active ^ 1
	*s.table(cur.id, next) = t
	atomic.StoreUint32(&s.service(cur.id).Active, next)
	cur.active, cur.table, cur.flipped = next, t, s.epoch
}

// grace waits until every program that started before it has finished: cgroup
// programs run inside RCU read-side critical sections, and
// membarrier(MEMBARRIER_CMD_GLOBAL) is a synchronize_rcu().
func (s *Steerer) grace() {
	const membarrierCmdGlobal = 1
	if _, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0); errno != 0 {
		// nohz_full CPUs refuse it: programs run for microseconds.
		time.Sleep(50 * time.Millisecond)
	}
	s.epoch++
}

// alloc takes an id from p, waiting for a grace period if the only ones
// left were released in the current epoch. The caller checked available.
func (s *Steerer) alloc(p *idPool) uint32 {
	if id, ok := p.take(s.epoch); ok {
		return id
	}
	s.grace()
	id, _ := p.take(s.epoch)
	return id
}

func (p *idPool) available() int { return int(p.max-p.next) + len(p.freed) }

func (p *idPool) take(epoch uint64) (uint32, bool) {
	for i, f := range p.freed {
		if f.epoch < epoch {
			p.freed = append(p.freed[:i], p.freed[i+1:]...)
			return f.id, true
		}
	}
	if p.next < p.max {
		p.next++
		return p.next - 1, true
	}
	return 0, false
}

func (p *idPool) release(id uint32, epoch uint64) {
	p.freed = append(p.freed, pooled{id, epoch})
}

// gcSlots frees the slots of server addresses that no service has used
// since before the last grace period and on which no place is held (a held
// place is given back to its slot: the slot must stay until then). The check
// and the removal happen with mu held exclusively, so no Acquire is halfway.
//
// mark: used is what the live tables use now, so slots outside it start
// their wait; otherwise only slots already waiting are considered.
func (s *Steerer) gcSlots(used map[uint32]bool, mark bool) {
	view := s.view.Load()
	var due []netip.AddrPort
	for a, slot := range view.slots {
		if used[slot] {
			if mark {
				delete(s.unref, slot)
			}
			continue
		}
		if since, ok := s.unref[slot]; !ok {
			if mark {
				s.unref[slot] = s.epoch
			}
		} else if since < s.epoch {
			due = append(due, a)
		}
	}
	if len(due) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	view = view.clone()
	for _, a := range due {
		slot := view.slots[a]
		if atomic.LoadInt64(&s.counts(slot).Used) != 0 {
			continue
		}
		delete(s.unref, slot)
		delete(view.slots, a)
		view.addrs[slot] = netip.AddrPort{}
		s.slotIx.release(slot, s.epoch)
	}
	s.view.Store(view)
}

// reclaimSlots frees, now, the slots that the live tables do not use (unref)
// and the next ones will not (keep), waiting for a grace period if one of
// them was used too recently.
func (s *Steerer) reclaimSlots(keep map[uint32]bool) {
	for slot, since := range s.unref {
		if !keep[slot] && since >= s.epoch && atomic.LoadInt64(&s.counts(slot).Used) == 0 {
			s.grace()
			break
		}
	}
	s.gcSlots(keep, false)
}

// SetServerUsable marks server of frontend's service usable or not (down,
// maint, drain) at once: the kernel chooses it, or not, from the next
// connect() on. Connections already steered to it are left alone.
func (s *Steerer) SetServerUsable(frontend, server netip.AddrPort, usable bool) error {
	if s == nil {
		return ErrSteerClosed
	}
	frontend, server = unmapAP(frontend), unmapAP(server)
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	if s.isClosed() {
		return ErrSteerClosed
	}
	cur := s.svcs[frontend]
	if cur == nil {
		return fmt.Errorf("kernel steering: frontend %s: %w", frontend, ErrSteerNotFound)
	}
	found := false
	live := s.table(cur.id, cur.active)
	for i := range cur.spec.Servers {
		if cur.spec.Servers[i].Addr != server {
			continue
		}
		found = true
		cur.spec.Servers[i].Usable = usable
		// In place first: effective now. Then the sequence without it (or
		// with it again), so the others keep their shares.
		atomic.StoreUint32(&live.Servers[i].Usable, b2u(usable))
		cur.table.Servers[i].Usable = b2u(usable)
	}
	if !found {
		return fmt.Errorf("kernel steering: frontend %s: server %s: %w", frontend, server, ErrSteerNotFound)
	}
	s.install(cur, s.buildTable(cur.spec), false)
	return nil
}

func (s *Steerer) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

// slotOf returns the slot of a server address; the caller holds mu shared.
func (s *Steerer) slotOf(server netip.AddrPort) (uint32, bool) {
	if s.closed {
		return 0, false
	}
	slot, ok := s.view.Load().slots[unmapAP(server)]
	return slot, ok
}

// Acquire takes a place on server for one of the daemon's own connections,
// unless the places taken there (steered connections included) have reached
// maxconn (0: no limit). A server the kernel does not know always has room
// (and the place holds nothing). Give the place back with Release.
func (s *Steerer) Acquire(server netip.AddrPort, maxconn int) (SteerPlace, bool) {
	if s == nil {
		return SteerPlace{}, true
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	slot, ok := s.slotOf(server)
	if !ok {
		return SteerPlace{}, true
	}
	c := s.counts(slot)
	for {
		cur := atomic.LoadInt64(&c.Used)
		if maxconn > 0 && cur >= int64(maxconn) {
			return SteerPlace{}, false
		}
		if atomic.CompareAndSwapInt64(&c.Used, cur, cur+1) {
			return SteerPlace{slot: int32(slot) + 1}, true
		}
	}
}

// Release gives back a place taken with Acquire.
func (s *Steerer) Release(p SteerPlace) {
	if s == nil || p.slot == 0 {
		return
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return
	}
	atomic.AddInt64(&s.counts(uint32(p.slot-1)).Used, -1)
}

// Established is the number of steered connections holding a place on
// server now (connecting or ESTABLISHED).
func (s *Steerer) Established(server netip.AddrPort) int {
	if s == nil {
		return 0
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	slot, ok := s.slotOf(server)
	if !ok {
		return 0
	}
	return int(max(0, atomic.LoadInt64(&s.counts(slot).Steered)))
}

// InUse is the number of places taken on server: steered connections and
// the daemon's own (Acquire), as checked against maxconn.
func (s *Steerer) InUse(server netip.AddrPort) int {
	if s == nil {
		return 0
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	slot, ok := s.slotOf(server)
	if !ok {
		return 0
	}
	return int(max(0, atomic.LoadInt64(&s.counts(slot).Used)))
}

// SetQueued says whether the daemon has connections queued for server.
// While it does, the kernel steers no new connection there (they fall
// through and queue behind, in order) and reports each place a steered
// connection gives back to OnRelease.
func (s *Steerer) SetQueued(server netip.AddrPort, queued bool) {
	if s == nil {
		return
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if slot, ok := s.slotOf(server); ok {
		atomic.StoreUint32(&s.counts(slot).Queued, b2u(queued))
	}
}

// Stats returns the kernel's counters.
func (s *Steerer) Stats() SteerStats {
	if s == nil {
		return SteerStats{}
	}
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	st := SteerStats{Cgroup: s.cgroup}
	if s.isClosed() {
		return st
	}
	for fe, cur := range s.svcs {
		svc := s.service(cur.id)
		full, down, lost := atomic.LoadUint64(&svc.Full), atomic.LoadUint64(&svc.Down), atomic.LoadUint64(&svc.Lost)
		st.Services = append(st.Services, SteerServiceStats{
			Frontend:    fe,
			Steered:     atomic.LoadUint64(&svc.Steered),
			FallThrough: full + down + lost,
			Unavailable: down,
		})
	}
	for a, slot := range s.view.Load().slots {
		c := s.counts(slot)
		st.Servers = append(st.Servers, SteerServerStats{
			Addr:        a,
			Established: int(max(0, atomic.LoadInt64(&c.Steered))),
			InUse:       int(max(0, atomic.LoadInt64(&c.Used))),
			Steered:     atomic.LoadUint64(&c.Total),
			Released:    atomic.LoadUint64(&c.Released),
			Queued:      atomic.LoadUint32(&c.Queued) != 0,
		})
	}
	sortStats(&st)
	return st
}

// Close detaches the programs (new connect() calls are no longer steered;
// connections already steered stay up, but getpeername then reports the
// server) and frees the maps.
func (s *Steerer) Close() error {
	if s == nil {
		return nil
	}
	// Once closed is set (under both locks) no method touches the maps or
	// the shared memory any more, so the teardown needs neither lock: an
	// OnRelease callback that calls back into the Steerer cannot deadlock
	// with it.
	s.cfgMu.Lock()
	s.mu.Lock()
	was := s.closed
	s.closed = true
	s.mu.Unlock()
	s.cfgMu.Unlock()
	if was {
		return nil
	}
	err := s.teardown()
	if err != nil {
		return fmt.Errorf("kernel steering: close: %w", err)
	}
	return nil
}

// teardown undoes OpenSteerer, whatever part of it was done.
func (s *Steerer) teardown() error {
	var errs []error
	for i := len(s.links) - 1; i >= 0; i-- {
		errs = append(errs, s.links[i].Close())
	}
	s.links = nil
	if s.events != nil {
		errs = append(errs, s.events.Close())
		s.eventsWG.Wait()
	}
	for _, b := range []*[]byte{&s.svcMem, &s.tableMem, &s.countMem} {
		if *b != nil {
			errs = append(errs, unix.Munmap(*b))
			*b = nil
		}
	}
	errs = append(errs, s.objs.Close())
	return errors.Join(errs...)
}

// daemonID identifies the daemon's process for the kernel.
type daemonID struct {
	callerPID    uint32 // in the caller's pid namespace
	tgid         uint32 // in the daemon's own pid namespace
	nsDev, nsIno uint64 // of that namespace (kernel dev_t encoding)
}

// daemonIdentity finds pid's (0: our own) tgid in its own pid namespace and
// that namespace's device and inode, as bpf_get_ns_current_pid_tgid wants
// them.
func daemonIdentity(pid int) (daemonID, error) {
	self := pid == 0 || pid == os.Getpid()
	if self {
		pid = os.Getpid()
	}
	dir := "/proc/" + strconv.Itoa(pid)
	var st unix.Stat_t
	if err := unix.Stat(dir+"/ns/pid", &st); err != nil {
		return daemonID{}, fmt.Errorf("daemon pid %d: pid namespace: %w", pid, err)
	}
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return daemonID{}, fmt.Errorf("daemon pid %d: %w", pid, err)
	}
	nspid, err := innermostPID(status)
	if err != nil {
		return daemonID{}, fmt.Errorf("daemon pid %d: %w", pid, err)
	}
	return daemonID{
		callerPID: uint32(pid),
		tgid:      nspid,
		// The kernel compares with its own dev_t (major<<20 | minor), not
		// stat's encoding.
		nsDev: uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev)),
		nsIno: st.Ino,
	}, nil
}

// innermostPID reads the last number of /proc/PID/status's NSpid line: the
// pid in the process's own namespace (the line lists it from the namespace
// of the procfs mount inward).
func innermostPID(status []byte) (uint32, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "NSpid:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		n, err := strconv.ParseUint(f[len(f)-1], 10, 32)
		if err != nil || n == 0 {
			return 0, fmt.Errorf("bad NSpid line %q", sc.Text())
		}
		return uint32(n), nil
	}
	return 0, errors.New("no NSpid line in status (Linux 4.1)")
}

// cgroup2Root is the root of the cgroup v2 hierarchy as this process sees it
// (the mount of the hierarchy's, or the cgroup namespace's, root).
func cgroup2Root() (string, error) {
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	ms, err := cgroup2Mounts(mounts)
	if err != nil {
		return "", err
	}
	for _, m := range ms {
		if m.root == "/" {
			return m.point, nil
		}
	}
	return "", fmt.Errorf("find cgroup2 mount: only sub-trees are mounted (%s of %s): set kernel-steer-cgroup", ms[0].point, ms[0].root)
}

func toSteerAddr(ap netip.AddrPort) steerSteerAddr {
	e := toEndpoint(ap)
	return steerSteerAddr{Ip: e.Ip, Port: e.Port, Family: e.Family}
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

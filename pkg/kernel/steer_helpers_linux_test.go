package kernel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The steer tests run their clients in child processes (this test binary
// again, TestSteerChildProcess) started inside a cgroup the test creates, so
// that the test process itself, which plays the daemon and the backends, is
// never steered.
const steerChildEnv = "SLUICE_STEER_TEST_CHILD"

// requireSteer skips unless steering can be tested here, and returns the
// cgroup v2 root to create test cgroups under.
func requireSteer(tb testing.TB) string {
	tb.Helper()
	requirePrivileged(tb)
	root, err := cgroup2Root()
	if err != nil {
		tb.Skipf("no cgroup v2 hierarchy: %v", err)
	}
	if err := probeProg(ebpf.CGroupSockAddr, ebpf.AttachCGroupInet4Connect, "", 1); err != nil {
		if kernelShouldSteer() {
			tb.Fatalf("cgroup/connect4 not supported on a kernel that should have it: %v", err)
		}
		tb.Skipf("kernel without cgroup/connect4: %v", err)
	}
	return root
}

// kernelShouldSteer: steer.c needs sk_storage in cgroup sock_addr programs,
// cgroup/sock_release, getpeername hooks, bpf_loop and cgroup bpf_links —
// all there in Linux 5.17.
func kernelShouldSteer() bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false
	}
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	return major > 5 || major == 5 && minor >= 17
}

// makeCgroup creates an empty cgroup for one test (removed at cleanup, after
// the processes in it are gone).
func makeCgroup(t *testing.T, root, name string) string {
	t.Helper()
	dir := filepath.Join(root, fmt.Sprintf("sluice-steer-test-%d-%s", os.Getpid(), name))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	t.Cleanup(func() { removeCgroup(t, dir) })
	return dir
}

// openSteerer opens a Steerer on cg (closed at cleanup).
func openSteerer(t *testing.T, opts SteerOptions) *Steerer {
	t.Helper()
	opts.Logger = testLogger(t)
	s, err := OpenSteerer(opts)
	if err != nil {
		if kernelShouldSteer() {
			t.Fatalf("OpenSteerer: %v", err)
		}
		t.Skipf("OpenSteerer: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Steerer.Close: %v", err)
		}
	})
	return s
}

// steerBackend is a server (or the frontend's listener, to catch what falls
// through): it greets every connection with its name and a newline, records
// the peer address, and closes when the client closes or sends 'C'.
type steerBackend struct {
	name string
	ln   net.Listener
	addr netip.AddrPort

	mu       sync.Mutex
	peers    map[netip.AddrPort]bool
	accepted int
	open     map[net.Conn]bool
	wg       sync.WaitGroup
}

func startBackend(t *testing.T, name, address string) *steerBackend {
	t.Helper()
	network := "tcp4"
	if strings.HasPrefix(address, "[") {
		network = "tcp6"
	}
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Fatalf("listen %s: %v", address, err)
	}
	b := &steerBackend{
		name:  name,
		ln:    ln,
		addr:  unmapAP(ln.Addr().(*net.TCPAddr).AddrPort()),
		peers: map[netip.AddrPort]bool{},
		open:  map[net.Conn]bool{},
	}
	b.wg.Add(1)
	go b.serve()
	t.Cleanup(b.close)
	return b
}

func (b *steerBackend) serve() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.peers[unmapAP(c.RemoteAddr().(*net.TCPAddr).AddrPort())] = true
		b.accepted++
		b.open[c] = true
		b.mu.Unlock()
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			c.Write([]byte(b.name + "\n"))
			// Until the client closes, or sends 'C': then the server
			// closes first.
			buf := make([]byte, 64)
			for {
				n, err := c.Read(buf)
				if err != nil || bytes.IndexByte(buf[:n], 'C') >= 0 {
					break
				}
			}
			c.Close()
			b.mu.Lock()
			delete(b.open, c)
			b.mu.Unlock()
		}()
	}
}

func (b *steerBackend) close() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.open {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *steerBackend) sawPeer(p netip.AddrPort) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peers[unmapAP(p)]
}

// openConns is the number of connections the server holds now.
func (b *steerBackend) openConns() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.open)
}

// steerChild is a client process in a test cgroup, driven line by line.
type steerChild struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
	pid int
}

// startChild starts a client in cgroup cg (through clone3's
// CLONE_INTO_CGROUP: it never runs anywhere else), in a new pid namespace if
// newPIDNS.
func startChild(t *testing.T, cg string, newPIDNS bool) *steerChild {
	t.Helper()
	dir, err := os.Open(cg)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSteerChildProcess$", "-test.count=1")
	// Blocking system calls in the child: no preemption signals (EINTR).
	cmd.Env = append(os.Environ(), steerChildEnv+"=client", "GODEBUG=asyncpreemptoff=1")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
	if newPIDNS {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWPID
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child in %s: %v", cg, err)
	}
	c := &steerChild{cmd: cmd, in: in, out: bufio.NewScanner(out), pid: cmd.Process.Pid}
	c.out.Buffer(make([]byte, 1<<16), 1<<20)
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	if r := c.try("ping"); r != "OK pong" {
		t.Fatalf("child: %q", r)
	}
	return c
}

// try sends one command and returns the reply line.
func (c *steerChild) try(format string, args ...any) string {
	if _, err := fmt.Fprintf(c.in, format+"\n", args...); err != nil {
		return "ERR write: " + err.Error()
	}
	if !c.out.Scan() {
		return fmt.Sprintf("ERR child gone: %v", c.out.Err())
	}
	return c.out.Text()
}

// do sends one command and returns the reply's fields after OK.
func (c *steerChild) do(t *testing.T, format string, args ...any) []string {
	t.Helper()
	r := c.try(format, args...)
	f := strings.Fields(r)
	if len(f) == 0 || f[0] != "OK" {
		t.Fatalf("child %q: %s", fmt.Sprintf(format, args...), r)
	}
	return f[1:]
}

// dialed is a connection a child holds.
type dialed struct {
	id       string
	local    netip.AddrPort
	peer     netip.AddrPort // what getpeername() says
	greeting string         // the name of the server that answered
}

// dial makes the child connect to addr ("dial": a socket of addr's family;
// "dialmapped": an AF_INET6 socket to the IPv4-mapped form of addr) and keep
// the connection.
func (c *steerChild) dial(t *testing.T, how string, addr netip.AddrPort) dialed {
	t.Helper()
	f := c.do(t, "%s %s", how, addr)
	if len(f) != 4 {
		t.Fatalf("child dial: %v", f)
	}
	return dialed{id: f[0], local: netip.MustParseAddrPort(f[1]), peer: netip.MustParseAddrPort(f[2]), greeting: f[3]}
}

// burst makes the child open n connections to addr one after the other,
// each closed after the greeting; it returns the greetings counted by name.
// It fails the test if getpeername() ever differs from addr.
func (c *steerChild) burst(t *testing.T, n int, addr netip.AddrPort) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, kv := range c.do(t, "burst %d %s", n, addr) {
		k, v, _ := strings.Cut(kv, "=")
		x, _ := strconv.Atoi(v)
		out[k] = x
	}
	if out["badpeer"] != 0 {
		t.Fatalf("getpeername differed from %s on %d of %d connections", addr, out["badpeer"], n)
	}
	delete(out, "badpeer")
	return out
}

// TestSteerChildProcess is the client of the steer tests (it does nothing in
// a normal run). Commands, one per line on stdin, one reply line each:
//
//	ping                       OK pong
//	dial ADDR                  OK ID LOCAL PEER GREETING   (socket of ADDR's family)
//	dialmapped ADDR            same with an AF_INET6 socket to ::ffff:ADDR
//	bindconnect LOCAL ADDR     OK ID ERR    (SO_REUSEADDR, bind LOCAL, connect; keeps the socket)
//	send ID DATA               OK   (writes DATA on the connection)
//	close ID                   OK
//	burst N ADDR               OK NAME=COUNT... badpeer=K
func TestSteerChildProcess(t *testing.T) {
	if os.Getenv(steerChildEnv) != "client" {
		return
	}
	runSteerChild(os.Stdin, os.Stdout)
	os.Exit(0)
}

func runSteerChild(r io.Reader, w io.Writer) {
	conns := map[string]int{} // id -> fd
	next := 0
	sc := bufio.NewScanner(r)
	reply := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch {
		case f[0] == "ping":
			reply("OK pong")
		case (f[0] == "dial" || f[0] == "dialmapped") && len(f) == 2:
			fd, local, peer, greet, err := childDial(f[1], f[0] == "dialmapped")
			if err != nil {
				reply("ERR %v", err)
				continue
			}
			next++
			id := strconv.Itoa(next)
			conns[id] = fd
			reply("OK %s %s %s %s", id, local, peer, greet)
		case f[0] == "bindconnect" && len(f) == 3:
			fd, err := childBindConnect(f[1], f[2])
			if fd < 0 {
				reply("ERR %v", err)
				continue
			}
			next++
			id := strconv.Itoa(next)
			conns[id] = fd
			msg := "none"
			if err != nil {
				msg = errName(err)
			}
			reply("OK %s %s", id, msg)
		case f[0] == "send" && len(f) == 3:
			fd, ok := conns[f[1]]
			if !ok {
				reply("ERR no connection %s", f[1])
				continue
			}
			if _, err := unix.Write(fd, []byte(f[2])); err != nil {
				reply("ERR %v", err)
				continue
			}
			reply("OK")
		case f[0] == "close" && len(f) == 2:
			fd, ok := conns[f[1]]
			if !ok {
				reply("ERR no connection %s", f[1])
				continue
			}
			delete(conns, f[1])
			unix.Close(fd)
			reply("OK")
		case f[0] == "burst" && len(f) == 3:
			n, _ := strconv.Atoi(f[1])
			counts := map[string]int{}
			bad := 0
			var err error
			for range n {
				var fd int
				var peer netip.AddrPort
				var greet string
				fd, _, peer, greet, err = childDial(f[2], false)
				if err != nil {
					break
				}
				unix.Close(fd)
				counts[greet]++
				if peer != netip.MustParseAddrPort(f[2]) {
					bad++
				}
			}
			if err != nil {
				reply("ERR %v", err)
				continue
			}
			var b strings.Builder
			keys := make([]string, 0, len(counts))
			for k := range counts {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(&b, " %s=%d", k, counts[k])
			}
			reply("OK%s badpeer=%d", b.String(), bad)
		default:
			reply("ERR unknown command %q", sc.Text())
		}
	}
}

func errName(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return strings.ReplaceAll(err.Error(), " ", "_")
}

func sockaddr(ap netip.AddrPort, mapped bool) (int, unix.Sockaddr) {
	if ap.Addr().Is4() && !mapped {
		return unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func fromSockaddr(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// childDial connects with plain system calls (so that getpeername is what
// the kernel says, not a cached address) and reads the greeting line.
func childDial(address string, mapped bool) (fd int, local, peer netip.AddrPort, greeting string, err error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return -1, local, peer, "", err
	}
	fam, sa := sockaddr(ap, mapped)
	fd, err = unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, local, peer, "", err
	}
	fail := func(what string, e error) (int, netip.AddrPort, netip.AddrPort, string, error) {
		unix.Close(fd)
		return -1, local, peer, "", fmt.Errorf("%s: %s", what, errName(e))
	}
	if err := connectFD(fd, sa); err != nil {
		return fail("connect", err)
	}
	lsa, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	psa, err := unix.Getpeername(fd)
	if err != nil {
		return fail("getpeername", err)
	}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
	var buf [64]byte
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || m == 0 {
			return fail("read greeting", errors.Join(err, io.ErrUnexpectedEOF))
		}
		n += m
		if buf[n-1] == '\n' {
			break
		}
	}
	return fd, fromSockaddr(lsa), fromSockaddr(psa), strings.TrimSpace(string(buf[:n])), nil
}

// childBindConnect binds to local with SO_REUSEADDR and connects to addr,
// returning the socket and connect's error (the socket is kept either way).
func childBindConnect(local, address string) (int, error) {
	lap, err := netip.ParseAddrPort(local)
	if err != nil {
		return -1, err
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return -1, err
	}
	fam, sa := sockaddr(ap, false)
	fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return -1, err
	}
	_, lsa := sockaddr(lap, false)
	if err := unix.Bind(fd, lsa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %s: %w", local, err)
	}
	return fd, connectFD(fd, sa)
}

// connectFD is a blocking connect that survives EINTR (the connection goes
// on in the kernel: wait for it and fetch its result).
func connectFD(fd int, sa unix.Sockaddr) error {
	err := unix.Connect(fd, sa)
	if err != unix.EINTR {
		return err
	}
	for {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(p, -1); err == unix.EINTR {
			continue
		} else if err != nil {
			return err
		}
		soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soerr != 0 {
			return unix.Errno(soerr)
		}
		return nil
	}
}

// waitFor polls cond (which returns "" when satisfied) for up to 5 s.
func waitFor(t *testing.T, what string, cond func() string) {
	t.Helper()
	eventually(t, 5*time.Second, what, cond)
}

// within says whether got is within frac of want.
func within(got, want int, frac float64) bool {
	d := float64(got - want)
	return d <= frac*float64(want) && -d <= frac*float64(want)
}

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// steerClient is a child process that opens connections to p.Addr on
// command ("open", "close ID" on stdin) and reports on stdout:
// "conn ID LOCAL PEER" once connected (PEER is what getpeername says) and
// "greet ID NAME" when the server's greeting arrives.
func steerClient(p netnsParams) error {
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, a ...any) {
		mu.Lock()
		fmt.Fprintf(out, format+"\n", a...)
		out.Flush()
		mu.Unlock()
	}
	var conns []net.Conn
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 1 && f[0] == "open":
			c, err := net.Dial("tcp", p.Addr)
			if err != nil {
				return err
			}
			id := len(conns)
			conns = append(conns, c)
			say("conn %d %s %s", id, c.LocalAddr(), c.RemoteAddr())
			go func() {
				line, err := bufio.NewReader(c).ReadString('\n')
				if err == nil {
					say("greet %d %s", id, strings.TrimSpace(line))
				}
			}()
		case len(f) == 2 && f[0] == "close":
			var id int
			fmt.Sscan(f[1], &id)
			conns[id].Close()
			say("closed %d", id)
		}
	}
	return nil
}

// steerHarness drives a steerClient child.
type steerHarness struct {
	t     *testing.T
	in    io.WriteCloser
	lines chan []string
}

func (h *steerHarness) cmd(line string) { fmt.Fprintln(h.in, line) }

// expect waits for the next line of the given kind.
func (h *steerHarness) expect(kind string) []string {
	h.t.Helper()
	select {
	case f := <-h.lines:
		if f[0] != kind {
			h.t.Fatalf("client said %v, want %s", f, kind)
		}
		return f
	case <-time.After(10 * time.Second):
		h.t.Fatalf("client: no %s line", kind)
		return nil
	}
}

// TestKernelSteer: a local client connecting to a steered mode tcp
// frontend reaches the servers directly (the server sees the client's own
// port; getpeername says the frontend); maxconn holds across steered and
// proxied connections: with 3 servers at maxconn 5, 15 steered connections
// fill them, the 16th falls through to sluice's listener and waits in its
// queue, and is dispatched when a steered one closes; a server in maint
// gets no new steered connection. sluice itself runs in the steered cgroup
// (the cgroup v2 root, the default): its own connections are not steered.
func TestKernelSteer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for eBPF")
	}
	var mu sync.Mutex
	peers := map[string]string{} // remote addr seen by a server -> server
	var servers []string
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("s%d", i)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		servers = append(servers, ln.Addr().String())
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				peers[c.RemoteAddr().String()] = name
				mu.Unlock()
				go func() { defer c.Close(); io.WriteString(c, name+"\n"); io.Copy(io.Discard, c) }()
			}
		}()
	}
	fe, sock := freeAddr(t), filepath.Join(t.TempDir(), "a.sock")
	stderr := startSluice(t, fmt.Sprintf(`
global
    stats socket %s level admin
defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout queue 20s
frontend fe
    bind %s
    option kernel-steer
    default_backend be
backend be
    balance roundrobin
    server s1 %s maxconn 5
    server s2 %s maxconn 5
    server s3 %s maxconn 5
`, sock, fe, servers[0], servers[1], servers[2]))
	waitLog := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "kernel steering: local connect()") {
		if time.Now().After(waitLog) {
			t.Fatalf("steering not active:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	params, _ := json.Marshal(netnsParams{Addr: fe})
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), netnsChildEnv+"=steerclient", netnsParamsEnv+"="+string(params))
	in, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); cmd.Process.Kill(); cmd.Wait() })
	h := &steerHarness{t: t, in: in, lines: make(chan []string, 64)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.lines <- strings.Fields(sc.Text())
		}
	}()

	type conn struct{ local, server string }
	open := func() conn {
		t.Helper()
		h.cmd("open")
		c := h.expect("conn")
		if c[3] != fe {
			t.Fatalf("getpeername on the client says %s, want the frontend %s", c[3], fe)
		}
		g := h.expect("greet")
		return conn{local: c[2], server: g[2]}
	}
	count := map[string]int{}
	for i := 0; i < 15; i++ {
		c := open()
		mu.Lock()
		direct := peers[c.local]
		mu.Unlock()
		if direct != c.server {
			t.Fatalf("connection %d (%s) reached %s not directly: not steered", i, c.local, c.server)
		}
		count[c.server]++
	}
	if count["s1"] != 5 || count["s2"] != 5 || count["s3"] != 5 {
		t.Fatalf("15 steered connections over maxconn 5 ×3: %v", count)
	}
	// The 16th falls through to sluice, which queues it.
	h.cmd("open")
	c16 := h.expect("conn")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(askSocket(t, sock, "show stat"), "be,BACKEND,1,") {
		if time.Now().After(deadline) {
			t.Fatalf("the 16th connection is not queued in sluice:\n%s", askSocket(t, sock, "show stat"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case f := <-h.lines:
		t.Fatalf("the 16th connection was served while every server is full: %v", f)
	case <-time.After(300 * time.Millisecond):
	}
	// A steered connection closes: its place goes to the queued one,
	// through sluice (the server sees sluice, not the client).
	h.cmd("close 0")
	h.expect("closed")
	g := h.expect("greet")
	if g[1] != c16[1] {
		t.Fatalf("greeting for %v, want the queued connection %s", g, c16[1])
	}
	mu.Lock()
	_, direct := peers[c16[2]]
	mu.Unlock()
	if direct {
		t.Errorf("the 16th connection reached %s directly; it should have gone through sluice", g[2])
	}

	// Maint: free a place on every server, put s1 in maint; new
	// connections go elsewhere.
	askSocket(t, sock, "set server be/s1 state maint")
	for i := 1; i <= 6; i++ { // steered ones 1..6 cover each server
		h.cmd(fmt.Sprintf("close %d", i))
		h.expect("closed")
	}
	for i := 0; i < 4; i++ {
		if c := open(); c.server == "s1" {
			t.Fatalf("a server in maint got connection %v", c)
		}
	}
	// The runtime API's maxconn and weight reach the kernel: s2 gets room
	// for more, s3 weight 0; new connections go to s2, directly.
	askSocket(t, sock, "set maxconn server be/s2 20")
	askSocket(t, sock, "set server be/s3 weight 0")
	for i := 0; i < 3; i++ {
		c := open()
		mu.Lock()
		direct := peers[c.local]
		mu.Unlock()
		if c.server != "s2" || direct != "s2" {
			t.Fatalf("after maxconn 20 on s2 and weight 0 on s3: connection went to %s (direct: %q)", c.server, direct)
		}
	}
	// The counts: 22 steered, 1 fall-through.
	out := askSocket(t, sock, "show kernel")
	var steered, fall int
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "fe ") {
			fmt.Sscanf(l, "fe %d %d", &steered, &fall)
		}
	}
	if steered != 22 || fall != 1 {
		t.Errorf("show kernel: steered %d fall-through %d, want 22 and 1:\n%s", steered, fall, out)
	}
}

package admin

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/userspace/proxy"
)

// echoServer echoes every connection; it returns its address and a function
// counting the connections it accepted.
func echoServer(t *testing.T) (string, func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan struct{}, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String(), func() int { return len(accepted) }
}

// TestTunnelCommands: show tunnels lists live tunnels; drain sends new
// connections elsewhere while the server's tunnels carry on; shutdown
// sessions server ends them; a user-level socket may do neither.
func TestTunnelCommands(t *testing.T) {
	a1, count1 := echoServer(t)
	a2, count2 := echoServer(t)
	cfg, err := config.Parse("t.cfg", []byte(`
defaults
    mode tcp
    timeout connect 1s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:0
    default_backend be
backend be
    balance first
    server s1 `+a1+` maxconn 10
    server s2 `+a2+` maxconn 10
`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { p.Serve(ctx, nil, time.Second); close(served) }()
	t.Cleanup(func() { cancel(); <-served })
	sock := func(level string) string {
		path := filepath.Join(t.TempDir(), level+".sock")
		a, err := Listen(config.StatsSocket{Path: path, Mode: 0o600, Level: level}, p, "test", slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		actx, acancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { a.Serve(actx); close(done) }()
		t.Cleanup(func() { acancel(); <-done })
		return path
	}
	admin, user := sock("admin"), sock("user")
	addr := p.Addrs("fe")[0].String()

	open := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		roundTrip(t, c, "hello")
		return c
	}
	c1, c2 := open(), open()
	if count1() != 2 {
		t.Fatalf("balance first: s1 accepted %d", count1())
	}
	out := ask(t, admin, "show tunnels")
	if strings.Count(out, "tcp fe be/s1 127.0.0.1:") != 2 {
		t.Fatalf("show tunnels:\n%s", out)
	}
	if out := ask(t, user, "show tunnels"); !strings.Contains(out, "Permission denied") {
		t.Errorf("user level may list tunnels: %q", out)
	}

	// Drain: new connections go to s2, s1's tunnels still work.
	ask(t, admin, "set server be/s1 state drain")
	c3 := open()
	if count2() != 1 {
		t.Errorf("after drain the new connection went to s1 (s2 accepted %d)", count2())
	}
	roundTrip(t, c1, "still here")
	roundTrip(t, c3, "on s2")

	if out := ask(t, user, "shutdown sessions server be/s1"); !strings.Contains(out, "Permission denied") {
		t.Errorf("user level may shut sessions: %q", out)
	}
	roundTrip(t, c2, "not shut by a user")
	ask(t, admin, "shutdown sessions server be/s1")
	for _, c := range []net.Conn{c1, c2} {
		if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
			t.Errorf("tunnel to s1 after shutdown: %q %v, want EOF", b, err)
		}
	}
	roundTrip(t, c3, "s2 untouched")
	if out := ask(t, admin, "show tunnels"); strings.Contains(out, "be/s1") || !strings.Contains(out, "be/s2") {
		t.Errorf("show tunnels after shutdown:\n%s", out)
	}
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo %q: %q %v", msg, got, err)
	}
}

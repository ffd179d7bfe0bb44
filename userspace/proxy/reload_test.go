package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// A reload under steady keep-alive load: the listener stays, no request
// fails, and the connections move to the new configuration at their next
// request. An invalid configuration changes nothing.
func TestReloadUnderLoad(t *testing.T) { bothPaths(t, testReloadUnderLoad) }

func testReloadUnderLoad(t *testing.T) {
	a := newTestBackend(t, "a", nil)
	b := newTestBackend(t, "b", nil)
	cfgFor := func(server *testBackend, bind string) string {
		return strings.Replace(basicCfg, "bind 127.0.0.1:0", "bind "+bind, 1) + "    server s " + server.addr() + "\n"
	}
	// A fixed address, as in real configurations: the reload keeps its
	// listening socket.
	probe, _ := net.Listen("tcp", "127.0.0.1:0")
	fixed := probe.Addr().String()
	probe.Close()
	addr := startProxy(t, cfgFor(a, fixed), nil)
	v, _ := running.Load(addr)
	p := v.(*Proxy)

	var okA, okB, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				failed.Add(1)
				return
			}
			cl := &client{c: c, br: newReader(c)}
			defer c.Close()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				cl.send(t, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
				res, body, err := cl.tryRead("GET")
				switch {
				case err != nil || res.StatusCode != 200:
					failed.Add(1)
					t.Logf("request failed: %v", err)
					return
				case body == "hello from a\n":
					okA.Add(1)
				case body == "hello from b\n":
					okB.Add(1)
				}
			}
		}()
	}
	waitFor(t, func() bool { return okA.Load() > 100 })

	// An invalid configuration: refused, the old one serves on.
	bad, err := configParse(strings.Replace(cfgFor(b, addr), "frontend fe", "frontend fe\n    use_backend be if { pathx /x }", 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Reload(bad); err == nil || !strings.Contains(err.Error(), "unknown fetch 'pathx'") {
		t.Fatalf("an invalid configuration: reload error %v", err)
	}
	before := okA.Load()
	waitFor(t, func() bool { return okA.Load() > before+50 }) // still a
	if okB.Load() != 0 {
		t.Fatal("the refused configuration took effect")
	}
	// The same address now goes to b.
	good, err := configParse(cfgFor(b, addr))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Reload(good); err != nil {
		t.Fatalf("reload: %v", err)
	}
	waitFor(t, func() bool { return okB.Load() > 100 })
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed across the reload (a=%d, b=%d)", failed.Load(), okA.Load(), okB.Load())
	}
	// New connections see the new configuration too.
	if _, body := dial(t, addr).get(t, "/"); body != "hello from b\n" {
		t.Fatalf("new connection after reload: %q", body)
	}
}

// A reload that binds another address opens it, and closes the one that is
// no longer bound.
func TestReloadListeners(t *testing.T) {
	a := newTestBackend(t, "a", nil)
	addr := startProxy(t, basicCfg+"    server s {a}\n", nil, a)
	v, _ := running.Load(addr)
	p := v.(*Proxy)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	other := ln.Addr().String()
	ln.Close()
	cfg, err := configParse(strings.Replace(basicCfg, "bind 127.0.0.1:0", "bind "+other, 1) + "    server s " + a.addr() + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Reload(cfg); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if _, body := dial(t, other).get(t, "/"); body != "hello from a\n" {
		t.Fatalf("new address: %q", body)
	}
	waitFor(t, func() bool {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if got := fmt.Sprint(p.Addrs("fe")); !strings.Contains(got, other) {
		t.Fatalf("listeners after reload: %s", got)
	}
}

// TestReloadWithTunnels: steady HTTP load plus 50 open WebSockets through 10
// reloads alternating two valid configurations and an invalid one: no
// request fails, no tunnel drops, the invalid configuration is refused, and
// the tunnels keep counting against their server's maxconn in the new
// configuration.
func TestReloadWithTunnels(t *testing.T) {
	ws := newWSServer(t, time.Second)
	a := newTestBackend(t, "web1", nil)
	b := newTestBackend(t, "web2", nil)
	probe, _ := net.Listen("tcp", "127.0.0.1:0")
	fixed := probe.Addr().String()
	probe.Close()
	base := strings.ReplaceAll(strings.Replace(wsCfg, "bind 127.0.0.1:0", "bind "+fixed, 1), "{ws1}", ws.addr)
	base = strings.Replace(base, "maxconn 1000", "maxconn 60", 1)
	cfgs := []string{
		strings.ReplaceAll(base, "{web1}", a.addr()),
		strings.ReplaceAll(base, "{web1}", b.addr()), // web1 now at b's address
	}
	addr := startProxy(t, cfgs[0], nil)
	p := proxyAt(t, addr)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var conns []*websocket.Conn
	for i := 0; i < 50; i++ {
		c, _, err := websocket.Dial(ctx, "ws://"+addr+"/websockets/echo", nil)
		if err != nil {
			t.Fatalf("websocket %d: %v", i, err)
		}
		defer c.CloseNow()
		conns = append(conns, c)
	}
	echoAll := func(round int) {
		t.Helper()
		for i, c := range conns {
			msg := fmt.Sprintf("ws %d round %d", i, round)
			if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatalf("websocket %d dropped at round %d: %v", i, round, err)
			}
			if _, got, err := c.Read(ctx); err != nil || string(got) != msg {
				t.Fatalf("websocket %d at round %d: %q %v", i, round, got, err)
			}
		}
	}
	echoAll(0)

	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				failed.Add(1)
				return
			}
			defer c.Close()
			cl := &client{c: c, br: newReader(c)}
			for {
				select {
				case <-stop:
					return
				default:
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
				if res, _, err := cl.tryRead("GET"); err != nil || res.StatusCode != 200 {
					failed.Add(1)
					return
				}
				ok.Add(1)
			}
		}()
	}
	refused := 0
	for i := 0; i < 10; i++ {
		before := ok.Load()
		waitFor(t, func() bool { return ok.Load() > before+20 })
		text := cfgs[i%2]
		if i%3 == 2 {
			text = strings.Replace(text, "default_backend servers", "default_backend nosuch", 1)
		}
		cfg, err := configParse(text)
		if err == nil {
			_, err = p.Reload(cfg)
		}
		if i%3 == 2 {
			if err == nil || !strings.Contains(err.Error(), "nosuch") {
				t.Fatalf("reload %d: invalid configuration accepted (%v)", i, err)
			}
			refused++
		} else if err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		echoAll(i + 1)
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed across reloads (%d ok)", failed.Load(), ok.Load())
	}
	if refused != 3 {
		t.Fatalf("%d invalid configurations refused, want 3", refused)
	}
	if n := serverCur(p, "ws", "ws1"); n != 50 {
		t.Errorf("after the reloads ws1 counts %d slots in use, want the 50 tunnels", n)
	}
	for _, c := range conns {
		c.Close(websocket.StatusNormalClosure, "")
	}
	waitFor(t, func() bool { return serverCur(p, "ws", "ws1") == 0 })
}

// TestReloadRemovedBackendTunnels: tunnels to a server the new configuration
// removed stay up until hard-stop-after, then close.
func TestReloadRemovedBackendTunnels(t *testing.T) {
	ws := newWSServer(t, time.Second)
	web := newTestBackend(t, "web1", nil)
	probe, _ := net.Listen("tcp", "127.0.0.1:0")
	fixed := probe.Addr().String()
	probe.Close()
	cfg1 := strings.ReplaceAll(strings.Replace(wsCfg, "bind 127.0.0.1:0", "bind "+fixed, 1), "{ws1}", ws.addr)
	addr := startProxy(t, cfg1, nil, web)
	p := proxyAt(t, addr)
	w := dialWS(t, addr, "/websockets/echo", nil)

	// The new configuration has no ws backend; hard-stop-after 500ms.
	cfg2 := strings.Replace(strings.ReplaceAll(cfg1, "{web1}", web.addr()), "defaults", "global\n    hard-stop-after 500ms\ndefaults", 1)
	cfg2 = strings.Replace(cfg2, "    use_backend ws if is_websocket\n", "", 1)
	cfg2 = cfg2[:strings.Index(cfg2, "backend ws")]
	c, err := configParse(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Reload(c); err != nil {
		t.Fatal(err)
	}
	reloaded := time.Now()
	w.c.Write(frame(1, true, []byte("still up")))
	if op, msg, err := w.readFrame(); err != nil || op != 1 || string(msg) != "still up" {
		t.Fatalf("tunnel after reload: %q %v", msg, err)
	}
	io.Copy(io.Discard, w.br) // until closed
	if d := time.Since(reloaded); d < 400*time.Millisecond || d > 3*time.Second {
		t.Errorf("orphan tunnel closed %v after the reload, want ~hard-stop-after (500ms)", d)
	}
}

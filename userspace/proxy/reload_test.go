package proxy

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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

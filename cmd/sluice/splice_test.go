package main

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/streamtest"
)

// startSluice runs sluice in-process with the configuration text (%s
// placeholders already filled) and returns its stderr.
func startSluice(t *testing.T, text string) *syncWriter {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.cfg")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	stderr := &syncWriter{}
	go func() { done <- run(ctx, []string{"-f", path}, io.Discard, stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("sluice did not stop")
		}
	})
	return stderr
}

// dialRetry connects to addr, waiting for sluice to listen.
func dialRetry(t *testing.T, addr string) net.Conn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Minute))
			return c
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func askSocket(t *testing.T, sock, cmd string) string {
	t.Helper()
	var out strings.Builder
	if err := run(context.Background(), []string{"ctl", "-S", sock, cmd}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// TestKernelSplice: by default a mode tcp tunnel and a WebSocket tunnel are
// carried by the kernel: 64 MiB each way arrive intact, bytes pipelined
// behind the handshake come first and in order, show tunnels says the kernel
// carries them, and timeout tunnel still closes an idle one on the kernel's
// clock; a frontend with no option kernel-splice keeps its tunnels in
// userspace.
func TestKernelSplice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for eBPF")
	}
	// Server: for mode tcp, hash what it receives and send its own
	// stream; for /ws, answer the handshake and echo.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size = 64 << 20
	sums := make(chan [32]byte, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				first, _ := br.Peek(4)
				if string(first) == "GET " {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
						wsAcceptFor(req.Header.Get("Sec-WebSocket-Key")))
					io.Copy(c, br) // echo everything, frames included
					return
				}
				// The deferred Close must wait for the sender too: closing
				// once the client's FIN is read would cut the server's
				// own stream short (and look like the splice lost it).
				sent := make(chan struct{})
				go func() { sums <- streamtest.Send(c, size, 7); c.(*net.TCPConn).CloseWrite(); close(sent) }()
				sums <- streamtest.Hash(br)
				<-sent
			}()
		}
	}()
	tcpAddr, webAddr, plainAddr, sock := freeAddr(t), freeAddr(t), freeAddr(t), filepath.Join(t.TempDir(), "a.sock")
	stderr := startSluice(t, fmt.Sprintf(`
global
    stats socket %s level admin
defaults
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend tcpin
    mode tcp
    bind %s
    default_backend tcpout
backend tcpout
    mode tcp
    server s1 %s
frontend web
    mode http
    bind %s
    default_backend ws
backend ws
    mode http
    timeout tunnel 1s
    server ws1 %s
frontend plain
    mode tcp
    bind %s
    no option kernel-splice
    default_backend tcpout
`, sock, tcpAddr, ln.Addr(), webAddr, ln.Addr(), plainAddr))

	// mode tcp: 64 MiB each way at once.
	c := dialRetry(t, tcpAddr)
	defer c.Close()
	var sent [32]byte
	wrote := make(chan struct{})
	go func() { sent = streamtest.Send(c, size, 3); c.(*net.TCPConn).CloseWrite(); close(wrote) }()
	cr := &countReader{r: c}
	got := streamtest.Hash(cr)
	<-wrote
	t.Logf("client received %d bytes, then %v", cr.n, cr.err)
	a, b := <-sums, <-sums // the server's received and sent sums, in either order
	if !(a == sent && b == got) && !(b == sent && a == got) {
		t.Errorf("spliced mode tcp: SHA-256 differs: client sent %x got %x; server %x %x (stderr:\n%s)", sent[:4], got[:4], a[:4], b[:4], stderr.String())
	}
	if !strings.Contains(stderr.String(), "kernel splice: tunnels") {
		t.Errorf("no kernel splice log line:\n%s", stderr.String())
	}

	// WebSocket: a frame pipelined right behind the upgrade request.
	w := dialRetry(t, webAddr)
	defer w.Close()
	io.WriteString(w, "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nEARLY")
	br := bufio.NewReader(w)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", res, err)
	}
	io.WriteString(w, "-LATER")
	echo := make([]byte, len("EARLY-LATER"))
	if _, err := io.ReadFull(br, echo); err != nil || string(echo) != "EARLY-LATER" {
		t.Fatalf("echo through the spliced WebSocket: %q %v", echo, err)
	}
	last := time.Now() // the tunnel's last byte
	// The echo can come back (moved by the hand-over or already by the
	// kernel) a moment before Splice returns and the tunnel records that
	// the kernel carries it: ask again for a little while.
	for deadline := time.Now().Add(500 * time.Millisecond); ; time.Sleep(10 * time.Millisecond) {
		out := askSocket(t, sock, "show tunnels")
		if strings.Contains(out, "websocket web ws/ws1") && strings.Contains(out, " kernel") {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("show tunnels:\n%s", out)
			break
		}
	}
	// no option kernel-splice: copied in userspace. The tunnel exists once
	// a byte has come back through it.
	pc := dialRetry(t, plainAddr)
	defer pc.Close()
	io.WriteString(pc, "x")
	go io.Copy(io.Discard, pc)
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		out := askSocket(t, sock, "show tunnels")
		if i := strings.Index(out, "tcp plain tcpout/s1"); i >= 0 {
			if line, _, _ := strings.Cut(out[i:], "\n"); !strings.HasSuffix(line, " user") {
				t.Errorf("no option kernel-splice: %q, want copied in userspace", line)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("show tunnels has no tunnel of frontend plain:\n%s", out)
			break
		}
	}

	// Idle on the kernel's clock: timeout tunnel 1s.
	io.Copy(io.Discard, br)
	if d := time.Since(last); d < 900*time.Millisecond || d > 2*time.Second {
		t.Errorf("idle spliced tunnel closed after %v, want ~1s", d)
	}
}

func wsAcceptFor(key string) string {
	h := sha1Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64Std(h)
}

func sha1Sum(b []byte) []byte { s := sha1.Sum(b); return s[:] }

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

type countReader struct {
	r   io.Reader
	n   int64
	err error // how the stream ended (io.EOF, a reset, ...)
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil {
		c.err = err
	}
	return n, err
}

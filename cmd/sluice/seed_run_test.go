package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestSeedConfigsRun runs both seed configurations unchanged but for their
// addresses (rewritten to loopback: the document's 192.168.1.x are not
// reachable here): HTTP reaches the web servers, /websockets reaches the ws
// servers as a real WebSocket, from the source address each ws server's
// line names.
func TestSeedConfigsRun(t *testing.T) {
	for _, seed := range []string{"seed-basic.cfg", "seed-websocket.cfg"} {
		t.Run(seed, func(t *testing.T) {
			text, err := os.ReadFile(filepath.Join("..", "..", "pkg", "config", "testdata", seed))
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			from := map[string]string{} // server -> client address it saw
			start := func(name string) string {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				h := demoHandler(name)
				if strings.HasPrefix(name, "ws") {
					h = demoWSHandler(name, h)
				}
				rec := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					host, _, _ := net.SplitHostPort(r.RemoteAddr)
					mu.Lock()
					from[name] = host
					mu.Unlock()
					h.ServeHTTP(w, r)
				})
				srv := &http.Server{Handler: rec}
				go srv.Serve(ln)
				t.Cleanup(func() { srv.Close() })
				return ln.Addr().String()
			}
			fe := freeAddr(t)
			cfg := strings.NewReplacer(
				"*:80", fe,
				"192.168.1.1:80", start("web1"), "192.168.1.2:80", start("web2"), "192.168.1.3:80", start("web3"),
				"192.168.1.11:80", start("ws1"), "192.168.1.12:80", start("ws2"),
				"192.168.1.100", "127.0.0.2", "192.168.1.101", "127.0.0.3",
			).Replace(string(text))
			startSluice(t, cfg)
			c := dialRetry(t, fe)
			c.Close()
			res, err := http.Get("http://" + fe + "/")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if by := res.Header.Get("X-Served-By"); !strings.HasPrefix(by, "web") {
				t.Fatalf("/ served by %q", by)
			}
			if seed != "seed-websocket.cfg" {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for i := 0; i < 2; i++ { // roundrobin: ws1 then ws2
				wc, res, err := websocket.Dial(ctx, "ws://"+fe+"/websockets/echo", nil)
				if err != nil {
					t.Fatalf("websocket: %v", err)
				}
				by := res.Header.Get("X-Served-By")
				if err := wc.Write(ctx, websocket.MessageText, []byte("seed")); err != nil {
					t.Fatal(err)
				}
				if _, msg, err := wc.Read(ctx); err != nil || string(msg) != "seed" {
					t.Fatalf("echo through %s: %q %v", by, msg, err)
				}
				wc.Close(websocket.StatusNormalClosure, "")
				want := map[string]string{"ws1": "127.0.0.2", "ws2": "127.0.0.3"}[by]
				mu.Lock()
				got := from[by]
				mu.Unlock()
				if want == "" || got != want {
					t.Errorf("%q saw the connection from %s, want %s (its source line)", by, got, want)
				}
			}
		})
	}
}

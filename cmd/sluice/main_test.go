package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func runCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

// Both seed configurations from the document pass `sluice -c -f` unchanged.
func TestCheckSeedConfigs(t *testing.T) {
	for _, name := range []string{"seed-basic.cfg", "seed-websocket.cfg"} {
		path := filepath.Join("..", "..", "pkg", "config", "testdata", name)
		if shared := filepath.Join("..", "..", "..", "shared", "configs", name); fileExists(shared) {
			path = shared // the originals, when the shared folder is beside the repo
		}
		out, errOut, err := runCmd(t, "-c", "-f", path)
		if err != nil {
			t.Fatalf("%s: sluice -c failed: %v\n%s", name, err, errOut)
		}
		if !strings.Contains(out, "valid") {
			t.Fatalf("%s: output %q", name, out)
		}
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// A bad config: exit status non-zero, every error as FILE:LINE: message.
func TestCheckReportsAllErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.cfg")
	os.WriteFile(path, []byte(`frontend fe
    bind 127.0.0.1:8000
    defualt_backend be
    use_backend nope if { path_bge /x }
backend be
    server s1 127.0.0.1:9 maxconn abc
`), 0o644)
	_, errOut, err := runCmd(t, "-c", "-f", path)
	if err == nil {
		t.Fatalf("bad config accepted")
	}
	for _, want := range []string{
		path + ":3: .*defualt_backend.*did you mean 'default_backend'",
		path + ":4: .*unknown fetch 'path_bge'; did you mean 'path_beg'",
		path + ":6: .*maxconn",
	} {
		if !regexp.MustCompile(want).MatchString(errOut) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
}

// The demo serves through the balancer and stops on cancel.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"demo", "-listen", "127.0.0.1:0"}, pw, io.Discard)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var base, sock string
	re := regexp.MustCompile(`balancer on (127\.0\.0\.1:\d+)`)
	sockRe := regexp.MustCompile(`ctl -S (\S+) show stat`)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			base = "http://" + m[1]
		}
		if m := sockRe.FindStringSubmatch(sc.Text()); m != nil {
			sock = m[1]
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if base == "" {
		cancel()
		t.Fatalf("demo did not print its address: %v", <-done)
	}
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		res, err := http.Get(base + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		seen[res.Header.Get("X-Served-By")] = true
	}
	if len(seen) != 3 {
		t.Errorf("three requests reached %v, want web1, web2 and web3", seen)
	}
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(mb), `sluice_server_sessions_total{proxy="servers",server="web1"} 1`) {
		t.Errorf("demo /metrics lacks the per-server session count:\n%.2000s", mb)
	}
	res, err = http.Get(base + "/websockets/echo")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("X-Served-By"); got != "ws1" {
		t.Errorf("/websockets went to %q, want ws1", got)
	}
	// A real WebSocket through the balancer to the echo backend.
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	wc, _, err := websocket.Dial(wctx, "ws"+strings.TrimPrefix(base, "http")+"/websockets/echo", nil)
	if err != nil {
		t.Fatalf("demo websocket: %v", err)
	}
	if err := wc.Write(wctx, websocket.MessageText, []byte("hello demo")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := wc.Read(wctx); err != nil || string(msg) != "hello demo" {
		t.Errorf("demo websocket echo: %q %v", msg, err)
	}
	wc.Close(websocket.StatusNormalClosure, "")
	// The stats page.
	res, err = http.Get(base + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(sb), "web1") || !strings.Contains(res.Header.Get("Content-Type"), "text/html") {
		t.Errorf("demo /stats: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	// The runtime API printed in the instructions works with sluice ctl.
	var out bytes.Buffer
	if err := run(context.Background(), []string{"ctl", "-S", sock, "show", "stat"}, &out, io.Discard); err != nil {
		t.Fatalf("sluice ctl: %v", err)
	}
	if !strings.Contains(out.String(), "servers,web1,") {
		t.Errorf("sluice ctl show stat:\n%s", out.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("demo did not stop")
	}
}

// SIGHUP reloads the configuration files; an invalid one is refused with
// its errors and the running configuration stays.
func TestSIGHUPReload(t *testing.T) {
	backend := func(name string) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return ln.Addr().String()
	}
	a, b := backend("a"), backend("b")
	probe, _ := net.Listen("tcp", "127.0.0.1:0")
	front := probe.Addr().String()
	probe.Close()
	cfg := func(server string) string {
		return "defaults\n mode http\n timeout connect 1s\n timeout client 5s\n timeout server 5s\n" +
			"frontend fe\n bind " + front + "\n default_backend be\nbackend be\n server s " + server + "\n"
	}
	path := filepath.Join(t.TempDir(), "s.cfg")
	os.WriteFile(path, []byte(cfg(a)), 0o644)

	var stderr syncWriter
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-f", path}, io.Discard, &stderr) }()
	defer func() { cancel(); <-done }()
	get := func() string {
		res, err := http.Get("http://" + front + "/")
		if err != nil {
			return ""
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return string(body)
	}
	waitUntil(t, func() bool { return strings.Contains(stderr.String(), "sluice started") && get() == "a" })

	os.WriteFile(path, []byte(cfg(b)), 0o644)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitUntil(t, func() bool { return get() == "b" })

	os.WriteFile(path, []byte(cfg(a)+" bogus_keyword\n"), 0o644)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitUntil(t, func() bool { return strings.Contains(stderr.String(), "reload refused") })
	if !strings.Contains(stderr.String(), "s.cfg:11: unknown keyword 'bogus_keyword'") {
		t.Errorf("the refused reload does not say why:\n%s", stderr.String()[max(0, len(stderr.String())-600):])
	}
	if got := get(); got != "b" {
		t.Fatalf("after a refused reload: %q, want the running configuration (b)", got)
	}
}

type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

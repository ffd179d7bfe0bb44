package admin

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/userspace/proxy"
)

// startAPI runs a proxy (not serving traffic: the API needs none) and a
// runtime API socket at the given level.
func startAPI(t *testing.T, level string, mode uint32) (*proxy.Proxy, string) {
	t.Helper()
	cfg, err := config.Parse("a.cfg", []byte(`
defaults
    mode http
    timeout connect 1s
    timeout client 1s
    timeout server 1s
frontend fe
    bind 127.0.0.1:0
    default_backend be
backend be
    server s1 127.0.0.1:9 maxconn 10
    server s2 127.0.0.1:10 maxconn 10
`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "admin.sock")
	a, err := Listen(config.StatsSocket{Path: path, Mode: mode, Level: level}, p, "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return p, path
}

func ask(t *testing.T, path, line string) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, line+"\n")
	out, _ := io.ReadAll(c)
	return string(out)
}

func serverState(p *proxy.Proxy, name string) string {
	for _, s := range p.Stats().Backends[0].Servers {
		if s.Name == name {
			return fmt.Sprintf("%s/%d/%d", s.State, s.Weight, s.Limit)
		}
	}
	return ""
}

func TestAdminCommands(t *testing.T) {
	p, path := startAPI(t, "admin", 0o600)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v %v, want 0600", fi.Mode().Perm(), err)
	}
	if out := ask(t, path, "show info"); !strings.Contains(out, "Name: sluice") || !strings.Contains(out, "Pid: ") {
		t.Fatalf("show info: %q", out)
	}
	out := ask(t, path, "show stat")
	if !strings.HasPrefix(out, "# pxname,svname,qcur,qmax,scur,smax,slim,stot,") || !strings.Contains(out, "be,s1,0,0,0,0,10,0,") ||
		!strings.Contains(out, "fe,FRONTEND,") || !strings.Contains(out, "be,BACKEND,") {
		t.Fatalf("show stat:\n%s", out)
	}
	ask(t, path, "set server be/s1 state maint")
	if st := serverState(p, "s1"); st != "MAINT/1/10" {
		t.Fatalf("after set state maint: %s", st)
	}
	ask(t, path, "enable server be/s1; set server be/s2 weight 7; set maxconn server be/s2 3")
	if st := serverState(p, "s1"); st != "UP/1/10" {
		t.Fatalf("after enable: %s", st)
	}
	if st := serverState(p, "s2"); st != "UP/7/3" {
		t.Fatalf("after weight and maxconn: %s", st)
	}
	ask(t, path, "disable server be/s2")
	if st := serverState(p, "s2"); !strings.HasPrefix(st, "MAINT") {
		t.Fatalf("after disable: %s", st)
	}
	if out := ask(t, path, "set server be/nope state ready"); !strings.Contains(out, "no such server 'nope'") {
		t.Fatalf("unknown server: %q", out)
	}
	if out := ask(t, path, "show servers state"); !strings.Contains(out, "be s2 127.0.0.1:10 MAINT 7 0 3 3 0") {
		t.Fatalf("show servers state:\n%s", out)
	}
	// With no client connected (this proxy serves no traffic), no session.
	if out := ask(t, path, "show sess"); strings.TrimSpace(out) != "" {
		t.Fatalf("show sess with no client: %q", out)
	}
	if out := ask(t, path, "bogus"); !strings.Contains(out, "Unknown command") {
		t.Fatalf("unknown command: %q", out)
	}
}

// The level of the socket decides what it may do.
func TestAdminLevels(t *testing.T) {
	p, path := startAPI(t, "user", 0o600)
	if out := ask(t, path, "set server be/s1 state maint"); !strings.Contains(out, "Permission denied") {
		t.Fatalf("user level changed a server: %q", out)
	}
	if st := serverState(p, "s1"); !strings.HasPrefix(st, "UP") {
		t.Fatalf("state changed by a user-level socket: %s", st)
	}
	if out := ask(t, path, "help"); strings.Contains(out, "set server") || !strings.Contains(out, "show stat") {
		t.Fatalf("help at user level lists: %q", out)
	}
	if out := ask(t, path, "show stat"); !strings.Contains(out, "be,s1,") {
		t.Fatalf("user level cannot read: %q", out)
	}
}

// A stale socket left by a crash is replaced; a regular file is not.
func TestAdminStaleSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.sock")
	os.WriteFile(path, []byte("not a socket"), 0o600)
	if _, err := Listen(config.StatsSocket{Path: path, Mode: 0o600}, nil, "", slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file in the way: %v", err)
	}
}

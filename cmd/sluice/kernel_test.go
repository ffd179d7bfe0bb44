package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// freeAddr returns a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestKernelFigures runs sluice with kernel counters and checks, through
// /metrics and the runtime API, that they follow the connections sluice
// holds to a server: established while tunnels are open, TIME_WAIT on
// sluice's side once it closed them first.
func TestKernelFigures(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for eBPF (the netlink fallback is tested in pkg/kernel)")
	}
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	web, tcp := freeAddr(t), freeAddr(t)
	sock := filepath.Join(t.TempDir(), "admin.sock")
	stderr := startSluice(t, fmt.Sprintf(`
global
    stats socket %s level admin
defaults
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend web
    mode http
    bind %s
    http-request use-service prometheus-exporter if { path /metrics }
frontend tcpin
    mode tcp
    bind %s
    default_backend echo
backend echo
    mode tcp
    server s1 %s
`, sock, web, tcp, echo.Addr()))
	metric := func(name string) (float64, bool) {
		res, err := http.Get("http://" + web + "/metrics")
		if err != nil {
			return 0, false
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(b)
		if m == nil {
			return 0, false
		}
		v, err := strconv.ParseFloat(string(m[1]), 64)
		return v, err == nil
	}
	wait := func(what, name string, want float64) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			v, ok := metric(name)
			if ok && v == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s = %v (found %v), want %v\nstderr:\n%s", what, name, v, ok, want, stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	wait("mode", `sluice_kernel_counters_mode{mode="ebpf"}`, 1)
	var conns []net.Conn
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", tcp)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		c.Write([]byte("x"))
		io.ReadFull(c, make([]byte, 1))
		conns = append(conns, c)
	}
	wait("5 tunnels", `sluice_kernel_server_established{proxy="echo",server="s1"}`, 5)
	wait("frontend", `sluice_kernel_frontend_established{proxy="tcpin"}`, 5)
	// Closing two clients makes sluice close those server connections
	// first (it passes the FIN on): their TIME_WAIT is on sluice's side.
	for _, c := range conns[:2] {
		c.Close()
	}
	wait("3 left", `sluice_kernel_server_established{proxy="echo",server="s1"}`, 3)
	wait("TIME_WAIT", `sluice_kernel_server_time_wait{proxy="echo",server="s1"}`, 2)
	wait("per source", `sluice_kernel_source_time_wait{proxy="echo",server="s1",source="127.0.0.1"}`, 2)

	if out := askSocket(t, sock, "show kernel"); !strings.Contains(out, "mode: ebpf") || !strings.Contains(out, "echo/s1 "+echo.Addr().String()+" 3 2") {
		t.Errorf("show kernel:\n%s", out)
	}
}

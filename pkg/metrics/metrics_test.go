package metrics

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/userspace/proxy"
	"github.com/sluicelb/sluice/userspace/tunnel"
)

// The exporter served by a frontend shows the queue at work: one request
// holding the only slot of a maxconn 1 server, one waiting.
func TestExporterShowsQueue(t *testing.T) {
	release := make(chan struct{})
	held := make(chan struct{}, 4)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held <- struct{}{}
		<-release
		io.WriteString(w, "ok")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	cfg, err := config.Parse("m.cfg", []byte(fmt.Sprintf(`
global
    maxconn 100
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    timeout queue 10s
frontend fe
    bind 127.0.0.1:0
    http-request use-service prometheus-exporter if { path /metrics }
    default_backend be
backend be
    server s1 %s maxconn 1
`, ln.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(p))
	p.Metrics = Renderer(reg)
	if err := p.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Serve(ctx, nil, 5*time.Second); close(done) }()
	defer func() { close(release); cancel(); <-done }()
	addr := p.Addrs("fe")[0].String()

	for i := 0; i < 2; i++ {
		go func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer c.Close()
			io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
			io.Copy(io.Discard, c)
		}()
	}
	<-held
	var body string
	deadline := time.Now().Add(5 * time.Second)
	for {
		body = scrape(t, addr)
		if strings.Contains(body, `sluice_backend_current_queue{proxy="be"} 1`) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, want := range []string{
		`sluice_backend_current_queue{proxy="be"} 1`,
		`sluice_server_current_sessions{proxy="be",server="s1"} 1`,
		`sluice_server_limit_sessions{proxy="be",server="s1"} 1`,
		`sluice_server_status{proxy="be",server="s1",state="UP"} 1`,
		`sluice_backend_current_sessions{proxy="be"} 2`,
		`sluice_frontend_limit_sessions{proxy="fe"} 100`,
		`sluice_process_max_connections 100`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("scrape: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	return string(b)
}

type fixedStats proxy.Stats

func (f fixedStats) Stats() proxy.Stats { return proxy.Stats(f) }

// The tunnels' counters, the kernel's figures, the source pools' and
// steering's are exported with
// bounded labels (proxy, server, source).
func TestKernelMetrics(t *testing.T) {
	est := int64(7)
	st := fixedStats{KernelMode: "ebpf", KernelLost: 0,
		Tunnels:   tunnel.Totals{Live: 2, Opened: 9, IdleTimeouts: 3, Killed: 1, Spliced: 4, Up: 1000, Down: 5000, KernelStops: 6, KernelOverflowBytes: 7000},
		Frontends: []proxy.FrontendStats{{Name: "fe", Kernel: &est, Steer: &proxy.SteerFrontendStats{Steered: 19, FallThrough: 1}}},
		Backends: []proxy.BackendStats{{Name: "be", Servers: []proxy.ServerStats{{Name: "s1", State: "UP", Steered: 4, SteeredTotal: 19,
			Kernel: &proxy.KernelServerStats{Established: 3, TimeWait: 100, Sources: []proxy.SourceStats{
				{Addr: "198.18.0.2", Established: 3, TimeWait: 100, Occupied: 103, Free: 0, Selections: 101, Exhausted: 1}}}}}}},
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(st))
	body, _, err := Renderer(reg)()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`sluice_kernel_counters_mode{mode="ebpf"} 1`,
		`sluice_kernel_counters_mode{mode="netlink"} 0`,
		`sluice_kernel_frontend_established{proxy="fe"} 7`,
		`sluice_kernel_server_established{proxy="be",server="s1"} 3`,
		`sluice_kernel_server_time_wait{proxy="be",server="s1"} 100`,
		`sluice_kernel_source_time_wait{proxy="be",server="s1",source="198.18.0.2"} 100`,
		`sluice_kernel_source_established{proxy="be",server="s1",source="198.18.0.2"} 3`,
		`sluice_kernel_source_free_tuples{proxy="be",server="s1",source="198.18.0.2"} 0`,
		`sluice_source_selections_total{proxy="be",server="s1",source="198.18.0.2"} 101`,
		`sluice_source_exhausted_total{proxy="be",server="s1",source="198.18.0.2"} 1`,
		`sluice_kernel_frontend_steered_total{proxy="fe"} 19`,
		`sluice_kernel_frontend_fallthrough_total{proxy="fe"} 1`,
		`sluice_kernel_server_steered_current{proxy="be",server="s1"} 4`,
		`sluice_tunnels_current 2`,
		`sluice_tunnels_total 9`,
		`sluice_tunnel_idle_timeouts_total 3`,
		`sluice_tunnels_killed_total 1`,
		`sluice_tunnels_spliced_total 4`,
		`sluice_tunnel_kernel_stops_total 6`,
		`sluice_tunnel_kernel_overflow_bytes_total 7000`,
		`sluice_tunnel_bytes_total{direction="up"} 1000`,
		`sluice_tunnel_bytes_total{direction="down"} 5000`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluicelb/sluice/pkg/config"
)

// demoConfig is the demo's configuration, in the spirit of the seed configs:
// three application servers with a small maxconn behind a frontend that sends
// /websockets to its own backend. %s are filled with the listen address and
// the demo backends' addresses.
const demoConfig = `# sluice demo: the seed configs, on loopback.
global
    maxconn 256
    stats socket %s mode 600 level admin

defaults
    log     global
    mode    http
    option  httplog
    option  dontlognull
    option  forwardfor
    retries 3
    option  redispatch
    timeout connect  5s
    timeout client  10s
    timeout server  10s
    timeout queue   10s
    timeout tunnel  3600s

frontend public
    bind %s
    http-request use-service prometheus-exporter if { path /metrics }
    stats uri /stats
    stats refresh 5s
    acl is_websocket path_beg -i /websockets
    use_backend ws if is_websocket
    default_backend servers

backend servers
    balance roundrobin
    server web1 %s maxconn 32
    server web2 %s maxconn 32
    server web3 %s maxconn 32

backend ws
    server ws1 %s maxconn 1000
`

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sluice demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address the demo balancer listens on")
	printCfg := fs.Bool("print-config", false, "print the demo configuration and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	var addrs []string
	var servers []*http.Server
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	for _, name := range []string{"web1", "web2", "web3", "ws1"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("demo backend %s: %w", name, err)
		}
		h := demoHandler(name)
		if name == "ws1" {
			h = demoWSHandler(name, h)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		go srv.Serve(ln)
		addrs = append(addrs, ln.Addr().String())
	}
	sock := filepath.Join(os.TempDir(), fmt.Sprintf("sluice-demo-%d.sock", os.Getpid()))
	text := fmt.Sprintf(demoConfig, sock, *listen, addrs[0], addrs[1], addrs[2], addrs[3])
	if *printCfg {
		fmt.Fprint(stdout, text)
		return nil
	}
	cfg, err := config.Parse("demo.cfg", []byte(text))
	cfg, p, err := compile(cfg, err, stderr, log)
	if err != nil {
		return err
	}
	if err := p.Listen(); err != nil {
		return fmt.Errorf("%w (is another demo running? try: sluice demo -listen 127.0.0.1:8081)", err)
	}
	actual := *listen
	if a := p.Addrs("public"); len(a) > 0 {
		actual = a[0].String()
	}
	base := "http://" + actual
	fmt.Fprintf(stdout, `sluice demo: balancer on %s, backends web1-3 and ws1 on %s.
Try, in another terminal:
  curl -i %s/                      # round robin over web1, web2, web3
  curl -s %s/ %s/ %s/              # three requests, three servers
  curl -s '%s/slow?ms=500'         # a slow request (the backend sleeps)
  open %s/websockets/ in a browser  # a WebSocket echo page: ACL-routed to ws1, tunnelled after the 101
  curl -si -N -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
       -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' %s/websockets/echo   # the handshake: 101
  curl -s -H 'Content-Length: 5' -H 'Transfer-Encoding: chunked' -d hello %s/   # refused: 400
  hey -n 2000 -c 200 '%s/slow?ms=50'  # more clients than maxconn: they queue
  curl -s %s/metrics | grep queue      # Prometheus metrics: queues, sessions, limits
  open %s/stats in a browser           # the stats page (;csv for HAProxy's CSV)
  go run ./cmd/sluice ctl -S %s show stat          # runtime API (HAProxy's stats socket)
  go run ./cmd/sluice ctl -S %s disable server servers/web2
The access log follows on stderr. Ctrl-C stops everything.
`, actual, strings.Join(addrs, ", "), base, base, base, base, base, base, base, base, base, base, base, sock, sock)
	reload := make(chan os.Signal, 1)
	signal.Notify(reload, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(reload)
	go func() {
		for range reload {
			log.Warn("the demo's configuration is built in: nothing to reload")
		}
	}()
	err = serve(ctx, cfg, p, log, stderr, 2*time.Second)
	return err
}

// demoHandler is a small application server: it says who it is, echoes what
// it was sent, and can be slow or fail on request.
func demoHandler(name string) http.Handler {
	var hits atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		select {
		case <-time.After(time.Duration(min(ms, 60000)) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, "%s: slept %d ms\n", name, ms)
	})
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.PathValue("code"))
		if err != nil || code < 200 || code > 599 {
			code = 400
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "%s: status %d\n", name, code)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		w.Header().Set("X-Served-By", name)
		fmt.Fprintf(w, "Hello from %s (request #%d)\n%s %s %s\nX-Forwarded-For: %s\n", name, n, r.Method, r.URL.RequestURI(), r.Proto, r.Header.Get("X-Forwarded-For"))
		if len(body) > 0 {
			fmt.Fprintf(w, "body: %d bytes\n", len(body))
		}
	})
	return mux
}

// Package metrics exposes sluice's counters to Prometheus: a collector over
// the proxy's Stats snapshot, registered in a registry the caller owns (never
// the global one), and the rendering of the exposition text the frontend
// serves for `http-request use-service prometheus-exporter`. Metric names
// follow HAProxy's exporter (haproxy_frontend_current_sessions becomes
// sluice_frontend_current_sessions) so dashboards carry over.
package metrics

import (
	"bytes"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/sluicelb/sluice/userspace/proxy"
)

// Source is what the collector reads: the running proxy.
type Source interface{ Stats() proxy.Stats }

type collector struct {
	src Source

	curConns, maxConn, maxconnReached *prometheus.Desc

	feCur, feTotal, feLimit *prometheus.Desc

	beCur, beTotal, beQueue, beQueueMax, beQueued, beQueueTime *prometheus.Desc

	srvCur, srvMax, srvTotal, srvLimit, srvQueue, srvQueueMax, srvErrors, srvStatus, srvWeight *prometheus.Desc

	tunCur, tunTotal, tunBytes, tunIdle, tunKilled, tunSpliced, srvTunnels *prometheus.Desc
	tunKStops, tunKOverflow                                                *prometheus.Desc

	kMode, kLost, kFeEstab, kSrvEstab, kSrvTW, kSrcEstab, kSrcTW, kSrcOcc, kSrcFree *prometheus.Desc

	steerFe, steerFall, steerSrvCur, steerSrvTotal *prometheus.Desc

	srcSel, srcExh *prometheus.Desc
}

// NewCollector returns a collector of src's counters.
func NewCollector(src Source) prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("sluice_"+name, help, labels, nil)
	}
	fe, be, srv := []string{"proxy"}, []string{"proxy"}, []string{"proxy", "server"}
	return &collector{
		src:            src,
		curConns:       d("process_current_connections", "Client connections being served."),
		maxConn:        d("process_max_connections", "Global maxconn (0: no limit)."),
		maxconnReached: d("process_maxconn_reached_total", "Times a listener waited for a maxconn slot (global or frontend)."),
		feCur:          d("frontend_current_sessions", "Client connections being served by the frontend.", fe...),
		feTotal:        d("frontend_sessions_total", "Client connections accepted by the frontend.", fe...),
		feLimit:        d("frontend_limit_sessions", "The frontend's maxconn (0: no limit).", fe...),
		beCur:          d("backend_current_sessions", "Requests in the backend, served or queued.", be...),
		beTotal:        d("backend_sessions_total", "Requests routed to the backend.", be...),
		beQueue:        d("backend_current_queue", "Requests waiting in the backend queue for any server.", be...),
		beQueueMax:     d("backend_max_queue", "Highest backend queue length seen.", be...),
		beQueued:       d("backend_queued_total", "Requests that had to wait for a server slot.", be...),
		beQueueTime:    d("backend_queue_time_seconds_total", "Total time requests waited for a server slot.", be...),
		srvCur:         d("server_current_sessions", "Requests holding a slot of the server.", srv...),
		srvMax:         d("server_max_sessions", "Highest number of requests held at once.", srv...),
		srvTotal:       d("server_sessions_total", "Requests sent to the server.", srv...),
		srvLimit:       d("server_limit_sessions", "maxconn in force (dynamic with minconn; 0: no limit).", srv...),
		srvQueue:       d("server_current_queue", "Requests waiting for this server.", srv...),
		srvQueueMax:    d("server_max_queue", "Highest queue length for this server.", srv...),
		srvErrors:      d("server_connection_errors_total", "Failed attempts (connection errors and retries).", srv...),
		srvWeight:      d("server_weight", "The server's weight.", srv...),
		srvStatus:      d("server_status", "1 for the server's current state.", "proxy", "server", "state"),
		srvTunnels:     d("server_current_tunnels", "Live tunnels (WebSocket, mode tcp) to the server; each also holds a session slot.", srv...),
		tunCur:         d("tunnels_current", "Live tunnels (WebSocket after 101, mode tcp connections)."),
		tunTotal:       d("tunnels_total", "Tunnels opened."),
		tunBytes:       d("tunnel_bytes_total", "Bytes carried by tunnels (up: client to server, down: server to client).", "direction"),
		tunIdle:        d("tunnel_idle_timeouts_total", "Tunnels closed by timeout tunnel / client-fin / server-fin."),
		tunKilled:      d("tunnels_killed_total", "Tunnels closed by the runtime API or a hard stop."),
		tunSpliced:     d("tunnels_spliced_total", "Tunnels whose bytes the kernel carried (option kernel-splice)."),
		tunKStops:      d("tunnel_kernel_stops_total", "Times a spliced tunnel's sender was stopped in the kernel because its reader was slower (flow control without userspace)."),
		tunKOverflow:   d("tunnel_kernel_overflow_bytes_total", "Bytes of spliced tunnels that went through userspace because a reader was slower and the flow control could not stop the sender in the kernel."),
		kMode:          d("kernel_counters_mode", "1 for how the kernel figures are obtained: ebpf (sockops, iter/tcp) or netlink (sock_diag).", "mode"),
		kLost:          d("kernel_counters_lost_total", "Events the kernel programs could not record (maps full): the kernel figures are incomplete."),
		kFeEstab:       d("kernel_frontend_established", "Established connections on the frontend's listeners, as the kernel counts them.", fe...),
		kSrvEstab:      d("kernel_server_established", "Established connections from sluice to the server, as the kernel counts them.", srv...),
		kSrvTW:         d("kernel_server_time_wait", "Sockets in TIME_WAIT toward the server (all sources).", srv...),
		kSrcEstab:      d("kernel_source_established", "Established sockets from the source address to the server.", "proxy", "server", "source"),
		kSrcTW:         d("kernel_source_time_wait", "Sockets in TIME_WAIT from the source address to the server.", "proxy", "server", "source"),
		kSrcOcc:        d("kernel_source_occupied", "Sockets in any state from the source address to the server: the tuples taken.", "proxy", "server", "source"),
		kSrcFree:       d("kernel_source_free_tuples", "Tuples (source ports) still free from the source address to the server.", "proxy", "server", "source"),
		srcSel:         d("source_selections_total", "Server connections made from the source address (source pools).", "proxy", "server", "source"),
		srcExh:         d("source_exhausted_total", "Connects from the source address the kernel refused for lack of a free tuple (EADDRNOTAVAIL).", "proxy", "server", "source"),
		steerFe:        d("kernel_frontend_steered_total", "Local connect() calls to the frontend that kernel steering sent straight to a server.", fe...),
		steerFall:      d("kernel_frontend_fallthrough_total", "Local connect() calls to a steered frontend left to sluice's listener (every server full or unusable).", fe...),
		steerSrvCur:    d("kernel_server_steered_current", "Steered connections open to the server now (they count against its maxconn).", srv...),
		steerSrvTotal:  d("kernel_server_steered_total", "Connections kernel steering sent to the server.", srv...),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	k := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	g(c.curConns, float64(st.CurrConns))
	g(c.tunCur, float64(st.Tunnels.Live))
	k(c.tunTotal, float64(st.Tunnels.Opened))
	k(c.tunBytes, float64(st.Tunnels.Up), "up")
	k(c.tunBytes, float64(st.Tunnels.Down), "down")
	k(c.tunIdle, float64(st.Tunnels.IdleTimeouts))
	k(c.tunKilled, float64(st.Tunnels.Killed))
	k(c.tunSpliced, float64(st.Tunnels.Spliced))
	k(c.tunKStops, float64(st.Tunnels.KernelStops))
	k(c.tunKOverflow, float64(st.Tunnels.KernelOverflowBytes))
	g(c.maxConn, float64(st.MaxConn))
	k(c.maxconnReached, float64(st.MaxConnReached))
	if st.KernelMode != "" {
		for _, m := range []string{"ebpf", "netlink"} {
			v := 0.0
			if st.KernelMode == m {
				v = 1
			}
			g(c.kMode, v, m)
		}
		k(c.kLost, float64(st.KernelLost))
	}
	for _, f := range st.Frontends {
		if f.Kernel != nil {
			g(c.kFeEstab, float64(*f.Kernel), f.Name)
		}
		if f.Steer != nil {
			k(c.steerFe, float64(f.Steer.Steered), f.Name)
			k(c.steerFall, float64(f.Steer.FallThrough), f.Name)
		}
		g(c.feCur, float64(f.CurrSessions), f.Name)
		k(c.feTotal, float64(f.Sessions), f.Name)
		g(c.feLimit, float64(f.MaxConn), f.Name)
	}
	for _, b := range st.Backends {
		g(c.beCur, float64(b.CurrSessions), b.Name)
		k(c.beTotal, float64(b.Sessions), b.Name)
		g(c.beQueue, float64(b.QueueCur), b.Name)
		g(c.beQueueMax, float64(b.QueueMax), b.Name)
		k(c.beQueued, float64(b.Queued), b.Name)
		k(c.beQueueTime, b.QueueTime.Seconds(), b.Name)
		for _, s := range b.Servers {
			g(c.srvCur, float64(s.Cur), b.Name, s.Name)
			g(c.srvMax, float64(s.Max), b.Name, s.Name)
			k(c.srvTotal, float64(s.Total), b.Name, s.Name)
			g(c.srvLimit, float64(s.Limit), b.Name, s.Name)
			g(c.srvQueue, float64(s.QueueCur), b.Name, s.Name)
			g(c.srvQueueMax, float64(s.QueueMax), b.Name, s.Name)
			k(c.srvErrors, float64(s.Failures), b.Name, s.Name)
			g(c.srvWeight, float64(s.Weight), b.Name, s.Name)
			g(c.srvTunnels, float64(s.Tunnels), b.Name, s.Name)
			if s.SteeredTotal > 0 || s.Steered > 0 {
				g(c.steerSrvCur, float64(s.Steered), b.Name, s.Name)
				k(c.steerSrvTotal, float64(s.SteeredTotal), b.Name, s.Name)
			}
			if ks := s.Kernel; ks != nil {
				g(c.kSrvEstab, float64(ks.Established), b.Name, s.Name)
				g(c.kSrvTW, float64(ks.TimeWait), b.Name, s.Name)
				for _, src := range ks.Sources {
					g(c.kSrcEstab, float64(src.Established), b.Name, s.Name, src.Addr)
					g(c.kSrcTW, float64(src.TimeWait), b.Name, s.Name, src.Addr)
					g(c.kSrcOcc, float64(src.Occupied), b.Name, s.Name, src.Addr)
					g(c.kSrcFree, float64(src.Free), b.Name, s.Name, src.Addr)
					k(c.srcSel, float64(src.Selections), b.Name, s.Name, src.Addr)
					k(c.srcExh, float64(src.Exhausted), b.Name, s.Name, src.Addr)
				}
			}
			for _, state := range []string{"UP", "DOWN", "MAINT", "DRAIN"} {
				v := 0.0
				if s.State == state {
					v = 1
				}
				g(c.srvStatus, v, b.Name, s.Name, state)
			}
		}
	}
}

// Renderer returns a function that renders g's metrics in the Prometheus
// text format, with the content type to answer with.
func Renderer(g prometheus.Gatherer) func() ([]byte, string, error) {
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	return func() ([]byte, string, error) {
		mfs, err := g.Gather()
		if err != nil {
			return nil, "", fmt.Errorf("gather metrics: %w", err)
		}
		var buf bytes.Buffer
		enc := expfmt.NewEncoder(&buf, format)
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				return nil, "", fmt.Errorf("encode metrics: %w", err)
			}
		}
		return buf.Bytes(), string(format), nil
	}
}

// Package doctor is `sluice doctor`: it reads the host's kernel settings and
// limits that matter to a load balancer and explains each one (value,
// status, recommendation, why), and with a configuration works out what its
// servers and source pools can sustain.
//
// Every read goes through a root directory (the live system is "/"), so
// tests run it against a fake /proc tree. It only reads files: the eBPF
// features come from an injected probe (pkg/kernel's), and it changes
// nothing on the host.
package doctor

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/userspace/source"
)

// Status is a check's verdict.
type Status int

const (
	OK   Status = iota // nothing to do
	Info               // worth knowing; fine for most hosts
	Warn               // likely to hurt: act on the recommendation
)

func (s Status) String() string {
	switch s {
	case Info:
		return "info"
	case Warn:
		return "warn"
	}
	return "ok"
}

// Check is one item of the report.
type Check struct {
	Name           string
	Value          string
	Status         Status
	Recommendation string
	Why            string
}

// Feature is a kernel feature sluice's eBPF programs use, as probed
// (pkg/kernel's ProbeFeatures has the same fields).
type Feature struct {
	Name      string
	Available bool
	Detail    string
}

// Options says what to examine.
type Options struct {
	Root     string           // "" or "/": the live system
	Config   *config.Config   // nil: the host only
	Features func() []Feature // nil: HostFeatures(Root)
	// CheckSource, when set, tries a server's source pool on this host
	// (userspace/source's Pool.Check: addresses bindable, interface and
	// usesrc permitted); its findings join the server's check.
	CheckSource func(source.Spec) (warnings []string, err error)
}

// Report is every check, in order.
type Report struct {
	Checks []Check
}

// Count returns how many checks have the status.
func (r *Report) Count(s Status) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == s {
			n++
		}
	}
	return n
}

// TimeWait is how long Linux keeps a closed connection's tuple in TIME_WAIT
// (TCP_TIMEWAIT_LEN, compiled in; no sysctl changes it).
const TimeWait = 60

// Run examines the host (and the configuration, if any).
func Run(o Options) *Report {
	if o.Root == "" {
		o.Root = "/"
	}
	h := &host{root: o.Root}
	r := &Report{}
	add := func(c Check) { r.Checks = append(r.Checks, c) }
	add(h.portRange())
	add(h.twReuse())
	add(h.maxTWBuckets())
	add(h.finTimeout())
	add(h.somaxconn(o.Config))
	add(h.synBacklog())
	add(h.netdevBacklog())
	add(h.nonlocalBind())
	need := fdNeed(o.Config)
	add(h.rlimitNofile(need))
	add(h.nrOpen(need))
	add(h.fileMax(need))
	feats := o.Features
	if feats == nil {
		feats = func() []Feature { return HostFeatures(o.Root) }
	}
	for _, f := range feats() {
		add(featureCheck(f))
	}
	if o.Config != nil {
		for _, c := range h.servers(o.Config, o.CheckSource) {
			add(c)
		}
	}
	return r
}

// host reads files under root.
type host struct {
	root string
}

func (h *host) path(p string) string { return filepath.Join(h.root, p) }

// sysctl reads /proc/sys/<key with dots as slashes>, trimmed.
func (h *host) sysctl(key string) (string, error) {
	b, err := os.ReadFile(h.path(filepath.Join("proc/sys", strings.ReplaceAll(key, ".", "/"))))
	if err != nil {
		return "", err
	}
	return strings.Join(strings.Fields(string(b)), " "), nil
}

func (h *host) sysctlInt(key string) (int64, error) {
	s, err := h.sysctl(key)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: not a number: %q", key, s)
	}
	return n, nil
}

// unreadable is the check for a setting that cannot be read here.
func unreadable(name string, err error, rec, why string) Check {
	msg := err.Error()
	if os.IsNotExist(err) {
		msg = "not present on this system"
	}
	return Check{Name: name, Value: "unavailable (" + msg + ")", Status: Info, Recommendation: rec, Why: why}
}

// localPorts reads ip_local_port_range: low, high, count.
func (h *host) localPorts() (lo, hi, n int, err error) {
	s, err := h.sysctl("net.ipv4.ip_local_port_range")
	if err != nil {
		return 0, 0, 0, err
	}
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, 0, 0, fmt.Errorf("unexpected value %q", s)
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || hi < lo {
		return 0, 0, 0, fmt.Errorf("unexpected value %q", s)
	}
	return lo, hi, hi - lo + 1, nil
}

const portRangeWhy = "Every connection sluice opens to a server needs its own (source address, source port) pair toward " +
	"that server's ip:port, while it is open and for 60 s after sluice closes it (TIME_WAIT). Without an explicit " +
	"port range on 'source', the ports come from this range: it bounds the connections one source address can hold " +
	"toward one server, and their sustainable rate is ports / 60 s per source. More source addresses multiply it " +
	"(a 'source' pool). A wide range also covers ports local services may listen on later: list those in " +
	"net.ipv4.ip_local_reserved_ports."

func (h *host) portRange() Check {
	name := "net.ipv4.ip_local_port_range"
	rec := "1024 65535 (64512 ports)"
	lo, hi, n, err := h.localPorts()
	if err != nil {
		return unreadable(name, err, rec, portRangeWhy)
	}
	c := Check{Name: name, Recommendation: rec, Why: portRangeWhy,
		Value: fmt.Sprintf("%d %d (%d ports: %d connections per source toward one server, %d new/s sustained)", lo, hi, n, n, n/TimeWait)}
	switch {
	case n >= 60000:
		c.Status = OK
	case n >= 28232:
		c.Status = Info
	default:
		c.Status = Warn
	}
	if lo%2 == hi%2 {
		c.Why += " The kernel prefers the ends of different parity (it splits the range between bind() and connect())."
	}
	if lo < 1024 {
		c.Status = Warn
		c.Why += " Ports below 1024 are privileged services' ports: start the range at 1024 or above."
	}
	return c
}

func (h *host) twReuse() Check {
	name := "net.ipv4.tcp_tw_reuse"
	why := "After sluice closes a connection to a server, its tuple stays in TIME_WAIT for 60 s. With 1, connect() may " +
		"reuse a TIME_WAIT tuple toward the same server once it is over a second old, when TCP timestamps " +
		"(net.ipv4.tcp_timestamps, on by default) prove old segments cannot be mistaken for new ones: safe for " +
		"outgoing connections, and it multiplies the connections a source can open per second. 2 (the usual " +
		"default) does so only on loopback, so for remote servers it is 0. sluice counts TIME_WAIT tuples as taken " +
		"when it chooses a source, so with 1 its figures are conservative."
	rec := "1"
	v, err := h.sysctlInt(name)
	if err != nil {
		return unreadable(name, err, rec, why)
	}
	c := Check{Name: name, Value: strconv.FormatInt(v, 10), Recommendation: rec, Why: why, Status: Warn}
	switch v {
	case 1:
		c.Status = OK
	case 2:
		c.Value += " (loopback only)"
	}
	if ts, err := h.sysctlInt("net.ipv4.tcp_timestamps"); err == nil && ts == 0 {
		c.Value += "; tcp_timestamps 0"
		c.Status = Warn
		c.Recommendation = "1, with net.ipv4.tcp_timestamps = 1 (reuse needs timestamps)"
	}
	return c
}

func (h *host) maxTWBuckets() Check {
	name := "net.ipv4.tcp_max_tw_buckets"
	why := "The most TIME_WAIT sockets the host keeps. Beyond it the kernel destroys new ones at once and logs " +
		"\"TCP: time wait bucket table overflow\": tuples then come back before TCP's 60 s protection ends. " +
		"Each closed connection stays 60 s, so this bounds the host's sustained rate of closed connections " +
		"(value / 60 per second, all servers together). A TIME_WAIT socket costs a few hundred bytes."
	rec := "262144 or more (2000000 for busy balancers)"
	v, err := h.sysctlInt(name)
	if err != nil {
		return unreadable(name, err, rec, why)
	}
	c := Check{Name: name, Value: fmt.Sprintf("%d (%d closed connections/s over 60 s)", v, v/TimeWait), Recommendation: rec, Why: why}
	switch {
	case v >= 262144:
		c.Status = OK
	case v >= 65536:
		c.Status = Info
	default:
		c.Status = Warn
	}
	return c
}

func (h *host) finTimeout() Check {
	name := "net.ipv4.tcp_fin_timeout"
	why := "Seconds an orphaned connection (closed by this side, the peer not done yet) may stay in FIN_WAIT_2. It " +
		"does NOT shorten TIME_WAIT: Linux keeps TIME_WAIT 60 s (TCP_TIMEWAIT_LEN, compiled in), whatever this " +
		"says, so lowering it frees no (source, port) tuples faster; it only reclaims sockets of peers that never " +
		"close their side. More source addresses, a wider port range or tcp_tw_reuse are what raise the rate."
	rec := "15 (harmless; it does not change TIME_WAIT)"
	v, err := h.sysctlInt(name)
	if err != nil {
		return unreadable(name, err, rec, why)
	}
	c := Check{Name: name, Value: strconv.FormatInt(v, 10) + " s", Recommendation: rec, Why: why, Status: OK}
	if v > 30 {
		c.Status = Info
	}
	return c
}

func (h *host) somaxconn(cfg *config.Config) Check {
	name := "net.core.somaxconn"
	why := "The longest accept queue a listener may have: connections the kernel completed that sluice has not " +
		"accepted yet (Go uses this value as every listener's backlog). When it is full the kernel drops new " +
		"SYNs and clients retry after 1 s, 3 s... A frontend at maxconn stops accepting, so its waiting " +
		"clients sit here."
	rec := "4096 or more (65535 in scripts/sysctl.conf)"
	v, err := h.sysctlInt(name)
	if err != nil {
		return unreadable(name, err, rec, why)
	}
	c := Check{Name: name, Value: strconv.FormatInt(v, 10), Recommendation: rec, Why: why, Status: OK}
	if v < 4096 {
		c.Status = Warn
	}
	if cfg != nil {
		for _, fe := range cfg.Frontends {
			mc := fe.MaxConn
			if mc == 0 {
				mc = cfg.Global.MaxConn
			}
			if mc > int(v) && c.Status == OK {
				c.Status = Info
				c.Value += fmt.Sprintf(" (frontend '%s' has maxconn %d)", fe.Name, mc)
				c.Why += " A burst beyond maxconn + backlog is refused by the kernel, not queued."
				break
			}
		}
	}
	return c
}

func (h *host) synBacklog() Check {
	name := "net.ipv4.tcp_max_syn_backlog"
	why := "Half-open connections (SYN received, handshake not finished) a listener keeps. With " +
		"net.ipv4.tcp_syncookies = 1 (the default) a full queue answers with SYN cookies instead of dropping, " +
		"at the cost of some TCP options; without cookies, SYNs beyond it are dropped."
	rec := "4096 or more (65535 in scripts/sysctl.conf)"
	v, err := h.sysctlInt(name)
	if err != nil {
		return unreadable(name, err, rec, why)
	}
	c := Check{Name: name, Value: strconv.FormatInt(v, 10), Recommendation: rec, Why: why, Status: OK}
	cookies, cerr := h.sysctlInt("net.ipv4.tcp_syncookies")
	if cerr == nil {
		c.Value += fmt.Sprintf(" (tcp_syncookies %d)", cookies)
	}
	if v < 4096 {
		c.Status = Info
		if cerr == nil && cookies == 0 {
			c.Status = Warn
		}
	}
	return c
}

func (h *host) netdevBacklog() Check {
	name := "net.core.netdev_max_backlog"
	why := "Packets each CPU queues between the network driver and the TCP/IP stack. At high packet rates a short " +
		"queue drops packets before TCP sees them (retransmissions, latency spikes); the drops are the second " +
		"column of /proc/net/softnet_stat, counted here."
	rec := "16384 or more (65535 in scripts/sysctl.conf)"
	v, err := h.sysctlInt(name)
	if err != nil {
		return unreadable(name, err, rec, why)
	}
	c := Check{Name: name, Value: strconv.FormatInt(v, 10), Recommendation: rec, Why: why, Status: OK}
	if v < 16384 {
		c.Status = Info
	}
	if drops, err := h.softnetDrops(); err == nil {
		c.Value += fmt.Sprintf(" (%d packets dropped for a full backlog since boot)", drops)
		if drops > 0 && v < 65535 {
			c.Status = Warn
		}
	}
	return c
}

// softnetDrops sums the dropped column of /proc/net/softnet_stat.
func (h *host) softnetDrops() (uint64, error) {
	b, err := os.ReadFile(h.path("proc/net/softnet_stat"))
	if err != nil {
		return 0, err
	}
	var sum uint64
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		n, err := strconv.ParseUint(f[1], 16, 64)
		if err != nil {
			return 0, fmt.Errorf("softnet_stat: %q", f[1])
		}
		sum += n
	}
	return sum, nil
}

func (h *host) nonlocalBind() Check {
	name := "net.ipv4.ip_nonlocal_bind"
	why := "With 1, sluice may bind a source address that is not (yet) on an interface, such as an address a " +
		"failover (keepalived) moves here later. With 0 such a source fails at bind and sluice skips it " +
		"(reported at start); a mistyped source is caught at once. 1 hides that mistake: packets then leave " +
		"with an address no route brings back, and connections time out. 'usesrc' does not need it (it uses " +
		"IP_TRANSPARENT)."
	rec := "0, or 1 only if source addresses come and go (failover)"
	v, err := h.sysctlInt(name)
	if err != nil {
		return unreadable(name, err, rec, why)
	}
	c := Check{Name: name, Value: strconv.FormatInt(v, 10), Recommendation: rec, Why: why, Status: OK}
	if v6, err := h.sysctlInt("net.ipv6.ip_nonlocal_bind"); err == nil {
		c.Value += fmt.Sprintf(" (net.ipv6.ip_nonlocal_bind %d)", v6)
	}
	if v != 0 {
		c.Status = Info
	}
	return c
}

// fdNeed estimates the descriptors a configuration needs: two per
// connection (client and server side) at every frontend's maxconn, plus
// listeners, health checks and pools; 0 when maxconn is unbounded or there
// is no configuration.
func fdNeed(cfg *config.Config) int64 {
	if cfg == nil {
		return 0
	}
	var conns int64
	if cfg.Global.MaxConn > 0 {
		conns = int64(cfg.Global.MaxConn)
	} else {
		for _, fe := range cfg.Frontends {
			if fe.MaxConn == 0 {
				return 0
			}
			conns += int64(fe.MaxConn)
		}
	}
	servers := 0
	for _, be := range cfg.Backends {
		servers += len(be.Servers)
	}
	return 2*conns + int64(servers) + 1000
}

// openFiles reads "Max open files" of /proc/self/limits: soft, hard
// (-1 = unlimited).
func (h *host) openFiles() (soft, hard int64, err error) {
	b, err := os.ReadFile(h.path("proc/self/limits"))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(l, "Max open files")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 2 {
			break
		}
		parse := func(s string) (int64, error) {
			if s == "unlimited" {
				return -1, nil
			}
			return strconv.ParseInt(s, 10, 64)
		}
		soft, err1 := parse(f[0])
		hard, err2 := parse(f[1])
		if err1 != nil || err2 != nil {
			break
		}
		return soft, hard, nil
	}
	return 0, 0, fmt.Errorf("no 'Max open files' line in %s", h.path("proc/self/limits"))
}

func fmtLimit(n int64) string {
	if n < 0 {
		return "unlimited"
	}
	return strconv.FormatInt(n, 10)
}

func (h *host) rlimitNofile(need int64) Check {
	name := "RLIMIT_NOFILE"
	why := "File descriptors one process may open: sluice needs one per client connection, one per server " +
		"connection (including idle pooled ones), plus listeners and health checks. Like every Go program " +
		"since Go 1.19, sluice raises its soft limit to the hard limit at start, so the hard limit is what " +
		"counts. This is the limit of the shell running doctor; the service's comes from LimitNOFILE= in its " +
		"unit (scripts/sluice.service sets 1048576)."
	rec := "hard limit 1048576 (LimitNOFILE=1048576)"
	if need > 0 {
		rec = fmt.Sprintf("hard limit at least %d for this configuration (2 per connection at maxconn, plus servers and margin); 1048576 is common", need)
	}
	soft, hard, err := h.openFiles()
	if err != nil {
		return unreadable(name, err, rec, why)
	}
	c := Check{Name: name, Value: fmt.Sprintf("soft %s, hard %s", fmtLimit(soft), fmtLimit(hard)), Recommendation: rec, Why: why, Status: OK}
	switch {
	case hard >= 0 && need > 0 && hard < need:
		c.Status = Warn
		c.Value += fmt.Sprintf(" (this configuration may need %d)", need)
	case hard >= 0 && hard < 65536:
		c.Status = Warn
	}
	return c
}

func (h *host) nrOpen(need int64) Check {
	name := "fs.nr_open"
	why := "The ceiling for any process's RLIMIT_NOFILE: a LimitNOFILE= above it fails. Raise it first when a " +
		"configuration needs more than about a million descriptors."
	rec := "1048576 (the default) or more"
	v, err := h.sysctlInt(name)
	if err != nil {
		return unreadable(name, err, rec, why)
	}
	c := Check{Name: name, Value: strconv.FormatInt(v, 10), Recommendation: rec, Why: why, Status: OK}
	if v < need || v < 65536 {
		c.Status = Warn
	}
	return c
}

func (h *host) fileMax(need int64) Check {
	name := "fs.file-max"
	why := "Open files the whole host may have, every process together. When reached, accept() and connect() " +
		"fail with ENFILE for everyone. The kernel's default scales with memory and is usually ample."
	rec := "at least 2 x what sluice may open (default is usually fine)"
	v, err := h.sysctlInt(name)
	if err != nil {
		return unreadable(name, err, rec, why)
	}
	c := Check{Name: name, Value: strconv.FormatInt(v, 10), Recommendation: rec, Why: why, Status: OK}
	if nr, err := h.sysctl("fs.file-nr"); err == nil {
		if f := strings.Fields(nr); len(f) == 3 {
			c.Value += " (in use: " + f[0] + ")"
		}
	}
	if v < 2*need || v < 131072 {
		c.Status = Warn
	}
	return c
}

// HostFeatures is what doctor can tell of sluice's kernel needs from files
// alone: BTF and the cgroup v2 mount. pkg/kernel's probe, which loads test
// programs, tells the rest.
func HostFeatures(root string) []Feature {
	h := &host{root: root}
	btf := Feature{Name: "BTF"}
	if fi, err := os.Stat(h.path("sys/kernel/btf/vmlinux")); err == nil && fi.Mode().IsRegular() {
		btf.Available, btf.Detail = true, "/sys/kernel/btf/vmlinux is present: CO-RE programs load without local headers"
	} else {
		btf.Detail = "/sys/kernel/btf/vmlinux is missing: the kernel was built without CONFIG_DEBUG_INFO_BTF, so sluice's CO-RE programs cannot be relocated"
	}
	cg := Feature{Name: "cgroup v2"}
	if b, err := os.ReadFile(h.path("proc/mounts")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 3 && f[2] == "cgroup2" {
				cg.Available, cg.Detail = true, "mounted at "+f[1]+": sockops and cgroup/connect4 programs can attach"
				break
			}
		}
		if !cg.Available {
			cg.Detail = "no cgroup2 mount in /proc/mounts: sockops and cgroup/connect4 programs have nothing to attach to"
		}
	} else if os.IsNotExist(err) {
		cg.Detail = "/proc/mounts is not present on this system"
	} else {
		cg.Detail = "cannot read /proc/mounts: " + err.Error()
	}
	return []Feature{btf, cg}
}

func featureCheck(f Feature) Check {
	c := Check{Name: "ebpf: " + f.Name, Why: f.Detail}
	if f.Available {
		c.Value, c.Status, c.Recommendation = "available", OK, "nothing to do"
		return c
	}
	c.Value, c.Status = "missing", Warn
	switch f.Name {
	case "BTF":
		c.Recommendation = "a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distributions' kernels since 5.10)"
	case "cgroup v2":
		c.Recommendation = "the unified cgroup hierarchy (systemd.unified_cgroup_hierarchy=1, the default of current distributions)"
	default:
		c.Recommendation = "Linux 5.10 or later with CONFIG_DEBUG_INFO_BTF=y has every feature sluice uses"
	}
	c.Why += ". Without it sluice falls back to its userspace path for what needs it, with one log line at start."
	return c
}

// WriteText writes the report: one block per check, then a summary line.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	for i, c := range r.Checks {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "[%-4s] %s\n", c.Status, c.Name)
		field(&b, "value", c.Value)
		field(&b, "recommendation", c.Recommendation)
		field(&b, "why", c.Why)
	}
	fmt.Fprintf(&b, "\n%d checks: %d ok, %d info, %d warn\n", len(r.Checks), r.Count(OK), r.Count(Info), r.Count(Warn))
	_, err := io.WriteString(w, b.String())
	return err
}

const (
	indent = "       "
	label  = 16 // width of the label column
	width  = 110
)

// field writes "label  text", the text wrapped under itself.
func field(b *strings.Builder, name, text string) {
	if text == "" {
		return
	}
	prefix := indent + name + strings.Repeat(" ", label-len(name))
	pad := strings.Repeat(" ", len(prefix))
	line := prefix
	n := 0
	for _, word := range strings.Fields(text) {
		if n > 0 && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line, n = pad, 0
		}
		if n > 0 {
			line += " "
		}
		line += word
		n++
	}
	b.WriteString(line + "\n")
}

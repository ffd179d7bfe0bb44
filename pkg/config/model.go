// Package config reads HAProxy-syntax configuration files into a typed model.
//
// It owns the lexer, the parser, units, defaults inheritance and validation of
// what can be checked without the rest of the program. Every node keeps the
// file and line it came from so later stages (route compilation, listeners)
// can report errors as FILE:LINE. It must not import anything from userspace/
// or touch the network.
package config

import (
	"fmt"
	"time"
)

// Pos is where a node was written.
type Pos struct {
	File string
	Line int
}

// String returns "FILE:LINE", or just "FILE" when the line is unknown (0), as
// for a file that could not be read.
func (p Pos) String() string {
	if p.Line <= 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d", p.File, p.Line)
}

// Mode is a proxy's protocol mode.
type Mode int

const (
	ModeHTTP Mode = iota // default in sluice, as in most HAProxy configs; HAProxy's own default is tcp
	ModeTCP
)

func (m Mode) String() string {
	if m == ModeTCP {
		return "tcp"
	}
	return "http"
}

// Config is a whole configuration after defaults have been applied.
type Config struct {
	Global    Global
	Frontends []*Frontend // includes the frontend half of each listen section
	Backends  []*Backend  // includes the backend half of each listen section
	Warnings  []Diag      // warnings collected while parsing (not errors)
}

// Backend returns the backend with the given name, or nil.
func (c *Config) Backend(name string) *Backend {
	for _, b := range c.Backends {
		if b.Name == name {
			return b
		}
	}
	return nil
}

// Global holds the global section.
type Global struct {
	Pos           Pos
	MaxConn       int // 0 = not set (the daemon picks a default from RLIMIT_NOFILE)
	Logs          []Log
	HardStopAfter time.Duration // `hard-stop-after`; 0 = wait for connections forever
	NbThread      int           // `nbthread`: event loops serving connections; 0 = one per CPU
	StatsSockets  []StatsSocket // `stats socket`: the runtime API
	// sluice extensions: cgroup v2 directories for the kernel programs;
	// "" = the daemon's own cgroup (counting), the cgroup v2 root (steering).
	KernelCgroup, KernelSteerCgroup string
}

// StatsSocket is a `stats socket PATH [mode M] [level L]` line: a unix
// socket serving the runtime API.
type StatsSocket struct {
	Pos   Pos
	Path  string
	Mode  uint32 // file mode, 0600 by default
	Level string // user, operator (default) or admin
}

// Log is a `log` line; sluice accepts it and logs to stderr.
type Log struct {
	Pos    Pos
	Global bool     // `log global`
	Args   []string // everything after `log` when not `log global`
}

// Timeouts holds every timeout keyword. Zero means "not set".
type Timeouts struct {
	Connect       time.Duration
	Client        time.Duration
	Server        time.Duration
	HTTPRequest   time.Duration
	HTTPKeepAlive time.Duration
	Queue         time.Duration
	Tunnel        time.Duration
	ClientFin     time.Duration
	ServerFin     time.Duration
	Check         time.Duration
}

// Options holds the `option` keywords sluice implements. Each is tri-state in
// the parser (set, `no option`, or inherited) but resolved here.
type Options struct {
	HTTPLog          bool
	DontLogNull      bool
	ForwardFor       bool
	ForwardForExcept string // `option forwardfor except NET` (kept raw)
	ForwardForHeader string // `option forwardfor header NAME`; "" = X-Forwarded-For
	ForwardForIfNone bool   // `option forwardfor if-none`: only add the header when absent
	HTTPKeepAlive    bool   // default mode when neither is set
	HTTPServerClose  bool
	Redispatch       bool
	// option httpchk [[METHOD] URI [VERSION]]: health checks send this
	// request instead of only connecting.
	HTTPCheck                                       bool
	HTTPCheckMethod, HTTPCheckURI, HTTPCheckVersion string
	TCPLog                                          bool // `option tcplog` (also what httplog becomes in mode tcp)

	// sluice's kernel options. Counters and splicing are on unless `no
	// option kernel-counters` / `no option kernel-splice` (KernelSplice
	// records an explicit `option kernel-splice`, which only changes how
	// loudly sluice says the kernel cannot); steering is off unless
	// `option kernel-steer` (mode tcp frontends).
	NoKernelCounters, NoKernelSplice, KernelSplice, KernelSteer bool
}

// Bind is one address of a `bind` line.
type Bind struct {
	Pos  Pos
	Addr string // host:port as given to net.Listen ("" host = all addresses, "[::]:80" = IPv6 any)
	// Network is the net.Listen network HAProxy's rules imply: "tcp4" for an
	// IPv4 address, `*`, an empty host or an ipv4@ prefix (HAProxy listens on
	// IPv4 only there), "tcp6" for an IPv6 address or an ipv6@ prefix, "tcp"
	// for a host name.
	Network string
}

// ACL is an `acl NAME criterion [flags] [operator] [value...]` line, kept as
// tokens; userspace/route compiles it.
type ACL struct {
	Pos  Pos
	Name string
	Args []string // criterion, flags and patterns, as written (quotes resolved)
}

// Cond is an `if`/`unless` condition, kept as tokens; userspace/route compiles it.
type Cond struct {
	Pos    Pos
	Unless bool
	Terms  []string // tokens after if/unless, including `{`, `}`, `!`, `||`, `or`
}

// UseBackend is a `use_backend NAME [if|unless COND]` line.
type UseBackend struct {
	Pos     Pos
	Backend string
	Cond    *Cond // nil = unconditional
}

// StatsPage is a proxy's `stats enable`, `stats uri` and `stats refresh`.
type StatsPage struct {
	Pos     Pos
	Enable  bool
	URI     string // prefix of the page's path; "/haproxy?stats" by default
	Refresh time.Duration
}

// HTTPRule is an `http-request ACTION [args] [if|unless COND]` rule of a
// frontend, evaluated in order before use_backend.
type HTTPRule struct {
	Pos     Pos
	Action  string // "deny" or "use-service"
	Status  int    // deny: the status answered (deny_status, default 403)
	Service string // use-service: "prometheus-exporter"
	Cond    *Cond  // nil = always
}

// Frontend is a frontend section, or the frontend half of a listen section.
type Frontend struct {
	Pos               Pos
	Name              string
	Mode              Mode
	Binds             []Bind
	MaxConn           int // 0 = unset (use global)
	Timeouts          Timeouts
	Options           Options
	Logs              []Log
	ACLs              []ACL
	UseBackends       []UseBackend
	HTTPRules         []HTTPRule
	Stats             StatsPage // stats enable/uri/refresh
	DefaultBackend    string    // name; for a listen section, its own name
	DefaultBackendPos Pos
}

// Balance is a `balance` algorithm.
type Balance struct {
	Algo string   // roundrobin (default), static-rr, leastconn, first, source, uri, url_param, hdr, random
	Args []string // e.g. `uri whole`, `url_param userid`, `random(2)` -> Algo "random", Args ["2"]
}

// Source is a `source` setting: one address or, as a sluice extension, a pool.
type Source struct {
	Pos  Pos
	Addr string   // as written; "" = unset
	Args []string // the rest of the line (usesrc, interface...), kept for later issues
}

// CheckExpect is `http-check expect [!] status CODES|rstatus REGEX`.
type CheckExpect struct {
	Pos    Pos
	Negate bool
	Kind   string // "status" (codes and ranges: 200,300-399) or "rstatus"
	Value  string
}

// Backend is a backend section, or the backend half of a listen section.
type Backend struct {
	Pos      Pos
	Name     string
	Mode     Mode
	Balance  Balance
	Retries  int // default 3
	Timeouts Timeouts
	Options  Options
	Source   Source
	FullConn int // 0 = automatic (HAProxy: 10% of the frontends' maxconn)
	Servers  []*Server
	ACLs     []ACL // acl lines of a backend section (a listen's go to its Frontend)
	// CheckExpect is what an HTTP health check's status must match; nil =
	// any 2xx or 3xx, as HAProxy.
	CheckExpect *CheckExpect
}

// Server is a `server` line.
type Server struct {
	Pos       Pos
	Name      string
	Addr      string // host:port
	MaxConn   int    // 0 = unlimited
	MinConn   int    // 0 = unset (no dynamic limit)
	MaxQueue  int    // 0 = unlimited
	Weight    int    // default 1, range 0..256
	Check     bool
	Inter     time.Duration // default 2s
	FastInter time.Duration // between checks while going up or down; 0 = Inter
	DownInter time.Duration // between checks while down; 0 = Inter
	Rise      int           // default 2
	Fall      int           // default 3
	Source    Source
	Backup    bool
	Disabled  bool
}

// Diag is a located message: a warning or an error.
type Diag struct {
	Pos Pos
	Msg string
}

func (d Diag) Error() string {
	if d.Pos.File == "" {
		return d.Msg
	}
	return d.Pos.String() + ": " + d.Msg
}

// Errors is every error found in one run.
type Errors []Diag

func (e Errors) Error() string {
	s := ""
	for i, d := range e {
		if i > 0 {
			s += "\n"
		}
		s += d.Error()
	}
	return s
}

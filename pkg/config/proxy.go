package config

import (
	"math"
	"regexp"
	"strings"
	"time"
)

// tri is a setting that is on, off, or not set (inherit the built-in value).
type tri int8

const (
	triUnset tri = iota
	triOn
	triOff
)

// connMode is the HTTP connection mode chosen by option http-keep-alive /
// http-server-close (the last one wins).
type connMode int8

const (
	connUnset connMode = iota
	connKeepAlive
	connServerClose
)

// optState is the parser's view of the options: tri-state, so that "no
// option" in a proxy can override a defaults section.
type optState struct {
	httpLog, dontLogNull, forwardFor, redispatch tri
	ffExcept, ffHeader                           string
	ffIfNone                                     bool
	conn                                         connMode
	httpLogPos, forwardForPos                    Pos
	httpChk                                      tri
	chkMethod, chkURI, chkVersion                string
	tcpLog                                       tri
	// sluice's kernel options; unset = their default.
	kCounters, kSplice, kSteer tri
}

func (o *optState) kernelOpt(name string) *tri {
	switch name {
	case "kernel-counters":
		return &o.kCounters
	case "kernel-splice":
		return &o.kSplice
	}
	return &o.kSteer
}

func (o optState) resolve() Options {
	return Options{
		HTTPLog:          o.httpLog == triOn,
		DontLogNull:      o.dontLogNull == triOn,
		ForwardFor:       o.forwardFor == triOn,
		ForwardForExcept: o.ffExcept,
		ForwardForHeader: o.ffHeader,
		ForwardForIfNone: o.ffIfNone,
		HTTPKeepAlive:    o.conn != connServerClose,
		HTTPServerClose:  o.conn == connServerClose,
		Redispatch:       o.redispatch == triOn,
		HTTPCheck:        o.httpChk == triOn,
		HTTPCheckMethod:  o.chkMethod,
		HTTPCheckURI:     o.chkURI,
		HTTPCheckVersion: o.chkVersion,
		TCPLog:           o.tcpLog == triOn,
		NoKernelCounters: o.kCounters == triOff,
		NoKernelSplice:   o.kSplice == triOff,
		KernelSplice:     o.kSplice == triOn,
		KernelSteer:      o.kSteer == triOn,
	}
}

// proxy is a defaults, frontend, backend or listen section being parsed.
type proxy struct {
	kind    secKind
	name    string
	pos     Pos
	discard bool // a duplicate or nameless proxy: checked, not emitted

	// Inherited from the defaults section.
	mode          Mode
	maxconn       int
	timeouts      Timeouts
	opts          optState
	logs          []Log
	retries       int
	balance       Balance
	source        Source
	fullconn      int
	defBackend    string
	defBackendPos Pos
	defServer     Server // default-server settings
	checkExpect   *CheckExpect
	stats         StatsPage

	// Not inherited.
	binds       []Bind
	acls        []ACL
	useBackends []UseBackend
	httpRules   []HTTPRule
	servers     []*Server
}

// builtinDefaults is what a defaults section without `from`, or a proxy with
// no defaults section before it, starts from.
func builtinDefaults() *proxy {
	return &proxy{
		mode:    ModeHTTP,
		retries: 3,
		balance: Balance{Algo: "roundrobin"},
		defServer: Server{
			Weight: 1,
			Inter:  2 * time.Second,
			Rise:   2,
			Fall:   3,
		},
	}
}

// inherit returns a new proxy carrying d's inheritable settings; d == nil
// means the built-in defaults.
func (d *proxy) inherit() *proxy {
	if d == nil {
		return builtinDefaults()
	}
	px := &proxy{
		mode:          d.mode,
		maxconn:       d.maxconn,
		timeouts:      d.timeouts,
		opts:          d.opts,
		logs:          append([]Log(nil), d.logs...),
		retries:       d.retries,
		balance:       Balance{Algo: d.balance.Algo, Args: append([]string(nil), d.balance.Args...)},
		source:        cloneSource(d.source),
		fullconn:      d.fullconn,
		defBackend:    d.defBackend,
		defBackendPos: d.defBackendPos,
		defServer:     d.defServer,
		checkExpect:   d.checkExpect,
		stats:         d.stats,
	}
	px.defServer.Source = cloneSource(d.defServer.Source)
	return px
}

func cloneSource(s Source) Source {
	s.Args = append([]string(nil), s.Args...)
	return s
}

// stmt is one keyword line inside a proxy section.
type stmt struct {
	pos  Pos
	kw   string   // the keyword, for messages ("maxconn", "timeout client")
	args []string // the words after the keyword
	px   *proxy
	kind secKind
}

func (p *parser) proxyStmt(pos Pos, words []string) {
	px, kind := p.sec.px, p.sec.kind
	mod := ""
	if words[0] == "no" || words[0] == "default" {
		mod = words[0]
		allowed := "'option'"
		if mod == "no" {
			allowed = "'option' or 'log'"
		}
		if len(words) < 2 {
			p.errorf(pos, "'%s' expects a keyword after it (%s)", mod, allowed)
			return
		}
		words = words[1:]
		if words[0] != "option" && !(mod == "no" && words[0] == "log") {
			p.errorf(pos, "'%s %s' is not supported: only %s can be prefixed by '%s'", mod, words[0], allowed, mod)
			return
		}
	}
	kw := words[0]
	if msg, ok := removedKeywords[kw]; ok {
		p.errorf(pos, "%s", msg)
		return
	}
	info := proxyKeywords[kw]
	if info == nil {
		p.errorf(pos, "unknown keyword '%s' in '%s' section%s", kw, kind, suggestIn(kw, proxyCandidates(kind), keys(proxyKeywords)))
		return
	}
	switch kw {
	case "option":
		p.option(pos, px, kind, mod, words[1:])
		return
	case "timeout":
		p.timeout(pos, px, kind, words[1:])
		return
	}
	name, c := kw, info.caps
	if info.subs != nil {
		if len(words) < 2 {
			p.errorf(pos, "'%s' expects one of: %s", kw, strings.Join(keys(info.subs), ", "))
			return
		}
		sc, ok := info.subs[words[1]]
		if !ok {
			p.errorf(pos, "unknown '%s' keyword '%s'%s (expected one of: %s)", kw, words[1],
				didYouMean(words[1], keys(info.subs)), strings.Join(keys(info.subs), ", "))
			return
		}
		name, c = kw+" "+words[1], sc
	}
	if !p.checkCaps(pos, name, c, kind, px) {
		return
	}
	st := &stmt{pos: pos, kw: kw, args: words[1:], px: px, kind: kind}
	switch kw {
	case "acl":
		p.acl(st)
	case "balance":
		p.balanceStmt(st)
	case "bind":
		p.bind(st)
	case "default_backend":
		p.defaultBackend(st)
	case "default-server":
		p.serverParams(pos, &px.defServer, st.args, "default-server")
	case "fullconn":
		if n, ok := p.intArg(st, 0, math.MaxInt32); ok {
			px.fullconn = n
		}
	case "log":
		if mod == "no" {
			if len(st.args) > 0 {
				p.errorf(pos, "'no log' takes no argument, found '%s'", st.args[0])
			}
			px.logs = nil
			return
		}
		if l, ok := p.logStmt(pos, st.args, false); ok {
			px.logs = append(px.logs, l)
		}
	case "maxconn":
		if n, ok := p.intArg(st, 0, math.MaxInt32); ok {
			px.maxconn = n
		}
	case "mode":
		p.modeStmt(st)
	case "retries":
		if n, ok := p.intArg(st, 0, math.MaxInt32); ok {
			px.retries = n
		}
	case "server":
		p.server(st)
	case "source":
		p.sourceStmt(st)
	case "use_backend":
		p.useBackend(st)
	case "http-request":
		p.httpRequest(st)
	case "http-check":
		p.httpCheck(st)
	case "stats":
		p.statsProxy(st)
	default:
		p.warnf(pos, "'%s' is not supported yet, ignored", kw)
	}
}

// checkCaps reports a keyword used in a section where HAProxy does not allow
// it.
func (p *parser) checkCaps(pos Pos, name string, c caps, kind secKind, px *proxy) bool {
	if !c.allows(kind) {
		// As HAProxy: a proxy keyword on the wrong side of a proxy
		// (maxconn in a backend, balance in a frontend) is ignored with a
		// warning; what defines traffic (bind, server) is an error.
		sideOnly := (kind == secFrontend || kind == secBackend) && c&(inFrontend|inBackend) != 0
		if sideOnly && name != "bind" && name != "server" && name != "default-server" {
			p.warnf(pos, "'%s' ignored: it is not allowed in a '%s' section (allowed in: %s)", name, kind, c.where())
			return false
		}
		p.errorf(pos, "'%s' is not allowed in a '%s' section (allowed in: %s)", name, kind, c.where())
		return false
	}
	if kind == secDefaults && c&namedDefaultsOnly != 0 && px.name == "" {
		p.errorf(pos, "'%s' is only allowed in a named defaults section ('defaults NAME')", name)
		return false
	}
	return true
}

// oneArg returns the only argument of a statement, reporting a missing or an
// extra one.
func (p *parser) oneArg(st *stmt, what string) (string, bool) {
	if len(st.args) == 0 {
		p.errorf(st.pos, "'%s' expects %s", st.kw, what)
		return "", false
	}
	if len(st.args) > 1 {
		p.errorf(st.pos, "'%s' takes one argument (%s); unexpected '%s'", st.kw, what, st.args[1])
		return "", false
	}
	return st.args[0], true
}

func (p *parser) intArg(st *stmt, lo, hi int) (int, bool) {
	s, ok := p.oneArg(st, "an integer")
	if !ok {
		return 0, false
	}
	n, err := parseUint(s, lo, hi)
	if err != nil {
		p.errorf(st.pos, "invalid value '%s' for '%s': %v", s, st.kw, err)
		return 0, false
	}
	return n, true
}

func (p *parser) timeArg(st *stmt) (time.Duration, bool) {
	s, ok := p.oneArg(st, "a time such as 5000, 5s or 1m")
	if !ok {
		return 0, false
	}
	d, err := parseTime(s)
	if err != nil {
		p.errorf(st.pos, "invalid time '%s' for '%s': %v", s, st.kw, err)
		return 0, false
	}
	return d, true
}

func (p *parser) modeStmt(st *stmt) {
	s, ok := p.oneArg(st, "'http' or 'tcp'")
	if !ok {
		return
	}
	switch s {
	case "http":
		st.px.mode = ModeHTTP
	case "tcp":
		st.px.mode = ModeTCP
	default:
		p.errorf(st.pos, "unknown mode '%s' (expected 'http' or 'tcp')%s", s, didYouMean(s, []string{"http", "tcp"}))
	}
}

func (p *parser) acl(st *stmt) {
	if len(st.args) < 2 {
		p.errorf(st.pos, "'acl' expects a name and a criterion: acl NAME CRITERION [flags] [operator] [value...]")
		return
	}
	if !p.checkName(st.pos, "ACL", st.args[0]) {
		return
	}
	if st.kind == secDefaults {
		p.warnf(st.pos, "'acl' in a defaults section is not supported yet, ignored")
		return
	}
	st.px.acls = append(st.px.acls, ACL{Pos: st.pos, Name: st.args[0], Args: append([]string(nil), st.args[1:]...)})
}

func (p *parser) defaultBackend(st *stmt) {
	name, ok := p.oneArg(st, "a backend name")
	if !ok || !p.checkName(st.pos, "backend", name) {
		return
	}
	st.px.defBackend, st.px.defBackendPos = name, st.pos
}

func (p *parser) useBackend(st *stmt) {
	if len(st.args) == 0 {
		p.errorf(st.pos, "'use_backend' expects a backend name: use_backend NAME [if|unless CONDITION]")
		return
	}
	name := st.args[0]
	if strings.Contains(name, "%[") {
		p.warnf(st.pos, "'use_backend' with a dynamic backend name is not supported yet, ignored")
		return
	}
	if !p.checkName(st.pos, "backend", name) {
		return
	}
	ub := UseBackend{Pos: st.pos, Backend: name}
	if len(st.args) > 1 {
		cond, ok := p.condition(st.pos, st.args[1:], "use_backend "+name)
		if !ok {
			return
		}
		ub.Cond = cond
	}
	st.px.useBackends = append(st.px.useBackends, ub)
}

// httpRequest reads the http-request rules sluice implements: deny and
// use-service prometheus-exporter. Other actions are warned about.
func (p *parser) httpRequest(st *stmt) {
	if len(st.args) == 0 {
		p.errorf(st.pos, "'http-request' expects an action, e.g. 'http-request deny if COND'")
		return
	}
	if st.kind == secBackend || st.kind == secDefaults {
		p.warnf(st.pos, "'http-request' in a %s section is not supported yet, ignored", st.kind)
		return
	}
	action, args := st.args[0], st.args[1:]
	rule := HTTPRule{Pos: st.pos, Action: action}
	switch action {
	case "deny":
		rule.Status = 403
		if len(args) >= 2 && args[0] == "deny_status" {
			n, err := parseUint(args[1], 200, 599)
			if err != nil {
				p.errorf(st.pos, "'http-request deny': invalid deny_status '%s' (expected 200..599)", args[1])
				return
			}
			rule.Status, args = n, args[2:]
		}
	case "use-service":
		if len(args) == 0 || args[0] != "prometheus-exporter" {
			found := "nothing"
			if len(args) > 0 {
				found = "'" + args[0] + "'"
			}
			p.errorf(st.pos, "'http-request use-service': the only service is 'prometheus-exporter', found %s", found)
			return
		}
		rule.Service, args = args[0], args[1:]
	default:
		p.warnf(st.pos, "'http-request %s' is not supported yet, ignored", action)
		return
	}
	if len(args) > 0 {
		cond, ok := p.condition(st.pos, args, "http-request "+action)
		if !ok {
			return
		}
		rule.Cond = cond
	}
	st.px.httpRules = append(st.px.httpRules, rule)
}

// httpCheck reads `http-check expect [!] status CODE|rstatus REGEX`; other
// http-check directives warn.
func (p *parser) httpCheck(st *stmt) {
	args := st.args
	if args[0] != "expect" {
		p.warnf(st.pos, "'http-check %s' is not supported yet, ignored", args[0])
		return
	}
	args = args[1:]
	ce := &CheckExpect{Pos: st.pos}
	if len(args) > 0 && args[0] == "!" {
		ce.Negate, args = true, args[1:]
	}
	if len(args) != 2 || (args[0] != "status" && args[0] != "rstatus") {
		if len(args) > 0 && args[0] != "status" && args[0] != "rstatus" {
			p.warnf(st.pos, "'http-check expect %s' is not supported yet, ignored", args[0])
			return
		}
		p.errorf(st.pos, "'http-check expect' expects 'status CODE' or 'rstatus REGEX'")
		return
	}
	ce.Kind, ce.Value = args[0], args[1]
	if ce.Kind == "rstatus" {
		if _, err := regexp.Compile(ce.Value); err != nil {
			p.errorf(st.pos, "'http-check expect rstatus': invalid regex '%s': %v", ce.Value, err)
			return
		}
	} else {
		for _, code := range strings.Split(ce.Value, ",") {
			lo, hi, found := strings.Cut(code, "-")
			if !found {
				hi = lo
			}
			a, err1 := parseUint(lo, 100, 599)
			b, err2 := parseUint(hi, 100, 599)
			if err1 != nil || err2 != nil || a > b {
				p.errorf(st.pos, "'http-check expect status': invalid status '%s' (expected codes or ranges such as 200,300-399)", ce.Value)
				return
			}
		}
	}
	st.px.checkExpect = ce
}

// statsProxy reads `stats enable`, `stats uri URI` and `stats refresh T`;
// the other stats directives warn.
func (p *parser) statsProxy(st *stmt) {
	sp := &st.px.stats
	switch st.args[0] {
	case "enable":
		sp.Enable = true
		if sp.URI == "" {
			sp.URI = "/haproxy?stats" // HAProxy's default
		}
	case "uri":
		if len(st.args) != 2 || !strings.HasPrefix(st.args[1], "/") {
			p.errorf(st.pos, "'stats uri' expects one URI prefix starting with '/'")
			return
		}
		sp.Enable, sp.URI = true, st.args[1]
	case "refresh":
		if len(st.args) != 2 {
			p.errorf(st.pos, "'stats refresh' expects a time, e.g. 'stats refresh 10s'")
			return
		}
		d, err := parseTime(st.args[1])
		if err != nil {
			p.errorf(st.pos, "invalid time '%s' for 'stats refresh': %v", st.args[1], err)
			return
		}
		sp.Refresh = d
	default:
		p.warnf(st.pos, "'stats %s' is not supported yet, ignored", st.args[0])
		return
	}
	if sp.Pos.Line == 0 {
		sp.Pos = st.pos
	}
}

// condition reads "if|unless TERMS..." as found after a rule.
func (p *parser) condition(pos Pos, args []string, rule string) (*Cond, bool) {
	if args[0] != "if" && args[0] != "unless" {
		p.errorf(pos, "'%s': expected 'if' or 'unless' before a condition, found '%s'", rule, args[0])
		return nil, false
	}
	if len(args) == 1 {
		p.errorf(pos, "'%s': missing condition after '%s'", rule, args[0])
		return nil, false
	}
	return &Cond{Pos: pos, Unless: args[0] == "unless", Terms: append([]string(nil), args[1:]...)}, true
}

func (p *parser) sourceStmt(st *stmt) {
	if len(st.args) == 0 {
		p.errorf(st.pos, "'source' expects an address: source ADDR[:PORT[-PORT]] [usesrc ...] [interface NAME]")
		return
	}
	if !p.checkSourceArgs(st.pos, st.args[1:]) {
		return
	}
	st.px.source = Source{Pos: st.pos, Addr: st.args[0], Args: append([]string(nil), st.args[1:]...)}
}

// checkSourceArgs checks that usesrc and interface have their value.
func (p *parser) checkSourceArgs(pos Pos, args []string) bool {
	for i, a := range args {
		if (a == "usesrc" || a == "interface") && i+1 >= len(args) {
			p.errorf(pos, "'source ... %s' expects a value", a)
			return false
		}
	}
	return true
}

// Log facilities, levels and formats HAProxy accepts.
var (
	logFacilities = []string{"kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
		"auth2", "ftp", "ntp", "audit", "alert", "cron2",
		"local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7"}
	logLevels  = []string{"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"}
	logFormats = []string{"local", "rfc3164", "rfc5424", "priority", "short", "timed", "iso", "raw"}
)

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// logStmt reads `log global` or `log TARGET [len N] [format F]
// [sample R:S] FACILITY [LEVEL [MINLEVEL]]`.
func (p *parser) logStmt(pos Pos, args []string, inGlobal bool) (Log, bool) {
	if len(args) == 0 {
		p.errorf(pos, "'log' expects 'global' or a target and a facility: log TARGET [len N] [format F] FACILITY [LEVEL [MINLEVEL]]")
		return Log{}, false
	}
	if args[0] == "global" {
		if inGlobal {
			p.errorf(pos, "'log global' is only meaningful in proxies; in the 'global' section give a target and a facility")
			return Log{}, false
		}
		if len(args) > 1 {
			p.errorf(pos, "'log global' takes no other argument, found '%s'", args[1])
			return Log{}, false
		}
		return Log{Pos: pos, Global: true}, true
	}
	i := 1
	for i+1 < len(args) {
		switch args[i] {
		case "len":
			if _, err := parseUint(args[i+1], 1, math.MaxInt32); err != nil {
				p.errorf(pos, "invalid value '%s' for 'log ... len': %v", args[i+1], err)
				return Log{}, false
			}
		case "format":
			if !contains(logFormats, args[i+1]) {
				p.errorf(pos, "unknown log format '%s' (expected one of: %s)%s", args[i+1],
					strings.Join(logFormats, ", "), didYouMean(args[i+1], logFormats))
				return Log{}, false
			}
		case "sample":
		default:
			goto facility
		}
		i += 2
	}
facility:
	if i >= len(args) {
		p.errorf(pos, "'log %s' expects a facility (e.g. local0)", args[0])
		return Log{}, false
	}
	if !contains(logFacilities, args[i]) {
		p.errorf(pos, "unknown log facility '%s'%s", args[i], didYouMean(args[i], logFacilities))
		return Log{}, false
	}
	if len(args) > i+3 {
		p.errorf(pos, "'log': unexpected argument '%s' after the facility, level and minimum level", args[i+3])
		return Log{}, false
	}
	for _, lvl := range args[i+1:] {
		if !contains(logLevels, lvl) {
			p.errorf(pos, "unknown log level '%s' (expected one of: %s)%s", lvl, strings.Join(logLevels, ", "),
				didYouMean(lvl, logLevels))
			return Log{}, false
		}
	}
	return Log{Pos: pos, Args: append([]string(nil), args...)}, true
}

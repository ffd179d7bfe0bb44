package config

import (
	"errors"
	"math"
	"net"
	"strconv"
	"strings"
)

// maxBindPorts bounds the listening sockets of one proxy (port ranges expand
// to one socket per port).
const maxBindPorts = 65535

// bind reads `bind ADDR[,ADDR...] [param...]`.
func (p *parser) bind(st *stmt) {
	if len(st.args) == 0 {
		p.errorf(st.pos, "'bind' expects at least one address, e.g. 'bind :80' or 'bind 127.0.0.1:8080'")
		return
	}
	var (
		addrs []hostPort
		count int
		ok    = true
	)
	for _, a := range strings.Split(st.args[0], ",") {
		if a == "" {
			p.errorf(st.pos, "empty address in 'bind %s'", st.args[0])
			ok = false
			continue
		}
		hp, err := splitAddr(a, true)
		if err != nil {
			p.errorf(st.pos, "invalid bind address '%s': %v", a, err)
			ok = false
			continue
		}
		if hp.ambiguous {
			p.warnf(st.pos, "bind address '%s' read as %s; write IPv6 addresses in brackets to avoid the ambiguity",
				a, net.JoinHostPort(hp.host, strconv.Itoa(hp.port)))
		}
		addrs = append(addrs, hp)
		count += hp.portEnd - hp.port + 1
	}
	if total := len(st.px.binds) + count; total > maxBindPorts {
		p.errorf(st.pos, "too many listening sockets: %s '%s' would have %d (at most %d)", st.kind, st.px.name, total, maxBindPorts)
		return
	}
	for i := 1; i < len(st.args); {
		name := st.args[i]
		n, known := bindParams[name]
		if !known {
			hint := didYouMean(name, keys(bindParams))
			if _, err := splitAddr(name, true); err == nil {
				hint = "; several addresses are separated by commas, without spaces"
			}
			p.errorf(st.pos, "unknown 'bind' parameter '%s'%s", name, hint)
			return
		}
		if i+n >= len(st.args) && n > 0 {
			p.errorf(st.pos, "'bind' parameter '%s' expects a value", name)
			return
		}
		p.warnf(st.pos, "'bind' parameter '%s' is not supported yet, ignored", name)
		i += 1 + n
	}
	if ok {
		for _, hp := range addrs {
			st.px.binds = append(st.px.binds, hp.binds(st.pos)...)
		}
	}
}

// server reads `server NAME ADDR [param...]`.
func (p *parser) server(st *stmt) {
	if len(st.args) == 0 {
		p.errorf(st.pos, "'server' expects a name and an address: server NAME HOST:PORT [param...]")
		return
	}
	name := st.args[0]
	if !p.checkName(st.pos, "server", name) {
		return
	}
	if len(st.args) < 2 {
		p.errorf(st.pos, "'server %s' expects an address (HOST:PORT)", name)
		return
	}
	addr, hp, err := serverAddr(st.args[1])
	if err != nil {
		p.errorf(st.pos, "invalid address '%s' for server '%s': %v", st.args[1], name, err)
		return
	}
	if hp.ambiguous {
		p.warnf(st.pos, "address '%s' of server '%s' read as %s; write IPv6 addresses in brackets to avoid the ambiguity",
			st.args[1], name, addr)
	}
	srv := st.px.defServer
	srv.Source = cloneSource(srv.Source)
	srv.Pos, srv.Name, srv.Addr = st.pos, name, addr
	if !p.serverParams(st.pos, &srv, st.args[2:], "server") {
		return
	}
	// As HAProxy does: a minconn above maxconn (or without maxconn) raises
	// maxconn, which disables the dynamic limit.
	if srv.MinConn > srv.MaxConn {
		srv.MaxConn = srv.MinConn
	}
	for _, other := range st.px.servers {
		if other.Name == name {
			p.errorf(st.pos, "server '%s' is already declared at %s", name, other.Pos)
			return
		}
	}
	st.px.servers = append(st.px.servers, &srv)
}

// serverParams applies server (or default-server) parameters to srv. It
// reports every problem and returns false when one was an error.
func (p *parser) serverParams(pos Pos, srv *Server, args []string, kw string) bool {
	ok := true
	for i := 0; i < len(args); {
		name := args[i]
		n, known := serverParams[name]
		if !known {
			p.errorf(pos, "unknown '%s' parameter '%s'%s", kw, name, didYouMean(name, keys(serverParams)))
			return false
		}
		if i+n >= len(args) && n > 0 {
			p.errorf(pos, "'%s' parameter '%s' expects a value", kw, name)
			return false
		}
		if name == "source" {
			next, good := p.serverSource(pos, srv, args, i)
			ok = ok && good
			i = next
			continue
		}
		val := ""
		if n > 0 {
			val = args[i+1]
		}
		i += 1 + n
		intVal := func(lo, hi int) (int, bool) {
			v, err := parseUint(val, lo, hi)
			if err != nil {
				p.errorf(pos, "invalid value '%s' for '%s' parameter '%s': %v", val, kw, name, err)
				ok = false
				return 0, false
			}
			return v, true
		}
		switch name {
		case "maxconn":
			if v, good := intVal(0, math.MaxInt32); good {
				srv.MaxConn = v
			}
		case "minconn":
			if v, good := intVal(0, math.MaxInt32); good {
				srv.MinConn = v
			}
		case "maxqueue":
			if v, good := intVal(0, math.MaxInt32); good {
				srv.MaxQueue = v
			}
		case "weight":
			if v, good := intVal(0, 256); good {
				srv.Weight = v
			}
		case "rise":
			if v, good := intVal(1, math.MaxInt32); good {
				srv.Rise = v
			}
		case "fall":
			if v, good := intVal(1, math.MaxInt32); good {
				srv.Fall = v
			}
		case "inter", "fastinter", "downinter":
			d, err := parseTime(val)
			if err == nil && d == 0 {
				err = errors.New("must be greater than 0")
			}
			if err != nil {
				p.errorf(pos, "invalid time '%s' for '%s' parameter '%s': %v", val, kw, name, err)
				ok = false
				continue
			}
			switch name {
			case "inter":
				srv.Inter = d
			case "fastinter":
				srv.FastInter = d
			default:
				srv.DownInter = d
			}
		case "check":
			srv.Check = true
		case "no-check":
			srv.Check = false
		case "backup":
			srv.Backup = true
		case "no-backup":
			srv.Backup = false
		case "disabled":
			srv.Disabled = true
		case "enabled":
			srv.Disabled = false
		default:
			p.warnf(pos, "'%s' parameter '%s' is not supported yet, ignored", kw, name)
		}
	}
	return ok
}

// serverSource reads `source ADDR [usesrc X] [interface X] [more...]` on a
// server line: the words that follow up to the next server parameter are
// kept in Source.Args (usesrc and interface always take their value, even
// when it looks like a parameter).
func (p *parser) serverSource(pos Pos, srv *Server, args []string, i int) (int, bool) {
	addr := args[i+1]
	if addr == "" {
		p.errorf(pos, "'source' expects an address")
		return i + 2, false
	}
	var extra []string
	j := i + 2
	for j < len(args) {
		w := args[j]
		if w == "usesrc" || w == "interface" {
			if j+1 >= len(args) {
				p.errorf(pos, "'source ... %s' expects a value", w)
				return len(args), false
			}
			extra = append(extra, w, args[j+1])
			j += 2
			continue
		}
		if _, isParam := serverParams[w]; isParam {
			break
		}
		extra = append(extra, w)
		j++
	}
	srv.Source = Source{Pos: pos, Addr: addr, Args: extra}
	return j, true
}

// balanceAlgos are the algorithms sluice implements; balanceKnown the ones
// HAProxy has beyond those.
var (
	balanceAlgos = []string{"roundrobin", "static-rr", "leastconn", "first", "source", "uri", "url_param", "hdr", "random"}
	balanceKnown = []string{"rdp-cookie", "hash"}
)

// l7Algos need HTTP.
var l7Algos = map[string]bool{"uri": true, "url_param": true, "hdr": true}

// balanceStmt reads `balance ALGO [ARGS]`.
func (p *parser) balanceStmt(st *stmt) {
	if len(st.args) == 0 {
		p.errorf(st.pos, "'balance' expects an algorithm (%s)", strings.Join(balanceAlgos, ", "))
		return
	}
	algo, rest := st.args[0], st.args[1:]
	var b Balance
	switch {
	case algo == "roundrobin", algo == "static-rr", algo == "leastconn", algo == "first", algo == "source":
		if len(rest) > 0 {
			p.errorf(st.pos, "'balance %s' takes no argument, found '%s'", algo, rest[0])
			return
		}
		b = Balance{Algo: algo}
	case algo == "uri":
		for i := 0; i < len(rest); i++ {
			switch rest[i] {
			case "whole", "path-only":
			case "len", "depth":
				if i+1 >= len(rest) {
					p.errorf(st.pos, "'balance uri %s' expects a positive integer", rest[i])
					return
				}
				if _, err := parseUint(rest[i+1], 1, math.MaxInt32); err != nil {
					p.errorf(st.pos, "invalid value '%s' for 'balance uri %s': %v", rest[i+1], rest[i], err)
					return
				}
				i++
			default:
				p.errorf(st.pos, "unknown 'balance uri' argument '%s' (expected whole, len N, depth N or path-only)%s",
					rest[i], didYouMean(rest[i], []string{"whole", "len", "depth", "path-only"}))
				return
			}
		}
		b = Balance{Algo: algo, Args: rest}
	case algo == "url_param":
		if len(rest) == 0 || rest[0] == "" {
			p.errorf(st.pos, "'balance url_param' expects a parameter name")
			return
		}
		if len(rest) > 1 {
			if rest[1] != "check_post" || len(rest) > 3 {
				p.errorf(st.pos, "'balance url_param %s': unexpected argument '%s' (expected check_post)", rest[0], rest[1])
				return
			}
			p.warnf(st.pos, "'balance url_param ... check_post' is not supported yet; only the query string is used")
		}
		b = Balance{Algo: algo, Args: rest[:1]}
	case strings.HasPrefix(algo, "hdr(") || algo == "hdr":
		name, ok := strings.CutSuffix(strings.TrimPrefix(algo, "hdr("), ")")
		if !ok || name == "" || algo == "hdr" {
			p.errorf(st.pos, "'balance hdr' expects a header name in parentheses, e.g. 'balance hdr(Host)'")
			return
		}
		if len(rest) > 1 || (len(rest) == 1 && rest[0] != "use_domain_only") {
			p.errorf(st.pos, "'balance %s': unexpected argument '%s' (expected use_domain_only)", algo, rest[len(rest)-1])
			return
		}
		b = Balance{Algo: "hdr", Args: append([]string{name}, rest...)}
	case algo == "random" || strings.HasPrefix(algo, "random("):
		if len(rest) > 0 {
			p.errorf(st.pos, "'balance %s' takes no argument, found '%s'", algo, rest[0])
			return
		}
		b = Balance{Algo: "random"}
		if algo != "random" {
			n, ok := strings.CutSuffix(strings.TrimPrefix(algo, "random("), ")")
			if _, err := parseUint(n, 1, math.MaxInt32); !ok || err != nil {
				p.errorf(st.pos, "invalid 'balance %s': expected random or random(N) with N >= 1", algo)
				return
			}
			b.Args = []string{n}
		}
	case algo == "rdp-cookie" || strings.HasPrefix(algo, "rdp-cookie(") || algo == "hash":
		p.warnf(st.pos, "'balance %s' is not supported yet, ignored", algo)
		return
	default:
		p.errorf(st.pos, "unknown balance algorithm '%s'%s", algo, didYouMean(algo, append(balanceAlgos, balanceKnown...)))
		return
	}
	st.px.balance = b
}

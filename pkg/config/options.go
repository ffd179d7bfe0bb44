package config

import (
	"math"
	"net/netip"
	"strings"
)

// implementedOptions are the `option` names sluice acts on; they can all be
// negated with "no option" and reset with "default option", even the ones
// HAProxy does not let you negate (httplog, forwardfor).
var implementedOptions = map[string]bool{
	"httplog": true, "dontlognull": true, "forwardfor": true,
	"http-keep-alive": true, "http-server-close": true, "redispatch": true,
	"httpchk": true, "tcplog": true,
	"kernel-counters": true, "kernel-splice": true, "kernel-steer": true,
}

// option handles `[no|default] option NAME [args]`.
func (p *parser) option(pos Pos, px *proxy, kind secKind, mod string, args []string) {
	if len(args) == 0 {
		p.errorf(pos, "'option' expects an option name")
		return
	}
	name, args := args[0], args[1:]
	info, ok := options[name]
	if !ok {
		p.errorf(pos, "unknown option '%s' in '%s' section%s", name, kind, suggestIn(name, optionCandidates(kind), keys(options)))
		return
	}
	display := "option " + name
	if !p.checkCaps(pos, display, info.caps, kind, px) {
		return
	}
	if !implementedOptions[name] {
		if mod != "" && !info.negatable {
			p.errorf(pos, "'%s %s': option '%s' cannot be prefixed by '%s'", mod, display, name, mod)
			return
		}
		p.warnf(pos, "'%s' is not supported yet, ignored", display)
		return
	}
	if mod != "" {
		if len(args) > 0 {
			p.errorf(pos, "'%s %s' takes no argument, found '%s'", mod, display, args[0])
			return
		}
		p.negateOption(px, name, mod)
		return
	}
	o := &px.opts
	switch name {
	case "httplog":
		if len(args) > 0 {
			if args[0] != "clf" || len(args) > 1 {
				p.errorf(pos, "'option httplog' takes no argument other than 'clf', found '%s'", args[len(args)-1])
				return
			}
			p.warnf(pos, "'option httplog clf' is not supported yet; the default HTTP log format is used")
		}
		o.httpLog, o.httpLogPos = triOn, pos
	case "dontlognull":
		if p.noArgs(pos, display, args) {
			o.dontLogNull = triOn
		}
	case "tcplog":
		if len(args) > 0 && !(args[0] == "clf" && len(args) == 1) {
			p.errorf(pos, "'option tcplog' takes no argument other than 'clf', found '%s'", args[len(args)-1])
			return
		}
		o.tcpLog = triOn
	case "kernel-counters", "kernel-splice", "kernel-steer":
		if p.noArgs(pos, display, args) {
			*o.kernelOpt(name) = triOn
		}
	case "httpchk":
		// option httpchk [[METHOD] URI [VERSION]], HAProxy's defaults
		// OPTIONS / HTTP/1.0.
		m, u, v := "OPTIONS", "/", "HTTP/1.0"
		switch len(args) {
		case 0:
		case 1:
			u = args[0]
		case 2:
			m, u = args[0], args[1]
		case 3:
			m, u, v = args[0], args[1], args[2]
		default:
			p.errorf(pos, "'option httpchk' takes at most METHOD URI VERSION, found '%s'", args[3])
			return
		}
		o.httpChk, o.chkMethod, o.chkURI, o.chkVersion = triOn, m, u, v
	case "http-keep-alive":
		if p.noArgs(pos, display, args) {
			o.conn = connKeepAlive
		}
	case "http-server-close":
		if p.noArgs(pos, display, args) {
			o.conn = connServerClose
		}
	case "redispatch":
		// HAProxy accepts an optional interval: redispatch on every Nth retry.
		if len(args) > 1 {
			p.errorf(pos, "'option redispatch' takes at most one argument (an interval), found '%s'", args[1])
			return
		}
		if len(args) == 1 {
			if _, err := parseUint(strings.TrimPrefix(args[0], "-"), 0, math.MaxInt32); err != nil {
				p.errorf(pos, "invalid interval '%s' for 'option redispatch': %v", args[0], err)
				return
			}
			p.warnf(pos, "'option redispatch <interval>' is not supported yet; redispatching on the last retry")
		}
		o.redispatch = triOn
	case "forwardfor":
		p.forwardFor(pos, o, args)
	}
}

func (p *parser) noArgs(pos Pos, kw string, args []string) bool {
	if len(args) > 0 {
		p.errorf(pos, "'%s' takes no argument, found '%s'", kw, args[0])
		return false
	}
	return true
}

func (p *parser) negateOption(px *proxy, name, mod string) {
	o := &px.opts
	v := triOff
	if mod == "default" {
		v = triUnset
	}
	switch name {
	case "httplog":
		o.httpLog = v
	case "dontlognull":
		o.dontLogNull = v
	case "tcplog":
		o.tcpLog = v
	case "kernel-counters", "kernel-splice", "kernel-steer":
		*o.kernelOpt(name) = v
	case "redispatch":
		o.redispatch = v
	case "forwardfor":
		o.forwardFor, o.ffExcept, o.ffHeader, o.ffIfNone = v, "", "", false
	case "http-keep-alive", "http-server-close":
		// Negating either leaves HAProxy's default mode, keep-alive.
		o.conn = connUnset
	case "httpchk":
		o.httpChk, o.chkMethod, o.chkURI, o.chkVersion = v, "", "", ""
	}
}

// forwardFor reads `option forwardfor [except NETWORK] [header NAME]
// [if-none]`.
func (p *parser) forwardFor(pos Pos, o *optState, args []string) {
	var except, header string
	ifNone := false
	for i := 0; i < len(args); i++ {
		switch a := args[i]; a {
		case "except", "header":
			if i+1 >= len(args) || args[i+1] == "" {
				p.errorf(pos, "'option forwardfor %s' expects a value", a)
				return
			}
			i++
			if a == "except" {
				if !validNetwork(args[i]) {
					p.errorf(pos, "invalid network '%s' for 'option forwardfor except' (expected an address or ADDR/MASK)", args[i])
					return
				}
				except = args[i]
			} else {
				header = args[i]
			}
		case "if-none":
			ifNone = true
		default:
			p.errorf(pos, "unknown 'option forwardfor' argument '%s' (expected except, header or if-none)%s",
				a, didYouMean(a, []string{"except", "header", "if-none"}))
			return
		}
	}
	o.forwardFor, o.forwardForPos = triOn, pos
	o.ffExcept, o.ffHeader, o.ffIfNone = except, header, ifNone
}

// validNetwork accepts an address, ADDR/PREFIXLEN or ADDR/DOTTED.MASK.
func validNetwork(s string) bool {
	addr, mask, hasMask := strings.Cut(s, "/")
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	if !hasMask {
		return true
	}
	if _, err := netip.ParsePrefix(s); err == nil {
		return true
	}
	m, err := netip.ParseAddr(mask)
	return err == nil && a.Is4() && m.Is4()
}

// timeout handles `timeout NAME VALUE`.
func (p *parser) timeout(pos Pos, px *proxy, kind secKind, args []string) {
	if len(args) == 0 {
		p.errorf(pos, "'timeout' expects a timeout name and a value, e.g. 'timeout connect 5s'")
		return
	}
	name := args[0]
	c, ok := timeouts[name]
	if !ok {
		var cands []string
		for n, c := range timeouts {
			if c.allows(kind) {
				cands = append(cands, n)
			}
		}
		p.errorf(pos, "unknown timeout '%s' in '%s' section%s", name, kind, suggestIn(name, cands, keys(timeouts)))
		return
	}
	st := &stmt{pos: pos, kw: "timeout " + name, args: args[1:], px: px, kind: kind}
	if !p.checkCaps(pos, st.kw, c, kind, px) {
		return
	}
	d, ok := p.timeArg(st)
	if !ok {
		return
	}
	t := &px.timeouts
	switch name {
	case "check":
		t.Check = d
	case "client":
		t.Client = d
	case "client-fin":
		t.ClientFin = d
	case "connect":
		t.Connect = d
	case "http-keep-alive":
		t.HTTPKeepAlive = d
	case "http-request":
		t.HTTPRequest = d
	case "queue":
		t.Queue = d
	case "server":
		t.Server = d
	case "server-fin":
		t.ServerFin = d
	case "tunnel":
		t.Tunnel = d
	default:
		p.warnf(pos, "'timeout %s' is not supported yet, ignored", name)
	}
}

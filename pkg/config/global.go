package config

import (
	"math"
	"strconv"
	"strings"
)

// globalStmt handles a line of the global section.
func (p *parser) globalStmt(pos Pos, words []string) {
	kw, args := words[0], words[1:]
	st := &stmt{pos: pos, kw: kw, args: args, kind: secGlobal}
	switch kw {
	case "maxconn":
		if n, ok := p.intArg(st, 0, math.MaxInt32); ok {
			p.global.MaxConn = n
		}
		return
	case "log":
		if l, ok := p.logStmt(pos, args, true); ok {
			p.global.Logs = append(p.global.Logs, l)
		}
		return
	case "stats":
		p.statsGlobal(st)
		return
	case "nbthread":
		if n, ok := p.intArg(st, 1, 4096); ok {
			p.global.NbThread = n
		}
		return
	case "kernel-cgroup", "kernel-steer-cgroup":
		// sluice extensions: the cgroup v2 directory the kernel programs
		// attach to (counting: the daemon's own by default; steering: the
		// cgroup v2 root, i.e. the whole host, by default).
		if path, ok := p.oneArg(st, "a cgroup v2 directory"); ok {
			if !strings.HasPrefix(path, "/") {
				p.errorf(pos, "'%s' expects an absolute path, not '%s'", kw, path)
				return
			}
			if kw == "kernel-cgroup" {
				p.global.KernelCgroup = path
			} else {
				p.global.KernelSteerCgroup = path
			}
		}
		return
	case "hard-stop-after":
		if d, ok := p.timeArg(st); ok {
			p.global.HardStopAfter = d
		}
		return
	}
	if msg, ok := removedKeywords[kw]; ok {
		p.errorf(pos, "%s", msg)
		return
	}
	if globalKeywords[kw] {
		p.warnf(pos, "'%s' is not supported yet, ignored", kw)
		return
	}
	for _, prefix := range globalKeywordPrefixes {
		if strings.HasPrefix(kw, prefix) && len(kw) > len(prefix) {
			p.warnf(pos, "'%s' is not supported yet, ignored", kw)
			return
		}
	}
	cands := append(keys(globalKeywords), sectionKeywords...)
	cands = append(cands, keys(ignoredSections)...)
	p.errorf(pos, "unknown keyword '%s' in 'global' section%s", kw, didYouMean(kw, cands))
}

// statsGlobal reads `stats socket PATH [mode OCTAL] [level user|operator|admin]`;
// the other global stats keywords warn.
func (p *parser) statsGlobal(st *stmt) {
	if len(st.args) == 0 {
		p.errorf(st.pos, "'stats' expects a keyword, e.g. 'stats socket /run/sluice.sock mode 600 level admin'")
		return
	}
	if st.args[0] != "socket" {
		p.warnf(st.pos, "'stats %s' is not supported yet, ignored", st.args[0])
		return
	}
	args := st.args[1:]
	if len(args) == 0 {
		p.errorf(st.pos, "'stats socket' expects a path")
		return
	}
	ss := StatsSocket{Pos: st.pos, Path: args[0], Mode: 0o600, Level: "operator"}
	if strings.HasPrefix(ss.Path, "ipv4@") || strings.HasPrefix(ss.Path, "ipv6@") || strings.Contains(ss.Path, ":") && !strings.HasPrefix(ss.Path, "/") {
		p.errorf(st.pos, "'stats socket %s': only unix socket paths are supported (nothing admin listens on the network)", ss.Path)
		return
	}
	for i := 1; i < len(args); i++ {
		switch args[i] {
		case "mode":
			if i+1 >= len(args) {
				p.errorf(st.pos, "'stats socket' parameter 'mode' expects an octal mode such as 600")
				return
			}
			m, err := strconv.ParseUint(args[i+1], 8, 32)
			if err != nil || m > 0o777 {
				p.errorf(st.pos, "'stats socket' parameter 'mode': invalid octal mode '%s'", args[i+1])
				return
			}
			ss.Mode = uint32(m)
			i++
		case "level":
			if i+1 >= len(args) {
				p.errorf(st.pos, "'stats socket' parameter 'level' expects user, operator or admin")
				return
			}
			switch args[i+1] {
			case "user", "operator", "admin":
				ss.Level = args[i+1]
			default:
				p.errorf(st.pos, "'stats socket' parameter 'level': unknown level '%s' (expected user, operator or admin)%s",
					args[i+1], didYouMean(args[i+1], []string{"user", "operator", "admin"}))
				return
			}
			i++
		default:
			p.warnf(st.pos, "'stats socket' parameter '%s' is not supported yet, ignored", args[i])
			if i+1 < len(args) && args[i] != "expose-fd" {
				// Most bind parameters take a value; skip it if it is not
				// a known keyword of ours.
				if next := args[i+1]; next != "mode" && next != "level" {
					i++
				}
			}
		}
	}
	p.global.StatsSockets = append(p.global.StatsSockets, ss)
}

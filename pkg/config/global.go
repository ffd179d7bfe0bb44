package config

import (
	"math"
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
	case "nbthread":
		if n, ok := p.intArg(st, 1, 4096); ok {
			p.global.NbThread = n
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

package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
)

// Parse reads one configuration. name is used in positions and messages.
//
// The returned Config is never nil: when the error is non-nil (always of type
// Errors, every problem found, each "FILE:LINE: message") the Config is
// incomplete and must not be used, but its Warnings can still be shown.
// Environment variables referenced in double quotes come from the process
// environment.
func Parse(name string, data []byte) (*Config, error) {
	return parseSources([]source{{name: name, data: data}}, os.LookupEnv)
}

// Load reads and parses several files as one configuration, in order, the
// way `haproxy -f a -f b` does: defaults apply to the proxies that follow
// them, even in a later file, and a section may continue into the next file.
// Positions keep their own file name. Errors and warnings are as for Parse.
func Load(files ...string) (*Config, error) {
	if len(files) == 0 {
		return &Config{}, Errors{{Msg: "no configuration file given"}}
	}
	var (
		srcs []source
		errs Errors
	)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			errs = append(errs, Diag{Pos: Pos{File: f}, Msg: "cannot read configuration file: " + err.Error()})
			continue
		}
		srcs = append(srcs, source{name: f, data: data})
	}
	if len(errs) > 0 {
		return &Config{}, errs
	}
	return parseSources(srcs, os.LookupEnv)
}

type source struct {
	name string
	data []byte
}

// secKind is the kind of the section being parsed.
type secKind int

const (
	secNone secKind = iota
	secGlobal
	secDefaults
	secFrontend
	secBackend
	secListen
	secIgnored // a section HAProxy has and sluice skips (userlist, peers...)
)

func (k secKind) String() string {
	switch k {
	case secGlobal:
		return "global"
	case secDefaults:
		return "defaults"
	case secFrontend:
		return "frontend"
	case secBackend:
		return "backend"
	case secListen:
		return "listen"
	}
	return "none"
}

var sectionKinds = map[string]secKind{
	"global":   secGlobal,
	"defaults": secDefaults,
	"frontend": secFrontend,
	"backend":  secBackend,
	"listen":   secListen,
}

type section struct {
	kind secKind
	name string // the section's name, or its kind when it has none ($.SECTION)
	px   *proxy // for defaults, frontend, backend and listen
}

type parser struct {
	env     func(string) (string, bool)
	fileIdx map[string]int
	errs    []Diag
	warns   []Diag

	global     Global
	globalSeen bool

	sec           section
	lastDefaults  *proxy
	namedDefaults map[string][]*proxy
	proxies       []*proxy // frontends, backends and listens in order
	cond          []condLevel
}

func parseSources(srcs []source, env func(string) (string, bool)) (*Config, error) {
	p := &parser{
		env:           env,
		fileIdx:       map[string]int{},
		namedDefaults: map[string][]*proxy{},
	}
	for _, s := range srcs {
		p.parseFile(s.name, s.data)
	}
	cfg := p.build()
	if len(p.errs) > 0 {
		return cfg, Errors(p.errs)
	}
	return cfg, nil
}

func (p *parser) errorf(pos Pos, format string, args ...any) {
	p.errs = append(p.errs, Diag{Pos: pos, Msg: escapeControls(fmt.Sprintf(format, args...))})
}

func (p *parser) warnf(pos Pos, format string, args ...any) {
	p.warns = append(p.warns, Diag{Pos: pos, Msg: escapeControls(fmt.Sprintf(format, args...))})
}

// escapeControls keeps a message on one line: words quoted in messages may
// hold control characters written as escapes (\n, \x00...).
func escapeControls(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func (p *parser) parseFile(name string, data []byte) {
	if _, ok := p.fileIdx[name]; !ok {
		p.fileIdx[name] = len(p.fileIdx)
	}
	p.cond = p.cond[:0] // conditional blocks do not span files
	env := &lexEnv{file: name, lookup: p.env}
	for i, raw := range splitLines(data) {
		pos := Pos{File: name, Line: i + 1}
		env.line, env.section = pos.Line, p.sec.name
		words, err := lexLine(raw, env)
		if err != nil {
			p.errorf(pos, "%v", err)
			continue
		}
		if len(words) == 0 {
			continue
		}
		if len(words[0]) > 1 && words[0][0] == '.' {
			p.directive(pos, words)
			continue
		}
		if !p.condActive() {
			continue
		}
		p.statement(pos, words)
	}
	for _, c := range p.cond {
		p.errorf(c.pos, "'.if' has no matching '.endif' before the end of the file")
	}
	p.cond = p.cond[:0]
}

func (p *parser) statement(pos Pos, words []string) {
	kw := words[0]
	if k, ok := sectionKinds[kw]; ok {
		p.startSection(pos, k, words[1:])
		return
	}
	if ignoredSections[kw] {
		p.warnf(pos, "'%s' sections are not supported yet, ignored", kw)
		p.sec = section{kind: secIgnored, name: kw}
		if len(words) > 1 {
			p.sec.name = words[1]
		}
		return
	}
	switch p.sec.kind {
	case secNone:
		cands := append(keys(ignoredSections), sectionKeywords...)
		if s := suggest(kw, cands); s != "" {
			p.errorf(pos, "unknown keyword '%s' out of section; did you mean '%s'?", kw, s)
		} else {
			p.errorf(pos, "'%s' is outside of any section; start one first with 'global', 'defaults', "+
				"'frontend', 'backend' or 'listen'", kw)
		}
	case secIgnored:
	case secGlobal:
		p.globalStmt(pos, words)
	default:
		p.proxyStmt(pos, words)
	}
}

// invalidNameChar reports the first character HAProxy does not permit in a proxy,
// server or ACL name: names are made of letters, digits, '-', '_', '.' and
// ':'.
func invalidNameChar(name string) (rune, bool) {
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == '-', r == '_', r == '.', r == ':':
		default:
			return r, true
		}
	}
	return 0, false
}

func (p *parser) checkName(pos Pos, what, name string) bool {
	if name == "" {
		p.errorf(pos, "%s name must not be empty", what)
		return false
	}
	if r, bad := invalidNameChar(name); bad {
		p.errorf(pos, "character %q is not permitted in %s name '%s' (use letters, digits, '-', '_', '.' and ':')",
			r, what, name)
		return false
	}
	return true
}

func (p *parser) startSection(pos Pos, kind secKind, args []string) {
	if kind == secGlobal {
		if len(args) > 0 {
			p.errorf(pos, "'global' takes no argument, found '%s'", args[0])
		}
		if !p.globalSeen {
			p.global.Pos = pos
			p.globalSeen = true
		}
		p.sec = section{kind: secGlobal, name: "global"}
		return
	}

	name, from := "", ""
	ok := true
	if kind == secDefaults {
		if len(args) > 0 && args[0] != "from" {
			name, args = args[0], args[1:]
		}
	} else if len(args) == 0 {
		p.errorf(pos, "'%s' expects a name", kind)
		ok = false
	} else {
		name, args = args[0], args[1:]
		// A bad name is reported but the section is kept, so that its
		// content is still checked; an empty one cannot be referenced.
		ok = p.checkName(pos, kind.String(), name) || name != ""
	}
	if len(args) > 0 {
		switch {
		case args[0] == "from" && len(args) == 1:
			p.errorf(pos, "'from' expects the name of a defaults section")
		case args[0] == "from":
			from = args[1]
			if len(args) > 2 {
				p.errorf(pos, "unexpected argument '%s' after 'from %s'", args[2], from)
			}
		case kind == secListen || kind == secFrontend:
			p.errorf(pos, "unexpected argument '%s' after the %s name; please use the 'bind' keyword for listening addresses",
				args[0], kind)
		default:
			p.errorf(pos, "unexpected argument '%s' after the %s name (expected 'from NAME')", args[0], kind)
		}
	}

	// A proxy starts from the last defaults section; a defaults section
	// starts from the built-in defaults. `from` overrides both.
	base := p.lastDefaults
	if kind == secDefaults {
		base = nil
	}
	if from != "" {
		base = p.findDefaults(pos, from)
	}
	px := base.inherit()
	px.kind, px.name, px.pos = kind, name, pos
	p.sec = section{kind: kind, name: name, px: px}
	if name == "" {
		p.sec.name = kind.String()
	}

	if kind == secDefaults {
		p.lastDefaults = px
		if name != "" {
			p.namedDefaults[name] = append(p.namedDefaults[name], px)
		}
		return
	}
	if !ok {
		px.discard = true
		return
	}
	for _, other := range p.proxies {
		if other.discard || other.name != name {
			continue
		}
		if kind == secListen || other.kind == secListen || other.kind == kind {
			p.errorf(pos, "%s '%s' has the same name as %s '%s' declared at %s", kind, name, other.kind, name, other.pos)
			px.discard = true
			break
		}
	}
	p.proxies = append(p.proxies, px)
}

// findDefaults resolves `from NAME`; on error it reports and returns nil
// (built-in defaults).
func (p *parser) findDefaults(pos Pos, name string) *proxy {
	list := p.namedDefaults[name]
	switch {
	case len(list) == 0:
		p.errorf(pos, "defaults section '%s' not found (it must be declared before use)%s",
			name, didYouMean(name, keys(p.namedDefaults)))
		return nil
	case len(list) > 1:
		p.errorf(pos, "defaults section name '%s' is ambiguous: declared at %s and %s", name, list[0].pos, list[1].pos)
		return nil
	}
	if r, bad := invalidNameChar(name); bad {
		p.errorf(pos, "character %q is not permitted in defaults name '%s' referenced by 'from'", r, name)
	}
	return list[0]
}

// sortDiags orders diagnostics by file (in load order) and line, keeping
// discovery order within a line, and drops exact duplicates.
func (p *parser) sortDiags(d []Diag) []Diag {
	sort.SliceStable(d, func(i, j int) bool {
		fi, fj := p.fileIdx[d[i].Pos.File], p.fileIdx[d[j].Pos.File]
		if fi != fj {
			return fi < fj
		}
		return d[i].Pos.Line < d[j].Pos.Line
	})
	out := d[:0]
	seen := map[Diag]bool{}
	for _, x := range d {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// quoteList formats names for messages: 'a', 'b' and 'c'.
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = "'" + n + "'"
	}
	switch len(q) {
	case 0:
		return ""
	case 1:
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " and " + q[len(q)-1]
}

package route

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/userspace/proxy/h1"
)

// acl is a named ACL: the OR of every `acl NAME ...` line with that name.
type acl struct {
	name  string
	exprs []*expr
}

func (a *acl) match(req *h1.Request) bool {
	for _, e := range a.exprs {
		if e.match(req) {
			return true
		}
	}
	return false
}

// ACLSet is the compiled ACLs of one section, ready to build conditions.
// It is immutable once built and safe for concurrent use.
type ACLSet struct {
	acls  map[string]*acl
	names []string // user-defined names, sorted, for suggestions
}

// NewACLSet compiles the `acl` lines of a section. Lines sharing a name are
// ORed. On error it still returns the set (without the broken lines) so the
// caller can go on checking conditions and report every error at once; the
// error is a config.Errors.
func NewACLSet(acls []config.ACL) (*ACLSet, error) {
	s, errs := newACLSet(acls)
	if len(errs) > 0 {
		return s, errs
	}
	return s, nil
}

func newACLSet(acls []config.ACL) (*ACLSet, config.Errors) {
	var errs config.Errors
	s := &ACLSet{acls: make(map[string]*acl)}
	for i := range acls {
		a := &acls[i]
		if a.Name == "" {
			errs = append(errs, config.Diag{Pos: a.Pos, Msg: "acl: missing ACL name"})
			continue
		}
		if j := strings.IndexFunc(a.Name, func(r rune) bool { return !validNameRune(r) }); j >= 0 {
			errs = append(errs, config.Diag{Pos: a.Pos, Msg: fmt.Sprintf(
				"acl '%s': invalid character %q in ACL name (allowed: letters, digits, '-', '_', '.', ':')", a.Name, a.Name[j])})
			continue
		}
		set := s.acls[a.Name]
		if set == nil {
			// Registered even if the line is broken, so that conditions
			// naming it do not add a second, misleading error.
			set = &acl{name: a.Name}
			s.acls[a.Name] = set
			s.names = append(s.names, a.Name)
		}
		e, err := parseExpr(a.Args)
		if err != nil {
			errs = append(errs, config.Diag{Pos: a.Pos, Msg: fmt.Sprintf("acl '%s': %v", a.Name, err)})
			continue
		}
		set.exprs = append(set.exprs, e)
	}
	sort.Strings(s.names)
	return s, errs
}

func validNameRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		r == '-' || r == '_' || r == '.' || r == ':'
}

// lookup finds a named ACL: the section's own first, then the predefined ones
// (as HAProxy does, so a section may redefine TRUE).
func (s *ACLSet) lookup(name string) (*acl, error) {
	if a, ok := s.acls[name]; ok {
		return a, nil
	}
	if a, ok := predefined[name]; ok {
		return a, nil
	}
	if unsupportedPredefined[name] {
		return nil, fmt.Errorf("predefined ACL '%s' is not supported yet", name)
	}
	msg := fmt.Sprintf("undefined ACL '%s'", name)
	cands := append(append([]string(nil), s.names...), predefinedNames...)
	if sg := suggest(name, cands); sg != "" {
		msg += fmt.Sprintf("; did you mean '%s'?", sg)
	}
	return nil, errors.New(msg)
}

// parseExpr compiles `criterion [flags] [operator] [patterns...]`.
func parseExpr(args []string) (*expr, error) {
	if len(args) == 0 {
		return nil, errors.New("missing fetch")
	}
	f, def, err := parseFetch(args[0])
	if err != nil {
		return nil, err
	}
	e := &expr{f: f}
	e.m.method = def
	crit := args[0]
	args = args[1:]
	icase, methodSet, fileSeen := false, false, false
	i := 0
flags:
	for ; i < len(args); i++ {
		a := args[i]
		if len(a) < 2 || a[0] != '-' {
			break
		}
		switch a {
		case "--":
			i++
			break flags
		case "-i":
			icase = true
		case "-n":
			// no DNS resolution: sluice never resolves patterns anyway
		case "-m", "-f", "-u":
			if i+1 >= len(args) {
				return nil, fmt.Errorf("missing argument after '%s'", a)
			}
			i++
			val := args[i]
			switch a {
			case "-m":
				if fileSeen {
					return nil, errors.New("'-m' must come before '-f'")
				}
				if methodSet {
					return nil, errors.New("'-m' given twice")
				}
				m, err := parseMethod(val)
				if err != nil {
					return nil, err
				}
				if !f.typ.allows(m) {
					return nil, fmt.Errorf("matching method '%s' cannot be used with %s fetch '%s'", m, f.typ, crit)
				}
				e.m.method, methodSet = m, true
			case "-f":
				fileSeen = true
				if err := e.loadFile(val, icase); err != nil {
					return nil, err
				}
			case "-u":
				// unique id for the runtime API: accepted, not used yet
			}
		case "-M":
			return nil, errors.New("flag '-M' (map file) is not supported yet")
		default:
			return nil, fmt.Errorf("unknown flag '%s' (use '--' before a pattern that begins with '-')", a)
		}
	}
	op := opEq
	for _, p := range args[i:] {
		if e.m.method.usesInts() {
			if o, ok := parseOp(p); ok {
				op = o
				continue
			}
		}
		if err := e.m.add(p, icase, op); err != nil {
			return nil, err
		}
	}
	e.m.finish()
	return e, nil
}

// loadFile adds the patterns of a `-f FILE` (one per line; empty lines and
// lines starting with '#' are skipped; leading blanks are stripped).
func (e *expr) loadFile(path string, icase bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("cannot read patterns file: %v", err)
	}
	for n, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimLeft(line, " \t")
		if j := strings.IndexAny(line, "\r\n"); j >= 0 {
			line = line[:j]
		}
		if line == "" {
			continue
		}
		if err := e.m.add(line, icase, opEq); err != nil {
			return fmt.Errorf("%v (%s:%d)", err, path, n+1)
		}
	}
	return nil
}

// predefined are HAProxy's hard-coded ACLs (configuration.txt 7.4).
var predefined = map[string]*acl{}

var predefinedNames []string

var unsupportedPredefined = map[string]bool{"RDP_COOKIE": true, "WAIT_END": true}

func init() {
	for name, def := range map[string]string{
		"TRUE":           "always_true",
		"FALSE":          "always_false",
		"HTTP":           "req.proto_http",
		"HTTP_1.0":       "req.ver 1.0",
		"HTTP_1.1":       "req.ver 1.1",
		"HTTP_CONTENT":   "hdr_val(content-length) gt 0",
		"HTTP_URL_ABS":   "url_reg ^[^/:]*://",
		"HTTP_URL_SLASH": "url_beg /",
		"HTTP_URL_STAR":  "url *",
		"LOCALHOST":      "src 127.0.0.1/8",
		"METH_CONNECT":   "method CONNECT",
		"METH_DELETE":    "method DELETE",
		"METH_GET":       "method GET HEAD",
		"METH_HEAD":      "method HEAD",
		"METH_OPTIONS":   "method OPTIONS",
		"METH_POST":      "method POST",
		"METH_PUT":       "method PUT",
		"METH_TRACE":     "method TRACE",
		"REQ_CONTENT":    "req.len gt 0",
	} {
		e, err := parseExpr(strings.Fields(def))
		if err != nil {
			panic("route: predefined ACL " + name + ": " + err.Error())
		}
		predefined[name] = &acl{name: name, exprs: []*expr{e}}
		predefinedNames = append(predefinedNames, name)
	}
	sort.Strings(predefinedNames)
}

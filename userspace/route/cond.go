package route

import (
	"fmt"
	"strings"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/userspace/proxy/h1"
)

// Cond is a compiled `if`/`unless` condition: an OR of AND-groups of
// (possibly negated) ACLs, as configuration.txt 7.2 defines it.
type Cond struct {
	unless bool
	or     [][]term
}

type term struct {
	neg bool
	acl *acl
}

// Match evaluates the condition against a request. A nil *Cond (no
// condition) matches every request. Match allocates nothing.
func (c *Cond) Match(req *h1.Request) bool {
	if c == nil {
		return true
	}
	r := false
	for _, and := range c.or {
		ok := true
		for _, t := range and {
			if t.acl.match(req) == t.neg {
				ok = false
				break
			}
		}
		if ok {
			r = true
			break
		}
	}
	return r != c.unless
}

// Cond compiles a condition over the set's ACLs and the predefined ones.
// Error messages start with "condition: "; use CondFor to name the keyword
// the condition belongs to. The error is a config.Errors.
func (s *ACLSet) Cond(c *config.Cond) (*Cond, error) {
	return s.CondFor("condition", c)
}

// CondFor is Cond with messages prefixed by keyword (e.g. "use_backend",
// "http-request deny").
func (s *ACLSet) CondFor(keyword string, c *config.Cond) (*Cond, error) {
	cond, errs := s.cond(keyword, c)
	if len(errs) > 0 {
		return nil, errs
	}
	return cond, nil
}

// cond parses the tokens after if/unless. Like HAProxy it accepts `!` alone
// or glued to a name (and `!!`), `or` in any case and `||`, and ignores empty
// AND-groups; braces must be separate words and balanced.
func (s *ACLSet) cond(keyword string, c *config.Cond) (*Cond, config.Errors) {
	var errs config.Errors
	fail := func(format string, a ...any) {
		errs = append(errs, config.Diag{Pos: c.Pos, Msg: keyword + ": " + fmt.Sprintf(format, a...)})
	}
	out := &Cond{unless: c.Unless}
	var cur []term
	neg := false
	toks := c.Terms
	for i := 0; i < len(toks); i++ {
		w := toks[i]
		if w == "||" || strings.EqualFold(w, "or") {
			if len(cur) > 0 {
				out.or = append(out.or, cur)
			}
			cur, neg = nil, false
			continue
		}
		for strings.HasPrefix(w, "!") {
			neg = !neg
			w = w[1:]
		}
		switch {
		case w == "":
			continue
		case w == "{":
			j := i + 1
			for j < len(toks) && toks[j] != "}" && toks[j] != "{" {
				j++
			}
			if j == len(toks) {
				fail("missing '}' in condition")
				i = j
				continue
			}
			if toks[j] == "{" {
				fail("'{' inside an anonymous ACL (missing '}'?)")
				i = j - 1
				continue
			}
			args := toks[i+1 : j]
			i = j
			if len(args) == 0 {
				fail("empty anonymous ACL '{ }'")
				continue
			}
			e, err := parseExpr(args)
			if err != nil {
				fail("anonymous ACL '{ %s }': %v", strings.Join(args, " "), err)
				continue
			}
			cur = append(cur, term{neg: neg, acl: &acl{name: "{ " + strings.Join(args, " ") + " }", exprs: []*expr{e}}})
		case w == "}":
			fail("unexpected '}' in condition (no matching '{')")
		case strings.HasPrefix(w, "{") || strings.HasSuffix(w, "}"):
			fail("'{' and '}' must be separate words (found '%s')", w)
			if strings.HasPrefix(w, "{") && !strings.HasSuffix(w, "}") {
				// skip the rest of this anonymous ACL to avoid cascading errors
				for i+1 < len(toks) && !strings.HasSuffix(toks[i+1], "}") {
					i++
				}
				if i+1 < len(toks) {
					i++
				}
			}
		default:
			a, err := s.lookup(w)
			if err != nil {
				fail("%v", err)
				break
			}
			cur = append(cur, term{neg: neg, acl: a})
		}
		neg = false
	}
	if len(cur) > 0 {
		out.or = append(out.or, cur)
	}
	if len(out.or) == 0 && len(errs) == 0 {
		kw := "if"
		if c.Unless {
			kw = "unless"
		}
		fail("missing condition after '%s'", kw)
	}
	return out, errs
}

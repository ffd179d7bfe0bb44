package config

import (
	"fmt"
	"strconv"
	"strings"
)

// This file implements HAProxy's conditional blocks (configuration.txt 2.4):
// .if/.elif/.else/.endif around lines, and .diag/.notice/.warning/.alert.
// Conditions may use integers, defined(), feature(), enabled(), streq(),
// strneq(), strstr(), version_atleast() and version_before(), combined with
// '!', '&&', '||' and parentheses.

// compatVersion is the HAProxy version sluice's configuration language
// matches, for version_atleast() and version_before().
const compatVersion = "2.6"

// condLevel is one open .if block.
type condLevel struct {
	pos          Pos
	parentActive bool // lines around the block are used
	active       bool // lines of the current branch are used
	taken        bool // a branch was already chosen
	sawElse      bool
}

func (p *parser) condActive() bool {
	return len(p.cond) == 0 || p.cond[len(p.cond)-1].active
}

func (p *parser) directive(pos Pos, words []string) {
	d, args := words[0], words[1:]
	switch d {
	case ".if":
		lvl := condLevel{pos: pos, parentActive: p.condActive()}
		if lvl.parentActive {
			lvl.active = p.evalCond(pos, args)
			lvl.taken = lvl.active
		}
		p.cond = append(p.cond, lvl)
	case ".elif", ".else", ".endif":
		if len(p.cond) == 0 {
			p.errorf(pos, "'%s' without a matching '.if'", d)
			return
		}
		top := &p.cond[len(p.cond)-1]
		switch d {
		case ".endif":
			p.cond = p.cond[:len(p.cond)-1]
		case ".else":
			if top.sawElse {
				p.errorf(pos, "'.else' already seen for the '.if' at %s", top.pos)
				return
			}
			top.sawElse = true
			top.active = top.parentActive && !top.taken
			top.taken = true
		case ".elif":
			if top.sawElse {
				p.errorf(pos, "'.elif' after '.else' (for the '.if' at %s)", top.pos)
				return
			}
			top.active = false
			if top.parentActive && !top.taken {
				top.active = p.evalCond(pos, args)
				top.taken = top.active
			}
		}
		if (d == ".else" || d == ".endif") && len(args) > 0 {
			p.errorf(pos, "'%s' takes no argument, found '%s'", d, args[0])
		}
	case ".diag", ".notice":
		// Informational messages: nothing to report.
	case ".warning", ".alert":
		if !p.condActive() {
			return
		}
		msg := strings.Join(args, " ")
		if strings.TrimSpace(msg) == "" {
			msg = "'" + d + "' without a message"
		}
		if d == ".warning" {
			p.warnf(pos, "%s", msg)
		} else {
			p.errorf(pos, "%s", msg)
		}
	default:
		if p.condActive() {
			p.errorf(pos, "unknown directive '%s'%s", d,
				didYouMean(d, []string{".if", ".elif", ".else", ".endif", ".diag", ".notice", ".warning", ".alert"}))
		}
	}
}

// evalCond evaluates a condition; an invalid one is reported and is false.
func (p *parser) evalCond(pos Pos, args []string) bool {
	e := &condParser{s: strings.Join(args, " "), lookup: p.env}
	v, err := e.parse()
	if err != nil {
		p.errorf(pos, "invalid condition '%s': %v", e.s, err)
		return false
	}
	return v
}

type condParser struct {
	s      string
	i      int
	depth  int
	lookup func(string) (string, bool) // environment, for defined()
}

const maxCondDepth = 64

func (c *condParser) skipSpace() {
	for c.i < len(c.s) && isBlank(c.s[c.i]) {
		c.i++
	}
}

func (c *condParser) parse() (bool, error) {
	c.skipSpace()
	if c.i == len(c.s) {
		return false, nil // an empty condition is false
	}
	v, err := c.or()
	if err != nil {
		return false, err
	}
	c.skipSpace()
	if c.i < len(c.s) {
		return false, fmt.Errorf("unexpected '%s'", c.s[c.i:])
	}
	return v, nil
}

func (c *condParser) or() (bool, error) {
	v, err := c.and()
	for err == nil {
		c.skipSpace()
		if !strings.HasPrefix(c.s[c.i:], "||") {
			break
		}
		c.i += 2
		var w bool
		w, err = c.and()
		v = v || w
	}
	return v, err
}

func (c *condParser) and() (bool, error) {
	v, err := c.unary()
	for err == nil {
		c.skipSpace()
		if !strings.HasPrefix(c.s[c.i:], "&&") {
			break
		}
		c.i += 2
		var w bool
		w, err = c.unary()
		v = v && w
	}
	return v, err
}

func (c *condParser) unary() (bool, error) {
	c.depth++
	defer func() { c.depth-- }()
	if c.depth > maxCondDepth {
		return false, fmt.Errorf("too deeply nested")
	}
	c.skipSpace()
	if c.i >= len(c.s) {
		return false, fmt.Errorf("missing term at the end")
	}
	switch c.s[c.i] {
	case '!':
		c.i++
		v, err := c.unary()
		return !v, err
	case '(':
		c.i++
		c.skipSpace()
		if c.i < len(c.s) && c.s[c.i] == ')' {
			c.i++
			return false, nil // an empty condition, e.g. ("$UNSET"), is false
		}
		v, err := c.or()
		if err != nil {
			return false, err
		}
		c.skipSpace()
		if c.i >= len(c.s) || c.s[c.i] != ')' {
			return false, fmt.Errorf("missing ')'")
		}
		c.i++
		return v, nil
	}
	return c.term()
}

func (c *condParser) term() (bool, error) {
	start := c.i
	for c.i < len(c.s) && !isBlank(c.s[c.i]) && !strings.ContainsRune("()!&|", rune(c.s[c.i])) {
		c.i++
	}
	word := c.s[start:c.i]
	if word == "" {
		return false, fmt.Errorf("unexpected '%c'", c.s[c.i])
	}
	if word[0] >= '0' && word[0] <= '9' || word[0] == '-' {
		n, err := strconv.ParseInt(word, 10, 64)
		if err != nil {
			return false, fmt.Errorf("invalid number '%s'", word)
		}
		return n != 0, nil
	}
	if c.i >= len(c.s) || c.s[c.i] != '(' {
		return false, fmt.Errorf("unknown term '%s' (expected a number or a predicate such as defined(NAME))", word)
	}
	args, err := c.predicateArgs()
	if err != nil {
		return false, err
	}
	return evalPredicate(word, args, c.lookup)
}

// predicateArgs reads "(a,b)" with the second-level quoting HAProxy applies
// inside parentheses (quotes group, backslash escapes the next character).
func (c *condParser) predicateArgs() ([]string, error) {
	c.i++ // '('
	var (
		args []string
		cur  []byte
	)
	for c.i < len(c.s) {
		ch := c.s[c.i]
		switch ch {
		case ')':
			c.i++
			return append(args, string(cur)), nil
		case ',':
			args = append(args, string(cur))
			cur = cur[:0]
			c.i++
		case '"', '\'':
			end := strings.IndexByte(c.s[c.i+1:], ch)
			if end < 0 {
				return nil, fmt.Errorf("unmatched quote in predicate arguments")
			}
			cur = append(cur, c.s[c.i+1:c.i+1+end]...)
			c.i += end + 2
		case '\\':
			if c.i+1 < len(c.s) {
				cur = append(cur, c.s[c.i+1])
			}
			c.i += 2
		default:
			cur = append(cur, ch)
			c.i++
		}
	}
	return nil, fmt.Errorf("missing ')' after predicate arguments")
}

func evalPredicate(name string, args []string, lookup func(string) (string, bool)) (bool, error) {
	want := map[string]int{
		"defined": 1, "feature": 1, "enabled": 1, "streq": 2, "strneq": 2, "strstr": 2,
		"version_atleast": 1, "version_before": 1,
	}
	n, ok := want[name]
	if !ok {
		return false, fmt.Errorf("unknown predicate '%s'%s", name, didYouMean(name, keys(want)))
	}
	if len(args) != n {
		return false, fmt.Errorf("predicate '%s' expects %d argument(s), found %d", name, n, len(args))
	}
	switch name {
	case "defined":
		if lookup == nil {
			return false, nil
		}
		_, ok := lookup(args[0])
		return ok, nil
	case "feature", "enabled":
		return false, nil // sluice has none of HAProxy's build features or run-time options
	case "streq":
		return args[0] == args[1], nil
	case "strneq":
		return args[0] != args[1], nil
	case "strstr":
		return strings.Contains(args[0], args[1]), nil
	case "version_atleast":
		return compareVersions(compatVersion, args[0]) >= 0, nil
	default: // version_before
		return compareVersions(compatVersion, args[0]) < 0, nil
	}
}

// compareVersions compares HAProxy versions such as "2.4", "2.4.1" or
// "2.4-dev19"; a development version is older than its release.
func compareVersions(a, b string) int {
	pa, da := splitVersion(a)
	pb, db := splitVersion(b)
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y int
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		if x != y {
			return cmpInt(x, y)
		}
	}
	return cmpInt(da, db)
}

// splitVersion returns the numeric parts and the development number (a large
// number for a release, so that releases sort after their -dev versions).
func splitVersion(v string) ([]int, int) {
	num, suffix, _ := strings.Cut(v, "-")
	var parts []int
	for _, f := range strings.Split(num, ".") {
		n, _ := strconv.Atoi(f)
		parts = append(parts, n)
	}
	dev := int(^uint(0) >> 1)
	if d, ok := strings.CutPrefix(suffix, "dev"); ok {
		dev, _ = strconv.Atoi(d)
	}
	return parts, dev
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

package route

import (
	"bytes"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// matchMethod is an ACL pattern matching method (`-m NAME`), configuration.txt 7.1.
type matchMethod uint8

const (
	mStr   matchMethod = iota + 1 // exact string
	mBeg                          // prefix
	mEnd                          // suffix
	mSub                          // substring
	mDir                          // slash-delimited word
	mDom                          // dot-delimited word
	mReg                          // regular expression
	mLen                          // length as an integer
	mInt                          // integer value, ranges and operators
	mIP                           // IPv4/IPv6 address or network
	mFound                        // the sample exists
	mBool                         // the sample is true / non-zero
)

var methodNames = [...]string{
	mStr: "str", mBeg: "beg", mEnd: "end", mSub: "sub", mDir: "dir", mDom: "dom",
	mReg: "reg", mLen: "len", mInt: "int", mIP: "ip", mFound: "found", mBool: "bool",
}

func (m matchMethod) String() string {
	if int(m) < len(methodNames) && methodNames[m] != "" {
		return methodNames[m]
	}
	return "method(" + strconv.Itoa(int(m)) + ")"
}

func parseMethod(s string) (matchMethod, error) {
	for m, n := range methodNames {
		if n != "" && n == s {
			return matchMethod(m), nil
		}
	}
	if s == "bin" {
		return 0, fmt.Errorf("matching method 'bin' is not supported yet")
	}
	return 0, fmt.Errorf("unknown matching method '%s' (expected one of str, beg, end, sub, dir, dom, reg, len, int, ip, found, bool)", s)
}

// usesInts reports whether the method's patterns are integers.
func (m matchMethod) usesInts() bool { return m == mInt || m == mLen }

// strPat is one string pattern. Case-insensitive patterns are stored
// lowercased; the sample is folded byte by byte while comparing.
type strPat struct {
	s     string
	b     []byte // same bytes as s, for bytes.Index
	icase bool
}

// intRange is an inclusive integer range; operators compile to ranges.
type intRange struct{ lo, hi int64 }

const (
	minInt64 = -1 << 63
	maxInt64 = 1<<63 - 1
)

// exactMapMin is the number of exact-string patterns from which a map lookup
// replaces the linear scan.
const exactMapMin = 5

// foldBufLen bounds the samples lowercased on the stack for a map lookup of
// case-insensitive exact patterns; longer samples use the linear scan.
const foldBufLen = 256

// matcher holds the compiled patterns of one ACL line and matches samples
// against them. Nothing here allocates at match time.
type matcher struct {
	method matchMethod

	strs      []strPat            // str, beg, end, sub, dir, dom
	useMap    bool                // str with many patterns: exact/exactFold instead of strs
	exact     map[string]struct{} // case-sensitive exact patterns
	exactFold map[string]struct{} // lowercased case-insensitive exact patterns
	regs      []*regexp.Regexp
	ints      []intRange
	addrs     map[netip.Addr]struct{} // single-address IP patterns
	v4, v6    []netip.Prefix          // network IP patterns
}

// intOp is an integer comparison operator applying to the values after it.
type intOp uint8

const (
	opEq intOp = iota
	opGe
	opGt
	opLe
	opLt
)

func parseOp(s string) (intOp, bool) {
	switch s {
	case "eq":
		return opEq, true
	case "ge":
		return opGe, true
	case "gt":
		return opGt, true
	case "le":
		return opLe, true
	case "lt":
		return opLt, true
	}
	return 0, false
}

// add compiles one pattern. op only matters for integer methods.
func (m *matcher) add(pat string, icase bool, op intOp) error {
	switch m.method {
	case mStr, mBeg, mEnd, mSub, mDir, mDom:
		s := pat
		if icase {
			s = lowerASCII(s)
		}
		m.strs = append(m.strs, strPat{s: s, b: []byte(s), icase: icase})
	case mReg:
		expr := pat
		if icase {
			expr = "(?i)" + expr
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			return fmt.Errorf("bad regex '%s': %v", pat, err)
		}
		m.regs = append(m.regs, re)
	case mInt, mLen:
		r, err := parseIntPattern(pat, op)
		if err != nil {
			return err
		}
		m.ints = append(m.ints, r)
	case mIP:
		p, err := parseIPPattern(pat)
		if err != nil {
			return err
		}
		switch {
		case p.IsSingleIP():
			if m.addrs == nil {
				m.addrs = make(map[netip.Addr]struct{})
			}
			m.addrs[p.Addr()] = struct{}{}
		case p.Addr().Is4():
			m.v4 = append(m.v4, p)
		default:
			m.v6 = append(m.v6, p)
		}
	default:
		return fmt.Errorf("matching method '%s' takes no patterns (found '%s')", m.method, pat)
	}
	return nil
}

// finish builds lookup structures once all patterns are known.
func (m *matcher) finish() {
	if m.method != mStr || len(m.strs) < exactMapMin {
		return
	}
	m.useMap = true
	m.exact = make(map[string]struct{})
	m.exactFold = make(map[string]struct{})
	for _, p := range m.strs {
		if p.icase {
			m.exactFold[p.s] = struct{}{}
		} else {
			m.exact[p.s] = struct{}{}
		}
	}
}

// parseIntPattern parses `N`, `LO:HI`, `:HI`, `LO:` with the operator in
// effect. As in HAProxy, a range ignores the operator.
func parseIntPattern(s string, op intOp) (intRange, error) {
	if lo, hi, ok := strings.Cut(s, ":"); ok {
		r := intRange{lo: minInt64, hi: maxInt64}
		var err error
		if lo != "" {
			if r.lo, err = strconv.ParseInt(lo, 10, 64); err != nil {
				return r, fmt.Errorf("bad integer range '%s'", s)
			}
		}
		if hi != "" {
			if r.hi, err = strconv.ParseInt(hi, 10, 64); err != nil {
				return r, fmt.Errorf("bad integer range '%s'", s)
			}
		}
		if lo == "" && hi == "" || r.lo > r.hi {
			return r, fmt.Errorf("bad integer range '%s'", s)
		}
		return r, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return intRange{}, fmt.Errorf("bad integer '%s'", s)
	}
	switch op {
	case opGe:
		return intRange{v, maxInt64}, nil
	case opGt:
		if v == maxInt64 {
			return intRange{1, 0}, nil // matches nothing
		}
		return intRange{v + 1, maxInt64}, nil
	case opLe:
		return intRange{minInt64, v}, nil
	case opLt:
		if v == minInt64 {
			return intRange{1, 0}, nil
		}
		return intRange{minInt64, v - 1}, nil
	}
	return intRange{v, v}, nil
}

// parseIPPattern parses an IPv4 or IPv6 address with an optional mask, the
// HAProxy way: IPv4 may be abbreviated (127.1 = 127.0.0.1) and its mask may
// be a bit count or dotted; IPv6 masks are bit counts. Host names are never
// resolved.
func parseIPPattern(s string) (netip.Prefix, error) {
	bad := fmt.Errorf("bad IP address or network '%s'", s)
	addrPart, maskPart, hasMask := strings.Cut(s, "/")
	if strings.Contains(addrPart, ":") {
		a, err := netip.ParseAddr(addrPart)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, bad
		}
		bits := 128
		if hasMask {
			if bits, err = strconv.Atoi(maskPart); err != nil || bits < 0 || bits > 128 {
				return netip.Prefix{}, bad
			}
		}
		return netip.PrefixFrom(a, bits).Masked(), nil
	}
	a, ok := parseV4Loose(addrPart)
	if !ok {
		return netip.Prefix{}, bad
	}
	bits := 32
	if hasMask {
		if strings.Contains(maskPart, ".") {
			m, ok := parseV4Strict([]byte(maskPart))
			if !ok {
				return netip.Prefix{}, bad
			}
			b := m.As4()
			v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
			bits = 0
			for v&(1<<31) != 0 {
				bits++
				v <<= 1
			}
			if v != 0 { // not contiguous
				return netip.Prefix{}, bad
			}
		} else {
			var err error
			if bits, err = strconv.Atoi(maskPart); err != nil || bits < 0 || bits > 32 {
				return netip.Prefix{}, bad
			}
		}
	}
	return netip.PrefixFrom(a, bits).Masked(), nil
}

// parseV4Loose parses dotted IPv4 in inet_aton's decimal forms: a.b.c.d,
// a.b.c (c is 16 bits), a.b (b is 24 bits).
func parseV4Loose(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 4 {
		return netip.Addr{}, false
	}
	var v uint32
	for i, p := range parts {
		if p == "" || len(p) > 10 {
			return netip.Addr{}, false
		}
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return netip.Addr{}, false
		}
		if i < len(parts)-1 {
			if n > 255 {
				return netip.Addr{}, false
			}
			v |= uint32(n) << (24 - 8*i)
			continue
		}
		if rest := uint(8 * (4 - i)); rest < 32 && n >= 1<<rest {
			return netip.Addr{}, false
		}
		v |= uint32(n)
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// str matches a string sample.
func (m *matcher) str(v []byte) bool {
	switch m.method {
	case mFound:
		return true
	case mStr:
		if m.useMap {
			if _, ok := m.exact[string(v)]; ok {
				return true
			}
			if len(m.exactFold) == 0 {
				return false
			}
			if len(v) <= foldBufLen {
				var buf [foldBufLen]byte
				n := copy(buf[:], v)
				for i := range n {
					buf[i] = lowerByte(buf[i])
				}
				_, ok := m.exactFold[string(buf[:n])]
				return ok
			}
		}
		for i := range m.strs {
			p := &m.strs[i]
			if p.icase {
				if equalFoldLower(v, p.s) {
					return true
				}
			} else if string(v) == p.s {
				return true
			}
		}
	case mBeg:
		for i := range m.strs {
			p := &m.strs[i]
			if len(v) >= len(p.s) && (p.icase && equalFoldLower(v[:len(p.s)], p.s) || !p.icase && string(v[:len(p.s)]) == p.s) {
				return true
			}
		}
	case mEnd:
		for i := range m.strs {
			p := &m.strs[i]
			if len(v) >= len(p.s) {
				t := v[len(v)-len(p.s):]
				if p.icase && equalFoldLower(t, p.s) || !p.icase && string(t) == p.s {
					return true
				}
			}
		}
	case mSub:
		for i := range m.strs {
			p := &m.strs[i]
			if p.icase {
				if containsFold(v, p.s) {
					return true
				}
			} else if bytes.Contains(v, p.b) {
				return true
			}
		}
	case mDir:
		for i := range m.strs {
			if matchWord(v, &m.strs[i], false) {
				return true
			}
		}
	case mDom:
		for i := range m.strs {
			if matchWord(v, &m.strs[i], true) {
				return true
			}
		}
	case mReg:
		for _, re := range m.regs {
			if re.Match(v) {
				return true
			}
		}
	case mLen:
		return m.int(int64(len(v)))
	case mInt:
		n, ok := strToInt(v)
		return ok && m.int(n)
	case mIP:
		a, ok := parseAddrBytes(v)
		return ok && m.addr(a)
	}
	return false
}

// int matches an integer sample.
func (m *matcher) int(v int64) bool {
	switch m.method {
	case mFound:
		return true
	case mBool:
		return v != 0
	case mInt, mLen:
		for _, r := range m.ints {
			if r.lo <= v && v <= r.hi {
				return true
			}
		}
	}
	return false
}

// bool matches a boolean sample.
func (m *matcher) bool(v bool) bool {
	switch m.method {
	case mFound:
		return true
	case mBool:
		return v
	case mInt:
		if v {
			return m.int(1)
		}
		return m.int(0)
	}
	return false
}

// addr matches an address sample. IPv4 and IPv6 meet as HAProxy defines
// (configuration.txt 7.1.6): an IPv6 sample of the form ::ffff:a.b.c.d,
// ::a.b.c.d or 2002:AABB:CCDD:: is also tested against IPv4 patterns, and an
// IPv4 sample is tested against IPv6 patterns as ::ffff:a.b.c.d.
func (m *matcher) addr(a netip.Addr) bool {
	switch m.method {
	case mFound:
		return true
	case mIP:
	default:
		return false
	}
	if a.Is4() {
		if m.hit(a, m.v4) {
			return true
		}
		if len(m.v6) == 0 && len(m.addrs) == 0 {
			return false
		}
		return m.hit(netip.AddrFrom16(a.As16()), m.v6)
	}
	if m.hit(a, m.v6) {
		return true
	}
	b := a.As16()
	if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] == 0 {
		// ::a.b.c.d or ::ffff:a.b.c.d
		if b[8]|b[9]|b[10]|b[11] == 0 || b[8]|b[9] == 0 && b[10] == 0xff && b[11] == 0xff {
			return m.hit(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}), m.v4)
		}
		return false
	}
	if b[0] == 0x20 && b[1] == 0x02 { // 6to4: 2002:AABB:CCDD::
		return m.hit(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), m.v4)
	}
	return false
}

func (m *matcher) hit(a netip.Addr, nets []netip.Prefix) bool {
	if _, ok := m.addrs[a]; ok {
		return true
	}
	for _, p := range nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// matchWord reports whether the pattern appears in v as a whole word, words
// being delimited by '/' and '?' (dir) or also by '.' and ':' (dom). Leading
// and trailing delimiters of the pattern are ignored. This is HAProxy's
// match_word().
func matchWord(v []byte, p *strPat, dom bool) bool {
	isDelim := func(c byte) bool {
		return c == '/' || c == '?' || dom && (c == '.' || c == ':')
	}
	ps := p.s
	for len(ps) > 0 && isDelim(ps[0]) {
		ps = ps[1:]
	}
	for len(ps) > 0 && isDelim(ps[len(ps)-1]) {
		ps = ps[:len(ps)-1]
	}
	if len(ps) == 0 || len(ps) > len(v) {
		return false
	}
	mayMatch := true
	for i := 0; i+len(ps) <= len(v); i++ {
		c := v[i]
		if isDelim(c) {
			mayMatch = true
			continue
		}
		if !mayMatch {
			continue
		}
		mayMatch = false
		w := v[i : i+len(ps)]
		if (p.icase && equalFoldLower(w, ps) || !p.icase && string(w) == ps) &&
			(i+len(ps) == len(v) || isDelim(v[i+len(ps)])) {
			return true
		}
	}
	return false
}

func lowerByte(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = lowerByte(b[j])
			}
			return string(b)
		}
	}
	return s
}

// equalFoldLower reports whether b equals the lowercase string s, ignoring
// ASCII case in b.
func equalFoldLower(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if lowerByte(b[i]) != s[i] {
			return false
		}
	}
	return true
}

// containsFold reports whether the lowercase string s occurs in b, ignoring
// ASCII case in b. Candidate positions are found with bytes.IndexByte on
// both cases of the first byte.
func containsFold(b []byte, s string) bool {
	if len(s) == 0 {
		return true
	}
	lo, up := s[0], s[0]
	if 'a' <= lo && lo <= 'z' {
		up = lo - ('a' - 'A')
	}
	for len(b) >= len(s) {
		w := b[:len(b)-len(s)+1]
		i := bytes.IndexByte(w, lo)
		if up != lo {
			if i >= 0 {
				w = w[:i]
			}
			if j := bytes.IndexByte(w, up); j >= 0 {
				i = j
			}
		}
		if i < 0 {
			return false
		}
		if equalFoldLower(b[i:i+len(s)], s) {
			return true
		}
		b = b[i+1:]
	}
	return false
}

// strToInt converts a string sample to an integer as HAProxy's str->int cast
// does: an optional '-' then leading digits; other bytes end the number. An
// empty sample does not convert.
func strToInt(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	neg := false
	if b[0] == '-' {
		neg = true
		b = b[1:]
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		d := int64(c - '0')
		if n > (maxInt64-d)/10 {
			n = maxInt64
			break
		}
		n = n*10 + d
	}
	if neg {
		n = -n
	}
	return n, true
}

// parseAddrBytes parses an address found in a header without allocating:
// IPv4 (optionally followed by :port), IPv6, or [IPv6] optionally followed
// by :port.
func parseAddrBytes(b []byte) (netip.Addr, bool) {
	if len(b) == 0 {
		return netip.Addr{}, false
	}
	if b[0] == '[' {
		end := bytes.IndexByte(b, ']')
		if end < 0 || end+1 < len(b) && !isPort(b[end+1:]) {
			return netip.Addr{}, false
		}
		return parseV6(b[1:end])
	}
	if i := bytes.IndexByte(b, ':'); i >= 0 {
		if bytes.IndexByte(b[i+1:], ':') < 0 && bytes.IndexByte(b[:i], '.') >= 0 {
			// IPv4:port
			if !isPort(b[i:]) {
				return netip.Addr{}, false
			}
			return parseV4Strict(b[:i])
		}
		return parseV6(b)
	}
	return parseV4Strict(b)
}

// isPort reports whether b is ":" followed by 1 to 5 digits.
func isPort(b []byte) bool {
	if len(b) < 2 || len(b) > 6 || b[0] != ':' {
		return false
	}
	for _, c := range b[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// parseV4Strict parses a dotted quad.
func parseV4Strict(b []byte) (netip.Addr, bool) {
	var ip [4]byte
	part, digits, val := 0, 0, 0
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			if digits > 0 && val == 0 { // leading zero
				return netip.Addr{}, false
			}
			val = val*10 + int(c-'0')
			digits++
			if val > 255 {
				return netip.Addr{}, false
			}
		case c == '.':
			if digits == 0 || part == 3 {
				return netip.Addr{}, false
			}
			ip[part] = byte(val)
			part++
			digits, val = 0, 0
		default:
			return netip.Addr{}, false
		}
	}
	if digits == 0 || part != 3 {
		return netip.Addr{}, false
	}
	ip[3] = byte(val)
	return netip.AddrFrom4(ip), true
}

// parseV6 parses an IPv6 address (no zone) without allocating.
func parseV6(b []byte) (netip.Addr, bool) {
	var ip [16]byte
	ellipsis := -1
	i := 0
	if len(b) >= 2 && b[0] == ':' && b[1] == ':' {
		ellipsis = 0
		b = b[2:]
	}
	for len(b) > 0 {
		if i == 16 {
			return netip.Addr{}, false
		}
		n, off := 0, 0
		for off < len(b) {
			d, ok := hexVal(b[off])
			if !ok {
				break
			}
			if off == 4 {
				return netip.Addr{}, false
			}
			n = n<<4 | d
			off++
		}
		if off < len(b) && b[off] == '.' {
			// embedded IPv4 ends the address
			if i > 12 || ellipsis < 0 && i != 12 {
				return netip.Addr{}, false
			}
			v4, ok := parseV4Strict(b)
			if !ok {
				return netip.Addr{}, false
			}
			a4 := v4.As4()
			copy(ip[i:], a4[:])
			i += 4
			break
		}
		if off == 0 {
			return netip.Addr{}, false
		}
		ip[i], ip[i+1] = byte(n>>8), byte(n)
		i += 2
		b = b[off:]
		if len(b) == 0 {
			break
		}
		if b[0] != ':' || len(b) == 1 {
			return netip.Addr{}, false
		}
		b = b[1:]
		if b[0] == ':' {
			if ellipsis >= 0 {
				return netip.Addr{}, false
			}
			ellipsis = i
			b = b[1:]
		}
	}
	if i < 16 {
		if ellipsis < 0 {
			return netip.Addr{}, false
		}
		n := 16 - i
		copy(ip[ellipsis+n:], ip[ellipsis:i])
		for j := ellipsis; j < ellipsis+n; j++ {
			ip[j] = 0
		}
	} else if ellipsis >= 0 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom16(ip), true
}

func hexVal(c byte) (int, bool) {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0'), true
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10, true
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10, true
	}
	return 0, false
}

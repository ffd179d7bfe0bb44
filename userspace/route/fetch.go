package route

import (
	"bytes"
	"fmt"
	"github.com/sluicelb/sluice/pkg/config"
	"sort"
	"strconv"
	"strings"

	"github.com/sluicelb/sluice/userspace/proxy/h1"
)

// fetchKind says where a sample comes from.
type fetchKind uint8

const (
	fPath      fetchKind = iota + 1 // path (no query)
	fURL                            // request-target as sent
	fQuery                          // query string, absent without '?'
	fURLParam                       // value(s) of a query-string parameter
	fHdr                            // comma-separated values of a header
	fFHdr                           // full header lines
	fHdrCnt                         // number of header values
	fFHdrCnt                        // number of header lines
	fMethod                         // request method
	fReqVer                         // "1.1"
	fSrc                            // client address
	fSrcPort                        // client port
	fDstPort                        // port the client connected to
	fReqLen                         // bytes of the request head in the buffer
	fTrue                           // always_true
	fFalse                          // always_false
	fProtoHTTP                      // the request is valid HTTP (always, once parsed)
)

// sampleType is a fetch's output type; it decides the default and the
// allowed matching methods.
type sampleType uint8

const (
	tStr sampleType = iota + 1
	tInt
	tIP
	tBool
)

func (t sampleType) String() string {
	switch t {
	case tStr:
		return "string"
	case tInt:
		return "integer"
	case tIP:
		return "address"
	case tBool:
		return "boolean"
	}
	return "?"
}

// allows reports whether method m can match samples of type t.
func (t sampleType) allows(m matchMethod) bool {
	switch t {
	case tStr:
		return m != mBool
	case tInt:
		return m == mInt || m == mBool || m == mFound
	case tIP:
		return m == mIP || m == mFound
	case tBool:
		return m == mBool || m == mInt || m == mFound
	}
	return false
}

// argSpec says which arguments a fetch takes between parentheses.
type argSpec uint8

const (
	argNone     argSpec = iota
	argHdr              // [name[,occ]]
	argHdrName          // [name]
	argURLParam         // [name[,delim]]
)

type fetchDef struct {
	kind   fetchKind
	typ    sampleType
	method matchMethod // default matching method
	args   argSpec
}

// fetchDefs maps every criterion sluice implements, ACL derivatives
// included, to its fetch and default matching method.
var fetchDefs = buildFetchDefs()

// fetchNames is the sorted list of implemented criteria, for suggestions.
var fetchNames = sortedKeys(fetchDefs)

func buildFetchDefs() map[string]fetchDef {
	fetchDefs := map[string]fetchDef{}
	strDerivs := []struct {
		suffix string
		m      matchMethod
	}{{"", mStr}, {"_beg", mBeg}, {"_end", mEnd}, {"_sub", mSub}, {"_dir", mDir}, {"_dom", mDom}, {"_reg", mReg}, {"_len", mLen}}
	for _, base := range []struct {
		name string
		kind fetchKind
		args argSpec
	}{{"path", fPath, argNone}, {"url", fURL, argNone}, {"hdr", fHdr, argHdr}, {"urlp", fURLParam, argURLParam}} {
		for _, d := range strDerivs {
			fetchDefs[base.name+d.suffix] = fetchDef{base.kind, tStr, d.m, base.args}
		}
	}
	for name, d := range map[string]fetchDef{
		"url_param":      {fURLParam, tStr, mStr, argURLParam},
		"urlp_val":       {fURLParam, tStr, mInt, argURLParam},
		"query":          {fQuery, tStr, mStr, argNone},
		"req.hdr":        {fHdr, tStr, mStr, argHdr},
		"req.fhdr":       {fFHdr, tStr, mStr, argHdr},
		"hdr_val":        {fHdr, tStr, mInt, argHdr},
		"req.hdr_val":    {fHdr, tStr, mInt, argHdr},
		"hdr_ip":         {fHdr, tStr, mIP, argHdr},
		"req.hdr_ip":     {fHdr, tStr, mIP, argHdr},
		"hdr_cnt":        {fHdrCnt, tInt, mInt, argHdrName},
		"req.hdr_cnt":    {fHdrCnt, tInt, mInt, argHdrName},
		"req.fhdr_cnt":   {fFHdrCnt, tInt, mInt, argHdrName},
		"method":         {fMethod, tStr, mStr, argNone},
		"req.ver":        {fReqVer, tStr, mStr, argNone},
		"req_ver":        {fReqVer, tStr, mStr, argNone},
		"src":            {fSrc, tIP, mIP, argNone},
		"src_port":       {fSrcPort, tInt, mInt, argNone},
		"dst_port":       {fDstPort, tInt, mInt, argNone},
		"req.len":        {fReqLen, tInt, mInt, argNone},
		"req_len":        {fReqLen, tInt, mInt, argNone},
		"always_true":    {fTrue, tBool, mBool, argNone},
		"always_false":   {fFalse, tBool, mBool, argNone},
		"req.proto_http": {fProtoHTTP, tBool, mBool, argNone},
		"req_proto_http": {fProtoHTTP, tBool, mBool, argNone},
	} {
		fetchDefs[name] = d
	}
	return fetchDefs
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// unsupportedFetches are HAProxy fetches sluice does not implement yet; they
// get a clearer message than "unknown fetch".
var unsupportedFetches = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range strings.Fields(`
		base base32 base32+src cook cookie scook set-cookie req.cook req.cook_cnt req.cook_val cook_cnt cook_val
		dst dst_conn dst_is_local src_is_local src_conn_cnt src_conn_cur src_conn_rate
		ssl_fc ssl_fc_sni ssl_fc_alpn ssl_fc_protocol ssl_c_used ssl_c_verify req.ssl_sni req_ssl_sni req.ssl_ver req_ssl_ver
		req.body req.body_param req.body_len req.body_size req.payload req.payload_lv payload payload_lv
		req.hdrs req.hdrs_bin req.hdr_names req.timer_hdr req.rdp_cookie req.rdp_cookie_cnt req_rdp_cookie_cnt rdp_cookie
		http_auth http_auth_group http_auth_type http_auth_user http_auth_pass http_first_req
		status unique-id url_ip url_port url32 url32+src pathq
		nbsrv nbproc proc queue avg_queue connslots srv_conn srv_id srv_is_up be_conn be_id be_name fe_conn fe_id fe_name
		var env date hostname rand stopping thread uuid wait_end int ipv4 ipv6 str bin
		lat_ns_avg lat_ns_tot so_id so_name
	`) {
		m[n] = true
	}
	return m
}()

// unsupportedPrefixes cover families of HAProxy fetches.
var unsupportedPrefixes = []string{
	"ssl_", "req.ssl_", "req_ssl_", "sc_", "sc0_", "sc1_", "sc2_", "src_", "fc_", "bc_", "be_", "fe_", "srv_",
	"capture.", "res.", "resp_", "shdr", "scook", "cook", "req.cook", "req.body", "req.payload", "payload",
	"req.rdp_cookie", "req_rdp_cookie", "rdp_cookie", "base", "url32", "http_auth", "51d.", "da-", "wurfl",
	"table_", "so_", "dst_", "distcc_", "quic_", "txn.", "sess.", "last_rule",
}

// unknownFetch explains why name is not a fetch sluice knows: a HAProxy fetch
// not implemented yet, or a typo with the closest implemented name.
func unknownFetch(name string) error {
	if unsupportedFetches[name] {
		return fmt.Errorf("fetch '%s' is not supported yet", name)
	}
	if _, ok := fetchDefs[lowerASCII(name)]; ok {
		return fmt.Errorf("unknown fetch '%s' (fetch names are case-sensitive); did you mean '%s'?", name, lowerASCII(name))
	}
	s := suggest(name, fetchNames)
	if s == "" || config.EditDistance(name, s, 2) > 1 {
		for _, p := range unsupportedPrefixes {
			if strings.HasPrefix(name, p) {
				return fmt.Errorf("fetch '%s' is not supported yet", name)
			}
		}
	}
	if s != "" {
		return fmt.Errorf("unknown fetch '%s'; did you mean '%s'?", name, s)
	}
	return fmt.Errorf("unknown fetch '%s'", name)
}

// fetch is a compiled sample fetch with its arguments.
type fetch struct {
	kind  fetchKind
	typ   sampleType
	name  string // header name (lowercase) or URL parameter name (as written); "" = any
	occ   int    // header occurrence: 0 = all, >0 from the first, <0 from the last
	delim byte   // url_param delimiter; 0 = the query string after '?'
}

// parseFetch parses a criterion such as `path_beg`, `hdr(host)`,
// `hdr(x-forwarded-for,-1)` or `urlp(id,;)`.
func parseFetch(tok string) (fetch, matchMethod, error) {
	name, args, hasArgs := tok, "", false
	if i := strings.IndexByte(tok, '('); i >= 0 {
		end := strings.IndexByte(tok[i:], ')')
		if end < 0 {
			return fetch{}, 0, fmt.Errorf("missing ')' in '%s'", tok)
		}
		end += i
		name, args, hasArgs = tok[:i], tok[i+1:end], true
		if rest := tok[end+1:]; rest != "" {
			if rest[0] == ',' {
				conv, _, _ := strings.Cut(rest[1:], ",")
				conv, _, _ = strings.Cut(conv, "(")
				return fetch{}, 0, fmt.Errorf("converter '%s' (in '%s') is not supported yet", conv, tok)
			}
			return fetch{}, 0, fmt.Errorf("unexpected '%s' after ')' in '%s'", rest, tok)
		}
	} else if i := strings.IndexByte(tok, ','); i >= 0 {
		conv, _, _ := strings.Cut(tok[i+1:], ",")
		conv, _, _ = strings.Cut(conv, "(")
		if _, ok := fetchDefs[tok[:i]]; ok {
			return fetch{}, 0, fmt.Errorf("converter '%s' (in '%s') is not supported yet", conv, tok)
		}
		name = tok[:i]
	}
	d, ok := fetchDefs[name]
	if !ok {
		return fetch{}, 0, unknownFetch(name)
	}
	f := fetch{kind: d.kind, typ: d.typ}
	var list []string
	if hasArgs && args != "" {
		list = strings.Split(args, ",")
	}
	switch d.args {
	case argNone:
		if hasArgs {
			return f, 0, fmt.Errorf("fetch '%s' takes no arguments (found '%s')", name, tok)
		}
	case argHdr, argHdrName:
		max := 2
		if d.args == argHdrName {
			max = 1
		}
		if len(list) > max {
			return f, 0, fmt.Errorf("too many arguments in '%s'", tok)
		}
		if len(list) > 0 {
			f.name = lowerASCII(strings.TrimSpace(list[0]))
		}
		if len(list) > 1 {
			n, err := strconv.Atoi(strings.TrimSpace(list[1]))
			if err != nil {
				return f, 0, fmt.Errorf("bad occurrence '%s' in '%s' (expected an integer)", list[1], tok)
			}
			f.occ = n
		}
		if f.occ != 0 && f.name == "" {
			return f, 0, fmt.Errorf("an occurrence needs a header name in '%s'", tok)
		}
	case argURLParam:
		if len(list) > 2 {
			return f, 0, fmt.Errorf("too many arguments in '%s'", tok)
		}
		if len(list) > 0 {
			f.name = list[0]
		}
		if len(list) > 1 {
			if len(list[1]) != 1 {
				return f, 0, fmt.Errorf("bad delimiter '%s' in '%s' (expected one character)", list[1], tok)
			}
			f.delim = list[1][0]
		}
	}
	return f, d.method, nil
}

// expr is one compiled ACL line (or anonymous ACL): a fetch and its patterns.
type expr struct {
	f fetch
	m matcher
}

// match evaluates the expression: true when any sample matches any pattern.
func (e *expr) match(req *h1.Request) bool {
	m := &e.m
	switch e.f.kind {
	case fPath:
		if req.Path == nil {
			return false
		}
		return m.str(req.Path)
	case fURL:
		return m.str(req.Target)
	case fQuery:
		if req.Query == nil {
			return false
		}
		return m.str(req.Query)
	case fMethod:
		return m.str(req.Method)
	case fReqVer:
		if req.Major < 0 || req.Major > 9 || req.Minor < 0 || req.Minor > 9 {
			return false
		}
		return m.str(verStrings[req.Major][req.Minor])
	case fURLParam:
		it := e.f.params(req)
		for v, ok := it.next(); ok; v, ok = it.next() {
			if m.str(v) {
				return true
			}
		}
		return false
	case fHdr, fFHdr:
		it := hdrIter{hs: req.Headers, name: e.f.name, split: e.f.kind == fHdr}
		if e.f.occ != 0 {
			v, ok := it.nth(e.f.occ)
			return ok && m.str(v)
		}
		for v, ok := it.next(); ok; v, ok = it.next() {
			if m.str(v) {
				return true
			}
		}
		return false
	case fHdrCnt, fFHdrCnt:
		it := hdrIter{hs: req.Headers, name: e.f.name, split: e.f.kind == fHdrCnt}
		return m.int(int64(it.count()))
	case fSrc:
		if !req.Src.IsValid() {
			return false
		}
		return m.addr(req.Src)
	case fSrcPort:
		return m.int(int64(req.SrcPort))
	case fDstPort:
		return m.int(int64(req.DstPort))
	case fReqLen:
		return m.int(int64(req.HeadLen))
	case fTrue, fProtoHTTP:
		return m.bool(true)
	case fFalse:
		return m.bool(false)
	}
	return false
}

// verStrings holds "M.m" for each single-digit version, so req.ver needs no
// formatting at match time.
var verStrings = func() (v [10][10][]byte) {
	for i := range v {
		for j := range v[i] {
			v[i][j] = []byte{byte('0' + i), '.', byte('0' + j)}
		}
	}
	return v
}()

// hdrIter walks the values of the headers named name (every header when name
// is ""). With split, each comma-separated element (outside quoted strings)
// is a value, as HAProxy's hdr() sees them; without, each line is one.
type hdrIter struct {
	hs    []h1.Header
	name  string
	split bool
	i     int
	rest  []byte
	inVal bool
}

func (it *hdrIter) next() ([]byte, bool) {
	for {
		if it.inVal {
			v, rest, more := nextElem(it.rest)
			it.rest, it.inVal = rest, more
			return trimOWS(v), true
		}
		if it.i >= len(it.hs) {
			return nil, false
		}
		h := &it.hs[it.i]
		it.i++
		if it.name != "" && !equalFoldLower(h.Name, it.name) {
			continue
		}
		if !it.split {
			return h.Value, true
		}
		it.rest, it.inVal = h.Value, true
	}
}

func (it *hdrIter) count() int {
	n := 0
	for _, ok := it.next(); ok; _, ok = it.next() {
		n++
	}
	return n
}

// nth returns the occ-th value: from the first when occ > 0, from the last
// when occ < 0.
func (it *hdrIter) nth(occ int) ([]byte, bool) {
	if occ < 0 {
		c := *it
		occ = c.count() + occ + 1
		if occ <= 0 {
			return nil, false
		}
	}
	for v, ok := it.next(); ok; v, ok = it.next() {
		occ--
		if occ == 0 {
			return v, true
		}
	}
	return nil, false
}

// nextElem splits b at the first comma outside a quoted string.
func nextElem(b []byte) (elem, rest []byte, more bool) {
	quoted, esc := false, false
	for i, c := range b {
		switch {
		case esc:
			esc = false
		case quoted && c == '\\':
			esc = true
		case c == '"':
			quoted = !quoted
		case !quoted && c == ',':
			return b[:i], b[i+1:], true
		}
	}
	return b, nil, false
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// paramIter walks URL parameter values. The list starts after the first '?'
// (the request's Query) or, with a delimiter, after its first occurrence in
// the request-target; parameters are separated by '&', ';' or the delimiter,
// and a parameter only counts with an '='. Names are case-sensitive.
type paramIter struct {
	rest  []byte
	name  string
	delim byte
	done  bool
}

func (f *fetch) params(req *h1.Request) paramIter {
	it := paramIter{name: f.name, delim: f.delim}
	if f.delim == 0 {
		it.rest, it.done = req.Query, req.Query == nil
		return it
	}
	i := bytes.IndexByte(req.Target, f.delim)
	if i < 0 {
		it.done = true
		return it
	}
	it.rest = req.Target[i+1:]
	return it
}

func (it *paramIter) next() ([]byte, bool) {
	for !it.done {
		seg := it.rest
		end := -1
		for i, c := range seg {
			if c == '&' || c == ';' || c == it.delim && c != 0 {
				end = i
				break
			}
		}
		if end < 0 {
			it.done = true
		} else {
			seg, it.rest = seg[:end], seg[end+1:]
		}
		if it.name == "" {
			if eq := bytes.IndexByte(seg, '='); eq >= 0 {
				return seg[eq+1:], true
			}
			continue
		}
		if n := len(it.name); len(seg) > n && seg[n] == '=' && string(seg[:n]) == it.name {
			return seg[n+1:], true
		}
	}
	return nil, false
}

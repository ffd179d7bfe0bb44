package route

import (
	"strings"
	"testing"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/userspace/proxy/h1"
)

// abcSet defines a, b and c as "header X-A / X-B / X-C is present", so any
// truth assignment is one request away.
func abcSet(t *testing.T) *ACLSet {
	t.Helper()
	s, err := NewACLSet([]config.ACL{
		{Pos: pos(1), Name: "a", Args: f("hdr(x-a) -m found")},
		{Pos: pos(2), Name: "b", Args: f("hdr(x-b) -m found")},
		{Pos: pos(3), Name: "c", Args: f("hdr(x-c) -m found")},
		// two lines with one name are ORed: ab = a or b
		{Pos: pos(4), Name: "ab", Args: f("hdr(x-a) -m found")},
		{Pos: pos(5), Name: "ab", Args: f("hdr(x-b) -m found")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func abcReq(a, b, c bool) *h1.Request {
	var hs []string
	if a {
		hs = append(hs, "X-A: 1")
	}
	if b {
		hs = append(hs, "X-B: 1")
	}
	if c {
		hs = append(hs, "X-C: 1")
	}
	return rq("GET", "/", hs...)
}

func TestCondPrecedence(t *testing.T) {
	s := abcSet(t)
	cases := []struct {
		cond   string
		unless bool
		want   func(a, b, c bool) bool
	}{
		{"a", false, func(a, b, c bool) bool { return a }},
		{"a b", false, func(a, b, c bool) bool { return a && b }},
		{"a b c", false, func(a, b, c bool) bool { return a && b && c }},
		{"a b || c", false, func(a, b, c bool) bool { return a && b || c }},
		{"a || b c", false, func(a, b, c bool) bool { return a || b && c }},
		{"a or b", false, func(a, b, c bool) bool { return a || b }},
		{"a OR b", false, func(a, b, c bool) bool { return a || b }},
		{"!a", false, func(a, b, c bool) bool { return !a }},
		{"! a", false, func(a, b, c bool) bool { return !a }},
		{"!!a", false, func(a, b, c bool) bool { return a }},
		{"!a b", false, func(a, b, c bool) bool { return !a && b }},
		{"!a || !b", false, func(a, b, c bool) bool { return !a || !b }},
		{"a !b || !a c", false, func(a, b, c bool) bool { return a && !b || !a && c }},
		{"{ hdr(x-a) -m found } b", false, func(a, b, c bool) bool { return a && b }},
		{"!{ hdr(x-a) -m found }", false, func(a, b, c bool) bool { return !a }},
		{"! { hdr(x-a) -m found } || c", false, func(a, b, c bool) bool { return !a || c }},
		{"{ hdr(x-a) -m found } || { hdr(x-c) -m found }", false, func(a, b, c bool) bool { return a || c }},
		{"ab", false, func(a, b, c bool) bool { return a || b }},
		{"ab c", false, func(a, b, c bool) bool { return (a || b) && c }},
		{"a b", true, func(a, b, c bool) bool { return !(a && b) }},
		{"a || c", true, func(a, b, c bool) bool { return !(a || c) }},
		{"TRUE", false, func(a, b, c bool) bool { return true }},
		{"FALSE", false, func(a, b, c bool) bool { return false }},
		{"a FALSE || c TRUE", false, func(a, b, c bool) bool { return c }},
		{"a || || b", false, func(a, b, c bool) bool { return a || b }}, // empty groups are ignored, as in HAProxy
	}
	for _, tc := range cases {
		name := tc.cond
		if tc.unless {
			name = "unless " + name
		}
		t.Run(name, func(t *testing.T) {
			c, err := s.Cond(&config.Cond{Pos: pos(9), Unless: tc.unless, Terms: f(tc.cond)})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 8 {
				a, b, cc := i&4 != 0, i&2 != 0, i&1 != 0
				if got, want := c.Match(abcReq(a, b, cc)), tc.want(a, b, cc); got != want {
					t.Errorf("a=%v b=%v c=%v: got %v, want %v", a, b, cc, got, want)
				}
			}
		})
	}
}

func TestNilCondMatches(t *testing.T) {
	var c *Cond
	if !c.Match(rq("GET", "/")) {
		t.Error("nil condition must match")
	}
}

func TestUserACLShadowsPredefined(t *testing.T) {
	s, err := NewACLSet([]config.ACL{{Pos: pos(1), Name: "TRUE", Args: f("always_false")}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Cond(&config.Cond{Pos: pos(2), Terms: f("TRUE")})
	if err != nil {
		t.Fatal(err)
	}
	if c.Match(rq("GET", "/")) {
		t.Error("a section's own ACL named TRUE must win over the predefined one")
	}
}

func TestPredefined(t *testing.T) {
	s, err := NewACLSet(nil)
	if err != nil {
		t.Fatal(err)
	}
	withLen := func(r *h1.Request, n int) *h1.Request { r.HeadLen = n; return r }
	cases := []struct {
		name string
		req  *h1.Request
		want bool
	}{
		{"TRUE", rq("GET", "/"), true},
		{"FALSE", rq("GET", "/"), false},
		{"HTTP", rq("GET", "/"), true},
		{"HTTP_1.0", withVer(rq("GET", "/"), 1, 0), true},
		{"HTTP_1.0", rq("GET", "/"), false},
		{"HTTP_1.1", rq("GET", "/"), true},
		{"HTTP_1.1", withVer(rq("GET", "/"), 1, 0), false},
		{"HTTP_CONTENT", rq("POST", "/", "Content-Length: 12"), true},
		{"HTTP_CONTENT", rq("POST", "/", "Content-Length: 0"), false},
		{"HTTP_CONTENT", rq("GET", "/"), false},
		{"HTTP_URL_ABS", rq("GET", "http://example.com/"), true},
		{"HTTP_URL_ABS", rq("GET", "/"), false},
		{"HTTP_URL_SLASH", rq("GET", "/x"), true},
		{"HTTP_URL_STAR", rq("OPTIONS", "*"), true},
		{"HTTP_URL_STAR", rq("OPTIONS", "/"), false},
		{"LOCALHOST", withSrc(rq("GET", "/"), "127.0.0.1"), true},
		{"LOCALHOST", withSrc(rq("GET", "/"), "127.5.5.5"), true},
		{"LOCALHOST", withSrc(rq("GET", "/"), "::ffff:127.0.0.1"), true},
		{"LOCALHOST", withSrc(rq("GET", "/"), "10.0.0.1"), false},
		{"METH_CONNECT", rq("CONNECT", "example.com:443"), true},
		{"METH_CONNECT", rq("GET", "/"), false},
		{"METH_DELETE", rq("DELETE", "/"), true},
		{"METH_DELETE", rq("GET", "/"), false},
		{"METH_GET", rq("GET", "/"), true},
		{"METH_GET", rq("HEAD", "/"), true},
		{"METH_GET", rq("POST", "/"), false},
		{"METH_HEAD", rq("HEAD", "/"), true},
		{"METH_HEAD", rq("GET", "/"), false},
		{"METH_OPTIONS", rq("OPTIONS", "*"), true},
		{"METH_OPTIONS", rq("GET", "/"), false},
		{"METH_POST", rq("POST", "/"), true},
		{"METH_POST", rq("PUT", "/"), false},
		{"METH_PUT", rq("PUT", "/"), true},
		{"METH_PUT", rq("POST", "/"), false},
		{"METH_TRACE", rq("TRACE", "/"), true},
		{"METH_TRACE", rq("GET", "/"), false},
		{"REQ_CONTENT", rq("GET", "/"), true},
		{"REQ_CONTENT", withLen(rq("GET", "/"), 0), false},
	}
	for _, tc := range cases {
		t.Run(tc.name+" "+string(tc.req.Method)+" "+string(tc.req.Target), func(t *testing.T) {
			c, err := s.Cond(&config.Cond{Pos: pos(1), Terms: []string{tc.name}})
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Match(tc.req); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// backends is the index the tests' frontends resolve backend names with.
func backends(names ...string) func(string) (int, bool) {
	return func(name string) (int, bool) {
		for i, n := range names {
			if n == name {
				return i, true
			}
		}
		return -1, false
	}
}

func TestSeedWebSocketRouting(t *testing.T) {
	fe := &config.Frontend{
		Name: "fe_main",
		ACLs: []config.ACL{{Pos: pos(10), Name: "is_websocket", Args: f("path_beg -i /websockets")}},
		UseBackends: []config.UseBackend{
			{Pos: pos(11), Backend: "ws", Cond: &config.Cond{Pos: pos(11), Terms: f("is_websocket")}},
		},
		DefaultBackend:    "web",
		DefaultBackendPos: pos(12),
	}
	r, err := Compile(fe, backends("web", "ws"))
	if err != nil {
		t.Fatal(err)
	}
	for target, want := range map[string]int{
		"/websockets/chat": 1,
		"/WebSockets":      1,
		"/websockets?x=1":  1,
		"/":                0,
		"/web":             0,
		"/api/websockets":  0,
	} {
		if got := r.Route(rq("GET", target, "Host: example.com", "Upgrade: websocket", "Connection: Upgrade")); got != want {
			t.Errorf("Route(%s) = %d, want %d", target, got, want)
		}
	}
}

func TestRouteOrderAndDefaults(t *testing.T) {
	acls := []config.ACL{
		{Pos: pos(1), Name: "api", Args: f("path_beg /api")},
		{Pos: pos(2), Name: "v2", Args: f("path_beg /api/v2")},
	}
	cond := func(s string) *config.Cond { return &config.Cond{Pos: pos(3), Terms: f(s)} }
	idx := backends("web", "api", "v2", "all")

	// The first matching rule wins, even if a later one is more specific.
	r, err := Compile(&config.Frontend{ACLs: acls, UseBackends: []config.UseBackend{
		{Pos: pos(3), Backend: "api", Cond: cond("api")},
		{Pos: pos(4), Backend: "v2", Cond: cond("v2")},
	}, DefaultBackend: "web"}, idx)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Route(rq("GET", "/api/v2/x")); got != 1 {
		t.Errorf("first match: got %d, want 1", got)
	}
	if got := r.Route(rq("GET", "/other")); got != 0 {
		t.Errorf("default: got %d, want 0", got)
	}

	// No default backend: -1.
	r, err = Compile(&config.Frontend{ACLs: acls, UseBackends: []config.UseBackend{
		{Pos: pos(3), Backend: "api", Cond: cond("api")},
	}}, idx)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Route(rq("GET", "/")); got != -1 {
		t.Errorf("no default: got %d, want -1", got)
	}

	// An unconditional use_backend always matches; unless negates.
	r, err = Compile(&config.Frontend{ACLs: acls, UseBackends: []config.UseBackend{
		{Pos: pos(3), Backend: "web", Cond: &config.Cond{Pos: pos(3), Unless: true, Terms: f("api")}},
		{Pos: pos(4), Backend: "all"},
	}, DefaultBackend: "web"}, idx)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Route(rq("GET", "/")); got != 0 {
		t.Errorf("unless api, /: got %d, want 0", got)
	}
	if got := r.Route(rq("GET", "/api")); got != 3 {
		t.Errorf("unconditional: got %d, want 3", got)
	}
	if r.ACLs() == nil {
		t.Error("ACLs() = nil")
	}
}

func TestErrors(t *testing.T) {
	acl := func(line int, name, args string) config.ACL {
		return config.ACL{Pos: pos(line), Name: name, Args: f(args)}
	}
	ub := func(line int, backend, cond string) config.UseBackend {
		u := config.UseBackend{Pos: pos(line), Backend: backend}
		if cond != "-" {
			u.Cond = &config.Cond{Pos: pos(line), Terms: f(cond)}
		}
		return u
	}
	fe := &config.Frontend{
		ACLs: []config.ACL{
			acl(1, "is_ws", "path_beg -i /websockets"),
			acl(2, "bad1", "path_bge /x"),
			acl(3, "bad2", "ssl_fc"),
			acl(4, "bad3", "req.cook(sid) abc"),
			acl(5, "bad4", "base example.com/"),
			acl(6, "bad5", "path_reg ("),
			acl(7, "bad6", "src 10.0.0.0/33"),
			acl(8, "bad7", "dst_port abc"),
			acl(9, "bad8", "path_beg -f /nonexistent/patterns.lst"),
			acl(10, "bad9", "hdr(host,x) a"),
			acl(11, "bad10", "hdr(host),lower a"),
			acl(12, "bad11", "dst_port -m beg 80"),
			acl(13, "bad12", "path -x /a"),
			acl(14, "bad13", "src www.example.com"),
			acl(15, "bad14", "dst_port 10:5"),
			acl(16, "bad15", "path -m found /x"),
			acl(17, "bad16", "path -m bin 00"),
			acl(18, "bad17", "hdr(host"),
			acl(19, "bad18", "path(x) /"),
			acl(20, "bad 19", "path /"),
			acl(21, "bad20", ""),
			acl(22, "bad21", "hdrr(host) x"),
			acl(23, "bad22", "PATH_BEG /x"),
		},
		UseBackends: []config.UseBackend{
			ub(30, "ws", "is_wss"),
			ub(31, "ws", "{ path_beg /x"),
			ub(32, "ws", "is_ws }"),
			ub(33, "nope", "is_ws"),
			ub(34, "ws", "{ path_bge /x }"),
			ub(35, "ws", ""),
			ub(36, "ws", "WAIT_END"),
			ub(37, "ws", "bad1"), // broken ACL: no second error
			ub(38, "ws", "{ }"),
			ub(39, "ws", "{path_beg /x }"),
			ub(40, "ws", "{ path_beg /x { path_beg /y }"),
			ub(41, "be_%[req.hdr(host)]", "-"),
			ub(42, "ws", "METH_GETT"),
		},
		DefaultBackend:    "nope2",
		DefaultBackendPos: pos(50),
	}
	_, err := Compile(fe, backends("web", "ws"))
	if err == nil {
		t.Fatal("Compile succeeded")
	}
	errs, ok := err.(config.Errors)
	if !ok {
		t.Fatalf("error is %T, want config.Errors", err)
	}
	want := []string{
		"t.cfg:2: acl 'bad1': unknown fetch 'path_bge'; did you mean 'path_beg'?",
		"t.cfg:3: acl 'bad2': fetch 'ssl_fc' is not supported yet",
		"t.cfg:4: acl 'bad3': fetch 'req.cook' is not supported yet",
		"t.cfg:5: acl 'bad4': fetch 'base' is not supported yet",
		"t.cfg:6: acl 'bad5': bad regex '(': error parsing regexp: missing closing ): `(`",
		"t.cfg:7: acl 'bad6': bad IP address or network '10.0.0.0/33'",
		"t.cfg:8: acl 'bad7': bad integer 'abc'",
		"t.cfg:9: acl 'bad8': cannot read patterns file: open /nonexistent/patterns.lst: no such file or directory",
		"t.cfg:10: acl 'bad9': bad occurrence 'x' in 'hdr(host,x)' (expected an integer)",
		"t.cfg:11: acl 'bad10': converter 'lower' (in 'hdr(host),lower') is not supported yet",
		"t.cfg:12: acl 'bad11': matching method 'beg' cannot be used with integer fetch 'dst_port'",
		"t.cfg:13: acl 'bad12': unknown flag '-x' (use '--' before a pattern that begins with '-')",
		"t.cfg:14: acl 'bad13': bad IP address or network 'www.example.com'",
		"t.cfg:15: acl 'bad14': bad integer range '10:5'",
		"t.cfg:16: acl 'bad15': matching method 'found' takes no patterns (found '/x')",
		"t.cfg:17: acl 'bad16': matching method 'bin' is not supported yet",
		"t.cfg:18: acl 'bad17': missing ')' in 'hdr(host'",
		"t.cfg:19: acl 'bad18': fetch 'path' takes no arguments (found 'path(x)')",
		"t.cfg:20: acl 'bad 19': invalid character ' ' in ACL name (allowed: letters, digits, '-', '_', '.', ':')",
		"t.cfg:21: acl 'bad20': missing fetch",
		"t.cfg:22: acl 'bad21': unknown fetch 'hdrr'; did you mean 'hdr'?",
		"t.cfg:23: acl 'bad22': unknown fetch 'PATH_BEG' (fetch names are case-sensitive); did you mean 'path_beg'?",
		"t.cfg:30: use_backend: undefined ACL 'is_wss'; did you mean 'is_ws'?",
		"t.cfg:31: use_backend: missing '}' in condition",
		"t.cfg:32: use_backend: unexpected '}' in condition (no matching '{')",
		"t.cfg:33: use_backend: no such backend 'nope'",
		"t.cfg:34: use_backend: anonymous ACL '{ path_bge /x }': unknown fetch 'path_bge'; did you mean 'path_beg'?",
		"t.cfg:35: use_backend: missing condition after 'if'",
		"t.cfg:36: use_backend: predefined ACL 'WAIT_END' is not supported yet",
		"t.cfg:38: use_backend: empty anonymous ACL '{ }'",
		"t.cfg:39: use_backend: '{' and '}' must be separate words (found '{path_beg')",
		"t.cfg:40: use_backend: '{' inside an anonymous ACL (missing '}'?)",
		"t.cfg:41: use_backend: dynamic backend name 'be_%[req.hdr(host)]' is not supported yet",
		"t.cfg:42: use_backend: undefined ACL 'METH_GETT'; did you mean 'METH_GET'?",
		"t.cfg:50: default_backend: no such backend 'nope2'",
	}
	var got []string
	for _, d := range errs {
		got = append(got, d.Error())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\n\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestCondForKeyword(t *testing.T) {
	s, _ := NewACLSet(nil)
	_, err := s.CondFor("http-request deny", &config.Cond{Pos: pos(7), Terms: f("nope")})
	if err == nil || err.Error() != "t.cfg:7: http-request deny: undefined ACL 'nope'" {
		t.Errorf("got %v", err)
	}
	_, err = s.Cond(&config.Cond{Pos: pos(8), Terms: f("METH_POTS")})
	if err == nil || err.Error() != "t.cfg:8: condition: undefined ACL 'METH_POTS'; did you mean 'METH_POST'?" {
		t.Errorf("got %v", err)
	}
}

func TestNewACLSetKeepsGoodLines(t *testing.T) {
	s, err := NewACLSet([]config.ACL{
		{Pos: pos(1), Name: "x", Args: f("path_bge /a")},
		{Pos: pos(2), Name: "x", Args: f("path_beg /b")},
	})
	if err == nil {
		t.Fatal("want an error")
	}
	c, cerr := s.Cond(&config.Cond{Pos: pos(3), Terms: f("x")})
	if cerr != nil {
		t.Fatal(cerr)
	}
	if !c.Match(rq("GET", "/b")) {
		t.Error("the valid line of x should still match")
	}
}

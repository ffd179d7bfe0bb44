package route

import (
	"testing"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/userspace/proxy/h1"
)

// realisticFrontend is a frontend in the spirit of the seed configs: 10 ACLs
// over the common fetches and 5 use_backend rules.
func realisticFrontend() *config.Frontend {
	acl := func(line int, name, args string) config.ACL {
		return config.ACL{Pos: pos(line), Name: name, Args: f(args)}
	}
	ub := func(line int, backend, cond string) config.UseBackend {
		return config.UseBackend{Pos: pos(line), Backend: backend, Cond: &config.Cond{Pos: pos(line), Terms: f(cond)}}
	}
	return &config.Frontend{
		Name: "fe_main",
		ACLs: []config.ACL{
			acl(1, "host_api", "hdr(host) -i api.example.com"),
			acl(2, "host_static", "hdr_beg(host) -i static. img. cdn."),
			acl(3, "is_api", "path_beg /api/"),
			acl(4, "is_static", "path_end -i .css .js .png .jpg .svg .woff2"),
			acl(5, "is_websocket", "hdr(upgrade) -i websocket"),
			acl(6, "is_admin", "path_dir admin"),
			acl(7, "internal", "src 10.0.0.0/8 192.168.0.0/16 ::1"),
			acl(8, "writes", "method POST PUT PATCH DELETE"),
			acl(9, "debug", "url_param(debug) 1 true"),
			acl(10, "v2", `path_reg ^/api/v2/`),
		},
		UseBackends: []config.UseBackend{
			ub(20, "ws", "is_websocket"),
			ub(21, "admin", "is_admin internal || debug internal"),
			ub(22, "static", "host_static || is_static !writes"),
			ub(23, "api_v2", "host_api v2 || is_api v2"),
			ub(24, "api", "host_api || is_api || { dst_port 8443 } { hdr_cnt(x-forwarded-for) le 3 }"),
		},
		DefaultBackend:    "web",
		DefaultBackendPos: pos(25),
	}
}

var benchBackends = backends("web", "ws", "admin", "static", "api_v2", "api")

// browserHeaders are what a browser sends for a page.
var browserHeaders = []string{
	"Host: www.example.com",
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
	"Accept-Language: en-US,en;q=0.5",
	"Accept-Encoding: gzip, deflate, br, zstd",
	"Connection: keep-alive",
	"Cookie: session=abc123; theme=dark",
	"Upgrade-Insecure-Requests: 1",
	"X-Forwarded-For: 203.0.113.7, 198.51.100.2",
	"Priority: u=0, i",
}

type routeCase struct {
	name string
	req  *h1.Request
	want string
}

func routeCases() []routeCase {
	with := func(host string) []string {
		hs := append([]string{"Host: " + host}, browserHeaders[1:]...)
		return hs
	}
	ws := append(with("www.example.com"), "Upgrade: websocket", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")
	return []routeCase{
		{"page_default", rq("GET", "/products/42?ref=home", browserHeaders...), "web"},
		{"static_asset", rq("GET", "/assets/app.JS?v=3", browserHeaders...), "static"},
		{"static_host", rq("GET", "/logo", with("IMG.example.com")...), "static"},
		{"api_v2", rq("POST", "/api/v2/orders", with("api.example.com")...), "api_v2"},
		{"api_host", rq("GET", "/users?id=7", with("API.Example.Com")...), "api"},
		{"admin_internal", withSrc(rq("GET", "/x/admin/users", browserHeaders...), "10.1.2.3"), "admin"},
		{"admin_external", rq("GET", "/x/admin/users?debug=1", browserHeaders...), "web"},
		{"websocket", rq("GET", "/chat", ws...), "ws"},
	}
}

func TestRealisticFrontend(t *testing.T) {
	r, err := Compile(realisticFrontend(), benchBackends)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"web", "ws", "admin", "static", "api_v2", "api"}
	for _, c := range routeCases() {
		if got := r.Route(c.req); names[got] != c.want {
			t.Errorf("%s: routed to %s, want %s", c.name, names[got], c.want)
		}
	}
}

// TestRouteAllocs proves routing allocates nothing per request.
func TestRouteAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not asserted under the race detector (sync.Pool drops items)")
	}
	r, err := Compile(realisticFrontend(), benchBackends)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range routeCases() {
		if n := testing.AllocsPerRun(200, func() { r.Route(c.req) }); n != 0 {
			t.Errorf("%s: %v allocs per Route, want 0", c.name, n)
		}
	}
}

// TestMatchAllocs proves each fetch x method combination allocates nothing.
func TestMatchAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not asserted under the race detector (sync.Pool drops items)")
	}
	req := rq("GET", "/api/v2/Users/42/admin/x.JSON?debug=1&id=42;page=3", append([]string{
		"Content-Length: 12",
		"X-Real-IP: [2001:db8::7]:443",
		"X-Empty:",
	}, browserHeaders...)...)
	req = withSrc(req, "::ffff:10.1.2.3")
	for _, args := range [][]string{
		f("path /api/v2/Users/42/admin/x.JSON"),
		f("path -i /API/V2/USERS/42/ADMIN/X.JSON"),
		f("path /a /b /c /d /e /f /g"),
		f("path -i /a /b /c /d /e /f /API/V2/USERS/42/ADMIN/X.JSON"),
		f("path_beg -i /API/"),
		f("path_end -i .json"),
		f("path_sub -i users"),
		f("path_sub users"),
		f("path_dir admin"),
		f("path_dir -i USERS/42"),
		f("path_dom json"),
		f(`path_reg ^/api/v[0-9]+/`),
		f(`path_reg -i ^/API/`),
		f("path_len gt 10"),
		f("url_beg /api"),
		f("url_end page=3"),
		f("url_sub -i DEBUG"),
		f("url_reg id=[0-9]+"),
		f("url_len 1:1000"),
		f("url_param(id) 42"),
		f("url_param(page) -m int gt 2"),
		f("urlp(page,;) 3"),
		f("url_param -m found"),
		f("query -m sub id="),
		f("hdr(host) -i www.example.com"),
		f("hdr(accept-encoding) br"),
		f("hdr_beg(host) -i www."),
		f("hdr_end(host) .com"),
		f("hdr_sub(user-agent) -i firefox"),
		f("hdr_dom(host) -i example"),
		f("hdr_dir(x-path) a"),
		f("hdr_reg(user-agent) Firefox/[0-9]+"),
		f("hdr_len(host) gt 3"),
		f("hdr_cnt(x-forwarded-for) eq 2"),
		f("hdr_cnt gt 5"),
		f("hdr(x-forwarded-for,-1) 198.51.100.2"),
		f("hdr(x-forwarded-for,1) 203.0.113.7"),
		f("hdr(x-empty) -m found"),
		f("hdr -i nothing-here"),
		f("hdr_val(content-length) gt 0"),
		f("hdr_ip(x-forwarded-for) 198.51.100.0/24"),
		f("hdr_ip(x-real-ip) 2001:db8::/32"),
		f("req.fhdr(accept-language) -m beg en-US"),
		f("method GET HEAD"),
		f("method -i get"),
		f("src 10.0.0.0/8"),
		f("src 10.1.2.3"),
		f("src 2001:db8::/32"),
		f("src_port 40000"),
		f("dst_port 80 443"),
		f("req.ver 1.1"),
		f("always_true"),
	} {
		e := mustExpr(t, args...)
		e.match(req)
		if n := testing.AllocsPerRun(200, func() { e.match(req) }); n != 0 {
			t.Errorf("%q: %v allocs per match, want 0", args, n)
		}
	}
}

// BenchmarkRoute routes typical requests through the realistic frontend.
// go test ./userspace/route/ -run '^$' -bench . -benchmem
func BenchmarkRoute(b *testing.B) {
	r, err := Compile(realisticFrontend(), benchBackends)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range routeCases() {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r.Route(c.req)
			}
		})
	}
}

// BenchmarkMatch measures single ACLs.
func BenchmarkMatch(b *testing.B) {
	req := withSrc(rq("GET", "/api/v2/users/42?debug=1&id=42", browserHeaders...), "10.1.2.3")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"path_beg", f("path_beg /api/")},
		{"path_beg_i", f("path_beg -i /API/")},
		{"path_end_i_6", f("path_end -i .css .js .png .jpg .svg .woff2")},
		{"path_str_map_20", f("path /a /b /c /d /e /f /g /h /i /j /k /l /m /n /o /p /q /r /s /api/v2/users/42")},
		{"path_reg", f(`path_reg ^/api/v[0-9]+/`)},
		{"hdr_host_i", f("hdr(host) -i www.example.com")},
		{"hdr_sub_ua_i", f("hdr_sub(user-agent) -i bot crawler spider")},
		{"hdr_cnt", f("hdr_cnt(x-forwarded-for) gt 3")},
		{"url_param", f("url_param(id) 42")},
		{"method", f("method POST PUT PATCH DELETE")},
		{"src_cidr", f("src 192.168.0.0/16 172.16.0.0/12 10.0.0.0/8")},
		{"dst_port", f("dst_port 80 443")},
	} {
		e := mustExpr(b, tc.args...)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e.match(req)
			}
		})
	}
}

package route

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/userspace/proxy/h1"
)

type matchCase struct {
	args []string
	req  *h1.Request
	want bool
}

func runMatchCases(t *testing.T, cases []matchCase) {
	t.Helper()
	for _, c := range cases {
		name := strings.Join(c.args, " ") + " @ " + string(c.req.Method) + " " + string(c.req.Target)
		t.Run(name, func(t *testing.T) {
			e := mustExpr(t, c.args...)
			if got := e.match(c.req); got != c.want {
				t.Errorf("match = %v, want %v (headers %s)", got, c.want, dumpHeaders(c.req))
			}
		})
	}
}

func dumpHeaders(r *h1.Request) string {
	var b strings.Builder
	for _, h := range r.Headers {
		b.Write(h.Line)
	}
	return strings.TrimSpace(b.String())
}

func TestPath(t *testing.T) {
	get := func(target string) *h1.Request { return rq("GET", target) }
	runMatchCases(t, []matchCase{
		// path: exact, case-sensitive unless -i
		{f("path /a"), get("/a"), true},
		{f("path /a"), get("/a?x=1"), true},
		{f("path /a"), get("/a/"), false},
		{f("path /a"), get("/A"), false},
		{f("path -i /A"), get("/a"), true},
		{f("path -i /a"), get("/A"), true},
		{f("path /x /y /a"), get("/a"), true},
		{f("path /a"), get("http://example.com/a?q"), true},
		// path_beg
		{f("path_beg /api"), get("/api/v1"), true},
		{f("path_beg /api"), get("/ap"), false},
		{f("path_beg /api"), get("/API/v1"), false},
		{f("path_beg -i /API"), get("/api/v1"), true},
		{f("path_beg -i /api"), get("/ApI/v1"), true},
		// path_end
		{f("path_end .css .js"), get("/s/app.js"), true},
		{f("path_end .css .js"), get("/s/app.JS"), false},
		{f("path_end -i .css .js"), get("/s/app.JS"), true},
		{f("path_end .css"), get("/s/app.css?v=1"), true},
		{f("path_end .css"), get("/s/app.cs"), false},
		// path_sub
		{f("path_sub adm"), get("/xadmy"), true},
		{f("path_sub adm"), get("/xADMy"), false},
		{f("path_sub -i adm"), get("/xADMy"), true},
		{f("path_sub -i ADM"), get("/xadmy"), true},
		{f("path_sub adm"), get("/ad"), false},
		// path_dir: slash-delimited words
		{f("path_dir img"), get("/a/img/b.png"), true},
		{f("path_dir img"), get("/img"), true},
		{f("path_dir img"), get("/a/imgx/b"), false},
		{f("path_dir img"), get("/a/ximg/b"), false},
		{f("path_dir /img/"), get("/x/img"), true},
		{f("path_dir a/b"), get("/x/a/b/c"), true},
		{f("path_dir a/b"), get("/x/aa/b"), false},
		{f("path_dir -i IMG"), get("/a/Img/b"), true},
		{f("path_dir img"), get("/a/Img/b"), false},
		// path_dom: dot/slash/colon-delimited words
		{f("path_dom com"), get("/example.com/x"), true},
		{f("path_dom com"), get("/example.comx/x"), false},
		// path_reg
		{f(`path_reg ^/v[0-9]+/`), get("/v2/users"), true},
		{f(`path_reg ^/v[0-9]+/`), get("/vx/users"), false},
		{f(`path_reg ^/API$`), get("/api"), false},
		{f(`path_reg -i ^/API$`), get("/api"), true},
		{f(`path_reg \.php$ \.asp$`), get("/index.asp"), true},
		// path_len: integer on the length
		{f("path_len 3"), get("/ab"), true},
		{f("path_len 3"), get("/abc"), false},
		{f("path_len gt 3"), get("/abc"), true},
		{f("path_len gt 3"), get("/ab"), false},
		{f("path_len 2:4"), get("/abc"), true},
		{f("path_len 2:4"), get("/abcde"), false},
		// -m overrides the derivative's method
		{f("path -m beg /x"), get("/xyz"), true},
		{f("path_beg -m str /x"), get("/xyz"), false},
		{f("path -m sub -i Y"), get("/xyz"), true},
		{f("path -m len le 3"), get("/ab"), true},
		{f("path -m found"), get("/"), true},
		{f("path -m reg ^/a"), get("/abc"), true},
		// flags end at the first pattern; "--" forces the end
		{f("path /a -i"), get("/A"), false},
		{f("path /a -i"), get("-i"), true},
		{f("path -- -i"), get("-i"), true},
		{f("path -i -- /A"), get("/a"), true},
		// many exact patterns use a map lookup
		{f("path /a /b /c /d /e /f"), get("/e"), true},
		{f("path /a /b /c /d /e /f"), get("/E"), false},
		{f("path /a /b /c /d /e /f"), get("/g"), false},
		{f("path -i /a /b /c /d /e /F"), get("/f"), true},
		{f("path -i /a /b /c /d /e /f"), get("/F"), true},
		{f("path -i /a /b /c /d /e /f"), get("/G"), false},
		{[]string{"path", "-i", "/a", "/b", "/c", "/d", "/e", "/" + strings.Repeat("x", 300)}, get("/" + strings.Repeat("X", 300)), true},
		// no pattern never matches
		{f("path_beg"), get("/"), false},
	})
}

func TestURL(t *testing.T) {
	get := func(target string) *h1.Request { return rq("GET", target) }
	runMatchCases(t, []matchCase{
		{f("url /a?b=1"), get("/a?b=1"), true},
		{f("url /a"), get("/a?b=1"), false},
		{f("url_beg http://"), get("http://example.com/a"), true},
		{f("url_beg http://"), get("/a"), false},
		{f("url_beg -i HTTP://"), get("http://example.com/a"), true},
		{f("url_end =1"), get("/a?b=1"), true},
		{f("url_end =1"), get("/a?b=2"), false},
		{f("url_sub b="), get("/a?b=1"), true},
		{f("url_sub -i B="), get("/a?b=1"), true},
		{f(`url_reg ^/a\?b=[0-9]$`), get("/a?b=7"), true},
		{f(`url_reg ^/a\?b=[0-9]$`), get("/a?b=x"), false},
		{f("url_len 6"), get("/a?b=1"), true},
		{f("url_len lt 6"), get("/a?b=1"), false},
		{f("url_dir b"), get("/a/b?x"), true},
		{f("url_dom example"), get("http://www.example.com/"), true},
		{f("url *"), rq("OPTIONS", "*"), true},
		{f("query b=1"), get("/a?b=1"), true},
		{f("query -m found"), get("/a?"), true},
		{f("query -m found"), get("/a"), false},
	})
}

func TestURLParam(t *testing.T) {
	get := func(target string) *h1.Request { return rq("GET", target) }
	runMatchCases(t, []matchCase{
		{f("url_param(id) 42"), get("/x?a=1&id=42"), true},
		{f("url_param(id) 42"), get("/x?id=42&a=1"), true},
		{f("url_param(id) 42"), get("/x?id=42x"), false},
		{f("url_param(id) 42"), get("/x?xid=42"), false},
		{f("url_param(id) 42"), get("/x?ID=42"), false},
		{f("url_param(id) 42"), get("/x?id=4&id=42"), true}, // every occurrence is tried
		{f("url_param(id) 42"), get("/x?a=1;id=42"), true},
		{f("url_param(id) 42"), get("/x/id=42"), false},
		{f("url_param(id) -i ab"), get("/x?id=AB"), true},
		{f("url_param(id) -m found"), get("/x?id="), true},
		{f("url_param(id) -m found"), get("/x?id"), false},
		{f("url_param(id) -m found"), get("/x"), false},
		{f("url_param(id) -m found"), get("/x?"), false},
		{f("url_param -m found"), get("/x?a=1"), true},
		{f("url_param 2"), get("/x?a=1&b=2"), true},
		{f("urlp(id) 42"), get("/x?id=42"), true},
		{f("urlp_beg(id) 4"), get("/x?id=42"), true},
		{f("urlp_end(id) 2"), get("/x?id=42"), true},
		{f("urlp_sub(q) oo"), get("/x?q=foobar"), true},
		{f("urlp_reg(q) ^f.*r$"), get("/x?q=foobar"), true},
		{f("urlp_len(q) 6"), get("/x?q=foobar"), true},
		{f("urlp_val(page) gt 3"), get("/x?page=10"), true},
		{f("urlp_val(page) gt 3"), get("/x?page=2"), false},
		{f("urlp(sid,;) abc"), get("/foo;sid=abc"), true},
		{f("urlp(sid,;) abc"), get("/foo?sid=abc"), false},
	})
}

func TestHdr(t *testing.T) {
	h := func(headers ...string) *h1.Request { return rq("GET", "/", headers...) }
	runMatchCases(t, []matchCase{
		// names are case-insensitive, values case-sensitive unless -i
		{f("hdr(host) example.com"), h("Host: example.com"), true},
		{f("hdr(host) example.com"), h("HOST: example.com"), true},
		{f("hdr(Host) example.com"), h("host: example.com"), true},
		{f("hdr(host) example.com"), h("Host: Example.com"), false},
		{f("hdr(host) -i example.com"), h("Host: Example.COM"), true},
		{f("hdr(host) example.com"), h("X-Host: example.com"), false},
		{f("hdr(host) example.com"), h(), false},
		// every comma-separated value of every occurrence
		{f("hdr(accept) image/png"), h("Accept: image/jpeg, image/png"), true},
		{f("hdr(accept) image/png"), h("Accept: image/jpeg", "Accept: image/png"), true},
		{f("hdr(accept) image/png"), h("Accept: image/jpeg, image/pngx"), false},
		{[]string{"hdr(x-q)", `"a,b"`}, h(`X-Q: "a,b", c`), true},
		{f("hdr(x-q) c"), h(`X-Q: "a,b", c`), true},
		{f(`hdr(x-q) b"`), h(`X-Q: "a,b", c`), false},
		// req.fhdr: full lines
		{[]string{"req.fhdr(x-list)", "a, b"}, h("X-List: a, b"), true},
		{f("req.fhdr(x-list) b"), h("X-List: a, b"), false},
		{f("req.hdr(x-list) b"), h("X-List: a, b"), true},
		// derivatives
		{f("hdr_beg(host) -i www."), h("Host: WWW.example.com"), true},
		{f("hdr_beg(host) www."), h("Host: api.example.com"), false},
		{f("hdr_end(host) .com"), h("Host: www.example.com"), true},
		{f("hdr_end(host) .com"), h("Host: www.example.org"), false},
		{f("hdr_sub(user-agent) -i bot"), h("User-Agent: Googlebot/2.1"), true},
		{f("hdr_sub(user-agent) bot"), h("User-Agent: GoogleBOT/2.1"), false},
		{f("hdr_dir(x-path) b"), h("X-Path: /a/b/c"), true},
		{f("hdr_dom(host) example.com"), h("Host: www.example.com"), true},
		{f("hdr_dom(host) example.com"), h("Host: example.com:8080"), true},
		{f("hdr_dom(host) example.com"), h("Host: myexample.com"), false},
		{f("hdr_dom(host) -i example.com"), h("Host: WWW.EXAMPLE.COM"), true},
		{f("hdr_dom(host) www"), h("Host: www.example.com"), true},
		{f(`hdr_reg(host) ^api\.`), h("Host: api.example.com"), true},
		{f(`hdr_reg(host) ^api\.`), h("Host: www.api.com"), false},
		{f("hdr_len(host) 11"), h("Host: example.com"), true},
		{f("hdr_len(host) gt 20"), h("Host: example.com"), false},
		// no name: any header
		{f("hdr() secret"), h("A: x", "B: y, secret"), true},
		{f("hdr secret"), h("A: x", "B: y, secret"), true},
		{f("hdr_sub -i SECRET"), h("A: x", "B: topsecret"), true},
		{f("hdr_sub -i SECRET"), h("A: x"), false},
		// occurrences
		{f("hdr(x-forwarded-for,1) 10.0.0.1"), h("X-Forwarded-For: 10.0.0.1, 10.0.0.2", "X-Forwarded-For: 10.0.0.3"), true},
		{f("hdr(x-forwarded-for,1) 10.0.0.2"), h("X-Forwarded-For: 10.0.0.1, 10.0.0.2", "X-Forwarded-For: 10.0.0.3"), false},
		{f("hdr(x-forwarded-for,2) 10.0.0.2"), h("X-Forwarded-For: 10.0.0.1, 10.0.0.2", "X-Forwarded-For: 10.0.0.3"), true},
		{f("hdr(x-forwarded-for,-1) 10.0.0.3"), h("X-Forwarded-For: 10.0.0.1, 10.0.0.2", "X-Forwarded-For: 10.0.0.3"), true},
		{f("hdr(x-forwarded-for,-2) 10.0.0.2"), h("X-Forwarded-For: 10.0.0.1, 10.0.0.2", "X-Forwarded-For: 10.0.0.3"), true},
		{f("hdr(x-forwarded-for,-4) -m found"), h("X-Forwarded-For: 10.0.0.1, 10.0.0.2", "X-Forwarded-For: 10.0.0.3"), false},
		{f("hdr(x-forwarded-for,4) -m found"), h("X-Forwarded-For: 10.0.0.1, 10.0.0.2", "X-Forwarded-For: 10.0.0.3"), false},
		// found
		{f("hdr(x-empty) -m found"), h("X-Empty:"), true},
		{f("hdr(x-empty) -m found"), h("X-Other: 1"), false},
		// hdr_cnt counts values
		{f("hdr_cnt(x-forwarded-for) eq 3"), h("X-Forwarded-For: a, b", "X-Forwarded-For: c"), true},
		{f("hdr_cnt(x-forwarded-for) gt 3"), h("X-Forwarded-For: a, b", "X-Forwarded-For: c"), false},
		{f("hdr_cnt(x-none) eq 0"), h("X-Forwarded-For: a"), true},
		{f("hdr_cnt(x-none) 0"), h(), true},
		{f("hdr_cnt 3"), h("A: 1", "B: 2, 3"), true},
		{f("hdr_cnt(x-a) -m bool"), h("X-A: 1"), true},
		{f("hdr_cnt(x-a) -m bool"), h(), false},
		{f("req.hdr_cnt(x-a) 2"), h("X-A: 1, 2"), true},
		{f("req.fhdr_cnt(x-a) 1"), h("X-A: 1, 2"), true},
		// integer and address conversions of header values
		{f("hdr_val(content-length) gt 0"), h("Content-Length: 10"), true},
		{f("hdr_val(content-length) gt 0"), h("Content-Length: 0"), false},
		{f("hdr_val(content-length) lt 0"), h("Content-Length: -1"), true},
		{f("hdr(x-n) -m int 5:9"), h("X-N: 7"), true},
		{f("hdr(x-n) -m int 5:9"), h("X-N: 70"), false},
		{f("hdr_ip(x-forwarded-for) 10.0.0.0/8"), h("X-Forwarded-For: 1.2.3.4, 10.1.2.3"), true},
		{f("hdr_ip(x-forwarded-for) 10.0.0.0/8"), h("X-Forwarded-For: 1.2.3.4"), false},
		{f("hdr_ip(x-forwarded-for) 10.0.0.0/8"), h("X-Forwarded-For: not-an-ip"), false},
		{f("hdr_ip(x-real-ip) 1.2.3.4"), h("X-Real-IP: 1.2.3.4:5678"), true},
		{f("hdr_ip(x-real-ip) 2001:db8::/32"), h("X-Real-IP: [2001:db8::1]:443"), true},
		{f("hdr_ip(x-real-ip) 2001:db8::/32"), h("X-Real-IP: 2001:db8::1"), true},
		{f("hdr_ip(x-real-ip) 10.0.0.0/8"), h("X-Real-IP: ::ffff:10.9.9.9"), true},
		{f("hdr(x-real-ip) -m ip 10.0.0.0/8"), h("X-Real-IP: 10.9.9.9"), true},
	})
}

func TestMethodVersionPorts(t *testing.T) {
	runMatchCases(t, []matchCase{
		{f("method GET HEAD"), rq("GET", "/"), true},
		{f("method GET HEAD"), rq("HEAD", "/"), true},
		{f("method GET HEAD"), rq("POST", "/"), false},
		{f("method GET"), rq("get", "/"), false},
		{f("method -i get"), rq("GET", "/"), true},
		{f("method PURGE"), rq("PURGE", "/"), true},
		{f("method -m beg P"), rq("PUT", "/"), true},

		{f("req.ver 1.1"), rq("GET", "/"), true},
		{f("req.ver 1.0"), rq("GET", "/"), false},
		{f("req_ver 1.0"), withVer(rq("GET", "/"), 1, 0), true},

		{f("dst_port 80 443"), withDst(rq("GET", "/"), 443), true},
		{f("dst_port 80 443"), withDst(rq("GET", "/"), 8443), false},
		{f("dst_port 8000:8999"), withDst(rq("GET", "/"), 8443), true},
		{f("dst_port 8000:8999"), withDst(rq("GET", "/"), 9000), false},
		{f("dst_port :1023"), withDst(rq("GET", "/"), 80), true},
		{f("dst_port :1023"), withDst(rq("GET", "/"), 1024), false},
		{f("dst_port 1024:"), withDst(rq("GET", "/"), 1024), true},
		{f("dst_port 1024:"), withDst(rq("GET", "/"), 1023), false},
		{f("dst_port lt 1024"), withDst(rq("GET", "/"), 1023), true},
		{f("dst_port lt 1024"), withDst(rq("GET", "/"), 1024), false},
		{f("dst_port le 1024"), withDst(rq("GET", "/"), 1024), true},
		{f("dst_port gt 1024"), withDst(rq("GET", "/"), 1024), false},
		{f("dst_port ge 1024"), withDst(rq("GET", "/"), 1024), true},
		{f("dst_port eq 80"), withDst(rq("GET", "/"), 80), true},
		{f("dst_port gt 1000 lt 100"), withDst(rq("GET", "/"), 80), true}, // operator applies to the values after it
		{f("dst_port gt 1000 lt 100"), withDst(rq("GET", "/"), 500), false},
		{f("dst_port gt 8000:8999"), withDst(rq("GET", "/"), 8100), true}, // a range ignores the operator
		{f("dst_port -m found"), rq("GET", "/"), true},
		{f("src_port 40000"), rq("GET", "/"), true},
	})
}

func TestSrc(t *testing.T) {
	from := func(a string) *h1.Request { return withSrc(rq("GET", "/"), a) }
	runMatchCases(t, []matchCase{
		{f("src 10.0.0.0/8"), from("10.1.2.3"), true},
		{f("src 10.0.0.0/8"), from("11.0.0.1"), false},
		{f("src 10.0.0.0/8"), from("::ffff:10.1.2.3"), true}, // IPv4-mapped
		{f("src 10.0.0.0/8"), from("::10.1.2.3"), true},      // IPv4-compatible
		{f("src 10.0.0.0/8"), from("2002:0a01:0203::1"), true},
		{f("src 10.0.0.0/8"), from("2001:db8::1"), false},
		{f("src 10.1.2.3"), from("::ffff:10.1.2.3"), true},
		{f("src 10.1.2.3"), from("10.1.2.4"), false},
		{f("src 10.1.2.5/24"), from("10.1.2.200"), true}, // the pattern is masked
		{f("src 2001:db8::/32"), from("2001:db8::1"), true},
		{f("src 2001:db8::/32"), from("2001:db9::1"), false},
		{f("src 2001:db8::/32"), from("10.1.2.3"), false},
		{f("src 2001:db8::1"), from("2001:db8::1"), true},
		{f("src ::ffff:10.0.0.0/104"), from("10.1.2.3"), true}, // IPv4 sample vs IPv6 pattern
		{f("src ::ffff:10.1.2.3"), from("10.1.2.3"), true},
		{f("src 192.168.1"), from("192.168.0.1"), true}, // abbreviated IPv4
		{f("src 10.12/8"), from("10.200.0.1"), true},
		{f("src 10.0.0.0/255.0.0.0"), from("10.9.9.9"), true},
		{f("src 10.0.0.0/255.255.0.0"), from("10.9.9.9"), false},
		{f("src -n 192.0.2.0/24 198.51.100.0/24"), from("198.51.100.7"), true},
		{f("src 0.0.0.0/0"), from("203.0.113.1"), true},
		{f("src -m found"), from("203.0.113.1"), true},
		{f("src 10.0.0.0/8"), noSrc(rq("GET", "/")), false},
	})
}

func noSrc(r *h1.Request) *h1.Request { r.Src = netip.Addr{}; return r }

func TestBooleans(t *testing.T) {
	runMatchCases(t, []matchCase{
		{f("always_true"), rq("GET", "/"), true},
		{f("always_false"), rq("GET", "/"), false},
		{f("always_true -m int 1"), rq("GET", "/"), true},
		{f("always_false -m int 0"), rq("GET", "/"), true},
		{f("req.proto_http"), rq("GET", "/"), true},
		{f("req.len gt 0"), rq("GET", "/"), true},
	})
}

func TestPatternsFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	exact := write("exact.lst", "# comment\n\nCurl/8.0\r\n   Wget/1.21\n #notacomment\n")
	generic := write("generic.lst", "Mozilla/5.0\n")
	nets := write("nets.lst", "10.0.0.0/8\n192.0.2.1\n2001:db8::/32\n")
	ua := func(v string) *h1.Request { return rq("GET", "/", "User-Agent: "+v) }
	runMatchCases(t, []matchCase{
		{[]string{"hdr(user-agent)", "-f", exact}, ua("Curl/8.0"), true},
		{[]string{"hdr(user-agent)", "-f", exact}, ua("Wget/1.21"), true},
		{[]string{"hdr(user-agent)", "-f", exact}, ua("#notacomment"), true}, // " #x" is the pattern "#x"
		{[]string{"hdr(user-agent)", "-f", exact}, ua("# comment"), false},
		{[]string{"hdr(user-agent)", "-f", exact}, ua("curl/8.0"), false},
		// -i applies to what follows only
		{[]string{"hdr(user-agent)", "-f", exact, "-i", "-f", generic, "test"}, ua("curl/8.0"), false},
		{[]string{"hdr(user-agent)", "-f", exact, "-i", "-f", generic, "test"}, ua("MOZILLA/5.0"), true},
		{[]string{"hdr(user-agent)", "-f", exact, "-i", "-f", generic, "test"}, ua("TeSt"), true},
		{[]string{"hdr(user-agent)", "-m", "beg", "-f", generic}, ua("Mozilla/5.0 (X11)"), true},
		{[]string{"src", "-f", nets}, withSrc(rq("GET", "/"), "10.2.3.4"), true},
		{[]string{"src", "-f", nets}, withSrc(rq("GET", "/"), "192.0.2.1"), true},
		{[]string{"src", "-f", nets}, withSrc(rq("GET", "/"), "192.0.2.2"), false},
		{[]string{"src", "-f", nets}, withSrc(rq("GET", "/"), "2001:db8::5"), true},
	})

	// Relative paths are relative to the current directory.
	t.Chdir(dir)
	e := mustExpr(t, "hdr(user-agent)", "-f", "exact.lst")
	if !e.match(ua("Wget/1.21")) {
		t.Error("relative -f exact.lst: Wget/1.21 did not match")
	}
}

package route

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/userspace/proxy/h1"
)

// rq builds a request by hand: target is split into Path and Query (an
// absolute-form target loses its scheme://authority in Path), headers are
// "Name: value" strings.
func rq(method, target string, headers ...string) *h1.Request {
	r := &h1.Request{
		Method:        []byte(method),
		Target:        []byte(target),
		Major:         1,
		Minor:         1,
		Src:           netip.MustParseAddr("192.0.2.10"),
		SrcPort:       40000,
		DstPort:       80,
		ContentLength: -1,
		HeadLen:       64,
	}
	p := target
	if i := strings.Index(p, "://"); i >= 0 {
		p = p[i+3:]
		if j := strings.IndexByte(p, '/'); j >= 0 {
			p = p[j:]
		} else {
			p = "/"
		}
	}
	if i := strings.IndexByte(p, '?'); i >= 0 {
		r.Query = []byte(p[i+1:])
		p = p[:i]
	}
	r.Path = []byte(p)
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		r.Headers = append(r.Headers, h1.Header{
			Name:  []byte(name),
			Value: []byte(strings.Trim(value, " \t")),
			Line:  []byte(h + "\r\n"),
		})
	}
	return r
}

func withSrc(r *h1.Request, addr string) *h1.Request {
	r.Src = netip.MustParseAddr(addr)
	return r
}

func withDst(r *h1.Request, port uint16) *h1.Request {
	r.DstPort = port
	return r
}

func withVer(r *h1.Request, major, minor int) *h1.Request {
	r.Major, r.Minor = major, minor
	return r
}

func pos(line int) config.Pos { return config.Pos{File: "t.cfg", Line: line} }

// mustExpr compiles one ACL line's arguments.
func mustExpr(t testing.TB, args ...string) *expr {
	t.Helper()
	e, err := parseExpr(args)
	if err != nil {
		t.Fatalf("parseExpr(%q): %v", args, err)
	}
	return e
}

// f splits an ACL line written on one line (patterns without spaces).
func f(s string) []string { return strings.Fields(s) }

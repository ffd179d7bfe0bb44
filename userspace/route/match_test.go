package route

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseAddrBytes(t *testing.T) {
	for in, want := range map[string]string{
		"1.2.3.4":                   "1.2.3.4",
		"1.2.3.4:80":                "1.2.3.4",
		"255.255.255.255":           "255.255.255.255",
		"::":                        "::",
		"::1":                       "::1",
		"2001:db8::1":               "2001:db8::1",
		"2001:DB8::A":               "2001:db8::a",
		"[2001:db8::1]":             "2001:db8::1",
		"[2001:db8::1]:443":         "2001:db8::1",
		"::ffff:10.1.2.3":           "::ffff:10.1.2.3",
		"1:2:3:4:5:6:7:8":           "1:2:3:4:5:6:7:8",
		"1:2:3:4:5:6:1.2.3.4":       "1:2:3:4:5:6:102:304",
		"fe80::1:2":                 "fe80::1:2",
		"1.2.3":                     "",
		"1.2.3.4.5":                 "",
		"256.1.1.1":                 "",
		"01.2.3.4":                  "",
		"1.2.3.4:":                  "",
		"1.2.3.4:123456":            "",
		"1:2:3:4:5:6:7:8:9":         "",
		"1::2::3":                   "",
		"12345::":                   "",
		":1::":                      "",
		"1:":                        "",
		"[::1":                      "",
		"[::1]x":                    "",
		"1:2:3:4:5:6:7::8":          "",
		"::1.2.3.4.5":               "",
		"1:2:3:4:5:6:7:1.2.3.4":     "",
		"unknown":                   "",
		"":                          "",
		"1:2:3:4:5:6:7:8 ":          "",
		"0000:0000:0000:0000::0001": "::1",
	} {
		a, ok := parseAddrBytes([]byte(in))
		got := ""
		if ok {
			got = a.String()
		}
		if got != want {
			t.Errorf("parseAddrBytes(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParseAddrBytes checks the allocation-free parser against net/netip on
// plain addresses (no port, no zone).
func FuzzParseAddrBytes(f *testing.F) {
	for _, s := range []string{"1.2.3.4", "::", "::1", "1::", "2001:db8::1", "::ffff:1.2.3.4", "1:2:3:4:5:6:7:8", "1.2.3", "1::2::3", "0.0.0.0", "a:b:c:d:e:f:0:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.ContainsAny(s, "[]%") || strings.Contains(s, ".") && strings.Count(s, ":") == 1 {
			return // port and zone forms differ on purpose
		}
		want, werr := netip.ParseAddr(s)
		got, ok := parseAddrBytes([]byte(s))
		if ok != (werr == nil) || ok && got != want {
			t.Errorf("parseAddrBytes(%q) = %v, %v; netip: %v, %v", s, got, ok, want, werr)
		}
	})
}

func TestParseIPPattern(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1":                "10.0.0.1/32",
		"10.0.0.1/8":              "10.0.0.0/8",
		"127.1":                   "127.0.0.1/32",
		"192.168.1":               "192.168.0.1/32",
		"10.12/8":                 "10.0.0.0/8",
		"192.168.0.0/255.255.0.0": "192.168.0.0/16",
		"2001:db8::1":             "2001:db8::1/128",
		"2001:db8::1/32":          "2001:db8::/32",
		"::ffff:10.0.0.0/104":     "::ffff:10.0.0.0/104",
		"10.0.0.0/33":             "",
		"10.0.0.0/255.0.255.0":    "",
		"2001:db8::/129":          "",
		"fe80::1%eth0":            "",
		"localhost":               "",
		"1.2.3.256":               "",
		"1.2.65536":               "",
	} {
		p, err := parseIPPattern(in)
		got := ""
		if err == nil {
			got = p.String()
		}
		if got != want {
			t.Errorf("parseIPPattern(%q) = %q (%v), want %q", in, got, err, want)
		}
	}
}

func TestParseIntPattern(t *testing.T) {
	for _, c := range []struct {
		in     string
		op     intOp
		lo, hi int64
		bad    bool
	}{
		{"5", opEq, 5, 5, false},
		{"-5", opEq, -5, -5, false},
		{"5", opGe, 5, maxInt64, false},
		{"5", opGt, 6, maxInt64, false},
		{"5", opLe, minInt64, 5, false},
		{"5", opLt, minInt64, 4, false},
		{"10:20", opEq, 10, 20, false},
		{"10:20", opLt, 10, 20, false},
		{":5", opEq, minInt64, 5, false},
		{"8:", opEq, 8, maxInt64, false},
		{":", opEq, 0, 0, true},
		{"x", opEq, 0, 0, true},
		{"1:x", opEq, 0, 0, true},
		{"1.5", opEq, 0, 0, true},
	} {
		r, err := parseIntPattern(c.in, c.op)
		if (err != nil) != c.bad || !c.bad && (r.lo != c.lo || r.hi != c.hi) {
			t.Errorf("parseIntPattern(%q, %d) = %+v, %v", c.in, c.op, r, err)
		}
	}
}

func TestStrToInt(t *testing.T) {
	for in, want := range map[string]int64{"12": 12, "-3": -3, "12abc": 12, "abc": 0, "0": 0, "99999999999999999999": maxInt64} {
		if got, ok := strToInt([]byte(in)); !ok || got != want {
			t.Errorf("strToInt(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	if _, ok := strToInt(nil); ok {
		t.Error("strToInt(empty) converted")
	}
}

func TestMatchWordEdges(t *testing.T) {
	for _, c := range []struct {
		v, p string
		dom  bool
		want bool
	}{
		{"/a/b/c", "b", false, true},
		{"/a/b/c", "/b/", false, true},
		{"/a/b/c", "/", false, false},
		{"/a/bb/c", "b", false, false},
		{"/a/b?x", "b", false, true},
		{"b", "b", false, true},
		{"", "b", false, false},
		{"www.example.com", "example", true, true},
		{"www.example.com:80", "com", true, true},
		{"www.example.com", "example.com", true, true},
		{"www.example.co", "example.com", true, false},
		{"www.example.com", "exam", true, false},
		{"wwwexample.com", "example", true, false},
	} {
		p := strPat{s: c.p}
		if got := matchWord([]byte(c.v), &p, c.dom); got != c.want {
			t.Errorf("matchWord(%q, %q, dom=%v) = %v", c.v, c.p, c.dom, got)
		}
	}
}

func TestNextElem(t *testing.T) {
	var got []string
	rest, more := []byte(`a, "b,c" ,d\,e, "x\"y,z",`), true
	for more {
		var e []byte
		e, rest, more = nextElem(rest)
		got = append(got, string(trimOWS(e)))
	}
	want := []string{"a", `"b,c"`, `d\`, "e", `"x\"y,z"`, ""}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestSuggest(t *testing.T) {
	for in, want := range map[string]string{
		"path_bge": "path_beg",
		"paht_beg": "path_beg",
		"hdr_cn":   "hdr_cnt",
		"srcc":     "src",
		"zzzzzz":   "",
		"ur":       "url",
	} {
		if got := suggest(in, fetchNames); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestContainsFold(t *testing.T) {
	for _, c := range []struct {
		b, s string
		want bool
	}{
		{"GoogleBot/2.1", "bot", true},
		{"GoogleBOT", "bot", true},
		{"bobobot", "bot", true},
		{"Bo", "bot", false},
		{"xBxbxBOx", "bot", false},
		{"", "", true},
		{"abc", "", true},
		{"abc/123", "c/1", true},
		{"ABC/123", "/12", true},
		{"ABC", "abcd", false},
	} {
		if got := containsFold([]byte(c.b), c.s); got != c.want {
			t.Errorf("containsFold(%q, %q) = %v", c.b, c.s, got)
		}
	}
}

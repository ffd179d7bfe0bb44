package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestLexLine(t *testing.T) {
	env := &lexEnv{file: "f.cfg", line: 7, section: "fe", lookup: lookupGolden}
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"   \t  ", nil},
		{"# only a comment", nil},
		{"bind :80", []string{"bind", ":80"}},
		{"  bind\t:80  # comment", []string{"bind", ":80"}},
		{"global#comment", []string{"global"}},
		{`a\ b c`, []string{"a b", "c"}},
		{`a\#b`, []string{"a#b"}},
		{`"a#b" 'c#d'`, []string{"a#b", "c#d"}},
		{`"a b"'c d'e`, []string{"a bc de"}},
		{`'a\b$X'`, []string{`a\b$X`}},
		{`"a\\b" a\\b`, []string{`a\b`, `a\b`}},
		{`\"x\" \'y\'`, []string{`"x"`, `'y'`}},
		{`"it's" 'say "hi"'`, []string{"it's", `say "hi"`}},
		{`\r\n\t \x41 "\x42"`, []string{"\r\n\t", "A", "B"}},
		{`a\.b \1 end\`, []string{`a\.b`, `\1`, `end\`}},
		{`"" '' x""y`, []string{"", "", "xy"}},
		{`$SLUICE_PORT "$SLUICE_PORT" "${SLUICE_PORT}1"`, []string{"$SLUICE_PORT", "8080", "80801"}},
		{`"\$SLUICE_PORT" \$SLUICE_PORT`, []string{"$SLUICE_PORT", "$SLUICE_PORT"}},
		{`"$NOPE" "${NOPE-dflt}" "${SLUICE_EMPTY-dflt}"`, []string{"", "dflt", ""}},
		{`"${SLUICE_LIST[*]}"`, []string{"web1", "web2", "web3"}},
		{`"<${SLUICE_LIST[*]}>"`, []string{"<web1", "web2", "web3>"}},
		{`"$.FILE:${.LINE}:$.SECTION"`, []string{"f.cfg:7:fe"}},
		{`"$" "$1" "a$" "$-"`, []string{"$", "$1", "a$", "$-"}},
		{`"$SLUICE_HASH" x`, []string{"a#b", "x"}},
		{"a\r", []string{"a"}},
	}
	for _, tt := range tests {
		got, err := lexLine(tt.in, env)
		if err != nil {
			t.Errorf("lexLine(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("lexLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestLexLineErrors(t *testing.T) {
	env := &lexEnv{lookup: lookupGolden}
	tests := []struct{ in, want string }{
		{`acl a "x`, `unmatched double quote (") starting at column 7`},
		{`acl a 'x`, `unmatched single quote (') starting at column 7`},
		{`a "b\"`, `unmatched double quote (") starting at column 3`},
		{`\xZ1`, `invalid or incomplete '\x' escape at column 1`},
		{`"\x4"`, `invalid or incomplete '\x' escape at column 2`},
		{`"${A"`, `missing '}' to close '${A' at column 2`},
		{`"${A-x"`, `missing '}' to close '${A' at column 2`},
		{`"${}"`, `invalid environment variable name after '${' at column 2`},
		{"a\x00b", `stray NUL character at column 2`},
	}
	for _, tt := range tests {
		_, err := lexLine(tt.in, env)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("lexLine(%q) error = %v, want %q", tt.in, err, tt.want)
		}
	}
}

func TestSplitLines(t *testing.T) {
	got := splitLines([]byte("a\r\nb\n\nc"))
	if want := []string{"a", "b", "", "c"}; !reflect.DeepEqual(got, want) {
		t.Errorf("splitLines = %q, want %q", got, want)
	}
	if got := splitLines(nil); got != nil {
		t.Errorf("splitLines(nil) = %q", got)
	}
}

func TestParseTime(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"0", 0},
		{"5000", 5 * time.Second},
		{"5000ms", 5 * time.Second},
		{"1500us", 2 * time.Millisecond},
		{"1us", time.Millisecond},
		{"10s", 10 * time.Second},
		{"2m", 2 * time.Minute},
		{"1h", time.Hour},
		{"1d", 24 * time.Hour},
		{"2147483647", 2147483647 * time.Millisecond},
		{"24d", 24 * 24 * time.Hour},
	}
	for _, tt := range tests {
		got, err := parseTime(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parseTime(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "s", "-1", "1.5s", "5x", "5S", "5 s", "25d", "2147483648", "99999999999999999999999"} {
		if d, err := parseTime(in); err == nil {
			t.Errorf("parseTime(%q) = %v, want an error", in, d)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"16384", 16384},
		{"16k", 16 << 10},
		{"16K", 16 << 10},
		{"2m", 2 << 20},
		{"1g", 1 << 30},
		{"1G", 1 << 30},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parseSize(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "k", "-1", "1.5k", "1kb", "1t", "99999999999999999999", "9999999999999g"} {
		if n, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %v, want an error", in, n)
		}
	}
}

func TestSuggest(t *testing.T) {
	cands := []string{"default_backend", "use_backend", "maxconn", "mode", "server", "timeout"}
	tests := []struct{ in, want string }{
		{"defualt_backend", "default_backend"},
		{"default-backend", "default_backend"},
		{"maxcon", "maxconn"},
		{"mod", "mode"},
		{"sever", "server"},
		{"timeout", ""}, // the word itself is never suggested
		{"xyz", ""},
		{"", ""},
		{strings.Repeat("x", 200), ""},
	}
	for _, tt := range tests {
		if got := suggest(tt.in, cands); got != tt.want {
			t.Errorf("suggest(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"2.6", "2.6", 0},
		{"2.6", "2.6.0", 0},
		{"2.6", "2.4", 1},
		{"2.6", "2.10", -1},
		{"2.6", "2.6-dev3", 1},
		{"2.6-dev3", "2.6-dev10", -1},
		{"2.6.1", "2.6", 1},
	}
	for _, tt := range tests {
		if got := compareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// diagRE is the FILE:LINE: message shape every diagnostic must have.
var diagRE = regexp.MustCompile(`^[^\n]+:[1-9][0-9]*: [^\n]+$`)

func TestParseAPI(t *testing.T) {
	// A valid configuration: nil error, non-nil Config.
	cfg, err := Parse("ok.cfg", []byte("frontend fe\n bind :80\n timeout client 1s\n"))
	if err != nil || cfg == nil {
		t.Fatalf("Parse = %v, %v", cfg, err)
	}
	if cfg.Warnings != nil {
		t.Errorf("warnings = %v", cfg.Warnings)
	}

	// An invalid one: Errors, and a Config that still carries the warnings.
	cfg, err = Parse("bad.cfg", []byte("global\n daemon\nfrontend fe\n bind\n"))
	errs, ok := err.(Errors)
	if !ok || len(errs) != 1 {
		t.Fatalf("err = %#v, want 1 Error", err)
	}
	if cfg == nil || len(cfg.Warnings) == 0 {
		t.Fatalf("cfg = %+v, want warnings even on error", cfg)
	}
	want := "bad.cfg:4: 'bind' expects at least one address, e.g. 'bind :80' or 'bind 127.0.0.1:8080'"
	if errs.Error() != want {
		t.Errorf("Errors.Error() = %q, want %q", errs.Error(), want)
	}
	for _, d := range append(errs, cfg.Warnings...) {
		if !diagRE.MatchString(d.Error()) {
			t.Errorf("diagnostic %q is not FILE:LINE: message", d.Error())
		}
	}
}

func TestErrorsSorted(t *testing.T) {
	_, err := Parse("s.cfg", []byte("frontend a\n default_backend x\n maxconn -1\nfrontend b\n bind :80\n mode bogus\n"))
	errs := err.(Errors)
	for i := 1; i < len(errs); i++ {
		if errs[i].Pos.Line < errs[i-1].Pos.Line {
			t.Errorf("errors not sorted by line: %v", errs)
		}
	}
	if len(errs) != 3 {
		t.Errorf("errors = %v, want 3 (missing backend, bad maxconn, bad mode)", errs)
	}
}

func TestParseUsesProcessEnvironment(t *testing.T) {
	t.Setenv("SLUICE_TEST_BIND", "127.0.0.1:18080")
	cfg, err := Parse("env.cfg", []byte("frontend fe\n bind \"$SLUICE_TEST_BIND\"\n timeout client 1s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Frontends[0].Binds[0].Addr; got != "127.0.0.1:18080" {
		t.Errorf("bind = %q, want the environment's value", got)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.cfg")
	b := filepath.Join(dir, "b.cfg")
	os.WriteFile(a, []byte("defaults\n timeout connect 1s\n timeout client 1s\n timeout server 1s\nfrontend fe\n bind :80\n"), 0o644)
	os.WriteFile(b, []byte(" default_backend be\nbackend be\n server s 127.0.0.1:80\n"), 0o644)
	cfg, err := Load(a, b)
	if err != nil {
		t.Fatal(err)
	}
	fe := cfg.Frontends[0]
	if fe.DefaultBackend != "be" || fe.DefaultBackendPos != (Pos{File: b, Line: 1}) {
		t.Errorf("default_backend %q at %v, want be at %s:1", fe.DefaultBackend, fe.DefaultBackendPos, b)
	}
	if be := cfg.Backend("be"); be == nil || be.Timeouts.Connect != time.Second || be.Pos != (Pos{File: b, Line: 2}) {
		t.Errorf("backend = %+v", be)
	}

	missing := filepath.Join(dir, "missing.cfg")
	cfg, err = Load(a, missing)
	errs, ok := err.(Errors)
	if !ok || len(errs) != 1 || cfg == nil {
		t.Fatalf("Load with a missing file = %v, %v", cfg, err)
	}
	if want := missing + ": cannot read configuration file: no such file or directory"; errs[0].Error() != want {
		t.Errorf("error = %q, want %q", errs[0].Error(), want)
	}

	if _, err := Load(); err == nil {
		t.Error("Load() with no file: no error")
	}
}

func TestPosAndDiag(t *testing.T) {
	if s := (Pos{File: "a.cfg", Line: 3}).String(); s != "a.cfg:3" {
		t.Errorf("Pos.String = %q", s)
	}
	if s := (Pos{File: "a.cfg"}).String(); s != "a.cfg" {
		t.Errorf("Pos.String without line = %q", s)
	}
	if s := (Diag{Msg: "m"}).Error(); s != "m" {
		t.Errorf("Diag.Error without position = %q", s)
	}
}

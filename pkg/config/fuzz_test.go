package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Run the fuzzers briefly, with a short minimization time (the default 60s
// per new input would use the whole budget on the large seeds):
//
//	go test ./pkg/config -run '^$' -fuzz '^FuzzParse$' -fuzztime=20s -fuzzminimizetime=2s
//	go test ./pkg/config -run '^$' -fuzz '^FuzzLex$' -fuzztime=20s -fuzzminimizetime=2s

// addGoldenSeeds adds the configurations of the golden files and the seed
// configurations to a fuzz corpus (testdata/fuzz/ holds more).
func addGoldenSeeds(f *testing.F) {
	files, _ := filepath.Glob("testdata/golden/*.txt")
	files = append(files, "testdata/seed-basic.cfg", "testdata/seed-websocket.cfg")
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		input, _, _ := strings.Cut(string(data), wantSep+"\n")
		f.Add([]byte(input))
	}
}

// FuzzLex cuts arbitrary lines into words: it must not panic, a failure
// must be reportable as FILE:LINE: message, and text without any quoting,
// escaping, comment or variable must split exactly on blanks.
func FuzzLex(f *testing.F) {
	addGoldenSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		lines := splitLines(data)
		env := &lexEnv{file: "fuzz.cfg", section: "fe", lookup: lookupGolden}
		for i, l := range lines {
			env.line = i + 1
			words, err := lexLine(l, env)
			if err != nil {
				d := Diag{Pos: Pos{File: "fuzz.cfg", Line: i + 1}, Msg: escapeControls(err.Error())}
				if !diagLine.MatchString(d.Error()) {
					t.Fatalf("line %d: diagnostic %q is not FILE:LINE: message", i+1, d.Error())
				}
				continue
			}
			if !strings.ContainsAny(l, "\"'\\#$\x00") {
				want := strings.FieldsFunc(l, func(r rune) bool { return r < 0x80 && isBlank(byte(r)) })
				if len(want) == 0 {
					want = nil
				}
				if strings.Join(words, "\x00") != strings.Join(want, "\x00") || len(words) != len(want) {
					t.Fatalf("lexLine(%q) = %q, want %q", l, words, want)
				}
			}
		}
	})
}

// diagLine is what every diagnostic must look like: the file, a line number
// from 1, and a one-line message.
var diagLine = regexp.MustCompile(`^fuzz\.cfg:[1-9][0-9]*: [^\n]+$`)

// FuzzParse parses arbitrary configurations: it must not panic, must return
// a Config, an error that is nil or Errors, and diagnostics that all point
// at a line of the file.
func FuzzParse(f *testing.F) {
	addGoldenSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parseSources([]source{{name: "fuzz.cfg", data: data}}, lookupGolden)
		if cfg == nil {
			t.Fatal("nil Config")
		}
		var diags []Diag
		if err != nil {
			errs, ok := err.(Errors)
			if !ok || len(errs) == 0 {
				t.Fatalf("error %#v is not a non-empty Errors", err)
			}
			diags = append(diags, errs...)
		}
		diags = append(diags, cfg.Warnings...)
		nlines := len(splitLines(data))
		for _, d := range diags {
			if d.Pos.File != "fuzz.cfg" || d.Pos.Line < 1 || d.Pos.Line > nlines {
				t.Fatalf("diagnostic %q points outside the file (%d lines)", d.Error(), nlines)
			}
			if !diagLine.MatchString(d.Error()) {
				t.Fatalf("diagnostic %q is not FILE:LINE: message", d.Error())
			}
		}
		if err == nil {
			for _, fe := range cfg.Frontends {
				// A frontend without bind is only a warning, as in HAProxy.
				if fe.DefaultBackend != "" && cfg.Backend(fe.DefaultBackend) == nil {
					t.Fatalf("valid config with a bad frontend: %+v", fe)
				}
			}
		}
	})
}

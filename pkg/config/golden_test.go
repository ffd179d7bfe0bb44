package config

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden with the current output")

// Golden files (testdata/golden/NAME.txt) hold a configuration, a line
// "#==== want", and the expected result: one "error: ..." or "warning: ..."
// line per diagnostic, then, when there is no error, "model:" and the model
// as indented JSON (zero values left out, durations and positions as
// strings). A line "#==== file NAME" inside the configuration starts another
// file, parsed after the previous ones as by Load. The first file is named
// NAME.cfg.
const (
	wantSep = "#==== want"
	fileSep = "#==== file "
)

// goldenEnv is the environment the golden configurations see.
var goldenEnv = map[string]string{
	"SLUICE_PORT":  "8080",
	"SLUICE_HOST":  "127.0.0.1",
	"SLUICE_LIST":  "web1 web2  web3",
	"SLUICE_EMPTY": "",
	"SLUICE_HASH":  "a#b",
}

func lookupGolden(name string) (string, bool) {
	v, ok := goldenEnv[name]
	return v, ok
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/golden/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden files")
	}
	for _, path := range files {
		name := strings.TrimSuffix(filepath.Base(path), ".txt")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			input, want, found := strings.Cut(string(data), wantSep+"\n")
			if !found {
				t.Fatalf("%s: missing %q line", path, wantSep)
			}
			srcs := splitGoldenInput(name+".cfg", input)
			cfg, err := parseSources(srcs, lookupGolden)
			got := renderResult(t, cfg, err)
			if *update {
				if err := os.WriteFile(path, []byte(input+wantSep+"\n"+got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != want {
				t.Errorf("%s: result differs (run with -update to accept)\n--- got\n%s\n--- want\n%s", path, got, want)
			}
		})
	}
}

// splitGoldenInput cuts the input at "#==== file NAME" lines, which belong to
// no file: the first file's line numbers are the golden file's, the others
// start again at 1.
func splitGoldenInput(first, input string) []source {
	var srcs []source
	name, cur := first, []string{}
	for _, l := range strings.SplitAfter(input, "\n") {
		if rest, ok := strings.CutPrefix(l, fileSep); ok {
			srcs = append(srcs, source{name: name, data: []byte(strings.Join(cur, ""))})
			name, cur = strings.TrimSpace(rest), nil
			continue
		}
		cur = append(cur, l)
	}
	return append(srcs, source{name: name, data: []byte(strings.Join(cur, ""))})
}

func renderResult(t *testing.T, cfg *Config, err error) string {
	t.Helper()
	var b strings.Builder
	if cfg == nil {
		t.Fatal("nil Config")
	}
	if err != nil {
		errs, ok := err.(Errors)
		if !ok {
			t.Fatalf("error is %T, not Errors", err)
		}
		for _, d := range errs {
			fmt.Fprintf(&b, "error: %s\n", d.Error())
		}
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w.Error())
	}
	if err == nil {
		fmt.Fprintf(&b, "model:\n%s\n", dumpJSON(t, cfg))
	}
	return b.String()
}

func dumpJSON(t *testing.T, cfg *Config) string {
	t.Helper()
	c := *cfg
	c.Warnings = nil
	v, _ := dump(reflect.ValueOf(c))
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// ordered is a JSON object that keeps the struct's field order.
type ordered []field

type field struct {
	k string
	v any
}

func (o ordered) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.k)
		v, err := json.Marshal(f.v)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	posType      = reflect.TypeOf(Pos{})
	modeType     = reflect.TypeOf(Mode(0))
)

// dump converts a model value for JSON, leaving zero values out (ok=false).
func dump(v reflect.Value) (any, bool) {
	switch v.Type() {
	case durationType:
		d := time.Duration(v.Int())
		return d.String(), d != 0
	case posType:
		p := v.Interface().(Pos)
		return p.String(), p != Pos{}
	case modeType:
		return v.Interface().(Mode).String(), true
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return nil, false
		}
		return dump(v.Elem())
	case reflect.Struct:
		var o ordered
		for i := 0; i < v.NumField(); i++ {
			if x, ok := dump(v.Field(i)); ok {
				o = append(o, field{v.Type().Field(i).Name, x})
			}
		}
		return o, len(o) > 0
	case reflect.Slice:
		if v.Len() == 0 {
			return nil, false
		}
		out := make([]any, v.Len())
		for i := range out {
			x, ok := dump(v.Index(i))
			if !ok && v.Index(i).Kind() == reflect.String {
				x = "" // keep empty words in ACL/condition tokens
			}
			out[i] = x
		}
		return out, true
	case reflect.String:
		return v.String(), v.String() != ""
	case reflect.Int, reflect.Int64:
		return v.Int(), v.Int() != 0
	case reflect.Bool:
		return v.Bool(), v.Bool()
	}
	return v.Interface(), !v.IsZero()
}

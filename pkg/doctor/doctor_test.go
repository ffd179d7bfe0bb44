package doctor

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/userspace/source"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden with the current output")

// Golden cases (testdata/golden/CASE/) hold a fake filesystem root/ (only
// what doctor reads: proc/sys/..., proc/self/limits, proc/net/softnet_stat,
// proc/mounts, sys/kernel/btf/vmlinux), optionally sluice.cfg (the -f
// configuration) and features.txt (the eBPF probe's answer: NAME<TAB>yes|no
// <TAB>DETAIL per line; without it, HostFeatures(root)), and want.txt, the
// expected report.
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/golden/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			o := Options{Root: filepath.Join(dir, "root")}
			if cfgPath := filepath.Join(dir, "sluice.cfg"); exists(cfgPath) {
				cfg, err := config.Load(cfgPath)
				if err != nil {
					t.Fatalf("config: %v", err)
				}
				o.Config = cfg
			}
			if fp := filepath.Join(dir, "features.txt"); exists(fp) {
				feats := readFeatures(t, fp)
				o.Features = func() []Feature { return feats }
			}
			var b bytes.Buffer
			if err := Run(o).WriteText(&b); err != nil {
				t.Fatal(err)
			}
			want := filepath.Join(dir, "want.txt")
			if *update {
				if err := os.WriteFile(want, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			w, err := os.ReadFile(want)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got := b.String(); got != string(w) {
				t.Errorf("%s differs (run with -update to accept)\n--- got\n%s\n--- want\n%s", want, got, w)
			}
		})
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func readFeatures(t *testing.T, path string) []Feature {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []Feature
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(l, "\t", 3)
		if len(f) != 3 {
			t.Fatalf("%s: bad line %q", path, l)
		}
		out = append(out, Feature{Name: f[0], Available: f[1] == "yes", Detail: f[2]})
	}
	return out
}

// Names of the host checks, always present.
var hostChecks = []string{
	"net.ipv4.ip_local_port_range", "net.ipv4.tcp_tw_reuse", "net.ipv4.tcp_max_tw_buckets",
	"net.ipv4.tcp_fin_timeout", "net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog",
	"net.core.netdev_max_backlog", "net.ipv4.ip_nonlocal_bind", "RLIMIT_NOFILE", "fs.nr_open", "fs.file-max",
	"ebpf: BTF", "ebpf: cgroup v2",
}

// On the live system: every check is there with a value and a reason.
func TestLiveHost(t *testing.T) {
	r := Run(Options{})
	names := map[string]bool{}
	for _, c := range r.Checks {
		names[c.Name] = true
		if c.Value == "" || c.Why == "" || c.Recommendation == "" {
			t.Errorf("incomplete check %+v", c)
		}
	}
	for _, n := range hostChecks {
		if !names[n] {
			t.Errorf("no check %q", n)
		}
	}
	var b bytes.Buffer
	r.WriteText(&b)
	t.Logf("\n%s", b.String())
}

// The per-server figures: sources x ports / 60 s.
func TestServerRate(t *testing.T) {
	cfg, err := config.Parse("t.cfg", []byte(`
frontend f
    bind :80
    maxconn 1000
    default_backend b
backend b
    server s 192.168.1.1:80 source 10.0.0.1-10.0.0.4:10000-10599
`))
	if err != nil {
		t.Fatal(err)
	}
	r := Run(Options{Root: t.TempDir(), Config: cfg, Features: func() []Feature { return nil }})
	c := r.Checks[len(r.Checks)-1]
	if c.Name != "server b/s" || !strings.Contains(c.Value, "4 source(s) x 600 ports = 2400 connections at once, 40 new connections/s sustained") || c.Status != OK {
		t.Errorf("%+v", c)
	}
	if !strings.Contains(c.Why, "tcp_fin_timeout does not change it") {
		t.Errorf("why: %s", c.Why)
	}
}

// A source pool the host cannot use turns its servers' checks into warnings.
func TestCheckSource(t *testing.T) {
	cfg, err := config.Parse("t.cfg", []byte(`
frontend f
    bind :80
    maxconn 10
    default_backend b
backend b
    source 10.0.0.1-10.0.0.2
    server s1 192.168.1.1:80
    server s2 192.168.1.2:80
    server s3 192.168.1.3:80 source 10.9.9.9 interface eth9
`))
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	r := Run(Options{Root: t.TempDir(), Config: cfg, Features: func() []Feature { return nil },
		CheckSource: func(sp source.Spec) ([]string, error) {
			calls++
			if sp.Interface != "" {
				return nil, errors.New("source ... interface eth9: no such network interface here")
			}
			return []string{"source 10.0.0.2: not an address of this host"}, nil
		}})
	if calls != 2 {
		t.Errorf("%d calls for 2 distinct pools", calls)
	}
	byName := map[string]Check{}
	for _, c := range r.Checks {
		byName[c.Name] = c
	}
	if c := byName["server b/s1"]; c.Status != Warn || !strings.Contains(c.Value, "1 source address(es) cannot be bound here") ||
		!strings.Contains(c.Recommendation, "10.0.0.2: not an address") {
		t.Errorf("s1: %+v", c)
	}
	if c := byName["server b/s3"]; c.Status != Warn || !strings.Contains(c.Recommendation, "interface eth9") {
		t.Errorf("s3: %+v", c)
	}
}

package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every host check doctor makes; the eBPF ones ("ebpf: NAME") come from the
// probe and are checked for presence only.
var doctorChecks = []string{
	"net.ipv4.ip_local_port_range", "net.ipv4.tcp_tw_reuse", "net.ipv4.tcp_max_tw_buckets",
	"net.ipv4.tcp_fin_timeout", "net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog",
	"net.core.netdev_max_backlog", "net.ipv4.ip_nonlocal_bind", "RLIMIT_NOFILE", "fs.nr_open", "fs.file-max",
}

// `sluice doctor` on this very host: exit 0 whatever it finds, every check
// present, each with its value, recommendation and reason.
func TestDoctorLive(t *testing.T) {
	out, errOut, err := runCmd(t, "doctor")
	if err != nil {
		t.Fatalf("doctor: %v\n%s", err, errOut)
	}
	for _, name := range doctorChecks {
		if !strings.Contains(out, "] "+name+"\n") {
			t.Errorf("no check %q in:\n%s", name, out)
		}
	}
	if !strings.Contains(out, "] ebpf: ") {
		t.Errorf("no eBPF feature in the report")
	}
	for _, f := range []string{"value", "recommendation", "why"} {
		if strings.Count(out, "       "+f+" ") < len(doctorChecks) {
			t.Errorf("fewer %q lines than checks", f)
		}
	}
	if !strings.Contains(out, " checks: ") {
		t.Errorf("no summary line")
	}
	t.Logf("\n%s", out)
}

// With a configuration: one check per server, with the sustainable rate.
func TestDoctorConfig(t *testing.T) {
	cfg := filepath.Join("..", "..", "pkg", "config", "testdata", "seed-websocket.cfg")
	out, errOut, err := runCmd(t, "doctor", "-f", cfg)
	if err != nil {
		t.Fatalf("doctor -f: %v\n%s", err, errOut)
	}
	for _, s := range []string{"servers/web1", "servers/web2", "ws/ws1", "ws/ws2"} {
		if !strings.Contains(out, "] server "+s+"\n") {
			t.Errorf("no check for server %s", s)
		}
	}
	flat := strings.Join(strings.Fields(out), " ")
	if !strings.Contains(flat, "new connections/s sustained") || !strings.Contains(flat, "tcp_fin_timeout does not change it") {
		t.Errorf("no rate figures:\n%s", out)
	}
}

// A configuration that does not load: its errors as FILE:LINE, exit 1.
func TestDoctorBadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.cfg")
	os.WriteFile(path, []byte("backend b\n    server s 127.0.0.1:80 maxconn x\n"), 0o644)
	_, errOut, err := runCmd(t, "doctor", "-f", path)
	if !errors.Is(err, errReported) {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(errOut, "[ALERT] "+path+":2: ") {
		t.Errorf("stderr: %s", errOut)
	}
	if _, _, err := runCmd(t, "doctor", "extra"); err == nil {
		t.Errorf("an extra argument was accepted")
	}
}

// -root reads a fake tree: the same report as pkg/doctor's golden case.
func TestDoctorRoot(t *testing.T) {
	dir := filepath.Join("..", "..", "pkg", "doctor", "testdata", "golden", "stock")
	out, _, err := runCmd(t, "doctor", "-root", filepath.Join(dir, "root"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(dir, "want.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if out != string(want) {
		t.Errorf("differs from %s:\n%s", dir, out)
	}
}

//go:build linux

package netnstest

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Require skips the test, with a one-line reason, unless it runs as root
// with the `ip` command (iproute2) and network namespaces available.
func Require(t testing.TB) {
	t.Helper()
	if reason := Unavailable(); reason != "" {
		t.Skip(reason)
	}
}

// Unavailable returns why namespaces cannot be used here, or "".
func Unavailable() string {
	if os.Geteuid() != 0 {
		return "network namespace test: needs root (creates namespaces and veth pairs)"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "network namespace test: the 'ip' command (iproute2) is missing"
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return "network namespace test: this kernel has no network namespaces"
	}
	return ""
}

// NS is a network namespace made by New.
type NS struct {
	Name string
}

var seq atomic.Int32

// Cleaner is what New needs of a testing.TB (a benchmark driver can supply
// its own).
type Cleaner interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
}

// New creates an empty network namespace with its loopback up, deleted when
// the test ends. label (letters and digits) helps tell namespaces apart.
func New(t Cleaner, label string) *NS {
	t.Helper()
	sweepStale()
	name := fmt.Sprintf("sluice-%s-%d-%d", label, os.Getpid(), seq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, bytes.TrimSpace(out))
	}
	ns := &NS{Name: name}
	t.Cleanup(func() { ns.Delete() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("%s: lo up: %v: %s", name, err, bytes.TrimSpace(out))
	}
	return ns
}

// Delete removes the namespace (its veth ends go with it). Processes still
// inside keep it alive, unnamed, until they exit.
func (ns *NS) Delete() error {
	out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", ns.Name, err, bytes.TrimSpace(out))
	}
	return nil
}

var staleName = regexp.MustCompile(`^sluice-[A-Za-z0-9]+-([0-9]+)-[0-9]+$`)

// sweepStale deletes namespaces left by earlier runs of this package whose
// process is gone (a run killed before its cleanup).
func sweepStale() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		m := staleName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) == nil || syscall.Kill(pid, 0) == syscall.EPERM {
			continue
		}
		exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}

// Command returns a command that runs inside the namespace.
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// CommandContext is Command with a context that kills the command.
func (ns *NS) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// NetCommandContext is CommandContext through `nsenter --net`: only the
// network namespace changes. `ip netns exec` also gives the command a mount
// namespace with a fresh /sys, which hides the cgroup2 mount (and with it a
// daemon's eBPF attachment to its cgroup); a daemon that a service manager
// starts in a namespace keeps the host's mounts. Like `ip netns exec`,
// nsenter execs the command, so the PID is the command's own. Needs
// util-linux's nsenter (see HaveNsenter).
func (ns *NS) NetCommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + filepath.Join("/run/netns", ns.Name), name}, args...)...)
}

// HaveNsenter reports whether NetCommandContext can work here.
func HaveNsenter() bool {
	_, err := exec.LookPath("nsenter")
	return err == nil
}

// Run runs a command inside the namespace and returns its output; a failure
// ends the test.
func (ns *NS) Run(t Cleaner, name string, args ...string) string {
	t.Helper()
	out, err := ns.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %s %s: %v: %s", ns.Name, name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out)
}

// IP runs `ip -n NS ARGS...`.
func (ns *NS) IP(t Cleaner, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns.Name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s %s: %v: %s", ns.Name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out)
}

// sysctlPath maps net.ipv4.tcp_tw_reuse to /proc/sys/net/ipv4/tcp_tw_reuse.
func sysctlPath(key string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
}

// Sysctl sets a sysctl inside the namespace (net.* keys are per namespace)
// and checks it took.
func (ns *NS) Sysctl(t Cleaner, key, value string) {
	t.Helper()
	ns.Run(t, "sh", "-c", `printf '%s\n' "$1" > "$2"`, "sh", value, sysctlPath(key))
	if got := ns.ReadSysctl(t, key); strings.Join(strings.Fields(got), " ") != strings.Join(strings.Fields(value), " ") {
		t.Fatalf("%s: sysctl %s = %q after writing %q", ns.Name, key, got, value)
	}
}

// ReadSysctl reads a sysctl inside the namespace.
func (ns *NS) ReadSysctl(t Cleaner, key string) string {
	t.Helper()
	return strings.TrimSpace(ns.Run(t, "cat", sysctlPath(key)))
}

// Pair is two namespaces joined by a veth pair on 198.18.0.0/24: B (the
// servers' side) has 198.18.0.1, A (the balancer's side) has one address per
// source, 198.18.0.2 upwards.
type Pair struct {
	A, B   *NS
	AAddrs []netip.Addr
	BAddr  netip.Addr
}

// NewScarcePair is NewPair with A set up as a real network would be where
// source ports run out: 100 local ports (40000-40099) and no reuse of
// TIME_WAIT tuples (loopback would reuse them and hide the problem). It also
// sets RFC 1337: a TIME_WAIT socket ignores RSTs. Without it, when the CPUs
// are busy (as under -race) B may send its FIN again while A's ACK is on its
// way, A ACKs twice, B answers the second ACK with an RST, and that RST ends
// A's TIME_WAIT early: the tuple is free again and capacity is not what it
// should be.
func NewScarcePair(t Cleaner, sources int) *Pair {
	p := NewPair(t, sources)
	p.A.Sysctl(t, "net.ipv4.ip_local_port_range", "40000 40099")
	p.A.Sysctl(t, "net.ipv4.tcp_tw_reuse", "0")
	p.A.Sysctl(t, "net.ipv4.tcp_rfc1337", "1")
	return p
}

// NewPair creates the two namespaces with sources addresses on A's side.
func NewPair(t Cleaner, sources int) *Pair {
	t.Helper()
	if sources < 1 || sources > 250 {
		t.Fatalf("NewPair: %d sources (1 to 250)", sources)
	}
	p := &Pair{A: New(t, "a"), B: New(t, "b"), BAddr: netip.MustParseAddr("198.18.0.1")}
	if out, err := exec.Command("ip", "link", "add", "veth-a", "netns", p.A.Name, "type", "veth",
		"peer", "name", "veth-b", "netns", p.B.Name).CombinedOutput(); err != nil {
		t.Fatalf("veth between %s and %s: %v: %s", p.A.Name, p.B.Name, err, bytes.TrimSpace(out))
	}
	p.B.IP(t, "addr", "add", p.BAddr.String()+"/24", "dev", "veth-b")
	p.B.IP(t, "link", "set", "veth-b", "up")
	a := p.BAddr
	for i := 0; i < sources; i++ {
		a = a.Next()
		p.A.IP(t, "addr", "add", a.String()+"/24", "dev", "veth-a")
		p.AAddrs = append(p.AAddrs, a)
	}
	p.A.IP(t, "link", "set", "veth-a", "up")
	// Both ends are up once the kernel says so (carrier on a veth follows
	// its peer at once; IPv4 has no duplicate-address wait).
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.A.IP(t, "link", "show", "veth-a"), "LOWER_UP") {
		if time.Now().After(deadline) {
			t.Fatalf("veth-a in %s never came up", p.A.Name)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p
}

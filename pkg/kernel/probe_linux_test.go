package kernel

import "testing"

func TestProbeFeatures(t *testing.T) {
	fs := ProbeFeatures()
	seen := map[string]bool{}
	for _, f := range fs {
		t.Logf("%-22s %-5v %s", f.Name, f.Available, f.Detail)
		seen[f.Name] = true
		if f.Detail == "" {
			t.Errorf("%s: no detail", f.Name)
		}
	}
	for _, n := range []string{"privileges", "btf", "cgroup2", "sockops", "sk_storage", "iter/tcp",
		"sk_skb/stream_verdict", "sockhash", "cgroup/connect4", "cgroup/connect6", "cgroup/getpeername4", "cgroup/getpeername6"} {
		if !seen[n] {
			t.Errorf("feature %s not reported", n)
		}
	}
	requirePrivileged(t)
	if !kernelShouldHaveEBPF(t) {
		return
	}
	for _, f := range fs {
		if !f.Available {
			t.Errorf("%s unavailable on a kernel that has it: %s", f.Name, f.Detail)
		}
	}
}

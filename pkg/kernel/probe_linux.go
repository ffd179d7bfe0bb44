package kernel

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// missingCaps lists the capabilities eBPF mode needs that the process does
// not have in its effective set: CAP_BPF to load, CAP_NET_ADMIN for sockops
// and the cgroup attachment, CAP_PERFMON for the iter/tcp (tracing) program
// — or CAP_SYS_ADMIN, which covers all three.
func missingCaps() []string {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil // let the load itself say what is wrong
	}
	has := func(c int) bool { return data[c/32].Effective&(1<<(uint(c)%32)) != 0 }
	if has(unix.CAP_SYS_ADMIN) {
		return nil
	}
	var missing []string
	for _, c := range []struct {
		n    int
		name string
	}{{unix.CAP_BPF, "CAP_BPF"}, {unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"}, {unix.CAP_PERFMON, "CAP_PERFMON"}} {
		if !has(c.n) {
			missing = append(missing, c.name)
		}
	}
	return missing
}

// ProbeFeatures reports the kernel features sluice uses (for `sluice
// doctor`). Probing loads tiny programs and maps, so without privileges
// everything but BTF reads as unavailable, with the reason.
func ProbeFeatures() []Feature {
	var out []Feature
	add := func(name, use string, err error) {
		f := Feature{Name: name, Available: err == nil, Detail: use}
		if err != nil {
			f.Detail = err.Error()
		}
		out = append(out, f)
	}

	var privErr error
	if m := missingCaps(); len(m) > 0 {
		privErr = fmt.Errorf("missing %s", strings.Join(m, ", "))
	}
	add("privileges", "CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON (or CAP_SYS_ADMIN)", privErr)
	if privErr == nil {
		// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
		_ = rlimit.RemoveMemlock()
	}

	_, err := os.Stat("/sys/kernel/btf/vmlinux")
	add("btf", "kernel BTF (/sys/kernel/btf/vmlinux) for CO-RE and iter/tcp", err)

	cg, err := OwnCgroup()
	if err == nil {
		err = checkCgroup2(cg)
	}
	add("cgroup2", "sockops attaches to "+cg, err)

	add("sockops", "program type sock_ops: live established counters",
		features.HaveProgramType(ebpf.SockOps))
	add("sk_storage", "map type sk_storage: marks counted sockets",
		features.HaveMapType(ebpf.SkStorage))
	add("iter/tcp", "tracing program bpf_iter_tcp: TIME_WAIT scan",
		probeProg(ebpf.Tracing, ebpf.AttachTraceIter, "tcp", 0))
	add("sk_skb/stream_verdict", "program type sk_skb: kernel splice of tunnels",
		probeProg(ebpf.SkSKB, ebpf.AttachSkSKBStreamVerdict, "", 1))
	add("sockhash", "map type sockhash: kernel splice of tunnels",
		features.HaveMapType(ebpf.SockHash))
	for _, p := range []struct {
		name string
		at   ebpf.AttachType
	}{
		{"cgroup/connect4", ebpf.AttachCGroupInet4Connect},
		{"cgroup/connect6", ebpf.AttachCGroupInet6Connect},
		{"cgroup/getpeername4", ebpf.AttachCgroupInet4GetPeername},
		{"cgroup/getpeername6", ebpf.AttachCgroupInet6GetPeername},
	} {
		add(p.name, "program type cgroup_sock_addr: kernel steering", probeProg(ebpf.CGroupSockAddr, p.at, "", 1))
	}
	return out
}

// probeProg loads a program that only returns ret, with the given expected
// attach type (and BTF target): the kernel rejects attach types it does not
// know at load time.
//
// features.HaveProgramType is not used for tracing programs: it probes them
// as fentry, which a kernel may forbid while allowing iterators.
func probeProg(pt ebpf.ProgramType, at ebpf.AttachType, attachTo string, ret int32) error {
	p, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Type:       pt,
		AttachType: at,
		AttachTo:   attachTo,
		License:    "GPL",
		Instructions: asm.Instructions{
			asm.LoadImm(asm.R0, int64(ret), asm.DWord),
			asm.Return(),
		},
	}, ebpf.ProgramOptions{LogDisabled: true})
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("%s/%s not supported by this kernel: %w", pt, at, err)
		}
		return err
	}
	return p.Close()
}

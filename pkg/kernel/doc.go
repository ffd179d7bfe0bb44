// Package kernel is the only package of sluice that touches eBPF: it loads the
// programs compiled from bpf/*.c (by bpf2go, through go generate; the objects
// are committed so that go build needs no clang), attaches them with links
// that go away with the process, and serves typed readers over their maps.
// Where eBPF is not available or not permitted, the same readers are served
// from netlink sock_diag.
package kernel

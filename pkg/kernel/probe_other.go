//go:build !linux

package kernel

// ProbeFeatures reports that sluice's kernel features need Linux.
func ProbeFeatures() []Feature {
	return []Feature{{Name: "ebpf", Detail: ErrUnsupported.Error()}}
}

//go:build !linux

package kernel

import (
	"fmt"
	"runtime"
)

// OwnCgroup fails outside Linux: there are no cgroups v2.
func OwnCgroup() (string, error) {
	return "", fmt.Errorf("cgroups: not on %s", runtime.GOOS)
}

// IsRootCgroup is false outside Linux.
func IsRootCgroup(dir string) bool { return false }

//go:build unix

package admin

import (
	"net"
	"syscall"
)

// listenPrivate creates the unix socket with a umask that leaves it readable
// and writable by its owner only until its mode is set.
func listenPrivate(path string) (net.Listener, error) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	return net.Listen("unix", path)
}

//go:build !unix

package admin

import "net"

func listenPrivate(path string) (net.Listener, error) { return net.Listen("unix", path) }

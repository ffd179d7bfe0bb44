//go:build !unix

package proxy

import (
	"context"
	"net"
)

func listen(network, addr string) (net.Listener, error) {
	if network == "" {
		network = "tcp"
	}
	lc := net.ListenConfig{}
	return lc.Listen(context.Background(), network, addr)
}

func alive(c *net.TCPConn) bool { return true }

func readIdle(c *net.TCPConn) ([]byte, int, error) {
	buf := getBuf()
	n, err := c.Read(buf)
	if err != nil || n == 0 {
		putBuf(buf)
		return nil, 0, err
	}
	return buf, n, nil
}

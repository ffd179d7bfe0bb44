//go:build !unix

package proxy

import (
	"context"
	"io"
	"net"
)

func listen(network, addr string) (net.Listener, error) {
	if network == "" {
		network = "tcp"
	}
	lc := net.ListenConfig{}
	return lc.Listen(context.Background(), network, addr)
}

// sock is the portable fallback: plain net.Conn calls.
type sock struct{ c *net.TCPConn }

func newSock(c *net.TCPConn) (*sock, error) { return &sock{c: c}, nil }

func (s *sock) Read(p []byte) (int, error)  { return s.c.Read(p) }
func (s *sock) Write(p []byte) (int, error) { return s.c.Write(p) }
func (s *sock) alive() bool                 { return true }

func (s *sock) ReadIdle() ([]byte, int, error) {
	buf := getBuf()
	n, err := s.c.Read(buf)
	if err != nil || n == 0 {
		putBuf(buf)
		if err == nil {
			err = io.EOF
		}
		return nil, 0, err
	}
	return buf, n, nil
}

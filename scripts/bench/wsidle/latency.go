package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"
)

// runEcho serves a raw TCP echo: every byte read is written back.
func runEcho(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fatalf("echo: %v", err)
	}
	fmt.Printf("echo listening on %s\n", addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				fmt.Fprintf(os.Stderr, "echo: accept: %v\n", err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			go func() {
				defer c.Close()
				// A plain read/write loop: io.Copy(c, c) would make TCPConn.ReadFrom splice into itself.
				buf := make([]byte, 64<<10)
				for {
					m, err := c.Read(buf)
					if m > 0 {
						if _, werr := c.Write(buf[:m]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	ln.Close()
}

// runLatency does warmup+n sequential ping-pongs of size bytes on one connection and prints the latency
// distribution of the last n.
func runLatency(addr, label string, n, warmup, size int, timeout time.Duration) int {
	if size < 8 {
		size = 8
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetNoDelay(true)
	c.SetDeadline(time.Now().Add(timeout))
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte('a' + i%26)
	}
	got := make([]byte, size)
	lat := make([]time.Duration, 0, n)
	start := time.Now()
	for i := 0; i < warmup+n; i++ {
		binary.LittleEndian.PutUint64(msg, uint64(i)) // every echo differs: a stale or misplaced answer shows
		t0 := time.Now()
		if _, err := c.Write(msg); err != nil {
			fatalf("ping-pong %d: write: %v", i, err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			fatalf("ping-pong %d: read: %v", i, err)
		}
		d := time.Since(t0)
		if !bytes.Equal(got, msg) {
			fatalf("ping-pong %d: echo differs from what was sent", i)
		}
		if i >= warmup {
			lat = append(lat, d)
		}
	}
	total := time.Since(start)
	slices.Sort(lat)
	q := func(p float64) float64 {
		i := int(p * float64(len(lat)))
		if i >= len(lat) {
			i = len(lat) - 1
		}
		return us(lat[i])
	}
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	fmt.Printf("RESULT label=%s n=%d size=%d p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f mean_us=%.1f min_us=%.1f total_s=%.2f\n",
		label, n, size, q(0.50), q(0.90), q(0.99), q(0.999), us(lat[len(lat)-1]), us(sum/time.Duration(len(lat))), us(lat[0]), total.Seconds())
	return 0
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

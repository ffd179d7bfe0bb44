package queue

import (
	"fmt"
	"math/rand/v2"
)

// NewBalancer returns the balancer for a `balance` algorithm. args are the
// algorithm's arguments (e.g. the number of draws of random).
func NewBalancer(algo string, args []string) (Balancer, error) {
	switch algo {
	case "", "roundrobin", "static-rr":
		return &roundRobin{}, nil
	case "leastconn":
		return &leastConn{}, nil
	case "first":
		return first{}, nil
	case "source", "uri", "url_param", "hdr":
		return hashed{}, nil
	case "random":
		draws := 2
		if len(args) > 0 {
			if _, err := fmt.Sscanf(args[0], "%d", &draws); err != nil || draws < 1 {
				return nil, fmt.Errorf("balance random: invalid number of draws %q", args[0])
			}
		}
		return &random{draws: draws}, nil
	}
	return nil, fmt.Errorf("balance algorithm %q is not supported", algo)
}

// roundRobin is nginx's smooth weighted round robin: every server's current
// weight grows by its weight, the largest wins and pays back the total. It
// spreads a server of weight 3 as A A B A rather than A A A B.
type roundRobin struct{}

func (roundRobin) Hashing() bool { return false }

func (roundRobin) Pick(b *Backend, _ uint64, exclude *Server) *Server {
	backups := b.useBackups()
	var best *Server
	total := 0
	for _, s := range b.Servers {
		if !b.eligible(s, backups) || s.full() || s == exclude {
			continue
		}
		s.current += s.effW
		total += s.effW
		if best == nil || s.current > best.current {
			best = s
		}
	}
	if best != nil {
		best.current -= total
	}
	return best
}

// leastConn picks the server with the fewest requests per unit of weight,
// counting those waiting in its own queue; ties rotate.
type leastConn struct{ next int }

func (*leastConn) Hashing() bool { return false }

func (l *leastConn) Pick(b *Backend, _ uint64, exclude *Server) *Server {
	backups := b.useBackups()
	var best *Server
	n := len(b.Servers)
	for i := 0; i < n; i++ {
		s := b.Servers[(l.next+i)%n]
		if !b.eligible(s, backups) || s.full() || s == exclude {
			continue
		}
		// Compare (cur+queued)/weight without division.
		if best == nil || (s.inUse()+s.queue.Len())*best.effW < (best.inUse()+best.queue.Len())*s.effW {
			best = s
		}
	}
	if best != nil {
		l.next = (best.Index + 1) % n
	}
	return best
}

// first picks the first server, in declaration order, with a free slot.
type first struct{}

func (first) Hashing() bool { return false }

func (first) Pick(b *Backend, _ uint64, exclude *Server) *Server {
	backups := b.useBackups()
	for _, s := range b.Servers {
		if b.eligible(s, backups) && !s.full() && s != exclude {
			return s
		}
	}
	return nil
}

// hashed maps a key onto servers in proportion to their weights (HAProxy's
// map-based hashing): the key picks a point on the total weight; if that
// server is unusable the next usable one in order takes it.
type hashed struct{}

func (hashed) Hashing() bool { return true }

func (hashed) Pick(b *Backend, key uint64, exclude *Server) *Server {
	backups := b.useBackups()
	total := 0
	for _, s := range b.Servers {
		if b.eligible(s, backups) && s != exclude {
			total += s.effW
		}
	}
	if total == 0 {
		return nil
	}
	point := int(key % uint64(total))
	for _, s := range b.Servers {
		if !b.eligible(s, backups) || s == exclude {
			continue
		}
		if point < s.effW {
			return s
		}
		point -= s.effW
	}
	return nil
}

// random draws N servers at random in proportion to their weights and keeps
// the least loaded (power of N choices, HAProxy's random(N)).
type random struct{ draws int }

func (*random) Hashing() bool { return false }

func (r *random) Pick(b *Backend, _ uint64, exclude *Server) *Server {
	backups := b.useBackups()
	total := 0
	for _, s := range b.Servers {
		if b.eligible(s, backups) && !s.full() && s != exclude {
			total += s.effW
		}
	}
	if total == 0 {
		return nil
	}
	var best *Server
	for d := 0; d < r.draws; d++ {
		point := rand.IntN(total)
		for _, s := range b.Servers {
			if !b.eligible(s, backups) || s.full() || s == exclude {
				continue
			}
			if point < s.effW {
				if best == nil || s.cur*best.effW < best.cur*s.effW {
					best = s
				}
				break
			}
			point -= s.effW
		}
	}
	return best
}

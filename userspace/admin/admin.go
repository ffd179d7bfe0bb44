// Package admin is the runtime API: HAProxy's `stats socket` commands on a
// unix socket (show info, show stat, show servers state, set server ...,
// enable/disable server, set maxconn server, clear counters), each with the
// access level HAProxy gives it. It reads and changes the running proxy only
// through its exported methods; it never listens on the network.
package admin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/userspace/proxy"
	"github.com/sluicelb/sluice/userspace/queue"
)

// Levels, in increasing order of power.
const (
	levelUser = iota
	levelOperator
	levelAdmin
)

func parseLevel(s string) int {
	switch s {
	case "user":
		return levelUser
	case "admin":
		return levelAdmin
	}
	return levelOperator
}

// Server serves the runtime API on one socket.
type Server struct {
	p       *proxy.Proxy
	version string
	started time.Time
	level   int
	ln      net.Listener
	path    string
	log     *slog.Logger
	wg      sync.WaitGroup
}

// Listen creates the socket of a `stats socket` line: a stale socket file
// left by a previous run is replaced, any other file is not; the mode is
// applied before anyone can connect.
func Listen(ss config.StatsSocket, p *proxy.Proxy, version string, log *slog.Logger) (*Server, error) {
	if fi, err := os.Lstat(ss.Path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s: stats socket %s: a file that is not a socket is in the way", ss.Pos, ss.Path)
		}
		os.Remove(ss.Path)
	}
	// The umask makes the socket private from its creation; the mode is
	// set right after.
	ln, err := listenPrivate(ss.Path)
	if err != nil {
		return nil, fmt.Errorf("%s: stats socket %s: %w", ss.Pos, ss.Path, err)
	}
	if err := os.Chmod(ss.Path, os.FileMode(ss.Mode)); err != nil {
		ln.Close()
		return nil, fmt.Errorf("%s: stats socket %s: chmod: %w", ss.Pos, ss.Path, err)
	}
	return &Server{p: p, version: version, started: time.Now(), level: parseLevel(ss.Level), ln: ln, path: ss.Path, log: log}, nil
}

// Serve answers connections until ctx is done, then removes the socket.
func (s *Server) Serve(ctx context.Context) {
	go func() {
		<-ctx.Done()
		s.ln.Close()
	}()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			break
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
		}()
	}
	s.wg.Wait()
	os.Remove(s.path)
}

// serveConn reads command lines (several commands per line separated by
// ';'). Like HAProxy, it answers one line and closes, unless the first
// command is "prompt" (interactive mode).
func (s *Server) serveConn(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	interactive := false
	for {
		c.SetReadDeadline(time.Now().Add(time.Minute))
		line, err := br.ReadString('\n')
		if err != nil && line == "" {
			return
		}
		var out strings.Builder
		for _, cmd := range strings.Split(strings.TrimSpace(line), ";") {
			cmd = strings.TrimSpace(cmd)
			switch {
			case cmd == "":
				continue
			case cmd == "prompt":
				interactive = true
				continue
			case cmd == "quit":
				return
			}
			s.exec(&out, strings.Fields(cmd))
		}
		if interactive {
			out.WriteString("\n> ")
		}
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, werr := io.WriteString(c, out.String()); werr != nil || !interactive || err != nil {
			return
		}
	}
}

var errDenied = errors.New("Permission denied")

type command struct {
	words []string
	level int
	help  string
	run   func(s *Server, w io.Writer, args []string) error
}

var commands []command

func init() {
	commands = []command{
		{[]string{"help"}, levelUser, "this message", func(s *Server, w io.Writer, _ []string) error { s.help(w); return nil }},
		{[]string{"show", "info"}, levelUser, "report information about the running process", (*Server).showInfo},
		{[]string{"show", "stat"}, levelUser, "report counters for each proxy and server (HAProxy CSV)", (*Server).showStat},
		{[]string{"show", "servers", "state"}, levelUser, "dump the state of the servers", (*Server).showServersState},
		{[]string{"show", "sess"}, levelOperator, "list the client connections being served", (*Server).showSess},
		{[]string{"show", "kernel"}, levelUser, "what the kernel counts: per server established and TIME_WAIT, per source tuples", (*Server).showKernel},
		{[]string{"show", "tunnels"}, levelOperator, "list the live tunnels (WebSocket, mode tcp)", (*Server).showTunnels},
		{[]string{"shutdown", "sessions", "server"}, levelAdmin, "end every tunnel to a server: shutdown sessions server <bk>/<srv>", (*Server).shutdownSessions},
		{[]string{"clear", "counters"}, levelOperator, "reset the maximum counters", func(s *Server, _ io.Writer, _ []string) error { s.p.ClearCounters(); return nil }},
		{[]string{"set", "server"}, levelAdmin, "set server <bk>/<srv> state ready|drain|maint | weight <w>", (*Server).setServer},
		{[]string{"set", "maxconn", "server"}, levelAdmin, "set maxconn server <bk>/<srv> <n>", (*Server).setMaxConn},
		{[]string{"disable", "server"}, levelAdmin, "put a server in maintenance: disable server <bk>/<srv>", (*Server).disable},
		{[]string{"enable", "server"}, levelAdmin, "take a server out of maintenance: enable server <bk>/<srv>", (*Server).enable},
	}
}

func (s *Server) exec(w io.Writer, words []string) {
	best := -1
	for i, c := range commands {
		if len(words) >= len(c.words) && equalWords(words[:len(c.words)], c.words) {
			if best < 0 || len(c.words) > len(commands[best].words) {
				best = i
			}
		}
	}
	if best < 0 {
		fmt.Fprintf(w, "Unknown command: '%s'\n\n", strings.Join(words, " "))
		s.help(w)
		return
	}
	c := commands[best]
	if s.level < c.level {
		fmt.Fprintf(w, "%s.\n\n", errDenied)
		return
	}
	if err := c.run(s, w, words[len(c.words):]); err != nil {
		fmt.Fprintf(w, "%s.\n\n", err)
		return
	}
	if c.level > levelUser {
		s.log.Info("runtime API", "command", strings.Join(words, " "))
	}
}

func equalWords(a, b []string) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (s *Server) help(w io.Writer) {
	fmt.Fprintln(w, "The following commands are valid at this level:")
	for _, c := range commands {
		if c.level <= s.level {
			fmt.Fprintf(w, "  %-25s : %s\n", strings.Join(c.words, " "), c.help)
		}
	}
	fmt.Fprintln(w)
}

func (s *Server) showInfo(w io.Writer, _ []string) error {
	st := s.p.Stats()
	fmt.Fprintf(w, "Name: sluice\nVersion: %s\nPid: %d\nUptime_sec: %d\nMaxconn: %d\nCurrConns: %d\nMaxconnReached: %d\n\n",
		s.version, os.Getpid(), int(time.Since(s.started).Seconds()), st.MaxConn, st.CurrConns, st.MaxConnReached)
	return nil
}

func (s *Server) showStat(w io.Writer, _ []string) error {
	if err := RenderStatsCSV(w, s.p.Stats()); err != nil {
		return err
	}
	fmt.Fprintln(w)
	return nil
}

func (s *Server) showServersState(w io.Writer, _ []string) error {
	fmt.Fprintln(w, "1\n# be_name srv_name srv_addr srv_state srv_weight srv_cur srv_maxconn srv_limit srv_queue")
	for _, b := range s.p.Stats().Backends {
		for _, v := range b.Servers {
			fmt.Fprintf(w, "%s %s %s %s %d %d %d %d %d\n", b.Name, v.Name, v.Addr, v.State, v.Weight, v.Cur, v.ConfigMax, v.Limit, v.QueueCur)
		}
	}
	fmt.Fprintln(w)
	return nil
}

func splitTarget(args []string) (string, string, []string, error) {
	if len(args) == 0 {
		return "", "", nil, errors.New("Require 'backend/server'")
	}
	be, srv, ok := strings.Cut(args[0], "/")
	if !ok || be == "" || srv == "" {
		return "", "", nil, fmt.Errorf("Invalid server '%s': expected 'backend/server'", args[0])
	}
	return be, srv, args[1:], nil
}

func (s *Server) setServer(w io.Writer, args []string) error {
	be, srv, rest, err := splitTarget(args)
	if err != nil {
		return err
	}
	if len(rest) != 2 {
		return errors.New("Usage: set server <bk>/<srv> state ready|drain|maint, or weight <0..256>")
	}
	switch rest[0] {
	case "state":
		st, ok := map[string]queue.State{"ready": queue.StateUp, "drain": queue.StateDrain, "maint": queue.StateMaint}[rest[1]]
		if !ok {
			return fmt.Errorf("'set server <srv> state' expects 'ready', 'drain' and 'maint', not '%s'", rest[1])
		}
		return s.p.SetServerState(be, srv, st)
	case "weight":
		n, err := strconv.Atoi(rest[1])
		if err != nil {
			return fmt.Errorf("Invalid weight '%s'", rest[1])
		}
		return s.p.SetServerWeight(be, srv, n)
	}
	return fmt.Errorf("'set server' only supports 'state' and 'weight', not '%s'", rest[0])
}

func (s *Server) setMaxConn(w io.Writer, args []string) error {
	be, srv, rest, err := splitTarget(args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return errors.New("Usage: set maxconn server <bk>/<srv> <n>")
	}
	n, err := strconv.Atoi(rest[0])
	if err != nil {
		return fmt.Errorf("Invalid maxconn '%s'", rest[0])
	}
	return s.p.SetServerMaxConn(be, srv, n)
}

func (s *Server) disable(w io.Writer, args []string) error {
	be, srv, _, err := splitTarget(args)
	if err != nil {
		return err
	}
	return s.p.SetServerState(be, srv, queue.StateMaint)
}

func (s *Server) enable(w io.Writer, args []string) error {
	be, srv, _, err := splitTarget(args)
	if err != nil {
		return err
	}
	return s.p.SetServerState(be, srv, queue.StateUp)
}

func (s *Server) showSess(w io.Writer, _ []string) error {
	for i, si := range s.p.Sessions() {
		fmt.Fprintf(w, "%d: src=%s fe=%s age=%s\n", i, si.Src, si.Frontend, si.Age.Round(time.Millisecond))
	}
	fmt.Fprintln(w)
	return nil
}

func (s *Server) showTunnels(w io.Writer, _ []string) error {
	now := time.Now()
	fmt.Fprintln(w, "# kind frontend backend/server client age idle bytes_up bytes_down copy")
	for _, t := range s.p.Tunnels().Snapshots() {
		by := "user"
		if t.Spliced {
			by = "kernel"
		}
		fmt.Fprintf(w, "%s %s %s/%s %s %s %s %d %d %s\n", t.Kind, t.Frontend, t.Backend, t.Server, t.Client,
			now.Sub(t.Start).Round(time.Millisecond), now.Sub(t.LastActivity).Round(time.Millisecond), t.Up, t.Down, by)
	}
	fmt.Fprintln(w)
	return nil
}

func (s *Server) shutdownSessions(w io.Writer, args []string) error {
	be, srv, _, err := splitTarget(args)
	if err != nil {
		return err
	}
	_, err = s.p.ShutdownServerSessions(be, srv)
	return err
}

func (s *Server) showKernel(w io.Writer, _ []string) error {
	st := s.p.Stats()
	if st.KernelMode == "" {
		fmt.Fprintln(w, "mode: none (kernel counters unavailable)")
		fmt.Fprintln(w)
		return nil
	}
	fmt.Fprintf(w, "mode: %s\nlost: %d\n", st.KernelMode, st.KernelLost)
	fmt.Fprintln(w, "# frontend established")
	for _, f := range st.Frontends {
		if f.Kernel != nil {
			fmt.Fprintf(w, "%s %d\n", f.Name, *f.Kernel)
		}
	}
	fmt.Fprintln(w, "# backend/server addr established time_wait")
	for _, b := range st.Backends {
		for _, v := range b.Servers {
			if k := v.Kernel; k != nil {
				fmt.Fprintf(w, "%s/%s %s %d %d\n", b.Name, v.Name, v.Addr, k.Established, k.TimeWait)
			}
		}
	}
	steered := false
	for _, f := range st.Frontends {
		steered = steered || f.Steer != nil
	}
	if steered {
		fmt.Fprintln(w, "# steered frontend steered fallthrough")
		for _, f := range st.Frontends {
			if f.Steer != nil {
				fmt.Fprintf(w, "%s %d %d\n", f.Name, f.Steer.Steered, f.Steer.FallThrough)
			}
		}
		fmt.Fprintln(w, "# steered backend/server current total")
		for _, b := range st.Backends {
			for _, v := range b.Servers {
				if v.SteeredTotal > 0 || v.Steered > 0 {
					fmt.Fprintf(w, "%s/%s %d %d\n", b.Name, v.Name, v.Steered, v.SteeredTotal)
				}
			}
		}
	}
	fmt.Fprintln(w, "# backend/server source established time_wait occupied free selections exhausted")
	for _, b := range st.Backends {
		for _, v := range b.Servers {
			if k := v.Kernel; k != nil {
				for _, src := range k.Sources {
					fmt.Fprintf(w, "%s/%s %s %d %d %d %d %d %d\n", b.Name, v.Name, src.Addr, src.Established, src.TimeWait,
						src.Occupied, src.Free, src.Selections, src.Exhausted)
				}
			}
		}
	}
	fmt.Fprintln(w)
	return nil
}

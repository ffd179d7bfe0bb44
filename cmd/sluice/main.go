// Command sluice is an HAProxy-compatible load balancer.
//
//	sluice -f FILE [-f FILE...]   run with a configuration
//	sluice -c -f FILE             check a configuration
//	sluice demo                   run the built-in demo
//	sluice version
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/pkg/metrics"
	"github.com/sluicelb/sluice/userspace/admin"
	"github.com/sluicelb/sluice/userspace/proxy"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// The first signal starts a graceful stop; restoring the default
		// handlers makes a second one end the process at once.
		<-ctx.Done()
		stop()
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ue usageError
		if !errors.As(err, &ue) && !errors.Is(err, errReported) {
			fmt.Fprintln(os.Stderr, "sluice:", err)
		}
		os.Exit(1)
	}
}

// usageError is a command-line mistake; its message has been printed.
type usageError struct{ error }

// errReported means the details were already written to stderr.
var errReported = errors.New("reported")

type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "demo":
			return runDemo(ctx, args[1:], stdout, stderr)
		case "version":
			fmt.Fprintln(stdout, "sluice", version)
			return nil
		case "ctl":
			return runCtl(args[1:], stdout, stderr)
		case "doctor":
			return runDoctor(args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("sluice", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files fileList
	fs.Var(&files, "f", "configuration `file` (repeatable; concatenated in order)")
	check := fs.Bool("c", false, "check the configuration and exit")
	showVersion := fs.Bool("v", false, "print the version and exit")
	debug := fs.Bool("d", false, "debug logging")
	grace := fs.Duration("grace", 30*time.Second, "how long a stop waits for in-flight requests")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to `file` until exit (for developers)")
	traceFile := fs.String("trace", "", "write a runtime execution trace to `file` until exit (for developers)")
	memProfile := fs.String("memprofile", "", "write an allocation profile to `file` at exit (for developers)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: sluice -f FILE [-f FILE...] [-c]\n       sluice demo\n       sluice version\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if *showVersion {
		fmt.Fprintln(stdout, "sluice", version)
		return nil
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if len(files) == 0 {
		fs.Usage()
		return usageError{errors.New("no configuration file (-f)")}
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg, p, err := load(files, log, stderr)
	if err != nil {
		return err
	}
	if *check {
		fmt.Fprintln(stdout, "Configuration file is valid")
		return nil
	}
	if err := p.Listen(); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if *traceFile != "" {
		f, err := os.Create(*traceFile)
		if err != nil {
			return fmt.Errorf("trace: %w", err)
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			return fmt.Errorf("trace: %w", err)
		}
		defer trace.Stop()
	}
	if *memProfile != "" {
		defer func() {
			if f, err := os.Create(*memProfile); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	if cfg.Global.HardStopAfter > 0 {
		*grace = cfg.Global.HardStopAfter
	}
	// SIGHUP and SIGUSR2 reload: an invalid configuration is refused with
	// its errors and the running one stays.
	reload := make(chan os.Signal, 1)
	signal.Notify(reload, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(reload)
	go func() {
		for sig := range reload {
			log.Info("reloading", "signal", sig.String(), "files", strings.Join(files, ","))
			ncfg, err := config.Load(files...)
			if ncfg != nil {
				for _, w := range ncfg.Warnings {
					fmt.Fprintf(stderr, "[WARNING] %s\n", w.Error())
				}
			}
			if err == nil {
				var warns []string
				warns, err = p.Reload(ncfg)
				for _, w := range warns {
					log.Warn("reload: " + w)
				}
			}
			if err != nil {
				printErrors(stderr, err)
				log.Error("reload refused: the running configuration stays", "signal", sig.String())
			}
		}
	}()
	return serve(ctx, cfg, p, log, stderr, *grace)
}

// load parses and compiles a configuration, printing every error and
// warning as FILE:LINE: message.
func load(files []string, log *slog.Logger, stderr io.Writer) (*config.Config, *proxy.Proxy, error) {
	cfg, err := config.Load(files...)
	return compile(cfg, err, stderr, log)
}

func compile(cfg *config.Config, err error, stderr io.Writer, log *slog.Logger) (*config.Config, *proxy.Proxy, error) {
	if cfg != nil {
		for _, w := range cfg.Warnings {
			fmt.Fprintf(stderr, "[WARNING] %s\n", w.Error())
		}
	}
	if err != nil {
		// Report the rules' errors too, all in one run.
		var ce config.Errors
		if cfg != nil && errors.As(err, &ce) {
			ce = append(ce, proxy.CheckRules(cfg)...)
			sort.SliceStable(ce, func(i, j int) bool {
				if ce[i].Pos.File != ce[j].Pos.File {
					return false
				}
				return ce[i].Pos.Line < ce[j].Pos.Line
			})
			err = ce
		}
		printErrors(stderr, err)
		return nil, nil, errReported
	}
	p, err := proxy.New(cfg, log)
	if err != nil {
		printErrors(stderr, err)
		return nil, nil, errReported
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewCollector(p), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p.Metrics = metrics.Renderer(reg)
	return cfg, p, nil
}

func printErrors(w io.Writer, err error) {
	var ce config.Errors
	if errors.As(err, &ce) {
		for _, d := range ce {
			fmt.Fprintf(w, "[ALERT] %s\n", d.Error())
		}
		return
	}
	fmt.Fprintf(w, "[ALERT] %v\n", err)
}

// serve runs a proxy whose listeners are open until ctx is done, with its
// runtime API sockets and the stats page's history.
func serve(ctx context.Context, cfg *config.Config, p *proxy.Proxy, log *slog.Logger, stderr io.Writer, grace time.Duration) error {
	kv := openKernel(cfg, p, log)
	defer kv.Close()
	defer openSplicer(cfg, p, kv, log)()
	sv := openSteer(cfg, p, log)
	defer sv.Close()
	p.Reloaded = func(ncfg *config.Config) {
		kv.register(ncfg, p)
		sv.register(ncfg, p)
	}
	var admins sync.WaitGroup
	actx, stopAdmin := context.WithCancel(context.Background())
	defer func() { stopAdmin(); admins.Wait() }()
	hist := admin.NewHistory(p, 5*time.Second, 120)
	admins.Add(1)
	go func() { defer admins.Done(); hist.Run(actx) }()
	p.StatsPage = func(csv bool, refresh time.Duration) ([]byte, string, error) {
		var b bytes.Buffer
		if csv {
			err := admin.RenderStatsCSV(&b, p.Stats())
			return b.Bytes(), "text/plain", err
		}
		err := admin.RenderStatsPage(&b, p.Stats(), hist, refresh, version)
		return b.Bytes(), "text/html; charset=utf-8", err
	}
	for _, ss := range cfg.Global.StatsSockets {
		a, err := admin.Listen(ss, p, version, log)
		if err != nil {
			return err
		}
		admins.Add(1)
		go func() { defer admins.Done(); a.Serve(actx) }()
		log.Info("runtime API listening", "socket", ss.Path, "level", ss.Level, "mode", fmt.Sprintf("%o", ss.Mode))
	}
	log.Info("sluice started", "version", version, "frontends", len(cfg.Frontends), "backends", len(cfg.Backends), "pid", os.Getpid())
	err := p.Serve(ctx, stderr, grace)
	log.Info("sluice stopped")
	return err
}

// runCtl sends one command line to a runtime API socket and prints the
// answer: `sluice ctl [-S PATH] show stat`.
func runCtl(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sluice ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("S", "/run/sluice/admin.sock", "runtime API `socket` (a 'stats socket' of the configuration)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: sluice ctl [-S SOCKET] COMMAND...   (try: sluice ctl help)")
		return usageError{errors.New("no command")}
	}
	c, err := net.DialTimeout("unix", *path, 5*time.Second)
	if err != nil {
		return fmt.Errorf("runtime API: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, strings.Join(fs.Args(), " ")+"\n"); err != nil {
		return fmt.Errorf("runtime API: %w", err)
	}
	_, err = io.Copy(stdout, c)
	return err
}

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/pkg/doctor"
	"github.com/sluicelb/sluice/pkg/kernel"
	"github.com/sluicelb/sluice/userspace/source"
)

// runDoctor is `sluice doctor [-f FILE...]`: the host report (kernel
// settings, limits, eBPF features) and, with a configuration, what its
// servers' source pools can sustain. Warnings do not change the exit
// status (it is a report); a configuration that does not load does.
func runDoctor(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sluice doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files fileList
	fs.Var(&files, "f", "configuration `file` to examine too (repeatable; concatenated in order)")
	root := fs.String("root", "/", "read /proc and /sys under `dir` instead (for tests)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: sluice doctor [-f FILE...]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	o := doctor.Options{Root: *root, Features: doctorFeatures(*root)}
	if len(files) > 0 {
		cfg, err := config.Load(files...)
		for _, w := range cfg.Warnings {
			fmt.Fprintf(stderr, "[WARNING] %s\n", w.Error())
		}
		if err != nil {
			printErrors(stderr, err)
			return errReported
		}
		o.Config = cfg
	}
	if *root == "/" {
		// Only the live system can say whether a pool's addresses bind here.
		o.CheckSource = func(sp source.Spec) ([]string, error) {
			p, err := source.NewPool(sp)
			if err != nil {
				return nil, err
			}
			return p.Check()
		}
	}
	return doctor.Run(o).WriteText(stdout)
}

// doctorFeatures is the eBPF feature probe: for the live system, what the
// kernel accepts (pkg/kernel loads a probe of each program and map type, and
// finds the cgroup v2 mount); for a -root tree, what its files alone tell.
func doctorFeatures(root string) func() []doctor.Feature {
	if root != "/" {
		return func() []doctor.Feature { return doctor.HostFeatures(root) }
	}
	return func() []doctor.Feature {
		var out []doctor.Feature
		for _, f := range kernel.ProbeFeatures() {
			out = append(out, doctor.Feature{Name: f.Name, Available: f.Available, Detail: f.Detail})
		}
		return out
	}
}

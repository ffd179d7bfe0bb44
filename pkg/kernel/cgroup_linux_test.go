package kernel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

func TestOwnCgroupParse(t *testing.T) {
	const mountinfo = `22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
30 22 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
41 30 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
42 30 0:39 /kubepods/pod1 /mnt/cg\040two rw,relatime - cgroup2 cgroup2 rw
`
	for _, tc := range []struct {
		cgroup, want string
	}{
		{"0::/\n", "/sys/fs/cgroup/unified"},
		{"12:pids:/x\n0::/system.slice/sluice.service\n", "/sys/fs/cgroup/unified/system.slice/sluice.service"},
	} {
		got, err := ownCgroup([]byte(mountinfo), []byte(tc.cgroup))
		if err != nil || got != tc.want {
			t.Errorf("ownCgroup(%q) = %q, %v; want %q", tc.cgroup, got, err, tc.want)
		}
	}
	// A mount of a sub-tree: only paths under its root are visible there.
	sub := "42 30 0:39 /kubepods/pod1 /mnt/cg\\040two rw,relatime - cgroup2 cgroup2 rw\n"
	got, err := ownCgroup([]byte(sub), []byte("0::/kubepods/pod1/c1\n"))
	if err != nil || got != "/mnt/cg two/c1" {
		t.Errorf("sub-tree mount: %q, %v", got, err)
	}
	if _, err := ownCgroup([]byte(sub), []byte("0::/other\n")); err == nil {
		t.Error("path outside the mounted sub-tree accepted")
	}
	if _, err := ownCgroup([]byte(mountinfo), []byte("1:cpu:/\n")); err == nil {
		t.Error("cgroup v1 only: no error")
	}
	if _, err := ownCgroup([]byte("22 1 0:21 / /sys rw - sysfs sysfs rw\n"), []byte("0::/\n")); err == nil {
		t.Error("no cgroup2 mount: no error")
	}
	if _, err := ownCgroup([]byte(mountinfo), []byte("0::/gone (deleted)\n")); err == nil {
		t.Error("deleted cgroup accepted")
	}
}

func TestOwnCgroupHere(t *testing.T) {
	cg, err := OwnCgroup()
	if err != nil {
		t.Skipf("no cgroup v2 here: %v", err)
	}
	if err := checkCgroup2(cg); err != nil {
		t.Fatal(err)
	}
	procs, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(os.Getpid())) {
		t.Errorf("%s/cgroup.procs does not list this process", cg)
	}
}

// countIDs are the kernel IDs of what an eBPF-mode Counters holds.
type countIDs struct {
	links []link.ID
	progs []ebpf.ProgramID
}

func (c *Counters) ids() (countIDs, error) {
	var out countIDs
	for _, l := range []link.Link{c.bpf.sockops, c.bpf.iter} {
		info, err := l.Info()
		if err != nil {
			return out, err
		}
		out.links = append(out.links, info.ID)
	}
	for _, p := range []*ebpf.Program{c.bpf.objs.CountSockops, c.bpf.objs.CountScan} {
		info, err := p.Info()
		if err != nil {
			return out, err
		}
		id, ok := info.ID()
		if !ok {
			return out, errors.New("no program ID")
		}
		out.progs = append(out.progs, id)
	}
	return out, nil
}

// leftovers reports what is left of ids in the kernel ("" when nothing), and
// whether cgroup (if not "") still has any of the programs attached.
func (ids countIDs) leftovers(cgroup string) string {
	var left []string
	for _, id := range ids.progs {
		if p, err := ebpf.NewProgramFromID(id); err == nil {
			p.Close()
			left = append(left, fmt.Sprintf("program %d", id))
		}
	}
	for _, id := range ids.links {
		if l, err := link.NewFromID(id); err == nil {
			l.Close()
			left = append(left, fmt.Sprintf("link %d", id))
		}
	}
	if cgroup != "" {
		f, err := os.Open(cgroup)
		if err != nil {
			return err.Error()
		}
		defer f.Close()
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: ebpf.AttachCGroupSockOps})
		if err != nil {
			return err.Error()
		}
		for _, p := range res.Programs {
			if slices.Contains(ids.progs, p.ID) {
				left = append(left, fmt.Sprintf("program %d attached to %s", p.ID, cgroup))
			}
		}
	}
	return strings.Join(left, ", ")
}

func TestCountersCloseDetaches(t *testing.T) {
	c := openEBPFCounters(t, Options{})
	ids, err := c.ids()
	if err != nil {
		t.Fatal(err)
	}
	if left := ids.leftovers(""); left == "" {
		t.Fatal("IDs not visible while open")
	}
	cg := c.Cgroup()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "detached after Close", func() string { return ids.leftovers(cg) })
}

const (
	childModeEnv   = "SLUICE_KERNEL_TEST_CHILD"
	childCgroupEnv = "SLUICE_KERNEL_TEST_CGROUP"
)

// TestCountersChildProcess is the child of TestCountersDetachOnExit (it does
// nothing in a normal run): it creates its cgroup, moves itself in, opens
// the counters with cgroup discovery, prints the kernel IDs, then exits
// without Close or waits to be killed.
func TestCountersChildProcess(t *testing.T) {
	mode := os.Getenv(childModeEnv)
	if mode == "" {
		return
	}
	say := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	dir := os.Getenv(childCgroupEnv)
	if err := os.Mkdir(dir, 0o755); err != nil {
		say("SKIP create cgroup %s: %v", dir, err)
		os.Exit(0)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		say("SKIP move into cgroup %s: %v", dir, err)
		os.Exit(0)
	}
	c, err := OpenCounters(Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		say("ERR %v", err)
		os.Exit(2)
	}
	if c.Mode() != ModeEBPF || c.Cgroup() != dir {
		say("ERR mode %s, cgroup %q, want ebpf on %q", c.Mode(), c.Cgroup(), dir)
		os.Exit(2)
	}
	ids, err := c.ids()
	if err != nil {
		say("ERR %v", err)
		os.Exit(2)
	}
	say("IDS %v %v", ids.links, ids.progs)
	switch mode {
	case "exit":
		os.Exit(0) // no Close: the kernel must clean up on its own
	case "kill":
		time.Sleep(60 * time.Second)
		say("ERR not killed")
		os.Exit(3)
	}
}

// After the process exits normally (without Close) and after SIGKILL, no
// program of sluice stays attached: links are not pinned.
func TestCountersDetachOnExit(t *testing.T) {
	requirePrivileged(t)
	if !kernelShouldHaveEBPF(t) {
		t.Skip("kernel too old for count.c")
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	ms, err := cgroup2Mounts(mounts)
	if err != nil {
		t.Skipf("no cgroup v2: %v", err)
	}
	for _, mode := range []string{"exit", "kill"} {
		t.Run(mode, func(t *testing.T) {
			dir := filepath.Join(ms[0].point, fmt.Sprintf("sluice-test-%d-%s", os.Getpid(), mode))
			t.Cleanup(func() { removeCgroup(t, dir) })

			child := startIDChild(t, "^TestCountersChildProcess$", 2, childModeEnv+"="+mode, childCgroupEnv+"="+dir)
			ids := child.ids
			if mode == "kill" {
				// While the child lives, the checks below see its programs.
				if n := attachedSockops(t, dir); n != 1 || ids.leftovers(dir) == "" {
					t.Fatalf("live child: %d sockops programs on %s, leftovers %q", n, dir, ids.leftovers(dir))
				}
				child.kill(t)
			}
			child.wait(t, mode == "exit")
			eventually(t, 10*time.Second, "nothing of the child left in the kernel", func() string {
				return ids.leftovers(dir)
			})
			if attached := attachedSockops(t, dir); attached != 0 {
				t.Errorf("%s still has %d sockops programs", dir, attached)
			}
		})
	}
}

func attachedSockops(t *testing.T, dir string) int {
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: ebpf.AttachCGroupSockOps})
	if err != nil {
		t.Fatal(err)
	}
	return len(res.Programs)
}

// idChild is a re-run of the test binary that loads programs, prints the
// IDs of its links and programs ("IDS [l...] [p...]", or "ERR ..." /
// "SKIP ..."), and lives until it exits on its own or is killed: the
// detach-on-exit tests.
type idChild struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	ids    countIDs
	waited bool
}

// startIDChild starts the child running the test run (a -test.run
// pattern) with env, and waits for its IDs (want links and programs).
func startIDChild(t *testing.T, run string, want int, env ...string) *idChild {
	t.Helper()
	c := &idChild{cmd: exec.Command(os.Args[0], "-test.run="+run, "-test.count=1")}
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stderr = &c.stderr
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !c.waited {
			c.cmd.Process.Kill()
			c.cmd.Wait()
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "IDS ") || strings.HasPrefix(l, "ERR ") || strings.HasPrefix(l, "SKIP ") {
				lines <- l
				return
			}
		}
		close(lines)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(30 * time.Second):
		t.Fatalf("child said nothing in 30 s; stderr:\n%s", c.stderr.String())
	}
	switch {
	case line == "":
		t.Fatalf("child exited without IDs; stderr:\n%s", c.stderr.String())
	case strings.HasPrefix(line, "SKIP "):
		t.Skip(strings.TrimPrefix(line, "SKIP "))
	case strings.HasPrefix(line, "ERR "):
		t.Fatalf("child: %s; stderr:\n%s", line, c.stderr.String())
	}
	if c.ids, err = parseIDs(strings.TrimPrefix(line, "IDS "), want); err != nil {
		t.Fatalf("child said %q: %v", line, err)
	}
	return c
}

func (c *idChild) kill(t *testing.T) {
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
}

// wait waits for the child to end; clean says it must have exited
// without error.
func (c *idChild) wait(t *testing.T, clean bool) {
	err := c.cmd.Wait()
	c.waited = true
	if clean && err != nil {
		t.Fatalf("child: %v; stderr:\n%s", err, c.stderr.String())
	}
}

// parseIDs reads "[l1 l2] [p1 p2]" as printed by the child: want links
// and as many programs.
func parseIDs(s string, want int) (countIDs, error) {
	var ids countIDs
	parts := strings.SplitN(s, "] [", 2)
	if len(parts) != 2 {
		return ids, errors.New("want two lists")
	}
	for _, f := range strings.Fields(strings.Trim(parts[0], "[]")) {
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return ids, err
		}
		ids.links = append(ids.links, link.ID(n))
	}
	for _, f := range strings.Fields(strings.Trim(parts[1], "[]")) {
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return ids, err
		}
		ids.progs = append(ids.progs, ebpf.ProgramID(n))
	}
	if len(ids.links) != want || len(ids.progs) != want {
		return ids, fmt.Errorf("want %d links and %d programs", want, want)
	}
	return ids, nil
}

// removeCgroup removes a test cgroup once its processes are gone (rmdir
// fails with EBUSY while a dying process is still in it).
func removeCgroup(t *testing.T, dir string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("remove cgroup %s: %v", dir, err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package kernel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// OwnCgroup returns the cgroup v2 directory of the calling process: the
// cgroup2 mount from /proc/self/mountinfo (which, unlike /proc/mounts, says
// which part of the hierarchy is mounted) joined with the "0::" line of
// /proc/self/cgroup. Inside a cgroup namespace both are relative to the
// namespace's root, so they join the same way.
func OwnCgroup() (string, error) {
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("find own cgroup: %w", err)
	}
	return ownCgroup(mounts, cg)
}

func ownCgroup(mountinfo, procCgroup []byte) (string, error) {
	rel, err := unifiedPath(procCgroup)
	if err != nil {
		return "", err
	}
	mounts, err := cgroup2Mounts(mountinfo)
	if err != nil {
		return "", err
	}
	for _, m := range mounts {
		r, err := filepath.Rel(m.root, rel)
		if err != nil || r == ".." || strings.HasPrefix(r, "../") {
			continue
		}
		return filepath.Join(m.point, r), nil
	}
	return "", fmt.Errorf("find own cgroup: no cgroup2 mount shows %s", rel)
}

// unifiedPath returns the cgroup v2 path in /proc/self/cgroup's "0::PATH".
func unifiedPath(procCgroup []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(procCgroup))
	for sc.Scan() {
		p, ok := strings.CutPrefix(sc.Text(), "0::")
		if !ok {
			continue
		}
		if strings.HasSuffix(p, " (deleted)") || !strings.HasPrefix(p, "/") {
			return "", fmt.Errorf("find own cgroup: unusable cgroup v2 path %q", p)
		}
		return p, nil
	}
	return "", errors.New("find own cgroup: no cgroup v2 entry in /proc/self/cgroup (cgroup v1 only?)")
}

type cgroupMount struct{ root, point string }

// cgroup2Mounts parses /proc/self/mountinfo lines:
// "ID PARENT MAJ:MIN ROOT POINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS".
func cgroup2Mounts(mountinfo []byte) ([]cgroupMount, error) {
	var out []cgroupMount
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(f) || f[sep+1] != "cgroup2" {
			continue
		}
		out = append(out, cgroupMount{root: unescapeMount(f[3]), point: unescapeMount(f[4])})
	}
	if len(out) == 0 {
		return nil, errors.New("find cgroup2 mount: none in /proc/self/mountinfo")
	}
	return out, nil
}

// unescapeMount undoes the octal escapes (\040 for a space...) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// checkCgroup2 verifies that dir is a directory of a cgroup v2 file system.
func checkCgroup2(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("cgroup %s: %w", dir, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("cgroup %s: not a cgroup v2 directory", dir)
	}
	return nil
}

// IsRootCgroup reports whether dir is the root of the cgroup v2 hierarchy
// (where every process that was not put elsewhere runs).
func IsRootCgroup(dir string) bool {
	root, err := cgroup2Root()
	return err == nil && filepath.Clean(dir) == filepath.Clean(root)
}

// cgroupProg is a program and where on a cgroup it attaches.
type cgroupProg struct {
	prog *ebpf.Program
	at   ebpf.AttachType
}

// attachCgroup attaches progs, in order, to the cgroup v2 directory as
// bpf_links — never the legacy PROG_ATTACH that link.AttachCgroup may fall
// back to: a link goes away with the process, even after SIGKILL, while a
// legacy attachment would outlive it. On error the links made are closed.
func attachCgroup(cgroup string, progs ...cgroupProg) ([]link.Link, error) {
	cg, err := os.Open(cgroup)
	if err != nil {
		return nil, fmt.Errorf("attach to %s: %w", cgroup, err)
	}
	defer cg.Close()
	links := make([]link.Link, 0, len(progs))
	for _, p := range progs {
		l, err := link.AttachRawLink(link.RawLinkOptions{Target: int(cg.Fd()), Program: p.prog, Attach: p.at})
		if err != nil {
			for _, l := range links {
				l.Close()
			}
			return nil, fmt.Errorf("attach %s to %s: %w", p.at, cgroup, err)
		}
		links = append(links, l)
	}
	return links, nil
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Helpers of the browser test (statspage_browser_test.go): finding a
// browser, running the demo in-process, reading /metrics and holding a load.

// browserPath returns the path of a Chromium-family browser on PATH, or "".
func browserPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// onCI reports whether the CI variable is set to a true value (CI=true).
func onCI() bool {
	v, _ := strconv.ParseBool(os.Getenv("CI"))
	return v
}

// artifactDir is where the test saves files for humans: $SLUICE_ARTIFACTS
// when set, else the test's artifact directory (go test -artifacts keeps it
// under -outputdir; without the flag it is a temporary directory).
func artifactDir(t *testing.T) string {
	if d := os.Getenv("SLUICE_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("SLUICE_ARTIFACTS: %v", err)
		}
		return d
	}
	return t.ArtifactDir()
}

// startDemo runs `sluice demo -listen 127.0.0.1:0` in the test process, as
// TestDemo does, and returns the balancer's base URL. A cleanup stops it and
// checks that it returned cleanly, within 10 s.
func startDemo(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"demo", "-listen", "127.0.0.1:0"}, pw, io.Discard)
		pw.Close()
	}()
	stop := func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("demo returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("demo did not stop within 10s")
		}
	}
	// The address is on the first line; the whole text is printed at once.
	found := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`balancer on (127\.0\.0\.1:\d+)`)
		sc := bufio.NewScanner(pr)
		addr := ""
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil && addr == "" {
				addr = m[1]
				found <- addr
			}
		}
		if addr == "" {
			close(found)
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case addr, ok := <-found:
		if !ok {
			stop()
			t.Fatal("demo did not print its address")
		}
		t.Cleanup(stop)
		return "http://" + addr
	case <-time.After(10 * time.Second):
		stop()
		t.Fatal("demo did not print its address within 10s")
	}
	return ""
}

// scrape is one scrape of /metrics: the value of each series, keyed by the
// series as the exposition prints it, e.g.
// sluice_server_current_sessions{proxy="servers",server="web1"}.
type scrape map[string]float64

var seriesLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$`)

func scrapeMetrics(ctx context.Context, c *http.Client, base string) (scrape, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	res, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", res.Status)
	}
	m := scrape{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s := seriesLine.FindStringSubmatch(line)
		if s == nil {
			return nil, fmt.Errorf("/metrics: unexpected line %q", line)
		}
		v, err := strconv.ParseFloat(s[2], 64)
		if err != nil {
			return nil, fmt.Errorf("/metrics: %q: %v", line, err)
		}
		m[s[1]] = v
	}
	return m, sc.Err()
}

// server and backend name series of the demo's servers backend.
func (m scrape) server(name, server string) (float64, bool) {
	v, ok := m[fmt.Sprintf(`sluice_%s{proxy="servers",server=%q}`, name, server)]
	return v, ok
}

func (m scrape) backend(name string) (float64, bool) {
	v, ok := m[fmt.Sprintf(`sluice_%s{proxy="servers"}`, name)]
	return v, ok
}

// heldLoad is n concurrent requests kept open until release.
type heldLoad struct {
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	answered atomic.Int64 // requests that got an answer before release
	tr       *http.Transport
}

// holdLoad sends n concurrent GET url, each on its own connection, and
// keeps them open until release (or until the proxy answers them).
func holdLoad(url string, n int) *heldLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &heldLoad{cancel: cancel, tr: &http.Transport{DisableKeepAlives: true}}
	c := &http.Client{Transport: l.tr}
	for range n {
		l.wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
			res, err := c.Do(req)
			if err != nil {
				return // released (context canceled)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if ctx.Err() == nil {
				l.answered.Add(1)
			}
		})
	}
	return l
}

// release cancels the held requests and waits for their goroutines.
func (l *heldLoad) release() {
	l.cancel()
	l.wg.Wait()
	l.tr.CloseIdleConnections()
}

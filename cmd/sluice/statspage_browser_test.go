package main

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// The load the test holds on the demo's servers backend: 120 slow requests
// for 3 servers of maxconn 32, so 96 are in service (32 per server) and 24
// wait in the backend queue, and nothing moves while they are held. The
// demo's `timeout server 10s` and `timeout queue 10s` end them 10 s after
// they are sent: the test reads the page and /metrics well before that
// (the load is steady within a second, the refresh comes 5 s after the
// first load of the page), and checks that nothing moved.
const (
	heldRequests = 120
	perServer    = 32
	wantQueued   = heldRequests - 3*perServer
)

var demoServers = []string{"web1", "web2", "web3"}

// statsPage is what the test reads from the stats page in the browser.
type statsPage struct {
	Origin  float64 `json:"origin"`  // performance.timeOrigin: when this document's navigation started (ms since the epoch)
	Now     string  `json:"now"`     // the page's timestamp (the end of its title line)
	Refresh string  `json:"refresh"` // the meta refresh period, in seconds
	// Rows of the servers backend's table, by server name ("Backend" for the
	// BACKEND row), then by column: the header's group and label joined
	// with a slash ("Sessions/Cur", "Queue/Cur") or the label alone ("Status").
	Rows map[string]map[string]string `json:"rows"`
}

// readStatsPageJS reads the document: its time origin, its timestamp, and
// the cells of the servers backend's table with their column headers
// worked out from the header rows (rowspan and colspan), so that the test
// does not hard-code column positions.
const readStatsPageJS = `(() => {
  const out = {
    origin: performance.timeOrigin,
    now: ((document.querySelector('h1 small') || {}).textContent || '').split(' · ').pop(),
    refresh: (document.querySelector('meta[http-equiv="refresh"]') || {}).content || '',
    rows: {},
  };
  for (const table of document.querySelectorAll('table.px')) {
    const title = table.querySelector('th.pxname');
    if (!title || title.firstChild.textContent.trim() !== 'servers') continue;
    const labels = [], taken = [];
    const headers = [...table.rows].filter(r => r.querySelector('th') && !r.querySelector('th.pxname'));
    headers.forEach((tr, ri) => {
      let ci = 0;
      for (const th of tr.cells) {
        while (taken[ri] && taken[ri].has(ci)) ci++;
        for (let dc = 0; dc < th.colSpan; dc++) {
          for (let dr = 0; dr < th.rowSpan; dr++) (taken[ri + dr] ||= new Set()).add(ci + dc);
          (labels[ci + dc] ||= []).push(th.textContent.trim());
        }
        ci += th.colSpan;
      }
    });
    for (const tr of table.rows) {
      if (tr.querySelector('th')) continue;
      const row = {};
      [...tr.cells].forEach((td, i) => { if (labels[i]) row[labels[i].join('/')] = td.textContent.trim(); });
      out.rows[row['Server']] = row;
    }
  }
  return out;
})()`

func readStatsPage(ctx context.Context) (statsPage, error) {
	return chromedp.Run(ctx, chromedp.Evaluate[statsPage](readStatsPageJS))
}

// serverCells and backendCells pair the columns of the servers table with their series in
// /metrics; limit columns show 0 (no limit) as an empty cell.
var serverCells = []struct {
	col, series string
	limit       bool
}{
	{"Sessions/Cur", "server_current_sessions", false},
	{"Sessions/Max", "server_max_sessions", false},
	{"Sessions/Limit", "server_limit_sessions", true},
	{"Sessions/Total", "server_sessions_total", false},
	{"Queue/Cur", "server_current_queue", false},
	{"Queue/Max", "server_max_queue", false},
}

var backendCells = []struct{ col, series string }{
	{"Sessions/Cur", "backend_current_sessions"},
	{"Sessions/Total", "backend_sessions_total"},
	{"Queue/Cur", "backend_current_queue"},
	{"Queue/Max", "backend_max_queue"},
}

// watched lists the series that must stay put while the load is held.
func watched(m scrape) map[string]float64 {
	w := map[string]float64{}
	for _, s := range demoServers {
		for _, c := range serverCells {
			v, _ := m.server(c.series, s)
			w[c.series+"/"+s] = v
		}
	}
	for _, c := range backendCells {
		v, _ := m.backend(c.series)
		w[c.series] = v
	}
	return w
}

// atKnownLoad reports whether m shows the held load: every server at its
// maxconn of 32 and the rest in the backend queue.
func atKnownLoad(m scrape) bool {
	for _, s := range demoServers {
		cur, _ := m.server("server_current_sessions", s)
		lim, _ := m.server("server_limit_sessions", s)
		if cur != perServer || lim != perServer {
			return false
		}
	}
	q, _ := m.backend("backend_current_queue")
	return q == wantQueued
}

func formatCell(v float64, limit bool) string {
	if limit && v <= 0 {
		return ""
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// Issue #9: the stats page in a real browser. Headless Chromium loads the
// demo's /stats, the page refreshes itself (meta refresh, `stats refresh
// 5s`) while a known load is held on the servers backend, and the numbers
// the browser shows after the refresh equal /metrics. A screenshot is saved.
func TestStatsPageBrowser(t *testing.T) {
	exe := browserPath()
	if exe == "" {
		if onCI() {
			t.Fatal("no chromium, chromium-browser or google-chrome on PATH, and CI=true: install chromium (apt-get install chromium)")
		}
		t.Skip("no chromium, chromium-browser or google-chrome on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	base := startDemo(t) // stopped by a cleanup, after the deferred calls below
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()

	// The browser: headless, no sandbox (the tests may run as root).
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1400, 900))
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting %s: %v", exe, err)
	}
	// The page's /favicon.ico would go to the servers backend (the demo's
	// default backend) and join its queue: block it, the load must be exact.
	if _, err := chromedp.Call(bctx, network.SetBlockedURLs, network.SetBlockedURLsParams{
		URLPatterns: []*network.BlockPattern{{URLPattern: "*://*:*/favicon.ico", Block: true}},
	}); err != nil {
		t.Fatalf("Network.setBlockedURLs: %v", err)
	}

	// The page before the load: an idle backend.
	if err := chromedp.Do(bctx, chromedp.Navigate(base+"/stats")); err != nil {
		t.Fatalf("loading %s/stats: %v", base, err)
	}
	// The refreshes to come; ectx bounds the wait for them (armed below).
	ectx, ecancel := context.WithCancel(bctx)
	defer ecancel()
	loads := chromedp.Events(ectx, page.LoadEventFired)
	first, err := readStatsPage(bctx)
	if err != nil {
		t.Fatalf("reading the stats page: %v", err)
	}
	refresh, err := strconv.Atoi(first.Refresh)
	if err != nil || refresh <= 0 {
		t.Fatalf("the stats page has no meta refresh (content %q); the demo says `stats refresh 5s`", first.Refresh)
	}
	for _, s := range append(demoServers[:len(demoServers):len(demoServers)], "Backend") {
		if got := first.Rows[s]["Sessions/Cur"]; got != "0" {
			t.Fatalf("before the load, the page shows %s Sessions/Cur %q, want 0 (rows: %v)", s, got, first.Rows)
		}
	}
	t.Logf("browser %s loaded %s/stats (refresh every %ds, page time %q)", exe, base, refresh, first.Now)

	// The known load, and its steady state in /metrics.
	load := holdLoad(base+"/slow?ms=60000", heldRequests)
	defer load.release() // before the demo stops
	loadStart := time.Now()
	var steady scrape
	var steadyAt time.Time
	for prev := map[string]float64(nil); ; {
		m, err := scrapeMetrics(ctx, hc, base)
		if err != nil {
			t.Fatalf("scraping /metrics: %v", err)
		}
		w := watched(m)
		if atKnownLoad(m) && maps.Equal(w, prev) {
			steady, steadyAt = m, time.Now()
			break
		}
		prev = w
		if time.Since(loadStart) > 8*time.Second {
			t.Fatalf("the load did not settle at %d per server and %d queued within 8s; last /metrics: %v", perServer, wantQueued, w)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("load steady after %v: %d requests held, %d per server, %d queued", steadyAt.Sub(loadStart).Round(time.Millisecond), heldRequests, perServer, wantQueued)

	// Wait for the page to refresh itself: a load event of a new document
	// whose navigation started after the load was steady (its time origin
	// is later than the scrape that saw it steady, taken 50 ms after one
	// that already saw it).
	var now statsPage
	defer time.AfterFunc(time.Duration(refresh+5)*time.Second, ecancel).Stop()
	for _, err := range loads {
		if err != nil {
			t.Fatalf("no refresh of the stats page within %ds of the load being steady: %v", refresh+5, err)
		}
		p, err := readStatsPage(bctx)
		if err != nil {
			t.Fatalf("reading the refreshed stats page: %v", err)
		}
		if p.Origin > float64(steadyAt.UnixMicro())/1e3 {
			now = p
			break
		}
		t.Logf("a document requested %.0f ms before the load was steady loaded (the first one, or an early refresh); waiting for the next refresh", float64(steadyAt.UnixMicro())/1e3-p.Origin)
	}
	refreshedAt := time.Now()
	after, err := scrapeMetrics(ctx, hc, base)
	if err != nil {
		t.Fatalf("scraping /metrics: %v", err)
	}
	t.Logf("the page refreshed %v after the load was steady (%.1fs after its first load; page time %q -> %q)",
		refreshedAt.Sub(steadyAt).Round(time.Millisecond), (now.Origin-first.Origin)/1e3, first.Now, now.Now)

	// The screenshot, for humans.
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot: %v", err)
	} else {
		path := filepath.Join(artifactDir(t), "statspage-under-load.png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Errorf("saving the screenshot: %v", err)
		} else {
			t.Logf("screenshot: %s (%d bytes)", path, len(png))
		}
	}

	// The load did not move between the steady scrape and the one after the
	// refresh, and no held request was answered: the page and /metrics
	// describe the same state.
	if n := load.answered.Load(); n > 0 {
		t.Errorf("%d held requests were answered before the end of the test (timeouts?)", n)
	}
	if w0, w1 := watched(steady), watched(after); !maps.Equal(w0, w1) {
		t.Errorf("the load moved while it was held:\nsteady: %v\nafter:  %v", w0, w1)
	}
	if now.Now == first.Now {
		t.Errorf("the page's timestamp did not change across the refresh: %q", now.Now)
	}

	// The numbers on the page are /metrics.
	var table strings.Builder
	for _, s := range demoServers {
		row := now.Rows[s]
		if row == nil {
			t.Errorf("the refreshed page has no row for %s (rows: %v)", s, slices.Sorted(maps.Keys(now.Rows)))
			continue
		}
		if st := row["Status"]; st != "UP" {
			t.Errorf("%s: Status %q on the page, want UP", s, st)
		}
		if v := after[`sluice_server_status{proxy="servers",server="`+s+`",state="UP"}`]; v != 1 {
			t.Errorf("%s: /metrics sluice_server_status{state=UP} = %v, want 1", s, v)
		}
		fmt.Fprintf(&table, "\n  %-7s", s)
		for _, c := range serverCells {
			v, ok := after.server(c.series, s)
			if !ok {
				t.Errorf("/metrics lacks sluice_%s for %s", c.series, s)
				continue
			}
			got, want := row[c.col], formatCell(v, c.limit)
			if got != want {
				t.Errorf("%s %s: page shows %q, /metrics sluice_%s = %s", s, c.col, got, c.series, want)
			}
			fmt.Fprintf(&table, " %s=%s", c.col, got)
		}
		// The known load, as the page shows it.
		if row["Sessions/Cur"] != strconv.Itoa(perServer) || row["Sessions/Limit"] != strconv.Itoa(perServer) {
			t.Errorf("%s: page shows Cur %q / Limit %q, want %d / %d under the held load", s, row["Sessions/Cur"], row["Sessions/Limit"], perServer, perServer)
		}
	}
	if row := now.Rows["Backend"]; row == nil {
		t.Errorf("the refreshed page has no Backend row (rows: %v)", slices.Sorted(maps.Keys(now.Rows)))
	} else {
		fmt.Fprintf(&table, "\n  %-7s", "Backend")
		for _, c := range backendCells {
			v, ok := after.backend(c.series)
			if !ok {
				t.Errorf("/metrics lacks sluice_%s for servers", c.series)
				continue
			}
			got, want := row[c.col], formatCell(v, false)
			if got != want {
				t.Errorf("Backend %s: page shows %q, /metrics sluice_%s = %s", c.col, got, c.series, want)
			}
			fmt.Fprintf(&table, " %s=%s", c.col, got)
		}
		if got := row["Queue/Cur"]; got != strconv.Itoa(wantQueued) {
			t.Errorf("Backend Queue/Cur: page shows %q, want %d under the held load", got, wantQueued)
		}
		// Only the held requests reached the backend (no favicon, no retry).
		if v, _ := after.backend("backend_sessions_total"); v != heldRequests {
			t.Errorf("/metrics sluice_backend_sessions_total = %v, want %d (the held requests only)", v, heldRequests)
		}
	}
	t.Logf("the refreshed page equals /metrics:%s", table.String())
}

package admin

import (
	"context"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicelb/sluice/userspace/proxy"
)

func sampleStats() proxy.Stats {
	return proxy.Stats{
		CurrConns: 57, MaxConn: 200, MaxConnReached: 3,
		Frontends: []proxy.FrontendStats{
			{Name: "www", CurrSessions: 42, Sessions: 123456, MaxConn: 150},
			{Name: "<b>&x", CurrSessions: 15, Sessions: 900},
		},
		Backends: []proxy.BackendStats{
			{Name: "app", CurrSessions: 40, Sessions: 120000, QueueCur: 6, QueueMax: 19, Queued: 512, QueueTime: 3 * time.Second,
				Servers: []proxy.ServerStats{
					{Name: "app1", Addr: "10.0.0.1:8080", State: "UP", Weight: 100, Cur: 10, Max: 10, Total: 50000, Limit: 10, QueueCur: 3, QueueMax: 9, MaxQueue: 50, ConfigMax: 10},
					{Name: "app2", Addr: "10.0.0.2:8080", State: "UP", Weight: 100, Cur: 8, Max: 10, Total: 48000, Limit: 10, QueueCur: 0, QueueMax: 7, Failures: 2, MaxQueue: 50, ConfigMax: 10},
					{Name: "app3", Addr: "10.0.0.3:8080", State: "DOWN", Weight: 100, Max: 10, Total: 12000, Limit: 10, Failures: 311, MaxQueue: 50, ConfigMax: 10},
					{Name: "app4", Addr: "10.0.0.4:8080", State: "MAINT", Weight: 100, Max: 4, Total: 9000, Limit: 10, ConfigMax: 10},
					{Name: "app5", Addr: "10.0.0.5:8080", State: "DRAIN", Weight: 0, Cur: 1, Max: 9, Total: 1000, Limit: 10, ConfigMax: 10},
				}},
			{Name: "<b>&x", CurrSessions: 0, Sessions: 10,
				Servers: []proxy.ServerStats{
					{Name: `s"1<i>`, Addr: "[::1]:80", State: "DOWN", Weight: 1, Total: 10, Failures: 10},
				}},
			{Name: "empty"},
		},
	}
}

// fakeSrc returns the stats it is given, under a lock.
type fakeSrc struct {
	mu sync.Mutex
	st proxy.Stats
}

func (f *fakeSrc) Stats() proxy.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func render(t *testing.T, st proxy.Stats, h *History, refresh time.Duration) string {
	t.Helper()
	var b strings.Builder
	if err := RenderStatsPage(&b, st, h, refresh, "1.2.3<beta>"); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// filledHistory records n samples of st with varying sessions and queues.
func filledHistory(st proxy.Stats, n int) *History {
	h := NewHistory(nil, 5*time.Second, 120)
	for i := range n {
		s := st
		s.Backends = nil
		s.Frontends = append([]proxy.FrontendStats(nil), st.Frontends...)
		for k := range s.Frontends {
			s.Frontends[k].CurrSessions = int64(40 + 30*math.Sin(float64(i)/11+float64(k)))
		}
		for _, b := range st.Backends {
			srv := append([]proxy.ServerStats(nil), b.Servers...)
			b.CurrSessions, b.QueueCur = 0, 0
			for k := range srv {
				wave := math.Sin(float64(i)/9 + float64(k))
				srv[k].Cur = int64(5 + 5*wave)
				srv[k].QueueCur = int64(max(0, 8*wave-4))
				b.CurrSessions += srv[k].Cur + srv[k].QueueCur
				b.QueueCur += srv[k].QueueCur
			}
			b.Servers = srv
			s.Backends = append(s.Backends, b)
		}
		h.Record(s)
	}
	return h
}

func TestStatsPage(t *testing.T) {
	st := sampleStats()
	page := render(t, st, filledHistory(st, 90), 5*time.Second)
	for _, want := range []string{
		"<!DOCTYPE html>", "</html>",
		`<meta http-equiv="refresh" content="5">`,
		"version 1.2.3&lt;beta&gt;",
		"app1", "app2", "app3", "app4", "app5", "10.0.0.1:8080", "www",
		`<td class="st">UP</td>`, `<td class="st">DOWN</td>`, `<td class="st">MAINT</td>`, `<td class="st">DRAIN</td>`, `<td class="st">OPEN</td>`, `<td class="na k">–</td>`,
		`<tr class="up">`, `<tr class="down">`, `<tr class="maint">`, `<tr class="drain">`, `<tr class="backend up">`, `<tr class="backend down">`,
		"&lt;b&gt;&amp;x", "s&#34;1&lt;i&gt;",
		"<svg", "<polyline", "TIME_WAIT", "Free tuples", "–",
		"2/5 servers up", "512 requests queued, avg wait 5.9ms",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{"<b>&x", `s"1<i>`, "ZgotmplZ", "<script"} {
		if strings.Contains(page, bad) {
			t.Errorf("page holds %q", bad)
		}
	}
	// Tags are balanced, roughly.
	for _, tag := range []string{"table", "tr", "svg", "span"} {
		if o, c := strings.Count(page, "<"+tag+">")+strings.Count(page, "<"+tag+" "), strings.Count(page, "</"+tag+">"); o != c {
			t.Errorf("<%s>: %d opened, %d closed", tag, o, c)
		}
	}
	// One sparkline per frontend, server and backend row.
	if n, want := strings.Count(page, `<svg class="spark"`), 2+5+1+1+1+1; n != want {
		t.Errorf("%d sparklines, want %d", n, want)
	}
	if out := os.Getenv("SLUICE_STATSPAGE_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(page), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStatsPageNoHistory(t *testing.T) {
	st := sampleStats()
	page := render(t, st, nil, 0)
	if strings.Contains(page, "http-equiv") {
		t.Error("refresh meta with refresh 0")
	}
	if strings.Contains(page, `<svg class="spark"`) {
		t.Error("sparkline without history")
	}
	if !strings.Contains(page, "no history") {
		t.Error("no 'no history' note")
	}
	// One sample is not a line.
	page = render(t, st, filledHistory(st, 1), 1500*time.Millisecond)
	if strings.Contains(page, `<svg class="spark"`) || !strings.Contains(page, "collecting") {
		t.Error("sparkline from a single sample")
	}
	if !strings.Contains(page, `content="2"`) {
		t.Error("refresh of 1.5s not rounded up to 2s")
	}
	// Nothing at all.
	page = render(t, proxy.Stats{}, nil, 0)
	if !strings.Contains(page, "No backend") || !strings.Contains(page, "</html>") {
		t.Errorf("empty page:\n%s", page)
	}
}

func TestStatsCSV(t *testing.T) {
	var b strings.Builder
	if err := RenderStatsCSV(&b, sampleStats()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	// HAProxy's field order, from its documentation (management.txt 9.1).
	const header = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,"
	if lines[0] != header {
		t.Fatalf("header\n%s\nwant\n%s", lines[0], header)
	}
	pid := strconv.Itoa(os.Getpid())
	want := []string{
		"www,FRONTEND,,,42,,150,123456,,,,,,,,,,OPEN,,,,,,,,," + pid + ",1,0,,,,0,",
		"<b>&x,FRONTEND,,,15,,0,900,,,,,,,,,,OPEN,,,,,,,,," + pid + ",2,0,,,,0,",
		"app,app1,3,9,10,10,10,50000,,,,,,0,,,,UP,100,1,0,,,,,50," + pid + ",3,1,,50000,,2,",
		"app,app2,0,7,8,10,10,48000,,,,,,2,,,,UP,100,1,0,,,,,50," + pid + ",3,2,,48000,,2,",
		"app,app3,0,0,0,10,10,12000,,,,,,311,,,,DOWN,100,1,0,,,,,50," + pid + ",3,3,,12000,,2,",
		"app,app4,0,0,0,4,10,9000,,,,,,0,,,,MAINT,100,1,0,,,,,0," + pid + ",3,4,,9000,,2,",
		"app,app5,0,0,1,9,10,1000,,,,,,0,,,,DRAIN,0,1,0,,,,,0," + pid + ",3,5,,1000,,2,",
		"app,BACKEND,6,19,40,,,120000,,,,,,,,,,UP,200,2,,,,,,," + pid + ",3,0,,,,1,",
	}
	for i, w := range want {
		if lines[1+i] != w {
			t.Errorf("line %d\n%s\nwant\n%s", 1+i, lines[1+i], w)
		}
	}
	for _, l := range lines {
		if n := strings.Count(l, ","); n != len(statFields) {
			t.Errorf("%d commas in %q", n, l)
		}
	}
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "empty,BACKEND,") || !strings.Contains(last, ",DOWN,0,0,") {
		t.Errorf("last line %q", last)
	}
}

func TestHistory(t *testing.T) {
	src := &fakeSrc{st: sampleStats()}
	h := NewHistory(src, time.Millisecond, 4)
	for i := range 6 {
		st := sampleStats()
		st.Frontends[0].CurrSessions = int64(i)
		st.Backends[0].QueueCur = int64(10 * i)
		st.Backends[0].Servers[1].Cur = int64(100 + i)
		h.Record(st)
	}
	if got := h.Frontend("www").Sessions; !equal(got, []int64{2, 3, 4, 5}) {
		t.Errorf("frontend series %v", got)
	}
	if s := h.Frontend("www"); s.Queue != nil {
		t.Errorf("frontend queue %v", s.Queue)
	}
	if got := h.Backend("app").Queue; !equal(got, []int64{20, 30, 40, 50}) {
		t.Errorf("backend queue %v", got)
	}
	if got := h.Server("app", "app2").Sessions; !equal(got, []int64{102, 103, 104, 105}) {
		t.Errorf("server series %v", got)
	}
	if s := h.Server("app", "nope"); s.Sessions != nil || s.Queue != nil {
		t.Errorf("unknown server %v", s)
	}
	// A server removed from the snapshot is forgotten; a new one starts empty.
	st := sampleStats()
	st.Backends[0].Servers = st.Backends[0].Servers[1:]
	st.Backends[0].Servers[0].Name = "new"
	h.Record(st)
	if s := h.Server("app", "app1"); s.Sessions != nil {
		t.Errorf("removed server kept: %v", s)
	}
	if s := h.Server("app", "new"); len(s.Sessions) != 1 {
		t.Errorf("new server %v", s)
	}

	// Run samples at once and then periodically; reads are safe meanwhile
	// (go test -race).
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	h = NewHistory(src, time.Millisecond, 3)
	go func() { h.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for len(h.Backend("app").Sessions) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not fill the history")
		}
		var b strings.Builder
		RenderStatsPage(&b, src.Stats(), h, 0, "")
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// The kernel columns show the kernel's figures when there are some, with
// the per-source detail in the free-tuples cell's title.
func TestStatsPageKernelColumns(t *testing.T) {
	st := proxy.Stats{KernelMode: "ebpf", Backends: []proxy.BackendStats{{Name: "ws", Servers: []proxy.ServerStats{
		{Name: "ws1", State: "UP", Weight: 1, Kernel: &proxy.KernelServerStats{Established: 417, TimeWait: 2931,
			Sources: []proxy.SourceStats{{Addr: "127.0.0.2", Free: 25000, TimeWait: 2000}, {Addr: "127.0.0.3", Free: 26000, TimeWait: 931}}}},
		{Name: "ws2", State: "UP", Weight: 1},
	}}}}
	var b strings.Builder
	if err := RenderStatsPage(&b, st, nil, 0, "test"); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{`<td class="k">417</td>`, `<td class="k">2931</td>`, `>51000</td>`, "127.0.0.2: 25000 free, 2000 TIME_WAIT"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Count(page, `<td class="na k">–</td>`) < 3 { // ws2 and the backend row have no figures
		t.Errorf("servers without kernel figures should show dashes")
	}
}

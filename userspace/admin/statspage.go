package admin

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sluicelb/sluice/userspace/proxy"
)

// statFields are HAProxy's `show stat` CSV fields up to "type", in order.
var statFields = []string{"pxname", "svname", "qcur", "qmax", "scur", "smax", "slim", "stot", "bin", "bout",
	"dreq", "dresp", "ereq", "econ", "eresp", "wretr", "wredis", "status", "weight", "act", "bck", "chkfail",
	"chkdown", "lastchg", "downtime", "qlimit", "pid", "iid", "sid", "throttle", "lbtot", "tracked", "type"}

// RenderStatsCSV writes st in HAProxy's stats CSV: the "# pxname,svname,..."
// header, then one FRONTEND row per frontend, and per backend one row per
// server and a BACKEND row. It is the body of `show stat` (which adds the
// runtime API's closing empty line) and of the stats page's CSV export.
func RenderStatsCSV(w io.Writer, st proxy.Stats) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s,\n", strings.Join(statFields, ","))
	row := func(kv map[string]string) {
		vals := make([]string, len(statFields))
		for i, f := range statFields {
			vals[i] = kv[f]
		}
		fmt.Fprintf(&b, "%s,\n", strings.Join(vals, ","))
	}
	i := strconv.FormatInt
	pid := strconv.Itoa(os.Getpid())
	for n, f := range st.Frontends {
		row(map[string]string{"pxname": f.Name, "svname": "FRONTEND", "scur": i(f.CurrSessions, 10), "slim": strconv.Itoa(f.MaxConn),
			"stot": i(f.Sessions, 10), "status": "OPEN", "pid": pid, "iid": strconv.Itoa(n + 1), "sid": "0", "type": "0"})
	}
	for n, be := range st.Backends {
		act, up := 0, 0
		for k, v := range be.Servers {
			if v.State == "UP" {
				up++
				act += v.Weight
			}
			row(map[string]string{"pxname": be.Name, "svname": v.Name, "qcur": i(v.QueueCur, 10), "qmax": i(v.QueueMax, 10),
				"scur": i(v.Cur, 10), "smax": i(v.Max, 10), "slim": i(v.Limit, 10), "stot": i(v.Total, 10),
				"econ": i(v.Failures, 10), "status": v.State, "weight": strconv.Itoa(v.Weight), "act": "1", "bck": "0",
				"qlimit": strconv.Itoa(v.MaxQueue), "pid": pid, "iid": strconv.Itoa(len(st.Frontends) + n + 1),
				"sid": strconv.Itoa(k + 1), "lbtot": i(v.Total, 10), "type": "2"})
		}
		status := "UP"
		if up == 0 {
			status = "DOWN"
		}
		row(map[string]string{"pxname": be.Name, "svname": "BACKEND", "qcur": i(be.QueueCur, 10), "qmax": i(be.QueueMax, 10),
			"scur": i(be.CurrSessions, 10), "stot": i(be.Sessions, 10), "status": status, "weight": strconv.Itoa(act),
			"act": strconv.Itoa(up), "pid": pid, "iid": strconv.Itoa(len(st.Frontends) + n + 1), "sid": "0", "type": "1"})
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// RenderStatsPage writes the stats page: one self-contained HTML document
// (inline CSS and SVG, no script, no external asset) in the spirit of
// HAProxy's: process information, a table of the frontends, and per backend
// a table with one row per server and a BACKEND row, coloured by state, with
// sparklines of sessions and queue drawn from h (which may be nil). With
// refresh > 0 the page asks the browser to reload it every refresh.
func RenderStatsPage(w io.Writer, st proxy.Stats, h *History, refresh time.Duration, version string) error {
	d := pageData{
		Version:        version,
		Pid:            os.Getpid(),
		Now:            time.Now().Format("2006-01-02 15:04:05 MST"),
		CurrConns:      st.CurrConns,
		MaxConn:        limit(int64(st.MaxConn)),
		MaxConnReached: st.MaxConnReached,
	}
	if refresh > 0 {
		secs := int(math.Ceil(refresh.Seconds()))
		// Numbers only: safe to emit as is.
		d.RefreshMeta = template.HTML(`<meta http-equiv="refresh" content="` + strconv.Itoa(secs) + `">`)
		d.Refresh = (time.Duration(secs) * time.Second).String()
	}
	if st.MaxConn > 0 {
		d.ConnPct = int(min(100, st.CurrConns*100/int64(st.MaxConn)))
		d.ConnBar = true
	}
	if h != nil {
		d.HistoryNote = fmt.Sprintf("trend: last %s, one sample every %s", shortDur(h.Every()*time.Duration(h.Keep())), shortDur(h.Every()))
	}
	for _, f := range st.Frontends {
		r := row{Name: f.Name, State: "OPEN", Class: "open", Cur: num(f.CurrSessions), Max: num(f.MaxSessions), Limit: limit(int64(f.MaxConn)),
			Total: num(f.Sessions), Spark: noHistory}
		if h != nil {
			r.Spark = sparkline(h.Frontend(f.Name), h.Keep(), int64(f.MaxConn))
		}
		d.Frontends = append(d.Frontends, r)
	}
	for _, b := range st.Backends {
		t := backendTable{Name: b.Name}
		up, weight := 0, 0
		var failures int64
		for _, s := range b.Servers {
			if s.State == "UP" {
				up++
				weight += s.Weight
			}
			failures += s.Failures
			r := row{Name: s.Name, Addr: s.Addr, State: s.State, Class: stateClass(s.State), Weight: strconv.Itoa(s.Weight),
				Cur: num(s.Cur), Max: num(s.Max), Limit: limit(s.Limit), Total: num(s.Total),
				QCur: num(s.QueueCur), QMax: num(s.QueueMax), QLimit: limit(int64(s.MaxQueue)), Errors: num(s.Failures),
				Queueing: s.QueueCur > 0, Full: s.Limit > 0 && s.Cur >= s.Limit, Spark: noHistory}
			if h != nil {
				r.Spark = sparkline(h.Server(b.Name, s.Name), h.Keep(), s.Limit)
			}
			if k := s.Kernel; k != nil {
				r.Kernel, r.KEstab, r.KTW = true, num(k.Established), num(k.TimeWait)
				var free int64
				var per []string
				for _, src := range k.Sources {
					free += src.Free
					per = append(per, fmt.Sprintf("%s: %d free, %d TIME_WAIT", src.Addr, src.Free, src.TimeWait))
				}
				if len(k.Sources) > 0 {
					r.KFree, r.KFreeTitle = num(free), strings.Join(per, "\n")
				}
			}
			t.Servers = append(t.Servers, r)
		}
		state := "UP"
		if up == 0 {
			state = "DOWN"
		}
		t.Total = row{Name: "BACKEND", Sum: true, State: state, Class: "backend " + stateClass(state), Weight: strconv.Itoa(weight),
			Cur: num(b.CurrSessions), Total: num(b.Sessions), QCur: num(b.QueueCur), QMax: num(b.QueueMax),
			Errors: num(failures), Queueing: b.QueueCur > 0, Spark: noHistory}
		if h != nil {
			t.Total.Spark = sparkline(h.Backend(b.Name), h.Keep(), 0)
		}
		t.Summary = fmt.Sprintf("%d/%d servers up", up, len(b.Servers))
		if b.Queued > 0 {
			t.Summary += fmt.Sprintf(" · %d requests queued, avg wait %s", b.Queued, shortDur(b.QueueTime/time.Duration(b.Queued)))
		}
		d.Backends = append(d.Backends, t)
	}
	return pageTmpl.Execute(w, d)
}

type pageData struct {
	Version        string
	Pid            int
	Now            string
	RefreshMeta    template.HTML
	Refresh        string
	CurrConns      int64
	MaxConn        string
	MaxConnReached int64
	ConnBar        bool
	ConnPct        int
	HistoryNote    string
	Frontends      []row
	Backends       []backendTable
}

type backendTable struct {
	Name    string
	Summary string
	Servers []row
	Total   row
}

// row is one line of a table, every figure already formatted ("" = none).
type row struct {
	Name, Addr, State, Class, Weight string
	Cur, Max, Limit, Total           string
	QCur, QMax, QLimit               string
	Errors                           string
	Kernel                           bool // the kernel columns have figures
	KEstab, KTW, KFree, KFreeTitle   string
	Queueing, Full, Sum              bool
	Spark                            template.HTML
}

func num(n int64) string { return strconv.FormatInt(n, 10) }

// limit formats a limit, 0 meaning none (an empty cell, as HAProxy).
func limit(n int64) string {
	if n <= 0 {
		return ""
	}
	return strconv.FormatInt(n, 10)
}

func stateClass(s string) string {
	switch s {
	case "UP", "DOWN", "MAINT", "DRAIN":
		return strings.ToLower(s)
	}
	return "other"
}

// shortDur formats d compactly: 10m, 5s, 1m30s, 2.5ms.
func shortDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		d = d.Round(time.Second)
	case d >= time.Millisecond:
		d = d.Round(100 * time.Microsecond)
	}
	s := d.String()
	s = strings.TrimSuffix(s, "0s")
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	if s == "" {
		return "0s"
	}
	return s
}

const sparkW, sparkH = 120, 24

var noHistory = template.HTML(`<span class="na">no history</span>`)

// sparkline draws the sessions (blue area) and queue (red line, only when
// it was ever non-zero) of s, newest at the right edge, on a time axis of
// keep samples so that all sparklines of the page line up. The vertical
// scale goes up to the object's limit (0: none) or to the peak if higher, so
// that a server near its maxconn shows as near the top. The output holds
// numbers only, no name.
func sparkline(s Series, keep int, limit int64) template.HTML {
	n := len(s.Sessions)
	if n < 2 {
		return template.HTML(`<span class="na">collecting…</span>`)
	}
	peak := int64(0)
	for _, v := range s.Sessions {
		peak = max(peak, v)
	}
	qpeak := int64(0)
	for _, v := range s.Queue {
		qpeak = max(qpeak, v)
	}
	scale := max(peak, qpeak, limit, 1)
	step := float64(sparkW-2) / float64(max(keep-1, 1))
	x := func(i, n int) float64 { return float64(sparkW-1) - float64(n-1-i)*step }
	y := func(v int64) float64 { return 1 + float64(sparkH-2)*(1-float64(v)/float64(scale)) }
	pts := func(vals []int64) string {
		var b strings.Builder
		for i, v := range vals {
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%.1f,%.1f", x(i, len(vals)), y(v))
		}
		return b.String()
	}
	var b strings.Builder
	title := fmt.Sprintf("sessions: now %d, peak %d", s.Sessions[n-1], peak)
	if s.Queue != nil {
		title += fmt.Sprintf("; queue: now %d, peak %d", s.Queue[len(s.Queue)-1], qpeak)
	}
	fmt.Fprintf(&b, `<svg class="spark" width="%d" height="%d" viewBox="0 0 %d %d" role="img"><title>%s</title>`,
		sparkW, sparkH, sparkW, sparkH, title)
	sp := pts(s.Sessions)
	fmt.Fprintf(&b, `<polygon class="sa" points="%.1f,%d %s %.1f,%d"/>`, x(0, n), sparkH-1, sp, x(n-1, n), sparkH-1)
	fmt.Fprintf(&b, `<polyline class="sl" points="%s"/>`, sp)
	if qpeak > 0 {
		fmt.Fprintf(&b, `<polyline class="ql" points="%s"/>`, pts(s.Queue))
	}
	b.WriteString(`</svg>`)
	fmt.Fprintf(&b, `<span class="peak">%d</span>`, scale)
	return template.HTML(b.String())
}

var pageTmpl = template.Must(template.New("stats").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<link rel="icon" href="data:,">
{{.RefreshMeta}}
<title>sluice statistics</title>
<style>
body{font-family:Arial,Helvetica,sans-serif;font-size:12px;color:#000;background:#fff;margin:12px 16px}
h1{font-size:18px;margin:0 0 2px;color:#0a3a6a}
h1 small{font-size:12px;color:#555;font-weight:normal}
.proc{display:flex;gap:24px;align-items:flex-start;margin:8px 0 16px;flex-wrap:wrap}
.box{border:1px solid #aaa;background:#f6f6f0;padding:6px 10px}
.box table td{padding:1px 8px 1px 0}
.box b{font-size:14px}
.bar{display:inline-block;width:140px;height:8px;background:#ddd;vertical-align:middle;margin-left:6px}
.bar span{display:block;height:100%;background:#3b7dd8}
.legend .sw span{display:inline-block;padding:1px 6px;margin:1px 2px;border:1px solid #999}
table.px{border-collapse:collapse;margin:0 0 14px}
table.px th,table.px td{border:1px solid #999;padding:2px 5px;white-space:nowrap}
table.px td{text-align:right}
table.px td.l{text-align:left}
th{background:#20d0d0;font-weight:normal}
th.g{background:#aef0f0}
.pxname{background:#b00040;color:#ffff40;font-weight:bold;text-align:left;font-size:13px;padding:3px 6px}
.pxname span{color:#fff;font-weight:normal;font-size:11px;margin-left:14px}
tr.open td{background:#e8e8d0}
tr.up td{background:#c0ffc0}
tr.down td{background:#ff9090}
tr.maint td{background:#d8b078}
tr.drain td{background:#a8d0ff}
tr.other td{background:#ffffa0}
tr.backend td{background:#e8e8d0;font-weight:bold;border-top:2px solid #666}
tr.backend.down td.st{background:#ff9090}
tr.backend.up td.st{background:#c0ffc0}
td.st,td.k{font-weight:bold;text-align:center!important}
td.k{font-weight:normal}
.addr{color:#555;font-size:11px}
.na{color:#888}
.hot{color:#c00000;font-weight:bold}
svg.spark{vertical-align:middle;background:rgba(255,255,255,.55);border:1px solid #bbb}
.sa{fill:#3b7dd8;fill-opacity:.25;stroke:none}
.sl{fill:none;stroke:#1f5fbf;stroke-width:1.2}
.ql{fill:none;stroke:#d00000;stroke-width:1.2}
.peak{display:inline-block;min-width:3em;text-align:left;color:#555;font-size:10px;margin-left:3px;vertical-align:top}
td.tr{text-align:left!important;padding:1px 4px}
.foot{color:#666;margin-top:6px}
</style>
</head>
<body>
<h1>sluice statistics <small>version {{.Version}} · pid {{.Pid}} · {{.Now}}</small></h1>
<div class="proc">
<div class="box"><table>
<tr><td>current connections</td><td><b>{{.CurrConns}}</b>{{if .MaxConn}} / {{.MaxConn}}{{end}}{{if .ConnBar}}<span class="bar" title="{{.ConnPct}}% of maxconn"><span style="width:{{.ConnPct}}%"></span></span> {{.ConnPct}}%{{end}}</td></tr>
<tr><td>maxconn</td><td>{{if .MaxConn}}{{.MaxConn}}{{else}}<span class="na">none</span>{{end}}</td></tr>
<tr><td>maxconn reached</td><td>{{if .MaxConnReached}}<span class="hot">{{.MaxConnReached}} times</span>{{else}}never{{end}}</td></tr>
<tr><td>refresh</td><td>{{if .Refresh}}every {{.Refresh}}{{else}}<span class="na">off</span>{{end}}</td></tr>
</table></div>
<div class="box legend">
<div class="sw"><span style="background:#c0ffc0">UP</span><span style="background:#ff9090">DOWN</span><span style="background:#d8b078">MAINT</span><span style="background:#a8d0ff">DRAIN</span><span style="background:#e8e8d0">frontend / backend</span></div>
<div style="margin-top:4px"><svg width="22" height="8"><line x1="0" y1="4" x2="22" y2="4" stroke="#1f5fbf" stroke-width="2"/></svg> sessions <svg width="22" height="8"><line x1="0" y1="4" x2="22" y2="4" stroke="#d00000" stroke-width="2"/></svg> queue{{if .HistoryNote}} <span class="na">({{.HistoryNote}}; scale: the limit or the peak, shown on the right)</span>{{else}} <span class="na">(no history)</span>{{end}}</div>
</div>
</div>

{{if .Frontends}}<table class="px">
<tr><th class="pxname" colspan="8">Frontends</th></tr>
<tr><th rowspan="2">Name</th><th rowspan="2">Status</th><th class="g" colspan="4">Sessions</th><th rowspan="2">Trend</th></tr>
<tr><th>Cur</th><th>Max</th><th>Limit</th><th>Total</th></tr>
{{range .Frontends}}<tr class="{{.Class}}"><td class="l"><b>{{.Name}}</b></td><td class="st">{{.State}}</td><td>{{.Cur}}</td><td></td><td>{{.Limit}}</td><td>{{.Total}}</td><td class="tr">{{.Spark}}</td></tr>
{{end}}</table>
{{end}}
{{range .Backends}}<table class="px">
<tr><th class="pxname" colspan="18">{{.Name}}<span>{{.Summary}}</span></th></tr>
<tr><th rowspan="2">Server</th><th rowspan="2">Address</th><th rowspan="2">Status</th><th rowspan="2">Weight</th><th class="g" colspan="4">Sessions</th><th class="g" colspan="3">Queue</th><th class="g">Errors</th><th class="g" colspan="3">Kernel</th><th rowspan="2">Trend</th></tr>
<tr><th>Cur</th><th>Max</th><th>Limit</th><th>Total</th><th>Cur</th><th>Max</th><th>Limit</th><th>Conn</th><th>Estab</th><th>TIME_WAIT</th><th>Free tuples</th></tr>
{{range .Servers}}{{template "row" .}}{{end}}{{template "row" .Total}}
</table>
{{else}}<p class="na">No backend.</p>
{{end}}
<div class="foot">CSV: append <code>;csv</code> to this page's address, or <code>show stat</code> on the stats socket.</div>
</body>
</html>
{{define "row"}}<tr class="{{.Class}}"><td class="l">{{if .Sum}}Backend{{else}}{{.Name}}{{end}}</td><td class="l addr">{{.Addr}}</td><td class="st">{{.State}}</td><td>{{.Weight}}</td><td{{if .Full}} class="hot" title="at its limit"{{end}}>{{.Cur}}</td><td>{{.Max}}</td><td>{{.Limit}}</td><td>{{.Total}}</td><td{{if .Queueing}} class="hot"{{end}}>{{.QCur}}</td><td>{{.QMax}}</td><td>{{.QLimit}}</td><td>{{.Errors}}</td>{{if .Kernel}}<td class="k">{{.KEstab}}</td><td class="k">{{.KTW}}</td><td class="k" title="{{.KFreeTitle}}">{{.KFree}}</td>{{else}}<td class="na k">–</td><td class="na k">–</td><td class="na k">–</td>{{end}}<td class="tr">{{.Spark}}</td></tr>
{{end}}`))

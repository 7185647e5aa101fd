package main

import (
	"fmt"
	"html"
	"math"
	"os"
	"strings"
)

// The -html page is self-contained: inline CSS and SVG, no scripts, no
// external assets.

const pageStyle = `body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:980px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
pre{background:#f6f6f6;padding:10px;white-space:pre-wrap;font-size:12.5px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
svg{background:#fff;border:1px solid #e4e4e4;margin:6px 0}
.ax{stroke:#999;stroke-width:1}.grid{stroke:#eee;stroke-width:1}
text{font:11px system-ui,sans-serif;fill:#444}`

func writeHTML(path string, body string, title string) error {
	var b strings.Builder
	b.WriteString("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>")
	b.WriteString(html.EscapeString(title))
	b.WriteString("</title><style>")
	b.WriteString(pageStyle)
	b.WriteString("</style></head><body>\n")
	b.WriteString(body)
	b.WriteString("\n</body></html>\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// phaseMark is the start of a phase on the time charts.
type phaseMark struct {
	t    float64
	name string
}

func reportHTML(r *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<h1>wsgw load: %s</h1>\n", html.EscapeString(r.Scenario))
	fmt.Fprintf(&b, "<p>%s · %d CPUs · kernel %s · %s · gateway %s (%s)</p>\n",
		html.EscapeString(r.Started.Format("2006-01-02 15:04:05 MST")), r.Host.CPUs, html.EscapeString(r.Host.Kernel),
		html.EscapeString(r.Host.GoVersion), html.EscapeString(r.Gateway.Binary), html.EscapeString(r.Gateway.Version))
	fmt.Fprintf(&b, "<pre>%s</pre>\n", html.EscapeString(strings.Join(r.Command, " ")))
	b.WriteString("<h2>Summary</h2>\n<pre>")
	b.WriteString(html.EscapeString(strings.Join(r.summaryLines(), "\n")))
	b.WriteString("</pre>\n")
	if len(r.Histogram) > 0 {
		b.WriteString("<h2>Publish-to-client latency</h2>\n")
		b.WriteString(histSVG(r.Histogram, r.Latency))
	}
	if f := r.Floor; f != nil && len(f.Runs) > 0 {
		b.WriteString(floorHTML(f))
	}
	if c := r.Cost; c != nil && c.GwMessages > 0 {
		b.WriteString(costHTML(c))
	}
	if len(r.PerGateway) > 0 {
		b.WriteString(perGatewayHTML(r.PerGateway))
	}
	if s := r.Storm; s != nil {
		b.WriteString(stormHTML(s))
	}
	if d := r.Durable; d != nil && len(d.Windows) > 0 {
		b.WriteString(durableHTML(d))
	}
	if p := r.Replay; p != nil {
		b.WriteString(replayHTML(p))
	}
	if f := r.Fairness; f != nil && len(f.Windows) > 0 {
		b.WriteString(fairnessHTML(f))
	}
	if s := r.Sweep; s != nil && len(s.Steps) > 0 {
		b.WriteString("<h2>Sweep</h2>\n<table><tr><th>rate/s</th><th>published/s</th><th>delivered/s</th><th>p50</th><th>p99</th><th>max</th><th>gaps</th><th>missing</th><th>gw CPU</th><th>µs/frame</th><th>others' CPU</th><th></th></tr>\n")
		for _, st := range s.Steps {
			res := "ok"
			if !st.Pass {
				res = "fail: " + st.Why
			}
			fmt.Fprintf(&b, "<tr><td>%.0f</td><td>%.0f</td><td>%.0f</td><td>%s</td><td>%s</td><td>%s</td><td>%d</td><td>%d</td><td>%.0f%%</td><td>%.3f</td><td>%.0f%%</td><td>%s</td></tr>\n",
				st.Rate, st.Achieved, st.DeliveredPerSec, fmtUS(st.Latency.P50), fmtUS(st.Latency.P99), fmtUS(st.Latency.Max),
				st.Gaps, st.Missing, st.GwCPUPercent, st.GwCPUPerFrameUS, st.OtherCPUPercent, html.EscapeString(res))
		}
		b.WriteString("</table>\n")
	}
	if len(r.Timeline) > 1 {
		b.WriteString("<h2>Over time</h2>\n")
		ts := make([]float64, len(r.Timeline))
		col := func(f func(s Sample) float64) []float64 {
			out := make([]float64, len(r.Timeline))
			for i, s := range r.Timeline {
				out[i] = f(s)
			}
			return out
		}
		var marks []phaseMark
		for i, s := range r.Timeline {
			ts[i] = s.T
			p, _, _ := strings.Cut(s.Phase, "/")
			if i == 0 || p != marks[len(marks)-1].name {
				marks = append(marks, phaseMark{s.T, p})
			}
		}

		b.WriteString(lineSVG("frames delivered per second (all clients)", ts, []series{
			{"delivered/s", "#1f77b4", col(func(s Sample) float64 { return s.DeliveredPS })},
		}, "", marks))
		b.WriteString(lineSVG("messages published per second", ts, []series{
			{"published/s", "#ff7f0e", col(func(s Sample) float64 { return s.PublishedPS })},
		}, "", marks))
		b.WriteString(lineSVG("sockets open and connects per second", ts, []series{
			{"open", "#2ca02c", col(func(s Sample) float64 { return float64(s.Sockets) })},
			{"connects/s", "#9467bd", col(func(s Sample) float64 { return s.ConnectsPS })},
		}, "", marks))
		b.WriteString(lineSVG("latency of each second (ms)", ts, []series{
			{"p50", "#1f77b4", col(func(s Sample) float64 { return float64(s.P50US) / 1000 })},
			{"p99", "#d62728", col(func(s Sample) float64 { return float64(s.P99US) / 1000 })},
		}, "ms", marks))
		b.WriteString(lineSVG("CPU, % of one core", ts, []series{
			{"gateway", "#d62728", col(func(s Sample) float64 { return s.GwCPUPercent })},
			{"client", "#7f7f7f", col(func(s Sample) float64 { return s.ClCPUPercent })},
			{"other processes", "#bcbd22", col(func(s Sample) float64 { return s.OtherCPU })},
		}, "%", marks))
		b.WriteString(lineSVG("gateway context switches and system calls per second", ts, []series{
			{"switches/s", "#17becf", col(func(s Sample) float64 { return s.GwCtxPS })},
			{"syscalls/s", "#e377c2", col(func(s Sample) float64 { return s.GwSyscallsPS })},
		}, "", marks))
		b.WriteString(lineSVG("gateway RSS (MiB)", ts, []series{
			{"RSS", "#8c564b", col(func(s Sample) float64 { return float64(s.GwRSS) / (1 << 20) })},
		}, "MiB", marks))
	}
	return b.String()
}

// fairnessHTML is the fairness table and the measured sockets' latency
// histograms without and with stalled sockets.
func fairnessHTML(f *FairnessResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<h2>Fairness: %d stalled sockets</h2>\n<p>%s</p>\n", f.Stalled, html.EscapeString(f.Verdict))
	b.WriteString("<table><tr><th>round</th><th>stalled</th><th>lead-in</th><th>p50</th><th>p99</th><th>p99.9</th><th>max</th><th>delivered</th><th>gaps</th><th>missing</th><th>gateway dropped</th><th>stalled closed</th><th>gw CPU</th><th>others' CPU</th></tr>\n")
	for _, w := range f.Windows {
		fmt.Fprintf(&b, "<tr><td>%d</td><td>%d</td><td>%.1fs</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%d/%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%.0f%%</td><td>%.0f%%</td></tr>\n",
			w.Round, w.Stalled, w.LeadSeconds, fmtUS(w.Latency.P50), fmtUS(w.Latency.P99), fmtUS(w.Latency.P999), fmtUS(w.Latency.Max),
			w.Delivered, w.Expected, w.Gaps, w.Missing, w.GwDropped, w.StalledClosed, w.GwCPUPercent, w.OtherCPUPercent)
	}
	fmt.Fprintf(&b, "<tr><th>pooled</th><th></th><th>with ÷ without</th><th>%.2f</th><th>%.2f</th><th>%.2f</th><th></th><th></th><th>%d</th><th>%d</th><th>%d / %d</th><th>%d</th><th></th><th></th></tr>\n</table>\n",
		f.P50Ratio, f.P99Ratio, f.P999Ratio, f.MeasuredGaps, f.MeasuredMissing, f.GwDroppedWithout, f.GwDroppedWith, f.StalledClosed)
	if len(f.HistWithout) > 0 {
		b.WriteString("<h2>Measured sockets' latency without stalled sockets</h2>\n")
		b.WriteString(histSVG(f.HistWithout, &f.Without))
	}
	if len(f.HistWith) > 0 {
		fmt.Fprintf(&b, "<h2>Measured sockets' latency with %d stalled sockets</h2>\n", f.Stalled)
		b.WriteString(histSVG(f.HistWith, &f.With))
	}
	return b.String()
}

// histSVG draws the log-bucketed latency histogram with percentile marks.
func histSVG(bars []HistBar, lat *Latency) string {
	const w, h, left, right, top, bottom = 900.0, 280.0, 60.0, 20.0, 20.0, 40.0
	lo, hi := math.Log10(bars[0].From), math.Log10(bars[len(bars)-1].To)
	var maxC int64
	for _, b := range bars {
		maxC = max(maxC, b.Count)
	}
	if maxC == 0 || hi <= lo {
		return ""
	}
	x := func(us float64) float64 { return left + (math.Log10(us)-lo)/(hi-lo)*(w-left-right) }
	y := func(c float64) float64 { return h - bottom - c/float64(maxC)*(h-top-bottom) }
	var s strings.Builder
	fmt.Fprintf(&s, `<svg width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" xmlns="http://www.w3.org/2000/svg">`, w, h, w, h)
	for d := math.Ceil(lo); d <= hi; d++ {
		px := x(math.Pow(10, d))
		fmt.Fprintf(&s, `<line class="grid" x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f"/>`, px, top, px, h-bottom)
		fmt.Fprintf(&s, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`, px, h-bottom+16, fmtUS(int64(math.Pow(10, d))))
	}
	for _, b := range bars {
		if b.Count == 0 {
			continue
		}
		x0, x1 := x(b.From), x(b.To)
		fmt.Fprintf(&s, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#1f77b4"><title>%s–%s: %d</title></rect>`,
			x0, y(float64(b.Count)), math.Max(x1-x0-1, 1), h-bottom-y(float64(b.Count)), fmtUS(int64(b.From)), fmtUS(int64(b.To)), b.Count)
	}
	fmt.Fprintf(&s, `<line class="ax" x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f"/>`, left, h-bottom, w-right, h-bottom)
	fmt.Fprintf(&s, `<text x="%.0f" y="%.0f" text-anchor="end">%d</text>`, left-4, top+4, maxC)
	fmt.Fprintf(&s, `<text x="%.0f" y="%.0f" text-anchor="end">0</text>`, left-4, h-bottom)
	if lat != nil {
		for i, m := range []struct {
			name string
			v    int64
			c    string
		}{{"p50", lat.P50, "#2ca02c"}, {"p99", lat.P99, "#d62728"}, {"p99.9", lat.P999, "#9467bd"}} {
			if m.v <= 0 {
				continue
			}
			px := x(float64(m.v))
			fmt.Fprintf(&s, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="%s" stroke-dasharray="4 3"/>`, px, top, px, h-bottom, m.c)
			// Labels are staggered so that close percentiles stay legible.
			tx, anchor := px+3, "start"
			if px > w-right-110 {
				tx, anchor = px-3, "end"
			}
			fmt.Fprintf(&s, `<text x="%.1f" y="%.0f" fill="%s" text-anchor="%s">%s %s</text>`, tx, top+12+14*float64(i), m.c, anchor, m.name, fmtUS(m.v))
		}
	}
	fmt.Fprintf(&s, `<text x="%.0f" y="%.0f" text-anchor="middle">latency (log scale); bars: messages per bucket</text>`, w/2, h-6)
	s.WriteString("</svg>\n")
	return s.String()
}

type series struct {
	name, color string
	v           []float64
}

// lineSVG draws series against ts; it returns "" when all are zero.
func lineSVG(title string, ts []float64, ss []series, unit string, phases []phaseMark) string {
	const w, h, left, right, top, bottom = 900.0, 200.0, 70.0, 20.0, 24.0, 30.0
	var maxV float64
	for _, sr := range ss {
		for _, v := range sr.v {
			maxV = math.Max(maxV, v)
		}
	}
	if maxV <= 0 || len(ts) < 2 {
		return ""
	}
	t0, t1 := ts[0], ts[len(ts)-1]
	if t1 <= t0 {
		return ""
	}
	x := func(t float64) float64 { return left + (t-t0)/(t1-t0)*(w-left-right) }
	y := func(v float64) float64 { return h - bottom - v/maxV*(h-top-bottom) }
	var s strings.Builder
	fmt.Fprintf(&s, `<svg width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" xmlns="http://www.w3.org/2000/svg">`, w, h, w, h)
	fmt.Fprintf(&s, `<text x="%.0f" y="14">%s</text>`, left, html.EscapeString(title))
	for i := 0; i <= 4; i++ {
		v := maxV * float64(i) / 4
		py := y(v)
		fmt.Fprintf(&s, `<line class="grid" x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f"/>`, left, py, w-right, py)
		fmt.Fprintf(&s, `<text x="%.0f" y="%.1f" text-anchor="end">%s%s</text>`, left-4, py+4, fmtAxis(v), html.EscapeString(unit))
	}
	step := niceStep((t1 - t0) / 8)
	for t := math.Ceil(t0/step) * step; t <= t1; t += step {
		fmt.Fprintf(&s, `<text x="%.1f" y="%.0f" text-anchor="middle">%gs</text>`, x(t), h-bottom+16, math.Round(t*10)/10)
	}
	fmt.Fprintf(&s, `<line class="ax" x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f"/>`, left, h-bottom, w-right, h-bottom)
	for _, p := range phases {
		if p.t < t0 || p.t > t1 {
			continue
		}
		fmt.Fprintf(&s, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#bbb" stroke-dasharray="2 3"/>`, x(p.t), top, x(p.t), h-bottom)
		fmt.Fprintf(&s, `<text x="%.1f" y="%.0f" fill="#888">%s</text>`, x(p.t)+2, top+10, html.EscapeString(p.name))
	}
	for k, sr := range ss {
		var pts []string
		for i, v := range sr.v {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(ts[i]), y(v)))
		}
		fmt.Fprintf(&s, `<polyline fill="none" stroke="%s" stroke-width="1.6" points="%s"/>`, sr.color, strings.Join(pts, " "))
		fmt.Fprintf(&s, `<text x="%.0f" y="14" fill="%s">■ %s</text>`, w-right-110*float64(len(ss)-k), sr.color, html.EscapeString(sr.name))
	}
	s.WriteString("</svg>\n")
	return s.String()
}

func fmtAxis(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 100 || v == 0:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.2g", v)
	}
}

func niceStep(x float64) float64 {
	if x <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

// costHTML is the gateway's cost of the measured window: CPU next to the
// context switches and system calls per Redis message.
func costHTML(c *Cost) string {
	var b strings.Builder
	b.WriteString("<h2>Gateway cost per message</h2>\n<table><tr><th>Redis messages</th><th>CPU</th><th>µs per frame</th><th>frames per write</th><th>voluntary switches</th><th>involuntary switches</th><th>read syscalls</th><th>write syscalls</th></tr>\n")
	fmt.Fprintf(&b, "<tr><td>%d</td><td>%.1f%%</td><td>%.3f</td><td>%.2f</td><td>%.2f</td><td>%.2f</td><td>%.2f</td><td>%.2f</td></tr>\n</table>\n",
		c.GwMessages, c.GwCPUPercent, c.GwCPUPerFrameUS, c.GwFramesPerWrite, c.GwVolCtxPerMsg, c.GwInvolCtxPerMsg, c.GwSyscrPerMsg, c.GwSyscwPerMsg)
	b.WriteString("<p>Switches are summed over all the gateway's threads; per message means per message the gateway received from Redis.</p>\n")
	return b.String()
}

// perGatewayHTML is the table of each gateway's share.
func perGatewayHTML(figs []GatewayFigures) string {
	var b strings.Builder
	b.WriteString("<h2>Per gateway</h2>\n<table><tr><th>gateway</th><th>pid</th><th>sockets</th><th>RSS per socket</th><th>µs CPU per connect</th><th>CPU</th><th>frames</th><th>µs per frame</th><th>switches per message</th><th>syscalls per message (r/w)</th><th>p50</th><th>p99</th><th>p99.9</th></tr>\n")
	for _, f := range figs {
		fmt.Fprintf(&b, "<tr><td>%s</td><td>%d</td><td>%d</td><td>%s</td><td>%.1f</td>", html.EscapeString(f.Addr), f.Pid, f.Sockets, fmtBytes(f.RSSPerSocket), f.GwCPUPerConnectUS)
		if c := f.Cost; c != nil {
			fmt.Fprintf(&b, "<td>%.1f%%</td><td>%d</td><td>%.3f</td><td>%.2f + %.2f</td><td>%.2f / %.2f</td>",
				c.GwCPUPercent, c.Frames, c.GwCPUPerFrameUS, c.GwVolCtxPerMsg, c.GwInvolCtxPerMsg, c.GwSyscrPerMsg, c.GwSyscwPerMsg)
		} else {
			b.WriteString(strings.Repeat("<td></td>", 5))
		}
		if l := f.Latency; l != nil {
			fmt.Fprintf(&b, "<td>%s</td><td>%s</td><td>%s</td></tr>\n", fmtUS(l.P50), fmtUS(l.P99), fmtUS(l.P999))
		} else {
			b.WriteString("<td></td><td></td><td></td></tr>\n")
		}
	}
	b.WriteString("</table>\n")
	return b.String()
}

package main

import (
	"context"
	"fmt"
	"html"
	"io"
	"sort"
	"strings"
)

// -compare runs the same scenario against two gateway binaries in
// alternation, A B A B ..., so that the drift of a shared, noisy machine
// hits both alike, and prints the ratio of the medians.

type metric struct {
	Name   string
	Better string // "lower" or "higher"
	get    func(*Report) float64
}

// val is get of a report's section p, 0 when the run has no such section.
func val[T any](p *T, get func(*T) float64) float64 {
	if p == nil {
		return 0
	}
	return get(p)
}

var compareMetrics = []metric{
	{"connects/s", "higher", func(r *Report) float64 { return val(r.Connect, func(c *ConnectResult) float64 { return c.PerSec }) }},
	{"gateway CPU µs/connect", "lower", func(r *Report) float64 {
		return val(r.Connect, func(c *ConnectResult) float64 { return c.GwCPUPerConnectUS })
	}},
	{"gateway RSS bytes/socket", "lower", func(r *Report) float64 { return val(r.Memory, func(m *Memory) float64 { return m.PerSocketBytes }) }},
	{"idle gateway CPU µs/socket/s", "lower", func(r *Report) float64 {
		return val(r.Idle, func(i *IdleResult) float64 { return i.GwCPUPerSocketUSPerS })
	}},
	{"delivered/s", "higher", func(r *Report) float64 {
		return val(r.Delivery, func(d *Delivery) float64 { return d.DeliveredPerSec })
	}},
	{"gateway CPU µs/frame", "lower", func(r *Report) float64 { return val(r.Cost, func(c *Cost) float64 { return c.GwCPUPerFrameUS }) }},
	{"client CPU µs/frame", "lower", func(r *Report) float64 { return val(r.Cost, func(c *Cost) float64 { return c.ClientCPUPerFrameUS }) }},
	{"latency p50 µs", "lower", func(r *Report) float64 { return val(r.Latency, func(l *Latency) float64 { return float64(l.P50) }) }},
	{"latency p99 µs", "lower", func(r *Report) float64 { return val(r.Latency, func(l *Latency) float64 { return float64(l.P99) }) }},
	{"latency p99.9 µs", "lower", func(r *Report) float64 { return val(r.Latency, func(l *Latency) float64 { return float64(l.P999) }) }},
	{"missing+gaps", "lower", func(r *Report) float64 {
		return val(r.Delivery, func(d *Delivery) float64 { return float64(d.Missing + d.Gaps) })
	}},
	{"churn gateway CPU µs/cycle", "lower", func(r *Report) float64 {
		return val(r.Churn, func(c *ChurnResult) float64 { return c.GwCPUPerCycleUS })
	}},
	{"noise: other processes' CPU %", "lower", func(r *Report) float64 { return val(r.Noise, func(n *Noise) float64 { return n.OtherCPUPercent }) }},
	{"floor: gateway ÷ floor CPU/frame", "lower", func(r *Report) float64 { return val(r.Floor, func(f *FloorResult) float64 { return f.CPURatio }) }},
	{"floor: gateway ÷ floor p99", "lower", func(r *Report) float64 { return val(r.Floor, func(f *FloorResult) float64 { return f.P99Ratio }) }},
	{"connect: gateway ÷ floor CPU", "lower", func(r *Report) float64 { return val(r.ConnectFloor, func(c *ConnectFloor) float64 { return c.Ratio }) }},
	{"gateway switches/message", "lower", func(r *Report) float64 {
		return val(r.Cost, func(c *Cost) float64 { return c.GwVolCtxPerMsg + c.GwInvolCtxPerMsg })
	}},
	{"fairness p99 with/without", "lower", func(r *Report) float64 { return val(r.Fairness, func(f *FairnessResult) float64 { return f.P99Ratio }) }},
	{"storm: all back s", "lower", func(r *Report) float64 { return val(r.Storm, func(s *StormResult) float64 { return s.AllBackSeconds }) }},
	{"storm: gateway RSS peak bytes", "lower", func(r *Report) float64 {
		return val(r.Storm, func(s *StormResult) float64 { return float64(s.GwRSSPeak) })
	}},
	{"storm: lost while down", "lower", func(r *Report) float64 {
		return val(r.Storm, func(s *StormResult) float64 { return float64(s.LostWhileDown) })
	}},
	{"sweep best msgs/s", "higher", func(r *Report) float64 { return val(r.Sweep, func(s *SweepResult) float64 { return s.BestRate }) }},
}

// CompareRow is one metric of the comparison.
type CompareRow struct {
	Metric  string    `json:"metric"`
	Better  string    `json:"better"`
	A       []float64 `json:"a"`
	B       []float64 `json:"b"`
	MedianA float64   `json:"median_a"`
	MedianB float64   `json:"median_b"`
	Ratio   float64   `json:"ratio_b_over_a"`
}

type CompareReport struct {
	Scenario string       `json:"scenario"`
	A        string       `json:"a"`
	B        string       `json:"b"`
	Rounds   int          `json:"rounds"`
	Rows     []CompareRow `json:"rows"`
	Runs     []*Report    `json:"runs"` // A, B, A, B, ...
	Errors   []string     `json:"errors,omitempty"`
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func compareRows(runs [2][]*Report) []CompareRow {
	var rows []CompareRow
	for _, m := range compareMetrics {
		row := CompareRow{Metric: m.Name, Better: m.Better}
		any := false
		for side := range 2 {
			for _, r := range runs[side] {
				v := round3(m.get(r))
				if v != 0 {
					any = true
				}
				if side == 0 {
					row.A = append(row.A, v)
				} else {
					row.B = append(row.B, v)
				}
			}
		}
		if !any {
			continue
		}
		row.MedianA, row.MedianB = round3(median(row.A)), round3(median(row.B))
		if row.MedianA != 0 {
			row.Ratio = round3(row.MedianB / row.MedianA)
		}
		rows = append(rows, row)
	}
	return rows
}

func compare(ctx context.Context, cfg *Config, e *env, stdout, stderr io.Writer) int {
	names := strings.Split(cfg.Compare, ",")
	if len(names) != 2 || names[0] == "" || names[1] == "" {
		fmt.Fprintln(stderr, "bench: -compare wants binA,binB")
		return 2
	}
	var bins [2]string
	for i, n := range names {
		b, err := buildGateway(strings.TrimSpace(n), e.dir)
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		bins[i] = b
	}
	cr := &CompareReport{Scenario: cfg.Scenario, A: names[0], B: names[1], Rounds: cfg.Rounds}
	var runs [2][]*Report
	code := 0
	for round := 1; round <= cfg.Rounds && ctx.Err() == nil; round++ {
		for side := range 2 {
			fmt.Fprintf(stderr, "=== round %d/%d: %s (%s)\n", round, cfg.Rounds, "AB"[side:side+1], names[side])
			rep, err := runOnce(ctx, cfg, e, bins[side])
			rep.Gateway.Binary = names[side]
			if err != nil {
				cr.Errors = append(cr.Errors, fmt.Sprintf("round %d %s: %v", round, names[side], err))
				code = 1
			}
			runs[side] = append(runs[side], rep)
			cr.Runs = append(cr.Runs, rep)
			if ctx.Err() != nil {
				break
			}
		}
	}
	cr.Rows = compareRows(runs)
	lines := compareLines(cr)
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	if cfg.Out != "" {
		if err := writeJSON(cfg.Out, cr); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			code = 1
		}
	}
	if cfg.HTML != "" {
		var b strings.Builder
		fmt.Fprintf(&b, "<h1>wsgw compare: %s</h1>\n<p>A = %s, B = %s, %d rounds (A B alternating)</p>\n",
			html.EscapeString(cr.Scenario), html.EscapeString(cr.A), html.EscapeString(cr.B), cr.Rounds)
		b.WriteString("<table><tr><th>metric</th><th>better</th><th>median A</th><th>median B</th><th>B/A</th><th>A runs</th><th>B runs</th></tr>\n")
		for _, r := range cr.Rows {
			fmt.Fprintf(&b, "<tr><td>%s</td><td>%s</td><td>%g</td><td>%g</td><td>%.3f</td><td>%s</td><td>%s</td></tr>\n",
				html.EscapeString(r.Metric), r.Better, r.MedianA, r.MedianB, r.Ratio, fmtFloats(r.A), fmtFloats(r.B))
		}
		b.WriteString("</table>\n")
		for i, rep := range cr.Runs {
			fmt.Fprintf(&b, "<h2>run %d: %s</h2>\n<pre>%s</pre>\n", i+1, html.EscapeString(rep.Gateway.Binary),
				html.EscapeString(strings.Join(rep.summaryLines(), "\n")))
			if len(rep.Histogram) > 0 {
				b.WriteString(histSVG(rep.Histogram, rep.Latency))
			}
		}
		if err := writeHTML(cfg.HTML, b.String(), "wsgw compare"); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			code = 1
		}
	}
	return code
}

func fmtFloats(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%g", x)
	}
	return strings.Join(parts, " ")
}

func compareLines(cr *CompareReport) []string {
	out := []string{fmt.Sprintf("compare %s: A=%s B=%s, %d rounds (A B alternating; medians)", cr.Scenario, cr.A, cr.B, cr.Rounds)}
	out = append(out, fmt.Sprintf("%-30s %14s %14s %8s  %s", "metric", "A", "B", "B/A", "better"))
	for _, r := range cr.Rows {
		out = append(out, fmt.Sprintf("%-30s %14.3f %14.3f %8.3f  %s   A: %s  B: %s", r.Metric, r.MedianA, r.MedianB, r.Ratio, r.Better, fmtFloats(r.A), fmtFloats(r.B)))
	}
	for _, e := range cr.Errors {
		out = append(out, "ERROR: "+e)
	}
	return out
}

package main

import (
	"fmt"
	"math"
	"strings"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// -scenario fairness checks the target "one stalled socket changes no
// other socket's p99": N measured subscribers of one channel, the same
// fanout window run without and then with K stalled sockets on that
// channel, -rounds times (A B A B ...: slow drift of a shared machine hits
// both kinds alike). Before a window with stalled sockets the publisher
// runs until their queues overflow (the gateway drops), so that the window
// measures the steady state of a stalled reader, not the seconds it takes
// to fill its buffers; before a window without, it runs fairWarm.

// FairnessWindow is one measured window.
type FairnessWindow struct {
	Round       int     `json:"round"`
	Stalled     int     `json:"stalled_sockets"`
	LeadSeconds float64 `json:"lead_in_seconds"` // publishing before the window (fill or warm-up)
	Overflowed  bool    `json:"stalled_overflowed,omitempty"`
	// The measured sockets' losses during the lead-in. A gap is seen at
	// the next frame: a frame dropped at the end of the lead-in counts
	// in the window.
	LeadGaps        int64   `json:"lead_in_gaps"`
	LeadMissing     int64   `json:"lead_in_missing"`
	LeadGwDropped   uint64  `json:"lead_in_gateway_dropped"`
	Seconds         float64 `json:"seconds"`
	PublishedPerSec float64 `json:"published_per_s"`
	Expected        int64   `json:"expected"` // measured sockets only
	Delivered       int64   `json:"delivered"`
	Gaps            int64   `json:"gaps"`
	Missing         int64   `json:"missing"`
	Latency         Latency `json:"latency"`
	GwDropped       uint64  `json:"gateway_dropped"` // every socket's: with no measured loss, the stalled ones'
	StalledClosed   int     `json:"stalled_closed_by_gateway"`
	GwCPUPercent    float64 `json:"gateway_cpu_percent"`
	OtherCPUPercent float64 `json:"other_cpu_percent"`
}

// FairnessResult is the fairness scenario's outcome. Latencies are the
// measured sockets' only, pooled over the windows of each kind.
type FairnessResult struct {
	Stalled     int              `json:"stalled_sockets"`
	Rounds      int              `json:"rounds"`
	MaxP99Ratio float64          `json:"max_p99_ratio"`
	Windows     []FairnessWindow `json:"windows"` // without, with, without, with, ...
	Without     Latency          `json:"latency_without"`
	With        Latency          `json:"latency_with"`
	P50Ratio    float64          `json:"p50_ratio"` // with ÷ without
	P99Ratio    float64          `json:"p99_ratio"`
	P999Ratio   float64          `json:"p999_ratio"`
	// RoundP99Ratios is each round's p99 with ÷ without.
	RoundP99Ratios []float64 `json:"round_p99_ratios"`
	// WithoutP99Spread is the largest ÷ smallest p99 of the windows
	// without stalled sockets: how far this machine moves p99 by itself.
	WithoutP99Spread float64 `json:"without_p99_spread,omitempty"`
	MeasuredGaps     int64   `json:"measured_gaps"` // in the windows
	MeasuredMissing  int64   `json:"measured_missing"`
	// The measured sockets' gaps and missing frames over windows and
	// lead-ins, by kind of phase.
	MeasuredLostWith    int64     `json:"measured_lost_with"`
	MeasuredLostWithout int64     `json:"measured_lost_without"`
	GwDroppedWithout    uint64    `json:"gateway_dropped_without"`
	GwDroppedWith       uint64    `json:"gateway_dropped_with"` // the stalled sockets'
	StalledClosed       int       `json:"stalled_closed_by_gateway"`
	HistWithout         []HistBar `json:"histogram_without,omitempty"`
	HistWith            []HistBar `json:"histogram_with,omitempty"`
	Pass                bool      `json:"pass"`
	Verdict             string    `json:"verdict"`
}

// ratio is a ÷ b rounded, 0 when b is.
func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return round3(a / b)
}

// judge fills the totals, ratios and verdict from the windows and the
// pooled latencies.
func (f *FairnessResult) judge() {
	f.MeasuredGaps, f.MeasuredMissing, f.GwDroppedWithout, f.GwDroppedWith, f.StalledClosed = 0, 0, 0, 0, 0
	f.MeasuredLostWith, f.MeasuredLostWithout = 0, 0
	f.RoundP99Ratios = nil
	lo, hi := int64(math.MaxInt64), int64(0)
	without := map[int]int64{}
	for _, w := range f.Windows {
		f.MeasuredGaps += w.Gaps
		f.MeasuredMissing += w.Missing
		lost := w.Gaps + w.Missing + w.LeadGaps + w.LeadMissing
		if w.Stalled == 0 {
			f.MeasuredLostWithout += lost
		} else {
			f.MeasuredLostWith += lost
		}
		if w.Stalled == 0 {
			f.GwDroppedWithout += w.GwDropped
			without[w.Round] = w.Latency.P99
			lo, hi = min(lo, w.Latency.P99), max(hi, w.Latency.P99)
			continue
		}
		f.GwDroppedWith += w.GwDropped
		f.StalledClosed += max(w.StalledClosed, 0)
		if a, ok := without[w.Round]; ok {
			f.RoundP99Ratios = append(f.RoundP99Ratios, ratio(float64(w.Latency.P99), float64(a)))
		}
	}
	f.WithoutP99Spread = 0
	if len(without) > 1 {
		f.WithoutP99Spread = ratio(float64(hi), float64(lo))
	}
	f.P50Ratio = ratio(float64(f.With.P50), float64(f.Without.P50))
	f.P99Ratio = ratio(float64(f.With.P99), float64(f.Without.P99))
	f.P999Ratio = ratio(float64(f.With.P999), float64(f.Without.P999))

	f.Pass = false
	lost := f.MeasuredLostWith + f.MeasuredLostWithout
	switch {
	case lost > 0:
		f.Verdict = fmt.Sprintf("FAIL: the measured sockets lost %d frames: %d with stalled sockets, %d without (windows: gaps %d, missing %d; the rest in lead-ins)",
			lost, f.MeasuredLostWith, f.MeasuredLostWithout, f.MeasuredGaps, f.MeasuredMissing)
	case f.Without.Count == 0 || f.With.Count == 0:
		f.Verdict = "INCONCLUSIVE: no latency samples in one kind of window"
	case f.GwDroppedWithout > 0:
		f.Verdict = fmt.Sprintf("INCONCLUSIVE: the gateway dropped %d frames without stalled sockets (lower -rate or -n)", f.GwDroppedWithout)
	case f.GwDroppedWith == 0:
		f.Verdict = "INCONCLUSIVE: the stalled sockets never overflowed (the gateway dropped nothing): raise -size, -rate or -duration"
	case f.P99Ratio > f.MaxP99Ratio:
		f.Verdict = fmt.Sprintf("ABOVE LIMIT: p99 with ÷ without = %.2f > %.2f (-max-p99-ratio); no loss on the measured sockets", f.P99Ratio, f.MaxP99Ratio)
	default:
		f.Pass = true
		f.Verdict = fmt.Sprintf("PASS: no loss on the measured sockets, p99 with ÷ without = %.2f ≤ %.2f", f.P99Ratio, f.MaxP99Ratio)
	}
	if f.WithoutP99Spread > 0 {
		f.Verdict += fmt.Sprintf(" (windows without stalled sockets alone varied %.2f×)", f.WithoutP99Spread)
	}
	if f.StalledClosed > 0 {
		f.Verdict += fmt.Sprintf("; the gateway closed %d stalled sockets during the windows (SLOW_CLIENT_TIMEOUT / SLOW_CLIENT_MAX_DROPS)", f.StalledClosed)
	}
}

// fairness runs the scenario.
func (r *runner) fairness() error {
	cfg := r.cfg
	plan := subPlan{Prefix: cfg.Prefix, Channels: 1}
	pick, expected, err := r.oneChannel()
	if err != nil {
		return err
	}
	res := &FairnessResult{Stalled: cfg.Stalled, Rounds: cfg.Rounds, MaxP99Ratio: cfg.MaxP99Ratio}
	r.rep.Fairness = res
	pooled := [2]*hdr.Histogram{newHist(), newHist()}
	var first, last mark
	for round := 1; round <= cfg.Rounds; round++ {
		for kind, k := range []int{0, cfg.Stalled} {
			w := FairnessWindow{Round: round, Stalled: k}
			name := fmt.Sprintf("without#%d", round)
			if k > 0 {
				name = fmt.Sprintf("with#%d", round)
				if err := r.startStalled(plan, k); err != nil {
					return err
				}
				lead, over, err := r.fillStalled(fmt.Sprintf("fill#%d", round), cfg.Rate, pick, expected)
				if err != nil {
					return err
				}
				w.Overflowed = over
				w.LeadSeconds, w.LeadGaps, w.LeadMissing, w.LeadGwDropped = lead.Seconds, lead.Gaps, lead.Missing, lead.GwDropped
			} else {
				lm0, lm1, secs, err := r.publishUntil(fmt.Sprintf("warm#%d", round), cfg.Rate, fairWarm, pick, expected, nil)
				if err != nil {
					return err
				}
				lead := r.delivery(lm0, lm1, cfg.Rate, secs, expected(lm0, lm1))
				w.LeadSeconds, w.LeadGaps, w.LeadMissing, w.LeadGwDropped = lead.Seconds, lead.Gaps, lead.Missing, lead.GwDropped
			}
			m0, m1, secs, err := r.publishWindow(name, cfg.Rate, cfg.Duration, pick, expected)
			if err != nil {
				return err
			}
			if round == 1 && kind == 0 {
				first = m0
			}
			last = m1
			d := r.delivery(m0, m1, cfg.Rate, secs, expected(m0, m1))
			c := r.cost(m0, m1, d.Delivered)
			w.Seconds, w.PublishedPerSec = d.Seconds, d.PublishedPerSec
			w.Expected, w.Delivered, w.Gaps, w.Missing = d.Expected, d.Delivered, d.Gaps, d.Missing
			w.GwDropped = d.GwDropped
			w.Latency = summarize(r.latWin)
			w.GwCPUPercent = c.GwCPUPercent
			w.OtherCPUPercent = r.noise(m0, m1).OtherCPUPercent
			pooled[kind].Merge(r.latWin)
			if k > 0 {
				w.StalledClosed = stalledClosedByGateway(m1.cl.Open, k, m1.gs)
				r.stopStalled()
			}
			res.Windows = append(res.Windows, w)
			r.logf("fairness %s: p50 %s p99 %s p99.9 %s, delivered %d of %d, gaps %d, gateway dropped %d",
				name, fmtUS(w.Latency.P50), fmtUS(w.Latency.P99), fmtUS(w.Latency.P999), w.Delivered, w.Expected, w.Gaps, w.GwDropped)
		}
	}
	res.Without, res.With = summarize(pooled[0]), summarize(pooled[1])
	res.HistWithout, res.HistWith = logBars(pooled[0], 20), logBars(pooled[1], 20)
	res.judge()
	r.rep.Noise = r.noise(first, last)
	return nil
}

// lines is the fairness part of the summary.
func (f *FairnessResult) lines() []string {
	var out []string
	add := func(fm string, a ...any) { out = append(out, fmt.Sprintf(fm, a...)) }
	for _, w := range f.Windows {
		kind := "without"
		extra := ""
		if w.Stalled > 0 {
			kind = fmt.Sprintf("with %d", w.Stalled)
			extra = fmt.Sprintf(" (filled in %.1fs, overflowed %v; closed by the gateway %d)", w.LeadSeconds, w.Overflowed, w.StalledClosed)
		}
		if l := w.LeadGaps + w.LeadMissing; l > 0 {
			extra += fmt.Sprintf(" [lead-in: measured lost %d, gateway dropped %d]", l, w.LeadGwDropped)
		}
		add("fairness round %d %-8s stalled: p50 %s p99 %s p99.9 %s max %s (n=%d); measured delivered %d/%d gaps %d missing %d; gateway dropped %d%s; gw %.0f%% others %.0f%%",
			w.Round, kind, fmtUS(w.Latency.P50), fmtUS(w.Latency.P99), fmtUS(w.Latency.P999), fmtUS(w.Latency.Max), w.Latency.Count,
			w.Delivered, w.Expected, w.Gaps, w.Missing, w.GwDropped, extra, w.GwCPUPercent, w.OtherCPUPercent)
	}
	add("fairness pooled, measured sockets only: without p50 %s p99 %s p99.9 %s | with %d stalled p50 %s p99 %s p99.9 %s | with ÷ without: p50 %.2f p99 %.2f p99.9 %.2f; per round p99 %s",
		fmtUS(f.Without.P50), fmtUS(f.Without.P99), fmtUS(f.Without.P999), f.Stalled,
		fmtUS(f.With.P50), fmtUS(f.With.P99), fmtUS(f.With.P999), f.P50Ratio, f.P99Ratio, f.P999Ratio, fmtRatios(f.RoundP99Ratios))
	add("fairness losses: measured sockets in the windows gaps %d missing %d (with lead-ins: %d with stalled sockets, %d without); gateway dropped %d without and %d with stalled sockets in the windows",
		f.MeasuredGaps, f.MeasuredMissing, f.MeasuredLostWith, f.MeasuredLostWithout, f.GwDroppedWithout, f.GwDroppedWith)
	add("fairness: %s", f.Verdict)
	return out
}

func fmtRatios(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, " ")
}

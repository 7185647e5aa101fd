package main

import (
	"math"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, 1 µs to 60 s, 3 significant
// digits (0.1% resolution).
const (
	histMin    = 1
	histMax    = 60_000_000
	histDigits = 3
)

func newHist() *hdr.Histogram { return hdr.New(histMin, histMax, histDigits) }

// recordUS records v microseconds, clamped into the histogram's range.
func recordUS(h *hdr.Histogram, v int64) {
	if v < histMin {
		v = histMin
	} else if v > histMax {
		v = histMax
	}
	_ = h.RecordValue(v)
}

// sparseHist carries a histogram's non-zero counts between processes:
// counts index i holds Cnt[k] for Idx[k] == i. Concatenating two sparse
// histograms of the same geometry adds them.
type sparseHist struct {
	Idx []int32 `json:"i,omitempty"`
	Cnt []int64 `json:"c,omitempty"`
}

func (s *sparseHist) empty() bool { return len(s.Idx) == 0 }

// takeSparse moves h's counts into a sparseHist and resets h.
func takeSparse(h *hdr.Histogram) sparseHist {
	var s sparseHist
	if h.TotalCount() == 0 {
		return s
	}
	for i, c := range h.Export().Counts {
		if c != 0 {
			s.Idx = append(s.Idx, int32(i))
			s.Cnt = append(s.Cnt, c)
		}
	}
	h.Reset()
	return s
}

// appendSparse adds b's counts to a.
func appendSparse(a, b sparseHist) sparseHist {
	a.Idx = append(a.Idx, b.Idx...)
	a.Cnt = append(a.Cnt, b.Cnt...)
	return a
}

// toHist rebuilds a histogram from sparse counts.
func (s sparseHist) toHist() *hdr.Histogram {
	h := newHist()
	if s.empty() {
		return h
	}
	snap := h.Export()
	for k, i := range s.Idx {
		if int(i) >= 0 && int(i) < len(snap.Counts) && s.Cnt[k] > 0 {
			snap.Counts[i] += s.Cnt[k]
		}
	}
	return hdr.Import(snap)
}

// mergeSparse adds s into each of dst.
func mergeSparse(s sparseHist, dst ...*hdr.Histogram) {
	if s.empty() {
		return
	}
	h := s.toHist()
	for _, d := range dst {
		d.Merge(h)
	}
}

// Latency is a latency summary in microseconds.
type Latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_us"`
	Min   int64   `json:"min_us"`
	P50   int64   `json:"p50_us"`
	P90   int64   `json:"p90_us"`
	P99   int64   `json:"p99_us"`
	P999  int64   `json:"p999_us"`
	Max   int64   `json:"max_us"`
}

// summarize computes the percentiles of h. Each percentile is the highest
// value equivalent to the recorded one (HdrHistogram's convention).
func summarize(h *hdr.Histogram) Latency {
	if h == nil || h.TotalCount() == 0 {
		return Latency{}
	}
	v := h.ValueAtPercentiles([]float64{50, 90, 99, 99.9})
	return Latency{
		Count: h.TotalCount(),
		Mean:  math.Round(h.Mean()*10) / 10,
		Min:   h.Min(),
		P50:   v[50],
		P90:   v[90],
		P99:   v[99],
		P999:  v[99.9],
		Max:   h.Max(),
	}
}

// HistBar is one bar of the latency histogram drawn in the HTML page:
// Count values in [From, To) microseconds.
type HistBar struct {
	From  float64 `json:"from_us"`
	To    float64 `json:"to_us"`
	Count int64   `json:"count"`
}

// logBars groups h into bars with log-spaced edges, perDecade per factor
// of ten, from the decade below its minimum to the one above its maximum.
func logBars(h *hdr.Histogram, perDecade int) []HistBar {
	if h == nil || h.TotalCount() == 0 || perDecade < 1 {
		return nil
	}
	lo := math.Floor(math.Log10(float64(max(h.Min(), 1))))
	hi := math.Ceil(math.Log10(float64(h.Max()) + 1))
	if hi <= lo {
		hi = lo + 1
	}
	n := int(hi-lo) * perDecade
	bars := make([]HistBar, n)
	for i := range bars {
		bars[i].From = math.Pow(10, lo+float64(i)/float64(perDecade))
		bars[i].To = math.Pow(10, lo+float64(i+1)/float64(perDecade))
	}
	for _, b := range h.Distribution() {
		if b.Count == 0 {
			continue
		}
		v := float64(b.From)
		if v < 1 {
			v = 1
		}
		i := int((math.Log10(v) - lo) * float64(perDecade))
		i = min(max(i, 0), n-1)
		bars[i].Count += b.Count
	}
	return bars
}

package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestFairnessJudge(t *testing.T) {
	lat := func(p50, p99, p999 int64) Latency { return Latency{Count: 1000, P50: p50, P99: p99, P999: p999} }
	win := func(round, stalled int, p99 int64, dropped uint64) FairnessWindow {
		return FairnessWindow{Round: round, Stalled: stalled, Latency: lat(p99/4, p99, p99*2), GwDropped: dropped}
	}
	for _, tc := range []struct {
		name          string
		windows       []FairnessWindow
		without, with Latency
		wantPass      bool
		wantVerdict   string // prefix
		wantP99Ratio  float64
		wantRounds    []float64
		wantSpread    float64
		wantDropWith  uint64
		wantClosed    int
	}{
		{
			name:    "pass",
			windows: []FairnessWindow{win(1, 0, 1000, 0), win(1, 1, 1100, 500), win(2, 0, 1250, 0), win(2, 1, 1000, 400)},
			without: lat(300, 1200, 2400), with: lat(300, 1080, 2000),
			wantPass: true, wantVerdict: "PASS", wantP99Ratio: 0.9, wantRounds: []float64{1.1, 0.8}, wantSpread: 1.25, wantDropWith: 900,
		},
		{
			name:    "p99 above the limit",
			windows: []FairnessWindow{win(1, 0, 1000, 0), win(1, 3, 4000, 500)},
			without: lat(300, 1000, 2000), with: lat(300, 4000, 8000),
			wantVerdict: "ABOVE LIMIT", wantP99Ratio: 4, wantRounds: []float64{4}, wantDropWith: 500,
		},
		{
			name: "measured sockets lost frames",
			windows: []FairnessWindow{win(1, 0, 1000, 0), func() FairnessWindow {
				w := win(1, 1, 1000, 700)
				w.Gaps = 3
				return w
			}()},
			without: lat(300, 1000, 2000), with: lat(300, 1000, 2000),
			wantVerdict: "FAIL: the measured sockets lost 3", wantP99Ratio: 1, wantRounds: []float64{1}, wantDropWith: 700,
		},
		{
			name: "measured sockets lost frames in a lead-in",
			windows: []FairnessWindow{win(1, 0, 1000, 0), func() FairnessWindow {
				w := win(1, 1, 1000, 700)
				w.LeadMissing = 2
				return w
			}()},
			without: lat(300, 1000, 2000), with: lat(300, 1000, 2000),
			wantVerdict: "FAIL: the measured sockets lost 2 frames: 2 with", wantP99Ratio: 1, wantRounds: []float64{1}, wantDropWith: 700,
		},
		{
			name:    "stalled sockets never overflowed",
			windows: []FairnessWindow{win(1, 0, 1000, 0), win(1, 1, 1000, 0)},
			without: lat(300, 1000, 2000), with: lat(300, 1000, 2000),
			wantVerdict: "INCONCLUSIVE: the stalled sockets never overflowed", wantP99Ratio: 1, wantRounds: []float64{1},
		},
		{
			name:    "drops without stalled sockets",
			windows: []FairnessWindow{win(1, 0, 1000, 5), win(1, 1, 1000, 600)},
			without: lat(300, 1000, 2000), with: lat(300, 1000, 2000),
			wantVerdict: "INCONCLUSIVE: the gateway dropped 5", wantP99Ratio: 1, wantRounds: []float64{1}, wantDropWith: 600,
		},
		{
			name: "stalled sockets closed by the gateway are counted",
			windows: []FairnessWindow{win(1, 0, 1000, 0), func() FairnessWindow {
				w := win(1, 2, 1000, 800)
				w.StalledClosed = 2
				return w
			}()},
			without: lat(300, 1000, 2000), with: lat(300, 1000, 2000),
			wantPass: true, wantVerdict: "PASS", wantP99Ratio: 1, wantRounds: []float64{1}, wantDropWith: 800, wantClosed: 2,
		},
		{
			name:        "no samples",
			windows:     []FairnessWindow{win(1, 0, 0, 0), win(1, 1, 0, 10)},
			wantVerdict: "INCONCLUSIVE: no latency samples", wantRounds: []float64{0}, wantDropWith: 10,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &FairnessResult{Stalled: 1, MaxP99Ratio: 1.5, Windows: tc.windows, Without: tc.without, With: tc.with}
			f.judge()
			if f.Pass != tc.wantPass || !strings.HasPrefix(f.Verdict, tc.wantVerdict) {
				t.Errorf("pass %v verdict %q, want %v %q…", f.Pass, f.Verdict, tc.wantPass, tc.wantVerdict)
			}
			if f.P99Ratio != tc.wantP99Ratio {
				t.Errorf("p99 ratio %v, want %v", f.P99Ratio, tc.wantP99Ratio)
			}
			if !reflect.DeepEqual(f.RoundP99Ratios, tc.wantRounds) {
				t.Errorf("round ratios %v, want %v", f.RoundP99Ratios, tc.wantRounds)
			}
			if f.WithoutP99Spread != tc.wantSpread {
				t.Errorf("spread %v, want %v", f.WithoutP99Spread, tc.wantSpread)
			}
			if f.GwDroppedWith != tc.wantDropWith || f.StalledClosed != tc.wantClosed {
				t.Errorf("dropped with %d closed %d, want %d %d", f.GwDroppedWith, f.StalledClosed, tc.wantDropWith, tc.wantClosed)
			}
			if tc.wantClosed > 0 && !strings.Contains(f.Verdict, "closed") {
				t.Errorf("verdict %q does not mention the closed stalled sockets", f.Verdict)
			}
			// Judging twice gives the same totals.
			before := *f
			f.judge()
			if !reflect.DeepEqual(before, *f) {
				t.Errorf("judge is not idempotent:\n%+v\n%+v", before, *f)
			}
		})
	}
}

func TestStalledClosedByGateway(t *testing.T) {
	for _, tc := range []struct {
		name         string
		measuredOpen int64
		k            int
		gs           *gwStats
		want         int
	}{
		{"no stats", 100, 2, nil, -1},
		{"all still open", 100, 2, &gwStats{Connections: 102}, 0},
		{"one closed", 100, 2, &gwStats{Connections: 101}, 1},
		{"all closed", 100, 2, &gwStats{Connections: 100}, 2},
		{"measured closed too: at most k", 100, 2, &gwStats{Connections: 90}, 2},
		{"gateway counts more (a handshake in flight)", 100, 2, &gwStats{Connections: 105}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := stalledClosedByGateway(tc.measuredOpen, tc.k, tc.gs); got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
}

func TestParseFlagsStalled(t *testing.T) {
	for _, tc := range []struct {
		name        string
		args        []string
		wantErr     string
		wantSize    int
		wantStalled int
		wantN       int
	}{
		{"fairness defaults", []string{"-scenario", "fairness"}, "", 2048, 1, 1000},
		{"fairness keeps -size and -stalled", []string{"-scenario", "fairness", "-size", "100", "-stalled", "10"}, "", 100, 10, 1000},
		{"fanout has no stalled sockets by default", []string{"-scenario", "fanout"}, "", 100, 0, 10000},
		{"fanout with stalled sockets", []string{"-scenario", "fanout", "-stalled", "3"}, "", 100, 3, 10000},
		{"not for idle", []string{"-scenario", "idle", "-stalled", "1"}, "-stalled is for", 0, 0, 0},
		{"not negative", []string{"-scenario", "fanout", "-stalled", "-1"}, "must not be negative", 0, 0, 0},
		{"ratio must be positive", []string{"-scenario", "fairness", "-max-p99-ratio", "0"}, "-max-p99-ratio", 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := parseExpect(t, tc.args, tc.wantErr)
			if c == nil {
				return
			}
			if c.Size != tc.wantSize || c.Stalled != tc.wantStalled || c.N != tc.wantN {
				t.Errorf("size %d stalled %d n %d, want %d %d %d", c.Size, c.Stalled, c.N, tc.wantSize, tc.wantStalled, tc.wantN)
			}
			if p := c.params(); p.Stalled != c.Stalled {
				t.Errorf("params stalled %d", p.Stalled)
			}
		})
	}
}

package main

import (
	"errors"
	"fmt"
	"html"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/wsgw/gateway/wsproto"
)

// The floor phase on the coordinator's side: the client sockets of the
// run connect to a floor subprocess instead of the gateway and measure
// its frames as they measured the gateway's.

// floorSpec is what the floor reproduces.
type floorSpec struct {
	n    int
	rate float64 // messages per second to each socket (fanout shape)
	// spread > 0: the adaptive run has the spread shape, this many
	// messages per second in all, each to one socket but every
	// every-th, which goes to all of them.
	spread float64
	every  int64
	d      time.Duration
	// The gateway's CPU per frame and frames per write syscall in the
	// same run (0 for the floor scenario).
	gwPerFrame, gwBatch float64
}

// floorKs is the write and writev runs after the adaptive one: write(2)
// per frame, writev(2) at the gateway's own batching (rounded) and at
// floorK.
func floorKs(gwBatch float64, floorK int) []int {
	ks := []int{1}
	if k := int(math.Round(gwBatch)); k > 1 && k != floorK {
		ks = append(ks, k)
	}
	if floorK > 1 {
		ks = append(ks, floorK)
	}
	sort.Ints(ks)
	return ks
}

// floorPhase measures the floor of fs with the same client and frames:
// an adaptive run (the reference for latency and CPU), then the write and
// writev runs of floorKs.
func (r *runner) floorPhase(fs floorSpec) error {
	cfg := r.cfg
	r.stopClients()
	if fs.n <= 0 || fs.rate <= 0 {
		return errors.New("floor: needs sockets and a rate")
	}
	// A frame as the gateway builds it, for its size.
	sample := wsproto.BuildData(1000000, cfg.Prefix+":0", "", string(benchPayload(nil, time.Now().UnixNano(), cfg.Size)), time.Now())
	res := &FloorResult{Sockets: fs.n, Rate: fs.rate, SpreadRate: fs.spread, FrameBytes: sample.Len(), Seconds: fs.d.Seconds(),
		GwCPUPerFrameUS: fs.gwPerFrame, GwFramesPerWrite: fs.gwBatch}
	sample.Release()
	if l := r.rep.Latency; l != nil && fs.gwPerFrame > 0 {
		gl := *l
		res.GwLatency = &gl
	}
	r.rep.Floor = res
	fp, addr, err := startFloor(fs.n)
	if err != nil {
		return err
	}
	defer fp.stop()
	r.logf("floor: %d sockets, %.0f frames/s each, %d-byte frame", fs.n, fs.rate, res.FrameBytes)
	if err := r.startClients(poolSpec{Plan: subPlan{Raw: true}}, []string{addr}, fs.n); err != nil {
		return err
	}
	defer r.stopClients()
	if err := r.wait("floor/connect", 30*time.Second+time.Duration(fs.n)*time.Millisecond, func(a poolStats) bool {
		return a.Subscribed+a.Failed >= int64(fs.n)
	}); err != nil {
		return err
	}
	if _, err := fp.next(30 * time.Second); err != nil { // all accepted
		return err
	}
	r.latCum.Reset() // the progress lines show the floor's own latency
	cmds := []floorCmd{{K: 0, Rate: fs.rate, Spread: fs.spread > 0, Every: fs.every}}
	if fs.spread > 0 {
		cmds[0].Rate = fs.spread
	}
	for _, k := range floorKs(fs.gwBatch, cfg.FloorK) {
		cmds = append(cmds, floorCmd{K: k, Rate: fs.rate})
	}
	for i, c := range cmds {
		c.Op, c.Prefix, c.Size, c.Dur = "run", cfg.Prefix, cfg.Size, fs.d
		run, err := r.floorRun(fp, c)
		if err != nil {
			return err
		}
		if fs.gwPerFrame > 0 && run.CPUPerFrameUS > 0 {
			run.GwRatio = round3(fs.gwPerFrame / run.CPUPerFrameUS)
		}
		if i == 0 {
			res.Histogram = logBars(r.latWin, 20)
		}
		res.Runs = append(res.Runs, run)
		r.logf("floor %s: %.3f µs CPU per frame, latency p50 %s p99 %s", run.name(), run.CPUPerFrameUS, fmtUS(run.Latency.P50), fmtUS(run.Latency.P99))
	}
	res.compare()
	return nil
}

// floorRun runs one command on the floor process and measures it.
func (r *runner) floorRun(fp *floorProc, c floorCmd) (FloorRun, error) {
	m0 := r.mark()
	r.resetWindow()
	if err := fp.enc.Encode(c); err != nil {
		return FloorRun{}, err
	}
	got := make(chan floorMsg, 1)
	errc := make(chan error, 1)
	go func() {
		m, err := fp.next(c.Dur + 60*time.Second)
		if err != nil {
			errc <- err
			return
		}
		got <- m
	}()
	var fm floorMsg
	run := FloorRun{K: c.K, Mode: "adaptive", Shape: "fanout"}
	switch {
	case c.Spread:
		run.Shape = "spread"
	case c.K == 1:
		run.Mode = "write"
	case c.K > 1:
		run.Mode = "writev"
	}
	phase := "floor " + run.name()
	if err := r.wait(phase, c.Dur+60*time.Second, func(poolStats) bool {
		select {
		case fm = <-got:
			return true
		case err := <-errc:
			fm.Error = err.Error()
			return true
		default:
			return false
		}
	}); err != nil {
		return run, err
	}
	if fm.Error != "" {
		return run, errors.New(fm.Error)
	}
	_ = r.drain(phase, m0.cl.Data+fm.Frames)
	m1 := r.mark()
	run.Messages, run.Frames, run.Syscalls, run.Errors = fm.Messages, fm.Frames, fm.Syscalls, fm.Errors
	run.Received = m1.cl.Data - m0.cl.Data
	run.CPUSeconds = round3(float64(fm.CPUNanos) / 1e9)
	run.CPUPerFrameUS = perUnit(float64(fm.CPUNanos)/1e3, float64(fm.Frames))
	run.FramesPerSyscall = perUnit(float64(fm.Frames), float64(fm.Syscalls))
	run.ClientCPUPerFrameUS = perUnit(clientCPU(m0, m1).Seconds()*1e6, float64(run.Received))
	run.Latency = summarize(r.latWin)
	return run, nil
}

// name is how the summary calls a floor run.
func (f FloorRun) name() string {
	switch f.Mode {
	case "adaptive":
		return "adaptive (" + f.Shape + ")"
	case "write":
		return "write k=1"
	}
	return fmt.Sprintf("writev k=%d", f.K)
}

// compare sets the gateway ÷ floor ratios against the adaptive run: the
// floor that writes what is due, as soon as it is due.
func (f *FloorResult) compare() {
	if len(f.Runs) == 0 || f.Runs[0].Mode != "adaptive" {
		return
	}
	ref := f.Runs[0]
	f.Reference = ref.name()
	if f.GwCPUPerFrameUS > 0 {
		f.CPURatio = ratio(f.GwCPUPerFrameUS, ref.CPUPerFrameUS)
	}
	if g := f.GwLatency; g != nil && ref.Latency.Count > 0 {
		f.P50Ratio = ratio(float64(g.P50), float64(ref.Latency.P50))
		f.P99Ratio = ratio(float64(g.P99), float64(ref.Latency.P99))
		f.P999Ratio = ratio(float64(g.P999), float64(ref.Latency.P999))
	}
}

// floorLines is the floor part of the summary.
func (f *FloorResult) lines() []string {
	var out []string
	add := func(fm string, a ...any) { out = append(out, fmt.Sprintf(fm, a...)) }
	if f.GwCPUPerFrameUS > 0 {
		add("floor: the gateway spent %.3f µs CPU per frame writing %.2f frames per write syscall", f.GwCPUPerFrameUS, f.GwFramesPerWrite)
	}
	for _, run := range f.Runs {
		ratio := ""
		if run.GwRatio > 0 {
			ratio = fmt.Sprintf(" → gateway/floor = %.2f", run.GwRatio)
		}
		add("floor %s: %d frames to %d sockets, %.3f µs CPU per frame at %.2f frames per syscall (client %.3f)%s; latency p50 %s p99 %s p99.9 %s; received %d",
			run.name(), run.Frames, f.Sockets, run.CPUPerFrameUS, run.FramesPerSyscall, run.ClientCPUPerFrameUS, ratio,
			fmtUS(run.Latency.P50), fmtUS(run.Latency.P99), fmtUS(run.Latency.P999), run.Received)
	}
	if g := f.GwLatency; g != nil && f.Reference != "" {
		ref := f.Runs[0].Latency
		add("gateway vs floor %s, same sockets, rate, size and client: latency p50 %s / %s = %.2f, p99 %s / %s = %.2f, p99.9 %s / %s = %.2f; CPU per frame %.2f",
			f.Reference, fmtUS(g.P50), fmtUS(ref.P50), f.P50Ratio, fmtUS(g.P99), fmtUS(ref.P99), f.P99Ratio,
			fmtUS(g.P999), fmtUS(ref.P999), f.P999Ratio, f.CPURatio)
	}
	return out
}

// floorHTML is the side-by-side table of the gateway and its floor, and
// the floor's latency histogram.
func floorHTML(f *FloorResult) string {
	var b strings.Builder
	b.WriteString("<h2>Floor, same sockets, rate, size and client</h2>\n<table><tr><th>writer</th><th>µs CPU per frame</th><th>frames per syscall</th><th>p50</th><th>p99</th><th>p99.9</th><th>max</th><th>gateway ÷ it (CPU)</th></tr>\n")
	if g := f.GwLatency; g != nil {
		fmt.Fprintf(&b, "<tr><td>gateway</td><td>%.3f</td><td>%.2f</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td></td></tr>\n",
			f.GwCPUPerFrameUS, f.GwFramesPerWrite, fmtUS(g.P50), fmtUS(g.P99), fmtUS(g.P999), fmtUS(g.Max))
	}
	for _, run := range f.Runs {
		fmt.Fprintf(&b, "<tr><td>floor %s</td><td>%.3f</td><td>%.2f</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%.2f</td></tr>\n",
			html.EscapeString(run.name()), run.CPUPerFrameUS, run.FramesPerSyscall, fmtUS(run.Latency.P50), fmtUS(run.Latency.P99),
			fmtUS(run.Latency.P999), fmtUS(run.Latency.Max), run.GwRatio)
	}
	if f.Reference != "" && f.GwLatency != nil {
		fmt.Fprintf(&b, "<tr><th>gateway ÷ floor %s</th><th>%.2f</th><th></th><th>%.2f</th><th>%.2f</th><th>%.2f</th><th></th><th></th></tr>\n",
			html.EscapeString(f.Reference), f.CPURatio, f.P50Ratio, f.P99Ratio, f.P999Ratio)
	}
	b.WriteString("</table>\n")
	if len(f.Histogram) > 0 && len(f.Runs) > 0 {
		fmt.Fprintf(&b, "<h2>Floor %s: publish-to-client latency</h2>\n", html.EscapeString(f.Runs[0].name()))
		b.WriteString(histSVG(f.Histogram, &f.Runs[0].Latency))
	}
	return b.String()
}

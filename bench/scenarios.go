package main

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

func (r *runner) runScenario() error {
	if r.cfg.Durable {
		return r.durableRun()
	}
	switch r.cfg.Scenario {
	case "idle":
		return r.idle()
	case "fanout":
		return r.fanout()
	case "spread":
		return r.spread()
	case "churn":
		return r.churn()
	case "sweep":
		return r.sweep()
	case "fairness":
		return r.fairness()
	case "floor":
		return r.floorOnly()
	case "storm":
		return r.storm()
	case "replay":
		return r.replay()
	}
	return fmt.Errorf("unknown scenario %q", r.cfg.Scenario)
}

// idle: N sockets, each subscribed to one of C channels, held for the
// duration with no traffic.
func (r *runner) idle() error {
	cfg := r.cfg
	plan := subPlan{Prefix: cfg.Prefix, Channels: cfg.Channels}
	if _, err := r.connectPhase(plan, cfg.N); err != nil {
		return err
	}
	m0 := r.mark()
	r.startProfile(cfg.Duration)
	err := r.wait("hold", cfg.Duration, nil)
	m1 := r.mark()
	s := m1.t.Sub(m0.t).Seconds()
	gw := (m1.gwCPU - m0.gwCPU).Seconds()
	cl := clientCPU(m0, m1).Seconds()
	open := m1.cl.Open
	r.rep.Noise = r.noise(m0, m1)
	r.gatewayWindow(m0, m1)
	r.rep.Idle = &IdleResult{
		HoldSeconds:      round3(s),
		ClientCPUPercent: perUnit(100*cl, s),
		StillOpen:        open,
		Unexpected:       m1.cl.Unexpected - m0.cl.Unexpected,
	}
	if r.measured() {
		r.rep.Idle.GwCPUPercent = perUnit(100*gw, s)
		r.rep.Idle.GwCPUPerSocketUSPerS = perUnit(gw*1e6/s, float64(open))
		r.rep.Memory.GatewayRSSEnd = m1.gwRSS
		if m := r.rep.Memory; m.GatewayRSSBefore > 0 {
			m.PerSocketHeldBytes = perUnit(float64(m.GatewayRSSEnd-m.GatewayRSSBefore), float64(open))
		}
	}
	if err == nil && cfg.Floor && r.rep.Connect != nil {
		err = r.connectFloorPhase(plan, int(r.rep.Connect.Connected), r.rep.Connect.GwCPUPerConnectUS)
	}
	return err
}

// oneChannel connects N sockets subscribed to one channel and starts the
// publisher; pick publishes on that channel and expected is the frames
// the open sockets should have received between two marks.
func (r *runner) oneChannel() (pick func(int64) (string, int), expected func(m0, m mark) int64, err error) {
	cfg := r.cfg
	if _, err := r.connectPhase(subPlan{Prefix: cfg.Prefix, Channels: 1}, cfg.N); err != nil {
		return nil, nil, err
	}
	if err := r.ensurePublisher(); err != nil {
		return nil, nil, err
	}
	ch := cfg.Prefix + ":0"
	pick = func(int64) (string, int) { return ch, 0 }
	expected = func(m0, m mark) int64 { return (m.recv[0] - m0.recv[0]) * m0.cl.Open }
	return pick, expected, nil
}

// fanout: N subscribers of one channel, R messages per second of S bytes.
func (r *runner) fanout() error {
	cfg := r.cfg
	pick, expected, err := r.oneChannel()
	if err != nil {
		return err
	}
	return r.deliveryWindow(subPlan{Prefix: cfg.Prefix, Channels: 1}, pick, expected,
		func(mark) floorSpec { return floorSpec{rate: cfg.Rate} })
}

// deliveryWindow is the measured part of fanout and spread: it fills the
// -stalled sockets (subscribed as plan says), publishes for one window,
// reports the deliveries and, with -floor, measures the floor that
// floor(m0) describes.
func (r *runner) deliveryWindow(plan subPlan, pick target, expected func(m0, m mark) int64, floor func(m0 mark) floorSpec) error {
	cfg := r.cfg
	if err := r.stallBefore(plan, cfg.Rate, pick, expected); err != nil {
		return err
	}
	m0, m1, secs, err := r.publishWindow("publish", cfg.Rate, cfg.Duration, pick, expected)
	if err != nil {
		return err
	}
	r.finishDelivery(m0, m1, secs, expected(m0, m1))
	if cfg.Floor {
		r.stopStalled()
		fs := floor(m0)
		fs.n, fs.d = int(m0.cl.Open), cfg.Duration
		fs.gwPerFrame, fs.gwBatch = r.rep.Cost.GwCPUPerFrameUS, r.rep.Cost.GwFramesPerWrite
		return r.floorPhase(fs)
	}
	return nil
}

// stallBefore opens the -stalled sockets with plan and publishes until
// they overflow, before a fanout or spread window.
func (r *runner) stallBefore(plan subPlan, rate float64, pick target, expected func(m0, m mark) int64) error {
	k := r.cfg.Stalled
	if k <= 0 {
		return nil
	}
	if err := r.startStalled(plan, k); err != nil {
		return err
	}
	lead, over, err := r.fillStalled("fill", rate, pick, expected)
	if err != nil {
		return err
	}
	r.rep.Stalled = &StalledResult{Sockets: k, RcvBuf: stalledRcvBuf, FillSeconds: lead.Seconds, Overflowed: over,
		FillMeasuredLost: lead.Gaps + lead.Missing, ClosedByGateway: -1}
	if !over {
		r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("the stalled sockets did not overflow in %.0fs of publishing: the window saw them filling, not full (raise -size or -rate)", lead.Seconds))
	}
	return nil
}

func (r *runner) finishDelivery(m0, m1 mark, secs float64, expected int64) {
	d := r.delivery(m0, m1, r.cfg.Rate, secs, expected)
	r.rep.Delivery = d
	if s := r.rep.Stalled; s != nil {
		s.GwDropped = d.GwDropped
		s.MeasuredLost = d.Gaps + d.Missing
		s.ClosedByGateway = stalledClosedByGateway(m1.cl.Open, s.Sockets, m1.gs)
	}
	lat := summarize(r.latWin)
	r.rep.Latency = &lat
	r.rep.Histogram = logBars(r.latWin, 20)
	r.rep.Cost = r.cost(m0, m1, d.Delivered)
	r.rep.Noise = r.noise(m0, m1)
	r.gatewayWindow(m0, m1)
	if r.rep.Memory != nil {
		r.rep.Memory.GatewayRSSEnd = m1.gwRSS
	}
	if d.PublishErrors > 0 && r.pub != nil {
		if e, ok := r.pub.lastErr.Load().(string); ok {
			r.rep.Notes = append(r.rep.Notes, "publish error: "+e)
		}
	}
	if d.NoReceiver > 0 {
		r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("%d messages had no receiver in Redis (the gateway was not subscribed upstream)", d.NoReceiver))
	}
}

// spread: N sockets, each on its own channel plus one shared pattern.
// Messages go round-robin over the N channels; a share of them goes to a
// channel of the pattern, which every socket receives.
func (r *runner) spread() error {
	cfg := r.cfg
	pattern := cfg.Prefix + ":all:*"
	if _, err := r.connectPhase(subPlan{Prefix: cfg.Prefix, Channels: 0, Pattern: pattern}, cfg.N); err != nil {
		return err
	}
	if err := r.ensurePublisher(); err != nil {
		return err
	}
	var every int64
	if cfg.PatternShare > 0 {
		every = max(1, int64(math.Round(1/cfg.PatternShare)))
	}
	shared := cfg.Prefix + ":all:x"
	n := int64(cfg.N)
	pick := func(i int64) (string, int) {
		if every > 0 && i%every == 0 {
			return shared, 1
		}
		return cfg.Prefix + ":" + strconv.FormatInt(i%n, 10), 0
	}
	expected := func(m0, m mark) int64 {
		return (m.recv[0] - m0.recv[0]) + (m.recv[1]-m0.recv[1])*m0.cl.Open
	}
	return r.deliveryWindow(subPlan{Prefix: cfg.Prefix, Channels: 0, Pattern: pattern}, pick, expected,
		func(m0 mark) floorSpec {
			// The adaptive run has spread's shape; the write and writev
			// runs write every message to every socket at the rate each
			// socket received.
			return floorSpec{rate: r.rep.Delivery.DeliveredPerSec / float64(max(m0.cl.Open, 1)), spread: cfg.Rate, every: every}
		})
}

// churn: N sockets; ChurnRate per second of them leave (close handshake)
// and come back (connect, upgrade, subscribe) for the duration.
func (r *runner) churn() error {
	cfg := r.cfg
	if _, err := r.connectPhase(subPlan{Prefix: cfg.Prefix, Channels: cfg.Channels}, cfg.N); err != nil {
		return err
	}
	if cfg.Rate > 0 {
		if err := r.ensurePublisher(); err != nil {
			return err
		}
	}
	r.connWin.Reset()
	m0 := r.mark()
	r.startProfile(cfg.Duration)
	for _, c := range r.cl {
		c.churn(cfg.ChurnRate/float64(len(r.cl)), cfg.Duration)
	}
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		if r.pub != nil {
			c := int64(max(cfg.Channels, 1))
			r.pub.run(r.ctx, cfg.Rate, cfg.Duration, func(i int64) (string, int) {
				return cfg.Prefix + ":" + strconv.FormatInt(i%c, 10), 0
			})
		}
	}()
	err := r.wait("churn", cfg.Duration, nil)
	<-pubDone
	secs := time.Since(m0.t).Seconds()
	// The last leavers come back.
	target := m0.cl.Open
	if err == nil {
		err = r.wait("rejoin", 2*cfg.HandshakeTimeout, func(a poolStats) bool { return a.Open >= target })
	}
	m1 := r.mark()
	joined := m1.cl.ChurnJoined - m0.cl.ChurnJoined
	c := &ChurnResult{
		Rate:           cfg.ChurnRate,
		Seconds:        round3(secs),
		Left:           m1.cl.ChurnLeft - m0.cl.ChurnLeft,
		Joined:         joined,
		PerSec:         perUnit(float64(joined), secs),
		Failed:         m1.cl.Failed - m0.cl.Failed,
		ConnectLatency: summarize(r.connWin),
		ClientOpenEnd:  m1.cl.Open,
		Gaps:           m1.cl.Gaps - m0.cl.Gaps,
	}
	if r.measured() {
		gw := (m1.gwCPU - m0.gwCPU).Seconds()
		c.GwCPUPercent = perUnit(100*gw, m1.t.Sub(m0.t).Seconds())
		c.GwCPUPerCycleUS = perUnit(gw*1e6, float64(joined))
		c.GwRSSStart, c.GwRSSEnd = m0.gwRSS, m1.gwRSS
		r.rep.Memory.GatewayRSSEnd = m1.gwRSS
	}
	if m1.gs != nil {
		c.GwConnectionsEnd = m1.gs.Connections
	}
	r.rep.Churn = c
	r.rep.Noise = r.noise(m0, m1)
	if r.pub != nil {
		r.rep.Cost = r.cost(m0, m1, m1.cl.Data-m0.cl.Data)
	}
	return err
}

// sweep: N subscribers of one channel; the rate goes up by Factor per
// step until p99 passes MaxP99 or anything is lost, then bisects between
// the last good and the first bad rate while the time budget lasts.
func (r *runner) sweep() error {
	cfg := r.cfg
	if _, err := r.connectPhase(subPlan{Prefix: cfg.Prefix, Channels: 1}, cfg.N); err != nil {
		return err
	}
	if err := r.ensurePublisher(); err != nil {
		return err
	}
	// Stalled sockets fill during the first steps; their drops do not
	// fail a step (the measured sockets' gaps and missing frames do).
	if err := r.startStalled(subPlan{Prefix: cfg.Prefix, Channels: 1}, cfg.Stalled); err != nil {
		return err
	}
	res := &SweepResult{MaxP99US: cfg.MaxP99.Microseconds()}
	r.rep.Sweep = res
	ch := cfg.Prefix + ":0"
	pick := func(int64) (string, int) { return ch, 0 }
	expected := func(m0, m mark) int64 { return (m.recv[0] - m0.recv[0]) * m0.cl.Open }
	var (
		rate  = cfg.Rate
		good  float64
		bad   float64
		used  time.Duration
		best  *SweepStep
		bestM [2]mark
		stop  = "time budget (-duration)"
	)
steps:
	for used+cfg.Step <= cfg.Duration || len(res.Steps) == 0 {
		if rate > cfg.MaxRate {
			stop = fmt.Sprintf("-max-rate %.0f", cfg.MaxRate)
			break
		}
		m0, m1, secs, err := r.publishWindow(fmt.Sprintf("%.0f/s", rate), rate, cfg.Step, pick, expected)
		if err != nil {
			return err
		}
		used += cfg.Step
		d := r.delivery(m0, m1, rate, secs, expected(m0, m1))
		c := r.cost(m0, m1, d.Delivered)
		st := SweepStep{
			Rate: rate, Achieved: d.PublishedPerSec, DeliveredPerSec: d.DeliveredPerSec,
			Latency: summarize(r.latWin), Gaps: d.Gaps, Missing: d.Missing, Dropped: d.GwDropped,
			GwCPUPercent: c.GwCPUPercent, GwCPUPerFrameUS: c.GwCPUPerFrameUS, Pass: true,
			OtherCPUPercent: r.noise(m0, m1).OtherCPUPercent,
		}
		switch {
		case st.Latency.P99 > res.MaxP99US:
			st.Pass, st.Why = false, "p99 above "+fmtUS(res.MaxP99US)
		case st.Missing > 0 || st.Gaps > 0 || (st.Dropped > 0 && cfg.Stalled == 0):
			st.Pass, st.Why = false, "drops"
		case st.Achieved < 0.95*rate:
			st.Pass, st.Why = false, "publisher could not keep the rate"
		}
		res.Steps = append(res.Steps, st)
		r.logf("sweep step %.0f/s: p50 %s p99 %s, delivered %.0f/s, gaps %d missing %d dropped %d: %v %s",
			rate, fmtUS(st.Latency.P50), fmtUS(st.Latency.P99), st.DeliveredPerSec, st.Gaps, st.Missing, st.Dropped, st.Pass, st.Why)
		if st.Pass {
			good = rate
			cp := st
			best, bestM = &cp, [2]mark{m0, m1}
			r.rep.Histogram = logBars(r.latWin, 20)
		} else {
			bad = rate
			if st.Why == "publisher could not keep the rate" {
				stop = "publisher limit"
				break steps
			}
		}
		switch {
		case bad == 0:
			rate = math.Round(rate * cfg.Factor)
		case good == 0:
			rate = math.Round(rate / cfg.Factor)
			if rate < 1 || rate == bad {
				stop = "even the lowest rate failed"
				break steps
			}
		default:
			next := math.Round(sqrtMean(good, bad))
			if bad/good < 1.1 || next <= good || next >= bad {
				stop = "converged"
				break steps
			}
			rate = next
		}
		if len(res.Steps) >= 40 {
			break
		}
	}
	res.StoppedBy = stop
	if best != nil {
		res.BestRate = best.Rate
		res.BestDeliveries = best.DeliveredPerSec
		lat := best.Latency
		r.rep.Latency = &lat
		r.rep.Delivery = r.delivery(bestM[0], bestM[1], best.Rate, cfg.Step.Seconds(), expected(bestM[0], bestM[1]))
		r.rep.Cost = r.cost(bestM[0], bestM[1], r.rep.Delivery.Delivered)
		r.rep.Noise = r.noise(bestM[0], bestM[1])
		r.gatewayWindow(bestM[0], bestM[1])
		if cfg.Stalled > 0 {
			r.rep.Stalled = &StalledResult{Sockets: cfg.Stalled, RcvBuf: stalledRcvBuf, GwDropped: r.rep.Delivery.GwDropped,
				MeasuredLost: r.rep.Delivery.Gaps + r.rep.Delivery.Missing, ClosedByGateway: stalledClosedByGateway(bestM[1].cl.Open, cfg.Stalled, bestM[1].gs)}
		}
		if cfg.Floor {
			r.stopStalled()
			return r.floorPhase(floorSpec{n: int(bestM[0].cl.Open), rate: best.Rate, d: cfg.Step,
				gwPerFrame: best.GwCPUPerFrameUS, gwBatch: r.rep.Cost.GwFramesPerWrite})
		}
	} else {
		r.rep.Notes = append(r.rep.Notes, "no step passed: lower -rate")
	}
	return nil
}

// floorOnly runs the CPU floor alone (no gateway, no Redis).
func (r *runner) floorOnly() error {
	return r.floorPhase(floorSpec{n: r.cfg.N, rate: r.cfg.Rate, d: r.cfg.Duration})
}

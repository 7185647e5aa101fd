package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// runner drives one scenario against one gateway: it starts the client
// workers, the publisher, samples every second, and fills the report.
type runner struct {
	ctx  context.Context
	cfg  *Config
	rep  *Report
	live io.Writer // progress lines; nil when quiet

	gws  []*gwTarget // the gateways under test
	dial []string    // where the clients connect: one per gateway, or one balancer
	// clientBase is the part of every worker's spec the scenario sets
	// (reconnecting clients for storm).
	clientBase poolSpec
	adminAddr  string        // the first gateway's admin listener (profiles)
	profiling  chan struct{} // closed when the CPU profile is saved
	redisPid   int
	redisAddr  string

	cl        []clientHandle
	clGw      []int // clGw[i] is the index in dial of the address cl[i] connects to
	inProcess bool
	pub       *publisher
	stalled   *stalledSet // -stalled, -scenario fairness: sockets that never read

	latCum *hdr.Histogram // publish-to-client latency, whole run
	latWin *hdr.Histogram // current measurement window
	// gwLatWin[g] is latWin of the sockets connected to gateway g (when
	// the clients connect to each gateway directly).
	gwLatWin []*hdr.Histogram
	latSec   *hdr.Histogram // current second
	connWin  *hdr.Histogram // connect latency, current window
	outage   *hdr.Histogram // storm: each socket's time down
	back     *hdr.Histogram // storm: the event to each socket back

	start   time.Time
	prevS   sampleState
	limitsC map[string]bool
}

type sampleState struct {
	t        time.Time
	gwCPU    time.Duration
	gwCtr    procCounters
	clCPU    int64
	data     int64
	conns    int64
	pubSent  int64
	harness  time.Duration
	machine  time.Duration
	ours     time.Duration
	hasValue bool
}

func newRunner(ctx context.Context, cfg *Config, rep *Report) *runner {
	r := &runner{
		ctx: ctx, cfg: cfg, rep: rep,
		latCum: newHist(), latWin: newHist(), latSec: newHist(), connWin: newHist(), outage: newHist(), back: newHist(),
		start: time.Now(), limitsC: map[string]bool{},
	}
	if !cfg.Quiet {
		r.live = os.Stderr
	}
	return r
}

func (r *runner) logf(f string, a ...any) {
	if r.live != nil {
		fmt.Fprintf(r.live, f+"\n", a...)
	}
}

// startClients spreads n sockets over addrs (gateway g gets a contiguous
// block of them) and over the worker processes, each of which holds
// sockets of one address only. base carries the plan and the reconnect
// settings; the rest of each worker's spec is filled in here.
func (r *runner) startClients(base poolSpec, addrs []string, n int) error {
	cfg := r.cfg
	_, hard := raiseNofile()
	perProc := int(hard) - 200
	var specs []poolSpec
	var gwOf []int
	r.inProcess = cfg.Workers == 0
	for g, addr := range addrs {
		lo, hi := n*g/len(addrs), n*(g+1)/len(addrs)
		if hi <= lo {
			continue
		}
		procs := 1
		switch {
		case cfg.Workers < 0 && perProc > 0: // as many as the open-file limit requires
			procs = (hi - lo + perProc - 1) / perProc
		case cfg.Workers > 0:
			procs = max(1, (cfg.Workers+len(addrs)-1)/len(addrs))
		}
		if !r.inProcess && perProc > 0 && (hi-lo+procs-1)/procs > perProc {
			r.addLimit(fmt.Sprintf("%d sockets over %d client processes is %d per process, above the open-file hard limit %d: expect EMFILE (use more -workers)",
				hi-lo, procs, (hi-lo+procs-1)/procs, hard))
		}
		for i := range procs {
			sp := base
			sp.Addr, sp.Lo, sp.Hi = addr, lo+(hi-lo)*i/procs, lo+(hi-lo)*(i+1)/procs
			specs = append(specs, sp)
			gwOf = append(gwOf, g)
		}
	}
	total := len(specs)
	if r.inProcess {
		r.rep.Params.Workers = 0
	} else {
		r.rep.Params.Workers = total
	}
	for i, sp := range specs {
		sp.PerAddr = cfg.PerAddr
		sp.Loops = max(1, cfg.ClientLoops/total)
		sp.Concurrency = max(1, cfg.ConnConcurrency/total)
		sp.ConnectRate = cfg.ConnectRate / float64(total)
		sp.HandshakeTimeout = cfg.HandshakeTimeout
		var (
			h   clientHandle
			err error
		)
		if r.inProcess {
			h, err = startLocal(sp)
		} else {
			h, err = startRemote(sp)
		}
		if err != nil {
			return err
		}
		r.cl = append(r.cl, h)
		r.clGw = append(r.clGw, gwOf[i])
	}
	return nil
}

// stopClients closes every socket and worker, keeping the final counters.
func (r *runner) stopClients() {
	for _, c := range r.cl {
		st := c.close()
		r.absorbLimits(st)
	}
	r.cl, r.clGw = nil, nil
	// The next clients count from zero: start the per-second deltas again.
	r.prevS = sampleState{}
}

func (r *runner) addLimit(msg string) {
	if !r.limitsC[msg] {
		r.limitsC[msg] = true
		r.rep.Limits = append(r.rep.Limits, msg)
		r.logf("LIMIT: %s", msg)
	}
}

func (r *runner) absorbLimits(st poolStats) {
	for _, l := range st.Limits {
		r.addLimit(l)
	}
}

// poll aggregates the client counters and histograms.
func (r *runner) poll() poolStats {
	var a poolStats
	if len(r.dial) > 1 {
		a.PerGw = make([]poolStats, len(r.dial))
	}
	for i, c := range r.cl {
		st := c.snapshot()
		r.absorbLimits(st)
		a.add(st)
		mergeSparse(st.Lat, r.latCum, r.latWin, r.latSec)
		mergeSparse(st.Conn, r.connWin)
		mergeSparse(st.Outage, r.outage)
		mergeSparse(st.Back, r.back)
		if a.PerGw != nil {
			g := r.clGw[i]
			a.PerGw[g].add(st)
			mergeSparse(st.Lat, r.gwLatWin[g])
		}
	}
	if a.FailKinds == nil {
		a.FailKinds, a.ErrCodes, a.CloseCodes = map[string]int64{}, map[string]int64{}, map[int]int64{}
	}
	if r.inProcess {
		// The client shares this process with the publisher.
		a.CPUNanos = selfCPU()
		a.RSS = rssOf(0)
	}
	return a
}

// resetWindow starts a new latency window.
func (r *runner) resetWindow() {
	r.latWin.Reset()
	for _, h := range r.gwLatWin {
		h.Reset()
	}
}

// mark is a point-in-time reading of every counter, for deltas.
type mark struct {
	t        time.Time
	gw       []gwReading // per gateway
	gwCPU    time.Duration
	gwRSS    int64
	gwCtr    procCounters
	gs       *gwStats // summed over the gateways; nil if one did not answer
	redisCPU time.Duration
	lbCPU    time.Duration // the balancer's processes (-balancer-pid)
	harness  time.Duration
	cl       poolStats
	sent     [2]int64
	recv     [2]int64
	pubErr   int64
	machine  time.Duration // CPU used by every process of the machine
	steal    time.Duration
}

func (r *runner) mark() mark {
	m := mark{t: time.Now(), cl: r.poll()}
	m.machine, m.steal = machineCPU()
	m.readGateways(r.gws, true)
	if r.redisPid > 0 {
		m.redisCPU, _ = cpuOf(r.redisPid)
	}
	m.lbCPU = r.balancerCPU()
	m.harness = time.Duration(selfCPU())
	if m.gs == nil && len(r.gws) > 0 && !r.anyStatsAddr() && len(r.dial) > 0 {
		// Behind a balancer with no -backends: the /stats of whichever
		// gateway answers.
		if gs, err := fetchStats(r.dial[0]); err == nil {
			m.gs = gs
		}
	}
	if p := r.pub; p != nil {
		for k := range 2 {
			m.sent[k] = p.sent[k].Load()
			m.recv[k] = p.received[k].Load()
		}
		m.pubErr = p.errors.Load()
	}
	return m
}

// readGateways reads every gateway into m (with stats: their /stats too).
func (m *mark) readGateways(gws []*gwTarget, stats bool) {
	m.gw = make([]gwReading, len(gws))
	withAddr := make([]bool, len(gws))
	for i, g := range gws {
		m.gw[i] = g.read(stats)
		withAddr[i] = stats && g.addr != ""
	}
	m.gwCPU, m.gwRSS, m.gwCtr, m.gs = sumReadings(m.gw, withAddr)
}

// measured reports whether any gateway's process is known (-pid, or
// started here): its CPU, RSS and counters are read.
func (r *runner) measured() bool {
	for _, g := range r.gws {
		if g.pid > 0 {
			return true
		}
	}
	return false
}

func (r *runner) anyStatsAddr() bool {
	for _, g := range r.gws {
		if g.addr != "" {
			return true
		}
	}
	return false
}

// stats is the gateways' /stats summed (through the balancer when their
// own addresses are not known).
func (r *runner) stats() (*gwStats, error) {
	if !r.anyStatsAddr() {
		return fetchStats(r.dial[0])
	}
	var all []*gwStats
	for _, g := range r.gws {
		if g.addr == "" {
			continue
		}
		gs, err := fetchStats(g.addr)
		if err != nil {
			return nil, fmt.Errorf("gateway %s: %w", g.addr, err)
		}
		all = append(all, gs)
	}
	return sumStats(all), nil
}

// clientCPU is the client side's CPU between two marks: the workers', or
// this whole process when the client runs in it.
func clientCPU(a, b mark) time.Duration { return time.Duration(b.cl.CPUNanos - a.cl.CPUNanos) }

// gwMessages is the Redis messages the gateways received between two
// marks (from /stats; from the publisher's count of messages Redis
// delivered to a subscriber when /stats is missing).
func gwMessages(a, b mark) int64 {
	if a.gs != nil && b.gs != nil {
		return int64(b.gs.Received - a.gs.Received)
	}
	return b.recv[0] + b.recv[1] - a.recv[0] - a.recv[1]
}

func (r *runner) cost(a, b mark, frames int64) *Cost {
	s := b.t.Sub(a.t).Seconds()
	cl := clientCPU(a, b).Seconds()
	c := &Cost{
		Seconds:           round3(s),
		Frames:            frames,
		ClientCPUSeconds:  round3(cl),
		ClientCPUPercent:  perUnit(100*cl, s),
		HarnessCPUSeconds: round3((b.harness - a.harness).Seconds()),
		RedisCPUSeconds:   round3((b.redisCPU - a.redisCPU).Seconds()),
	}
	if r.inProcess {
		c.HarnessCPUSeconds = c.ClientCPUSeconds
	}
	if r.measured() {
		c.gatewayCost(b.gwCPU-a.gwCPU, b.gwCtr.sub(a.gwCtr), s, frames, gwMessages(a, b))
	}
	if len(r.cfg.BalancerPids) > 0 {
		lb := (b.lbCPU - a.lbCPU).Seconds()
		c.BalancerCPUSeconds = round3(lb)
		c.BalancerCPUPercent = perUnit(100*lb, s)
		c.BalancerCPUPerFrameUS = perUnit(lb*1e6, float64(frames))
	}
	c.ClientCPUPerFrameUS = perUnit(cl*1e6, float64(frames))
	c.ClientFramesPerRead = perUnit(float64(b.cl.Data-a.cl.Data), float64(b.cl.Reads-a.cl.Reads))
	return c
}

// gatewayCost fills the gateway's part of c: CPU, and the switches and
// system calls per Redis message, over s seconds.
func (c *Cost) gatewayCost(cpu time.Duration, d procCounters, s float64, frames, msgs int64) {
	gw := cpu.Seconds()
	c.GwCPUSeconds = round3(gw)
	c.GwCPUPercent = perUnit(100*gw, s)
	c.GwCPUPerFrameUS = perUnit(gw*1e6, float64(frames))
	c.GwWriteSyscalls = d.Syscw
	c.GwFramesPerWrite = perUnit(float64(frames), float64(d.Syscw))
	c.GwMessages = msgs
	c.GwVolCtx, c.GwInvolCtx, c.GwReadSyscalls = d.VolCtx, d.InvolCtx, d.Syscr
	c.GwVolCtxPerMsg = perUnit(float64(d.VolCtx), float64(msgs))
	c.GwInvolCtxPerMsg = perUnit(float64(d.InvolCtx), float64(msgs))
	c.GwSyscrPerMsg = perUnit(float64(d.Syscr), float64(msgs))
	c.GwSyscwPerMsg = perUnit(float64(d.Syscw), float64(msgs))
}

// balancerCPU is the CPU the balancer's processes (-balancer-pid) have
// used so far; a process that has gone counts nothing.
func (r *runner) balancerCPU() time.Duration {
	var sum time.Duration
	for _, pid := range r.cfg.BalancerPids {
		c, _ := cpuOf(pid)
		sum += c
	}
	return sum
}

// noise is the machine's CPU use between two marks, ours and others'.
func (r *runner) noise(a, b mark) *Noise {
	s := b.t.Sub(a.t).Seconds()
	ours := (b.gwCPU - a.gwCPU) + clientCPU(a, b) + (b.redisCPU - a.redisCPU) + (b.lbCPU - a.lbCPU)
	if !r.inProcess {
		ours += b.harness - a.harness
	}
	return &Noise{
		MachineCPUPercent: perUnit(100*(b.machine-a.machine).Seconds(), s),
		OtherCPUPercent:   perUnit(100*max((b.machine-a.machine)-ours, 0).Seconds(), s),
		StealPercent:      perUnit(100*(b.steal-a.steal).Seconds(), s),
	}
}

// wait polls until done says so, the context ends or max has passed,
// sampling the timeline and printing a progress line every second.
func (r *runner) wait(phase string, maxDur time.Duration, done func(a poolStats) bool) error {
	deadline := time.Now().Add(maxDur)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		a := r.poll()
		if time.Since(r.prevS.t) >= time.Second {
			r.sample(phase, a)
		}
		if done != nil && done(a) {
			return nil
		}
		if time.Now().After(deadline) {
			return nil
		}
		select {
		case <-r.ctx.Done():
			return r.ctx.Err()
		case <-t.C:
		}
	}
}

func (r *runner) sample(phase string, a poolStats) {
	now := time.Now()
	s := sampleState{t: now, clCPU: a.CPUNanos, data: a.Data, conns: a.Subscribed, harness: time.Duration(selfCPU())}
	var gm mark
	gm.readGateways(r.gws, false)
	s.gwCPU, s.gwCtr = gm.gwCPU, gm.gwCtr
	if r.pub != nil {
		s.pubSent = r.pub.published()
	}
	s.machine, _ = machineCPU()
	s.ours = s.gwCPU + time.Duration(s.clCPU)
	if !r.inProcess {
		s.ours += s.harness
	}
	if r.redisPid > 0 {
		rc, _ := cpuOf(r.redisPid)
		s.ours += rc
	}
	s.ours += r.balancerCPU()
	p := r.prevS
	r.prevS = s
	r.prevS.hasValue = true
	if !p.hasValue || s.data < p.data || s.conns < p.conns {
		return
	}
	dt := now.Sub(p.t).Seconds()
	sec := summarize(r.latSec)
	r.latSec.Reset()
	smp := Sample{
		T:            round3(now.Sub(r.start).Seconds()),
		Phase:        phase,
		Sockets:      a.Open,
		ConnectsPS:   round3(float64(s.conns-p.conns) / dt),
		PublishedPS:  round3(float64(s.pubSent-p.pubSent) / dt),
		DeliveredPS:  round3(float64(s.data-p.data) / dt),
		P50US:        sec.P50,
		P99US:        sec.P99,
		MaxUS:        sec.Max,
		Gaps:         a.Gaps,
		GwCPUPercent: round3(100 * max(s.gwCPU-p.gwCPU, 0).Seconds() / dt), // 0, not less, while a gateway restarts
		ClCPUPercent: round3(100 * float64(s.clCPU-p.clCPU) / 1e9 / dt),
		OtherCPU:     round3(100 * max((s.machine-p.machine)-(s.ours-p.ours), 0).Seconds() / dt),
		GwRSS:        gm.gwRSS,
	}
	if d := s.gwCtr.sub(p.gwCtr); r.measured() {
		smp.GwCtxPS = round3(float64(d.VolCtx+d.InvolCtx) / dt)
		smp.GwSyscallsPS = round3(float64(d.Syscr+d.Syscw) / dt)
	}
	r.rep.Timeline = append(r.rep.Timeline, smp)
	if r.live != nil {
		cum := summarize(r.latCum)
		lat := ""
		if cum.Count > 0 {
			lat = fmt.Sprintf("  lat(1s) p50 %s p99 %s max %s  (run p99 %s)", fmtUS(sec.P50), fmtUS(sec.P99), fmtUS(sec.Max), fmtUS(cum.P99))
		}
		fail := ""
		if a.Failed > 0 {
			fail = fmt.Sprintf(" failed %d", a.Failed)
		}
		fmt.Fprintf(r.live, "[%s %-8s %6.1fs] sockets %d/%d%s  conn %s/s  pub %s/s  recv %s/s%s  gaps %d  gw cpu %.0f%% rss %s  client cpu %.0f%%  others %.0f%%\n",
			r.rep.Scenario, phase, smp.T, a.Open, a.Target, fail, fmtCount(smp.ConnectsPS), fmtCount(smp.PublishedPS), fmtCount(smp.DeliveredPS),
			lat, a.Gaps, smp.GwCPUPercent, fmtBytes(float64(smp.GwRSS)), smp.ClCPUPercent, smp.OtherCPU)
	}
}

// connectPhase opens n sockets with plan and records connects/s, the
// connect latency, the gateway's CPU per connect and its RSS per socket.
func (r *runner) connectPhase(plan subPlan, n int) (*ConnectResult, error) {
	mem := &Memory{}
	for i, g := range r.gws {
		if g.pid <= 0 {
			continue
		}
		if lim := nofileOf(g.pid); lim > 0 {
			if i == 0 {
				r.rep.Gateway.Nofile = lim
			}
			if share := int64(n / len(r.gws)); lim < share+64 {
				r.addLimit(fmt.Sprintf("the open-file limit of gateway %d is %d, below its %d sockets: it cannot accept them all (raise its hard limit)", g.pid, lim, share))
			}
		}
	}
	r.connWin.Reset()
	m0 := r.mark()
	if r.measured() {
		mem.GatewayRSSBefore = m0.gwRSS
	}
	base := r.clientBase
	base.Plan = plan
	if err := r.startClients(base, r.dial, n); err != nil {
		return nil, err
	}
	r.logf("connecting %d sockets to %s (%d client processes)...", n, strings.Join(r.dial, ", "), max(len(r.cl), 1))
	maxDur := r.cfg.ConnectTimeout
	if maxDur <= 0 {
		maxDur = 30*time.Second + time.Duration(n)*time.Millisecond
	}
	var last int64 = -1
	lastChange := time.Now()
	if err := r.wait("connect", maxDur, func(a poolStats) bool {
		settled := a.Subscribed + a.Failed
		if settled != last {
			last, lastChange = settled, time.Now()
		}
		// Done; or a system limit stopped the dialing and nothing is in
		// flight; or stuck: nothing moved for twice the handshake timeout.
		return settled >= int64(n) || (a.DialStop && a.Dialed == settled) ||
			time.Since(lastChange) > 2*r.cfg.HandshakeTimeout+time.Second
	}); err != nil {
		return nil, err
	}
	m1 := r.mark()
	a := m1.cl
	secs := m1.t.Sub(m0.t).Seconds()
	res := &ConnectResult{
		Target: n, Connected: a.Subscribed, Failed: a.Failed, FailKinds: a.FailKinds,
		Seconds: round3(secs), PerSec: perUnit(float64(a.Subscribed), secs),
		Latency: summarize(r.connWin),
		Workers: max(len(r.cl), 1),
	}
	if len(res.FailKinds) == 0 {
		res.FailKinds = nil
	}
	// Reconnecting clients (storm) try again instead of failing.
	res.Retried = a.Retried - m0.cl.Retried
	res.RetryKinds = diffCounts(m0.cl.RetryKinds, a.RetryKinds)
	res.Refused503, res.RetryAfter = a.Refused503-m0.cl.Refused503, a.RetryAfter-m0.cl.RetryAfter
	if r.measured() {
		res.GwCPUPerConnectUS = perUnit((m1.gwCPU-m0.gwCPU).Seconds()*1e6, float64(a.Subscribed))
	}
	res.ClientCPUPerConnectUS = perUnit(clientCPU(m0, m1).Seconds()*1e6, float64(a.Subscribed))
	if len(r.cfg.BalancerPids) > 0 {
		res.BalancerCPUPerConnectUS = perUnit((m1.lbCPU-m0.lbCPU).Seconds()*1e6, float64(a.Subscribed))
	}
	if a.Subscribed+a.Failed < int64(n) {
		r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("connect phase ended with %d of %d sockets settled", a.Subscribed+a.Failed, n))
	}
	r.rep.Connect = res
	// Let the gateway settle before reading its memory: no GC is
	// forced, this is the resident set a user would see.
	sleepCtx(r.ctx, r.cfg.Settle)
	if r.measured() {
		var ms mark
		ms.readGateways(r.gws, true)
		mem.GatewayRSSConnected = ms.gwRSS
		mem.PerSocketBytes = perUnit(float64(mem.GatewayRSSConnected-mem.GatewayRSSBefore), float64(a.Subscribed))
		r.gatewayConnect(m0, m1, ms)
	}
	r.heapProfile()
	a = r.poll()
	mem.ClientRSS = a.RSS
	mem.ClientPerSocket = perUnit(float64(a.RSS), float64(a.Subscribed))
	r.rep.Memory = mem
	r.logf("connected %d/%d in %.2fs (%.0f/s), failed %d %s", a.Subscribed, n, secs, res.PerSec, a.Failed, fmtKinds(a.FailKinds))
	if a.Subscribed == 0 {
		return res, errors.New("no socket connected")
	}
	return res, nil
}

// publishWindow publishes at rate for d with pick, waits for the
// deliveries to drain, and returns the marks around the window.
func (r *runner) publishWindow(phase string, rate float64, d time.Duration, pick target, expected func(m0, m mark) int64) (m0, m1 mark, pubSecs float64, err error) {
	r.resetWindow()
	r.startProfile(d)
	return r.publishUntil(phase, rate, d, pick, expected, nil)
}

// publishUntil is publishWindow without the profile, ending early when
// stop (polled every 100 ms) says so.
func (r *runner) publishUntil(phase string, rate float64, d time.Duration, pick target, expected func(m0, m mark) int64, stop func() bool) (m0, m1 mark, pubSecs float64, err error) {
	m0 = r.mark()
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		r.pub.run(ctx, rate, d, pick)
	}()
	pubStart := time.Now()
	err = r.wait(phase, d+5*time.Second, func(poolStats) bool {
		select {
		case <-pubDone:
			return true
		default:
			return stop != nil && stop()
		}
	})
	cancel()
	<-pubDone
	pubSecs = time.Since(pubStart).Seconds()
	if err != nil {
		return m0, m0, pubSecs, err
	}
	// Drain: until every expected frame arrived, or nothing arrived for
	// a second (drops), at most 10 s.
	mp := r.mark()
	err = r.drain(phase, m0.cl.Data+expected(m0, mp))
	m1 = r.mark()
	return m0, m1, pubSecs, err
}

// drain waits until the clients have received want data frames in all,
// or nothing arrived for a second (drops), at most 10 s.
func (r *runner) drain(phase string, want int64) error {
	var last int64 = -1
	lastChange := time.Now()
	return r.wait(phase+"/drain", 10*time.Second, func(a poolStats) bool {
		if a.Data != last {
			last, lastChange = a.Data, time.Now()
		}
		return a.Data >= want || time.Since(lastChange) > time.Second
	})
}

// delivery computes the delivery figures of a publish window.
func (r *runner) delivery(m0, m1 mark, rate float64, pubSecs float64, expected int64) *Delivery {
	d := &Delivery{
		Seconds:       round3(pubSecs),
		Rate:          rate,
		Published:     m1.sent[0] + m1.sent[1] - m0.sent[0] - m0.sent[1],
		NoReceiver:    (m1.sent[0] - m1.recv[0] - m0.sent[0] + m0.recv[0]) + (m1.sent[1] - m1.recv[1] - m0.sent[1] + m0.recv[1]),
		PublishErrors: m1.pubErr - m0.pubErr,
		Expected:      expected,
		Delivered:     m1.cl.Data - m0.cl.Data,
		Gaps:          m1.cl.Gaps - m0.cl.Gaps,
		Dups:          m1.cl.Dups - m0.cl.Dups,
		Unexpected:    m1.cl.Unexpected - m0.cl.Unexpected,
		ErrorFrames:   diffCounts(m0.cl.ErrCodes, m1.cl.ErrCodes),
		CloseCodes:    diffCounts(m0.cl.CloseCodes, m1.cl.CloseCodes),
	}
	if r.stalled != nil {
		d.StalledSockets = len(r.stalled.conns)
	}
	d.PublishedPerSec = perUnit(float64(d.Published), pubSecs)
	d.DeliveredPerSec = perUnit(float64(d.Delivered), pubSecs)
	if d.Expected > d.Delivered {
		d.Missing = d.Expected - d.Delivered
	}
	if frames := m1.cl.Frames - m0.cl.Frames; frames > 0 {
		d.AvgFrameBytes = round3(float64(m1.cl.Bytes-m0.cl.Bytes) / float64(frames))
	}
	if m0.gs != nil && m1.gs != nil {
		d.GwReceived = m1.gs.Received - m0.gs.Received
		d.GwDelivered = m1.gs.Delivered - m0.gs.Delivered
		d.GwDropped = m1.gs.Dropped - m0.gs.Dropped
	}
	return d
}

// diffCounts is b minus a per key, without the keys that did not change;
// nil when nothing did.
func diffCounts[K comparable](a, b map[K]int64) map[K]int64 {
	out := map[K]int64{}
	for k, v := range b {
		if d := v - a[k]; d != 0 {
			out[k] = d
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func (r *runner) ensurePublisher() error {
	if r.pub != nil {
		return nil
	}
	p, err := newPublisher(r.redisAddr, r.cfg.Size)
	if err != nil {
		return fmt.Errorf("publisher: %w", err)
	}
	r.pub = p
	return nil
}

func (r *runner) close() {
	if r.stalled != nil {
		r.stalled.close()
		r.stalled = nil
	}
	r.stopClients()
	if r.pub != nil {
		r.pub.close()
		r.pub = nil
	}
}

func hostInfo() Host {
	soft, hard := raiseNofile()
	return Host{
		CPUs: runtime.NumCPU(), Kernel: kernelRelease(), GoVersion: runtime.Version(),
		NofileSoft: soft, NofileHard: hard, EphemeralPorts: ephemeralPorts(), LoadAvg: loadAvg(), Somaxconn: somaxconn(),
	}
}

func sqrtMean(a, b float64) float64 { return math.Sqrt(a * b) }

// startProfile fetches a CPU profile of the gateway over the next d, once
// per run (the first measured window), if -profile asks for it.
func (r *runner) startProfile(d time.Duration) {
	if r.cfg.Profile == "" || r.profiling != nil {
		return
	}
	r.profiling = make(chan struct{})
	if r.adminAddr == "" {
		r.rep.Notes = append(r.rep.Notes, "-profile: the gateway has no admin listener (-admin-addr): no profile")
		close(r.profiling)
		return
	}
	secs := max(1, int(d.Round(time.Second)/time.Second))
	go func() {
		defer close(r.profiling)
		path := fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs)
		if err := fetchProfile(r.adminAddr, path, r.cfg.Profile, time.Duration(secs)*time.Second+30*time.Second); err != nil {
			r.logf("profile: %v", err)
			return
		}
		r.logf("CPU profile of the gateway (%ds) saved in %s", secs, r.cfg.Profile)
	}()
}

func (r *runner) waitProfile() {
	if r.profiling != nil {
		<-r.profiling
	}
}

// heapProfile saves the gateway's heap profile, if -heap-profile asks.
func (r *runner) heapProfile() {
	if r.cfg.HeapProfile == "" || r.adminAddr == "" {
		return
	}
	if err := fetchProfile(r.adminAddr, "/debug/pprof/heap", r.cfg.HeapProfile, 30*time.Second); err != nil {
		r.logf("heap profile: %v", err)
	}
}

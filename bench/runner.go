package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
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

	gwPid     int
	gwAddr    string
	adminAddr string
	profiling chan struct{} // closed when the CPU profile is saved
	redisPid  int
	redisAddr string

	cl        []clientHandle
	inProcess bool
	pub       *publisher
	stalled   *stalledSet // -stalled, -scenario fairness: sockets that never read

	latCum  *hdr.Histogram // publish-to-client latency, whole run
	latWin  *hdr.Histogram // current measurement window
	latSec  *hdr.Histogram // current second
	connWin *hdr.Histogram // connect latency, current window

	start   time.Time
	prevS   sampleState
	limitsC map[string]bool
}

type sampleState struct {
	t        time.Time
	gwCPU    time.Duration
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
		latCum: newHist(), latWin: newHist(), latSec: newHist(), connWin: newHist(),
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

// startClients spreads n sockets over the worker processes.
func (r *runner) startClients(plan subPlan, addr string, n int) error {
	cfg := r.cfg
	w := cfg.Workers
	_, hard := raiseNofile()
	perProc := int(hard) - 200
	if w < 0 { // auto: as many processes as the open-file limit requires
		w = 1
		if perProc > 0 && n > perProc {
			w = (n + perProc - 1) / perProc
		}
	}
	if w > 0 && perProc > 0 && (n+w-1)/w > perProc {
		r.addLimit(fmt.Sprintf("%d sockets over %d client processes is %d per process, above the open-file hard limit %d: expect EMFILE (use more -workers)",
			n, w, (n+w-1)/w, hard))
	}
	r.inProcess = w == 0
	procs := max(w, 1)
	loops := max(1, cfg.ClientLoops/procs)
	r.rep.Params.Workers = w
	for i := range procs {
		spec := poolSpec{
			Addr: addr, Lo: n * i / procs, Hi: n * (i + 1) / procs,
			PerAddr: cfg.PerAddr, Loops: loops,
			Concurrency:      max(1, cfg.ConnConcurrency/procs),
			ConnectRate:      cfg.ConnectRate / float64(procs),
			HandshakeTimeout: cfg.HandshakeTimeout,
			Plan:             plan,
		}
		var (
			h   clientHandle
			err error
		)
		if r.inProcess {
			h, err = startLocal(spec)
		} else {
			h, err = startRemote(spec)
		}
		if err != nil {
			return err
		}
		r.cl = append(r.cl, h)
	}
	return nil
}

// stopClients closes every socket and worker, keeping the final counters.
func (r *runner) stopClients() {
	for _, c := range r.cl {
		st := c.close()
		r.absorbLimits(st)
	}
	r.cl = nil
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
	a.FailKinds, a.ErrCodes, a.CloseCodes = map[string]int64{}, map[string]int64{}, map[int]int64{}
	for _, c := range r.cl {
		st := c.snapshot()
		r.absorbLimits(st)
		a.Target += st.Target
		a.Dialed += st.Dialed
		a.Handshaked += st.Handshaked
		a.Subscribed += st.Subscribed
		a.Open += st.Open
		a.Failed += st.Failed
		a.Frames += st.Frames
		a.Reads += st.Reads
		a.Data += st.Data
		a.Bytes += st.Bytes
		a.Gaps += st.Gaps
		a.Dups += st.Dups
		a.Acks += st.Acks
		a.Pings += st.Pings
		a.BadFrames += st.BadFrames
		a.Unexpected += st.Unexpected
		a.DialStop = a.DialStop || st.DialStop
		a.ChurnLeft += st.ChurnLeft
		a.ChurnJoined += st.ChurnJoined
		a.CPUNanos += st.CPUNanos
		a.RSS += st.RSS
		for k, v := range st.FailKinds {
			a.FailKinds[k] += v
		}
		for k, v := range st.ErrCodes {
			a.ErrCodes[k] += v
		}
		for k, v := range st.CloseCodes {
			a.CloseCodes[k] += v
		}
		mergeSparse(st.Lat, r.latCum, r.latWin, r.latSec)
		mergeSparse(st.Conn, r.connWin)
	}
	if r.inProcess {
		// The client shares this process with the publisher.
		a.CPUNanos = selfCPU()
		a.RSS = rssOf(0)
	}
	return a
}

// mark is a point-in-time reading of every counter, for deltas.
type mark struct {
	t        time.Time
	gwCPU    time.Duration
	redisCPU time.Duration
	harness  time.Duration
	cl       poolStats
	gs       *gwStats
	sent     [2]int64
	recv     [2]int64
	pubErr   int64
	gwRSS    int64
	gwWrites int64
	machine  time.Duration // CPU used by every process of the machine
	steal    time.Duration
}

func (r *runner) mark() mark {
	m := mark{t: time.Now(), cl: r.poll()}
	m.machine, m.steal = machineCPU()
	if r.gwPid > 0 {
		m.gwCPU, _ = cpuOf(r.gwPid)
		m.gwRSS = rssOf(r.gwPid)
		m.gwWrites = writeSyscalls(r.gwPid)
	}
	if r.redisPid > 0 {
		m.redisCPU, _ = cpuOf(r.redisPid)
	}
	m.harness = time.Duration(selfCPU())
	if gs, err := fetchStats(r.gwAddr); err == nil {
		m.gs = gs
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

// clientCPU is the client side's CPU between two marks: the workers', or
// this whole process when the client runs in it.
func clientCPU(a, b mark) time.Duration { return time.Duration(b.cl.CPUNanos - a.cl.CPUNanos) }

func (r *runner) cost(a, b mark, frames int64) *Cost {
	s := b.t.Sub(a.t).Seconds()
	gw := (b.gwCPU - a.gwCPU).Seconds()
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
	if r.gwPid > 0 {
		c.GwCPUSeconds = round3(gw)
		c.GwCPUPercent = perUnit(100*gw, s)
		c.GwCPUPerFrameUS = perUnit(gw*1e6, float64(frames))
		c.GwWriteSyscalls = b.gwWrites - a.gwWrites
		c.GwFramesPerWrite = perUnit(float64(frames), float64(c.GwWriteSyscalls))
	}
	c.ClientCPUPerFrameUS = perUnit(cl*1e6, float64(frames))
	c.ClientFramesPerRead = perUnit(float64(b.cl.Data-a.cl.Data), float64(b.cl.Reads-a.cl.Reads))
	return c
}

// noise is the machine's CPU use between two marks, ours and others'.
func (r *runner) noise(a, b mark) *Noise {
	s := b.t.Sub(a.t).Seconds()
	ours := (b.gwCPU - a.gwCPU) + clientCPU(a, b) + (b.redisCPU - a.redisCPU)
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
	if r.gwPid > 0 {
		s.gwCPU, _ = cpuOf(r.gwPid)
	}
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
		GwCPUPercent: round3(100 * (s.gwCPU - p.gwCPU).Seconds() / dt),
		ClCPUPercent: round3(100 * float64(s.clCPU-p.clCPU) / 1e9 / dt),
		OtherCPU:     round3(100 * max((s.machine-p.machine)-(s.ours-p.ours), 0).Seconds() / dt),
	}
	if r.gwPid > 0 {
		smp.GwRSS = rssOf(r.gwPid)
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
func (r *runner) connectPhase(plan subPlan, addr string, n int) (*ConnectResult, error) {
	mem := &Memory{}
	if r.gwPid > 0 {
		mem.GatewayRSSBefore = rssOf(r.gwPid)
		if lim := nofileOf(r.gwPid); lim > 0 {
			r.rep.Gateway.Nofile = lim
			if lim < int64(n)+64 {
				r.addLimit(fmt.Sprintf("the gateway's open-file limit is %d, below %d sockets: it cannot accept them all (raise its hard limit)", lim, n))
			}
		}
	}
	r.connWin.Reset()
	m0 := r.mark()
	if err := r.startClients(plan, addr, n); err != nil {
		return nil, err
	}
	r.logf("connecting %d sockets to %s (%d client processes)...", n, addr, max(len(r.cl), 1))
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
	if r.gwPid > 0 {
		res.GwCPUPerConnectUS = perUnit((m1.gwCPU-m0.gwCPU).Seconds()*1e6, float64(a.Subscribed))
	}
	res.ClientCPUPerConnectUS = perUnit(clientCPU(m0, m1).Seconds()*1e6, float64(a.Subscribed))
	if a.Subscribed+a.Failed < int64(n) {
		r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("connect phase ended with %d of %d sockets settled", a.Subscribed+a.Failed, n))
	}
	r.rep.Connect = res
	// Let the gateway settle before reading its memory: no GC is
	// forced, this is the resident set a user would see.
	sleepCtx(r.ctx, r.cfg.Settle)
	if r.gwPid > 0 {
		mem.GatewayRSSConnected = rssOf(r.gwPid)
		mem.PerSocketBytes = perUnit(float64(mem.GatewayRSSConnected-mem.GatewayRSSBefore), float64(a.Subscribed))
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
	r.latWin.Reset()
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
	want := m0.cl.Data + expected(m0, mp)
	var last int64 = -1
	lastChange := time.Now()
	err = r.wait(phase+"/drain", 10*time.Second, func(a poolStats) bool {
		if a.Data != last {
			last, lastChange = a.Data, time.Now()
		}
		return a.Data >= want || time.Since(lastChange) > time.Second
	})
	m1 = r.mark()
	return m0, m1, pubSecs, err
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
		NofileSoft: soft, NofileHard: hard, EphemeralPorts: ephemeralPorts(), LoadAvg: loadAvg(),
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

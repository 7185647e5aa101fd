package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// The gateways under test. One run drives one or several: started here
// (-gateways K, all on the same Redis), or running ones (-addr a,b -pid
// p1,p2, or one load balancer -addr with the gateways behind it as -pid
// and -backends). Every figure that reads a gateway (CPU, RSS, switches,
// system calls, /stats) is summed over them, and reported per gateway as
// well when there are several.

// gwTarget is one gateway under test. Only the runner's goroutine uses it.
type gwTarget struct {
	addr  string // its own listener (WebSocket, /health, /stats); "" when only reachable through a balancer
	pid   int    // 0: CPU, RSS and counters are not measured
	admin string // admin listener (pprof), "" if none
	proc  *proc  // started by the harness; nil for a running gateway
	dir   string // where the harness keeps its log
	bin   string
	args  []string // of the started process, so that it can be started again alike

	// What the earlier processes of a restarted gateway used, so that
	// every reading stays cumulative over restarts.
	pastCPU time.Duration
	pastCtr procCounters
	lastCtr procCounters // the latest reading of the current process
}

// gwReading is one gateway's counters at one instant.
type gwReading struct {
	cpu time.Duration
	rss int64
	ctr procCounters
	gs  *gwStats // nil when /stats did not answer
}

// read takes g's counters; with stats, its /stats too.
func (g *gwTarget) read(stats bool) gwReading {
	var rd gwReading
	if g.pid > 0 {
		if c, err := cpuOf(g.pid); err == nil {
			rd.cpu = c
		}
		rd.cpu += g.pastCPU
		rd.rss = rssOf(g.pid)
		if c := countersOf(g.pid); c != (procCounters{}) {
			g.lastCtr = c
		}
		rd.ctr = g.pastCtr.add(g.lastCtr)
	}
	if stats && g.addr != "" {
		if gs, err := fetchStats(g.addr); err == nil {
			rd.gs = gs
		}
	}
	return rd
}

// exited books what g's process used into pastCPU and pastCtr once it has
// exited: CPU and switches exactly (wait4's rusage covers every thread),
// the system calls as last read (/proc/<pid>/io is gone with it).
func (g *gwTarget) exited() {
	if g.proc == nil || g.proc.alive() {
		return
	}
	ps := g.proc.cmd.ProcessState
	if ps == nil {
		return
	}
	g.pastCPU += ps.UserTime() + ps.SystemTime()
	c := g.lastCtr
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		c.VolCtx, c.InvolCtx = max(ru.Nvcsw, c.VolCtx), max(ru.Nivcsw, c.InvolCtx)
	}
	g.pastCtr = g.pastCtr.add(c)
	g.lastCtr = procCounters{}
}

// start starts g's binary again with the same arguments (same port) and
// waits until it is healthy. The port may still be held for a moment by
// the process that just exited: a few tries.
func (g *gwTarget) start() error {
	var last error
	for try := range 5 {
		if try > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		p, err := startProc("gateway-"+strconv.FormatInt(time.Now().UnixNano(), 36), g.dir, g.bin, g.args...)
		if err != nil {
			return err
		}
		if last = waitHealthy(g.addr, p, 15*time.Second); last == nil {
			g.proc, g.pid = p, p.pid()
			return nil
		}
		last = fmt.Errorf("%w\n%s", last, p.logTail(10))
		p.stop(2 * time.Second)
	}
	return fmt.Errorf("gateway did not start again on %s: %w", g.addr, last)
}

// sumReadings adds up the gateways' readings; gs is nil unless every
// gateway with an address answered /stats.
func sumReadings(rs []gwReading, withAddr []bool) (cpu time.Duration, rss int64, ctr procCounters, gs *gwStats) {
	var all []*gwStats
	complete := true
	for i, rd := range rs {
		cpu += rd.cpu
		rss += rd.rss
		ctr = ctr.add(rd.ctr)
		if withAddr[i] {
			if rd.gs == nil {
				complete = false
			}
			all = append(all, rd.gs)
		}
	}
	if complete && len(all) > 0 {
		gs = sumStats(all)
	}
	return cpu, rss, ctr, gs
}

// sumStats adds up several gateways' /stats.
func sumStats(list []*gwStats) *gwStats {
	out := &gwStats{}
	out.Redis.Connected = true
	for i, s := range list {
		out.Connections += s.Connections
		out.Streams += s.Streams
		out.Received += s.Received
		out.Delivered += s.Delivered
		out.Dropped += s.Dropped
		out.Redis.Connected = out.Redis.Connected && s.Redis.Connected
		out.Redis.Reconnects += s.Redis.Reconnects
		if i == 0 {
			out.Version = s.Version
		}
	}
	return out
}

// parseAddrList splits a comma-separated list of host:port, each in
// 127.0.0.0/8 (localhost: is written 127.0.0.1:).
func parseAddrList(flagName, s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []string
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			return nil, fmt.Errorf("%s %q: empty address in the list", flagName, s)
		}
		a = strings.Replace(a, "localhost:", "127.0.0.1:", 1)
		if err := loopbackOnly(flagName, a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// parsePidList splits a comma-separated list of process ids.
func parsePidList(s string) ([]int, error) { return parsePids("-pid", s) }

// parsePids parses the comma-separated process ids of the flag name.
func parsePids(name, s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%s %q: want process ids, comma-separated", name, s)
		}
		out = append(out, n)
	}
	return out, nil
}

// runningTargets describes the running gateways of -addr, -pid, -admin and
// -backends, and the addresses the clients connect to: each gateway's own
// when -addr lists one per gateway, else the one -addr (a balancer or a
// single gateway).
func runningTargets(c *Config) (gws []*gwTarget, dial []string) {
	dial = c.Addrs
	switch {
	case len(c.Addrs) > 1:
		for i, a := range c.Addrs {
			g := &gwTarget{addr: a}
			if len(c.Pids) > 0 {
				g.pid = c.Pids[i]
			}
			gws = append(gws, g)
		}
	case len(c.Backends) > 0 || len(c.Pids) > 1:
		// A balancer: the gateways behind it are known by pid and, for
		// /stats, by their own address.
		n := max(len(c.Backends), len(c.Pids))
		for i := range n {
			g := &gwTarget{}
			if i < len(c.Backends) {
				g.addr = c.Backends[i]
			}
			if i < len(c.Pids) {
				g.pid = c.Pids[i]
			}
			gws = append(gws, g)
		}
	default:
		g := &gwTarget{addr: c.Addrs[0]}
		if len(c.Pids) == 1 {
			g.pid = c.Pids[0]
		}
		gws = append(gws, g)
	}
	if len(c.Admins) > 0 {
		for i, a := range c.Admins {
			gws[i].admin = a
		}
	}
	return gws, dial
}

// checkTargets validates the gateway flags against each other.
func (c *Config) checkTargets() error {
	var err error
	if c.Addrs, err = parseAddrList("-addr", c.Addr); err != nil {
		return err
	}
	if c.Backends, err = parseAddrList("-backends", c.BackendsFlag); err != nil {
		return err
	}
	if c.Admins, err = parseAddrList("-admin", c.Admin); err != nil {
		return err
	}
	if c.Pids, err = parsePidList(c.Pid); err != nil {
		return err
	}
	if c.BalancerPids, err = parsePids("-balancer-pid", c.BalancerPid); err != nil {
		return err
	}
	switch {
	case c.Gateways < 1:
		return errors.New("-gateways must be at least 1")
	case len(c.Pids) > 0 && len(c.Addrs) == 0:
		return errors.New("-pid needs -addr")
	case len(c.Backends) > 0 && len(c.Addrs) != 1:
		return errors.New("-backends is for one -addr (a load balancer) with the gateways behind it")
	case len(c.BalancerPids) > 0 && len(c.Addrs) != 1:
		return errors.New("-balancer-pid is for one -addr (a load balancer)")
	case len(c.Addrs) > 0 && (c.Gateway != "" || c.Compare != "" || c.Gateways > 1):
		return errors.New("-addr uses running gateways: not with -gateway, -gateways or -compare")
	case len(c.Addrs) > 1 && len(c.Pids) > 0 && len(c.Pids) != len(c.Addrs):
		return fmt.Errorf("-addr lists %d gateways but -pid %d: one pid per address, in the same order", len(c.Addrs), len(c.Pids))
	case len(c.Backends) > 0 && len(c.Pids) > 0 && len(c.Pids) != len(c.Backends):
		return fmt.Errorf("-backends lists %d gateways but -pid %d: one pid per backend, in the same order", len(c.Backends), len(c.Pids))
	case len(c.Admins) > max(len(c.Addrs), len(c.Backends), len(c.Pids), c.Gateways):
		return errors.New("-admin lists more addresses than there are gateways")
	}
	return nil
}

// gatewayCount is how many gateways the run measures.
func (c *Config) gatewayCount() int {
	switch {
	case len(c.Addrs) > 1:
		return len(c.Addrs)
	case len(c.Addrs) == 1:
		return max(1, len(c.Backends), len(c.Pids))
	}
	return c.Gateways
}

// setupGateways starts cfg.Gateways gateways of bin, or describes the
// running ones of -addr, and checks that each answers /stats.
func (r *runner) setupGateways(e *env, bin string) error {
	cfg, rep := r.cfg, r.rep
	if len(cfg.Addrs) > 0 {
		r.gws, r.dial = runningTargets(cfg)
		if !r.measured() {
			rep.Notes = append(rep.Notes, "no -pid: the gateway's CPU, RSS, context switches and system calls are not measured")
		}
	} else {
		for i := range cfg.Gateways {
			name := "gateway"
			if cfg.Gateways > 1 {
				name = "gateway-" + strconv.Itoa(i+1)
			}
			p, addr, admin, err := startGateway(gwStart{bin: bin, dir: e.dir, name: name, redisAddr: e.redisAddr,
				eventLoops: cfg.EventLoops, extra: append(cfg.durableGatewayArgs(), strings.Fields(cfg.GatewayArgs)...),
				ownPacing: cfg.Scenario == "storm"})
			if err != nil {
				return err
			}
			r.gws = append(r.gws, &gwTarget{addr: addr, pid: p.pid(), admin: admin, proc: p, dir: e.dir, bin: bin, args: p.cmd.Args[1:]})
			r.dial = append(r.dial, addr)
		}
	}
	for _, g := range r.gws {
		if r.adminAddr == "" {
			r.adminAddr = g.admin
		}
		info := GatewayInfo{Pid: g.pid, Addr: g.addr, Admin: g.admin, Redis: e.redisAddr, RedisOwned: e.redisOwned}
		if g.proc != nil {
			info.Binary, info.Started, info.Args = bin, true, g.args
		}
		rep.Gateways = append(rep.Gateways, info)
	}
	if len(r.dial) > 1 {
		r.gwLatWin = make([]*hdr.Histogram, len(r.dial))
		for i := range r.gwLatWin {
			r.gwLatWin[i] = newHist()
		}
	}
	st, err := r.stats()
	if err != nil {
		return fmt.Errorf("gateway /stats: %w", err)
	}
	for i := range rep.Gateways {
		rep.Gateways[i].Version = st.Version
	}
	rep.Gateway = rep.Gateways[0]
	if len(rep.Gateways) == 1 {
		rep.Gateways = nil
	} else {
		rep.Gateway.Addr = strings.Join(r.dial, ",")
	}
	return nil
}

// stopGateways stops the gateways the harness started, saying whether
// one had exited by itself or logged an error.
func (r *runner) stopGateways() error {
	var err error
	for _, g := range r.gws {
		if g.proc == nil {
			continue
		}
		if !g.proc.alive() {
			err = errors.Join(err, fmt.Errorf("the gateway on %s exited during the run:\n%s", g.addr, g.proc.logTail(20)))
		} else if tail := g.proc.logTail(5); strings.Contains(tail, "level=ERROR") {
			r.rep.Notes = append(r.rep.Notes, "gateway log: "+tail)
		}
		g.proc.stop(15 * time.Second)
	}
	return err
}

// GatewayFigures is one gateway's share of a run that drives several.
// Sockets, frames and latency are its clients' when they connect to it
// directly; behind a balancer they come from its /stats (connections,
// messages_delivered) and there is no latency apart.
type GatewayFigures struct {
	Addr        string `json:"addr,omitempty"`
	Pid         int    `json:"pid,omitempty"`
	Sockets     int64  `json:"sockets"`               // connected to it, at the end of the connect phase
	Connections int64  `json:"connections,omitempty"` // its /stats, at the end of the window

	GwCPUPerConnectUS float64 `json:"gateway_cpu_us_per_connect,omitempty"`
	RSSBefore         int64   `json:"rss_before,omitempty"`
	RSSConnected      int64   `json:"rss_connected,omitempty"`
	RSSEnd            int64   `json:"rss_end,omitempty"`
	RSSPerSocket      float64 `json:"rss_per_socket,omitempty"`

	// The measured window (delivery, or the idle hold).
	Received uint64   `json:"messages_received,omitempty"`
	Dropped  uint64   `json:"messages_dropped,omitempty"`
	Cost     *Cost    `json:"cost,omitempty"` // its CPU, per frame, switches and system calls per message
	Latency  *Latency `json:"latency,omitempty"`
	Gaps     int64    `json:"gaps,omitempty"`
}

// gatewayConnect records each gateway's connect figures, given the marks
// around the connect phase and one once settled.
func (r *runner) gatewayConnect(m0, m1, settled mark) {
	if len(r.gws) < 2 {
		return
	}
	figs := make([]GatewayFigures, len(r.gws))
	for g, gw := range r.gws {
		f := &figs[g]
		f.Addr, f.Pid = gw.addr, gw.pid
		switch {
		case m1.cl.PerGw != nil:
			f.Sockets = m1.cl.PerGw[g].Subscribed
		case settled.gw[g].gs != nil:
			f.Sockets = settled.gw[g].gs.Connections
		}
		if gw.pid > 0 {
			f.RSSBefore, f.RSSConnected = m0.gw[g].rss, settled.gw[g].rss
			f.RSSPerSocket = perUnit(float64(f.RSSConnected-f.RSSBefore), float64(f.Sockets))
			f.GwCPUPerConnectUS = perUnit((m1.gw[g].cpu-m0.gw[g].cpu).Seconds()*1e6, float64(f.Sockets))
		}
	}
	r.rep.PerGateway = figs
}

// gatewayWindow records each gateway's figures over a measured window.
func (r *runner) gatewayWindow(m0, m1 mark) {
	if len(r.gws) < 2 {
		return
	}
	if r.rep.PerGateway == nil {
		r.rep.PerGateway = make([]GatewayFigures, len(r.gws))
	}
	s := m1.t.Sub(m0.t).Seconds()
	for g, gw := range r.gws {
		f := &r.rep.PerGateway[g]
		f.Addr, f.Pid = gw.addr, gw.pid
		a, b := m0.gw[g], m1.gw[g]
		var frames, msgs int64
		if a.gs != nil && b.gs != nil {
			f.Connections = b.gs.Connections
			f.Received, f.Dropped = b.gs.Received-a.gs.Received, b.gs.Dropped-a.gs.Dropped
			frames, msgs = int64(b.gs.Delivered-a.gs.Delivered), int64(f.Received)
		}
		if m1.cl.PerGw != nil {
			frames = m1.cl.PerGw[g].Data - m0.cl.PerGw[g].Data
			f.Gaps = m1.cl.PerGw[g].Gaps - m0.cl.PerGw[g].Gaps
			if lat := summarize(r.gwLatWin[g]); lat.Count > 0 {
				f.Latency = &lat
			}
		}
		if gw.pid > 0 {
			c := &Cost{Seconds: round3(s), Frames: frames}
			c.gatewayCost(b.cpu-a.cpu, b.ctr.sub(a.ctr), s, frames, msgs)
			f.Cost = c
			f.RSSEnd = b.rss
		}
	}
}

// perGatewayLines is the per-gateway part of the summary.
func perGatewayLines(figs []GatewayFigures) []string {
	var out []string
	for i, f := range figs {
		line := fmt.Sprintf("gateway %d (%s pid %d): %d sockets", i+1, f.Addr, f.Pid, f.Sockets)
		if f.RSSConnected > 0 {
			line += fmt.Sprintf(", RSS %s → %s (%s per socket), %.1f µs CPU per connect",
				fmtBytes(float64(f.RSSBefore)), fmtBytes(float64(f.RSSConnected)), fmtBytes(f.RSSPerSocket), f.GwCPUPerConnectUS)
		}
		if c := f.Cost; c != nil {
			line += fmt.Sprintf("; window: %.1f%% CPU, %d frames = %.3f µs per frame, %.2f frames per write; per message %.2f+%.2f switches, %.2f/%.2f read/write syscalls",
				c.GwCPUPercent, c.Frames, c.GwCPUPerFrameUS, c.GwFramesPerWrite, c.GwVolCtxPerMsg, c.GwInvolCtxPerMsg, c.GwSyscrPerMsg, c.GwSyscwPerMsg)
		}
		if l := f.Latency; l != nil {
			line += fmt.Sprintf("; latency p50 %s p99 %s p99.9 %s", fmtUS(l.P50), fmtUS(l.P99), fmtUS(l.P999))
		}
		if f.Dropped > 0 || f.Gaps > 0 {
			line += fmt.Sprintf("; gaps %d, dropped %d", f.Gaps, f.Dropped)
		}
		out = append(out, line)
	}
	return out
}

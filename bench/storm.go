package main

import (
	"context"
	"errors"
	"fmt"
	"html"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// -scenario storm: N sockets connected and subscribed (each to one of C
// channels), a publisher at R messages per second over the channels, and
// then the event: the gateway restarts (restart: SIGTERM, it paces its
// 1001 closes and exits, and the harness starts it again on the same
// port; kill: SIGKILL and the same) or every socket drops at once (drop:
// the clients reset their connections, as a network failure would). The
// clients come back as browsers do: the browser client's jittered
// exponential backoff, then upgrade and subscribe again. Reported: the
// time until all are back, refusals (503 with Retry-After when the
// gateway paces accepts), the gateway's CPU and peak RSS, and what the
// clients lost while down.

// stormAfter is how long the publisher goes on once every socket is back,
// so that a frame lost at the very end shows as a gap at the next one.
const stormAfter = time.Second

// StormResult is the storm scenario's outcome. Times are seconds from the
// event (the signal, or the drop).
type StormResult struct {
	Mode        string  `json:"mode"` // restart (SIGTERM), kill (SIGKILL) or drop
	Sockets     int64   `json:"sockets"`
	Channels    int     `json:"channels"`
	Backoff     backoff `json:"client_backoff"`
	HoldSeconds float64 `json:"hold_s"` // publishing before the event

	GatewayExitSeconds  float64 `json:"gateway_exit_s,omitempty"`  // the signal to the process's exit
	GatewayStartSeconds float64 `json:"gateway_start_s,omitempty"` // its exit to /health 200 again

	AllBack        bool    `json:"all_back"`
	AllBackSeconds float64 `json:"all_back_s"` // to the last socket subscribed again
	NotBack        int64   `json:"not_back"`   // at the end of the budget (-duration)
	// Back is when each socket was subscribed again, from the event;
	// Outage how long each was down (its connection lost to subscribed).
	Back   Latency `json:"back"`
	Outage Latency `json:"outage"`

	Lost        int64            `json:"connections_lost"` // open connections that ended
	Reconnected int64            `json:"reconnected"`      // subscribed again
	Attempts    int64            `json:"attempts"`         // dials after the event
	Failed      int64            `json:"failed_attempts"`  // attempts that did not reach the subscribe ack
	FailKinds   map[string]int64 `json:"failed_kinds,omitempty"`
	Refused503  int64            `json:"refused_503"`
	RetryAfter  int64            `json:"refused_with_retry_after"`
	MaxAttempt  int64            `json:"max_attempts_of_one_socket"` // in a row, over the whole run
	CloseCodes  map[int]int64    `json:"close_codes,omitempty"`      // close frames the clients received

	GwCPUSeconds        float64 `json:"gateway_cpu_s"` // event to all back, old and new process
	GwCPUPercent        float64 `json:"gateway_cpu_percent"`
	GwCPUPerReconnectUS float64 `json:"gateway_cpu_us_per_reconnect"`
	GwRSSBefore         int64   `json:"gateway_rss_before"`
	GwRSSPeak           int64   `json:"gateway_rss_peak"` // sampled every 100 ms from the event until all were back
	GwRSSEnd            int64   `json:"gateway_rss_end"`
	GwHWM               int64   `json:"gateway_vmhwm,omitempty"` // the gateway process's own peak (VmHWM) at the end

	// Messages: published from the hold to stormAfter after all were
	// back; expected is what the sockets would have received had none
	// been down, so expected - delivered was lost while down.
	Published     int64   `json:"published"`
	NoReceiver    int64   `json:"published_while_no_gateway_subscribed"`
	PublishErrors int64   `json:"publish_errors"`
	Expected      int64   `json:"expected"`
	Delivered     int64   `json:"delivered"`
	LostWhileDown int64   `json:"lost_while_down"`
	GapsSeen      int64   `json:"gaps_seen"` // seq jumps the clients saw (drop: the same gateway's seq goes on)
	SeqResets     int64   `json:"seq_resets"`
	Latency       Latency `json:"latency"` // of every delivery from the hold on

	BackHistogram []HistBar `json:"back_histogram,omitempty"` // when the sockets were back, from the event
}

// stormExpected is the deliveries of messages 0..m-1, message i on
// channel i mod c, to n sockets of which socket j is on channel j mod c.
func stormExpected(m int64, n, c int) int64 {
	if m <= 0 || n <= 0 {
		return 0
	}
	c = max(c, 1)
	on := func(ch int) int64 { // sockets on channel ch
		k := int64(n / c)
		if ch < n%c {
			k++
		}
		return k
	}
	full, rem := m/int64(c), int(m%int64(c))
	exp := full * int64(n)
	for ch := range rem {
		exp += on(ch)
	}
	return exp
}

func (r *runner) storm() error {
	cfg := r.cfg
	restart := cfg.StormMode != "drop"
	if restart && (len(r.gws) != 1 || r.gws[0].proc == nil) {
		return fmt.Errorf("storm -storm-mode %s restarts the gateway: it must be one the harness starts (no -addr, -gateways 1)", cfg.StormMode)
	}
	bo := browserBackoff
	r.clientBase = poolSpec{Reconnect: &bo, KeepSeq: !restart}
	plan := subPlan{Prefix: cfg.Prefix, Channels: cfg.Channels}
	if _, err := r.connectPhase(plan, cfg.N); err != nil {
		return err
	}
	if err := r.ensurePublisher(); err != nil {
		return err
	}
	res := &StormResult{Mode: cfg.StormMode, Channels: cfg.Channels, Backoff: bo, HoldSeconds: cfg.StormHold.Seconds()}
	r.rep.Storm = res
	if cfg.Channels != 1 && cfg.Channels < cfg.N {
		r.logf("storm: %d sockets on %d channels, %.0f messages/s", cfg.N, cfg.Channels, cfg.Rate)
	}

	// The publisher runs from the hold until stopped: message i on
	// channel i mod C, as the sockets are spread.
	c := int64(max(cfg.Channels, 1))
	pick := func(i int64) (string, int) { return cfg.Prefix + ":" + strconv.FormatInt(i%c, 10), 0 }
	pubCtx, stopPub := context.WithCancel(r.ctx)
	defer stopPub()
	pubDone := make(chan struct{})
	r.resetWindow()
	m0 := r.mark()
	go func() {
		defer close(pubDone)
		// Bounded: the hold, the budget, a gateway's slow exit and the
		// tail; stopped earlier once everyone is back.
		r.pub.run(pubCtx, cfg.Rate, cfg.StormHold+cfg.Duration+3*time.Minute, pick)
	}()
	if err := r.wait("steady", cfg.StormHold, nil); err != nil {
		return err
	}

	mE := r.mark()
	target := mE.cl.Open
	res.Sockets, res.GwRSSBefore, res.GwRSSPeak = target, mE.gwRSS, mE.gwRSS
	track := func() {
		var gm mark
		gm.readGateways(r.gws, false)
		res.GwRSSPeak = max(res.GwRSSPeak, gm.gwRSS)
	}
	at := time.Now()
	for _, cl := range r.cl {
		cl.storm(at.UnixNano(), !restart)
	}
	if restart {
		if err := r.restartGateway(r.gws[0], res, at, track); err != nil {
			return err
		}
	}
	r.logf("storm: waiting for %d sockets to come back", target)
	// Back: every socket lost its connection (the workers report every
	// 250 ms, so the first polls still see them open) and is open again.
	err := r.wait("storm", cfg.Duration, func(a poolStats) bool {
		track()
		return a.LostOpen-mE.cl.LostOpen >= target && a.Open >= target
	})
	mB := r.mark()
	track()
	res.fillBack(mE, mB, target, at)
	res.Back, res.Outage = summarize(r.back), summarize(r.outage)
	res.BackHistogram = logBars(r.back, 20)
	if r.measured() {
		cpu := (mB.gwCPU - mE.gwCPU).Seconds()
		res.GwCPUSeconds = round3(cpu)
		res.GwCPUPercent = perUnit(100*cpu, mB.t.Sub(mE.t).Seconds())
		res.GwCPUPerReconnectUS = perUnit(cpu*1e6, float64(res.Reconnected))
	}
	r.rep.Noise = r.noise(mE, mB)
	if err != nil {
		return err
	}

	// The tail, then the accounting of every message.
	if err := r.wait("after", stormAfter, nil); err != nil {
		return err
	}
	stopPub()
	<-pubDone
	sent, pubErr := r.pub.published(), r.pub.errors.Load()
	res.Published, res.PublishErrors = sent, pubErr
	res.Expected = stormExpected(sent+pubErr, cfg.N, cfg.Channels)
	_ = r.drain("after", m0.cl.Data+res.Expected)
	m1 := r.mark()
	res.Delivered = m1.cl.Data - m0.cl.Data
	res.LostWhileDown = max(res.Expected-res.Delivered, 0)
	res.NoReceiver = (m1.sent[0] - m1.recv[0]) - (m0.sent[0] - m0.recv[0])
	res.GapsSeen = m1.cl.Gaps - m0.cl.Gaps
	res.SeqResets = m1.cl.SeqResets - m0.cl.SeqResets
	res.Latency = summarize(r.latWin)
	res.GwRSSEnd = m1.gwRSS
	if len(r.gws) == 1 && r.gws[0].pid > 0 {
		if b, err := readProc(r.gws[0].pid, "status"); err == nil {
			res.GwHWM = statusNumber(b, "VmHWM:") * 1024
		}
	}
	if r.rep.Memory != nil {
		r.rep.Memory.GatewayRSSEnd = m1.gwRSS
	}
	r.rep.Histogram = logBars(r.latWin, 20)
	if sent+pubErr > 0 && res.Delivered > res.Expected {
		r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("storm: %d deliveries more than expected (duplicates %d)", res.Delivered-res.Expected, m1.cl.Dups-m0.cl.Dups))
	}
	return nil
}

// restartGateway sends g the storm's signal, waits for it to exit
// (sampling as it drains) and starts it again on the same port.
func (r *runner) restartGateway(g *gwTarget, res *StormResult, at time.Time, track func()) error {
	sig, name := syscall.SIGTERM, "SIGTERM"
	if r.cfg.StormMode == "kill" {
		sig, name = syscall.SIGKILL, "SIGKILL"
	}
	r.logf("storm: %s to the gateway (pid %d)", name, g.pid)
	if err := g.proc.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("storm: signalling the gateway: %w", err)
	}
	// Its own SHUTDOWN_TIMEOUT bounds the drain; two minutes bound ours.
	if err := r.wait("shutdown", 2*time.Minute, func(poolStats) bool {
		track()
		return !g.proc.alive()
	}); err != nil {
		return err
	}
	if g.proc.alive() {
		r.rep.Notes = append(r.rep.Notes, "storm: the gateway did not exit within 2 minutes of SIGTERM: killed")
		g.proc.stop(time.Second)
	}
	g.exited()
	res.GatewayExitSeconds = round3(time.Since(at).Seconds())
	t := time.Now()
	if err := g.start(); err != nil {
		return errors.Join(errors.New("storm: starting the gateway again"), err)
	}
	res.GatewayStartSeconds = round3(time.Since(t).Seconds())
	r.logf("storm: the gateway exited after %.2fs and was up again %.2fs later (pid %d)", res.GatewayExitSeconds, res.GatewayStartSeconds, g.pid)
	return nil
}

// fillBack fills the reconnect figures between the event (mE) and the
// end of the wait (mB).
func (s *StormResult) fillBack(mE, mB mark, target int64, at time.Time) {
	a, b := mE.cl, mB.cl
	s.Lost = b.LostOpen - a.LostOpen
	s.AllBack = b.Open >= target && s.Lost >= target
	s.NotBack = max(target-b.Open, 0)
	if last := b.Peak.LastBack; last > at.UnixNano() {
		s.AllBackSeconds = round3(float64(last-at.UnixNano()) / 1e9)
	}
	s.Reconnected = b.ChurnJoined - a.ChurnJoined
	s.Attempts = b.Dialed - a.Dialed
	s.FailKinds = diffCounts(a.RetryKinds, b.RetryKinds)
	for _, v := range s.FailKinds {
		s.Failed += v
	}
	s.Refused503, s.RetryAfter = b.Refused503-a.Refused503, b.RetryAfter-a.RetryAfter
	s.MaxAttempt = b.Peak.MaxAttempt
	s.CloseCodes = diffCounts(a.CloseCodes, b.CloseCodes)
}

// lines is the storm part of the summary.
func (s *StormResult) lines() []string {
	var out []string
	add := func(f string, a ...any) { out = append(out, fmt.Sprintf(f, a...)) }
	how := "every socket dropped at once (reset by the clients)"
	switch s.Mode {
	case "restart":
		how = fmt.Sprintf("SIGTERM to the gateway: it closed its sockets (1001) and exited in %.2fs, was up again %.2fs later", s.GatewayExitSeconds, s.GatewayStartSeconds)
	case "kill":
		how = fmt.Sprintf("SIGKILL to the gateway: gone at once, up again %.2fs later", s.GatewayStartSeconds)
	}
	add("storm %s: %d sockets on %d channels; %s", s.Mode, s.Sockets, s.Channels, how)
	back := fmt.Sprintf("all back %.2fs after the event", s.AllBackSeconds)
	switch {
	case s.AllBack:
	case s.Lost < s.Sockets:
		back = fmt.Sprintf("NOT ALL BACK: %d of %d sockets never lost their connection within the budget (-duration); %d missing", s.Sockets-s.Lost, s.Sockets, s.NotBack)
	default:
		back = fmt.Sprintf("NOT ALL BACK: %d of %d missing at the end of the budget (-duration)", s.NotBack, s.Sockets)
	}
	add("storm: %s; back after p50 %s p90 %s p99 %s max %s; each socket down p50 %s p99 %s max %s (browser backoff %s..%s ×%g, jitter %g)",
		back, fmtUS(s.Back.P50), fmtUS(s.Back.P90), fmtUS(s.Back.P99), fmtUS(s.Back.Max),
		fmtUS(s.Outage.P50), fmtUS(s.Outage.P99), fmtUS(s.Outage.Max), s.Backoff.Initial, s.Backoff.Max, s.Backoff.Factor, s.Backoff.Jitter)
	add("storm: %d connections lost, %d reconnected in %d attempts; %d failed (%s); refused 503: %d (%d with Retry-After); most attempts in a row by one socket (whole run) %d; close codes %s",
		s.Lost, s.Reconnected, s.Attempts, s.Failed, fmtKinds(s.FailKinds), s.Refused503, s.RetryAfter, s.MaxAttempt, fmtCodes(s.CloseCodes))
	add("storm cost: gateway %.2fs CPU (%.0f%% of a core; deliveries included) = %.1f µs per reconnect; RSS %s before, peak %s, %s at the end (the process's own peak VmHWM %s)",
		s.GwCPUSeconds, s.GwCPUPercent, s.GwCPUPerReconnectUS, fmtBytes(float64(s.GwRSSBefore)), fmtBytes(float64(s.GwRSSPeak)),
		fmtBytes(float64(s.GwRSSEnd)), fmtBytes(float64(s.GwHWM)))
	add("storm messages: published %d (%d while no gateway was subscribed, %d errors); expected %d deliveries, delivered %d: %d lost while down; gaps seen by the clients %d, streams restarted %d; latency p50 %s p99 %s max %s",
		s.Published, s.NoReceiver, s.PublishErrors, s.Expected, s.Delivered, s.LostWhileDown, s.GapsSeen, s.SeqResets,
		fmtUS(s.Latency.P50), fmtUS(s.Latency.P99), fmtUS(s.Latency.Max))
	return out
}

func fmtCodes(m map[int]int64) string {
	s := make(map[string]int64, len(m))
	for k, v := range m {
		s[strconv.Itoa(k)] = v
	}
	return fmtKinds(s)
}

// stormHTML is the storm's table and when the sockets were back.
func stormHTML(s *StormResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<h2>Storm: %s, %d sockets</h2>\n<table><tr><th>all back</th><th>back p50</th><th>p90</th><th>p99</th><th>max</th><th>attempts</th><th>failed</th><th>503 (Retry-After)</th><th>gateway CPU</th><th>RSS before / peak</th><th>lost while down</th><th>gaps seen</th></tr>\n", html.EscapeString(s.Mode), s.Sockets)
	allBack := fmt.Sprintf("%.2fs", s.AllBackSeconds)
	if !s.AllBack {
		allBack = fmt.Sprintf("no: %d missing", s.NotBack)
	}
	fmt.Fprintf(&b, "<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%d</td><td>%d</td><td>%d (%d)</td><td>%.2fs</td><td>%s / %s</td><td>%d of %d</td><td>%d</td></tr>\n</table>\n",
		allBack, fmtUS(s.Back.P50), fmtUS(s.Back.P90), fmtUS(s.Back.P99), fmtUS(s.Back.Max), s.Attempts, s.Failed, s.Refused503, s.RetryAfter,
		s.GwCPUSeconds, fmtBytes(float64(s.GwRSSBefore)), fmtBytes(float64(s.GwRSSPeak)), s.LostWhileDown, s.Expected, s.GapsSeen)
	if len(s.BackHistogram) > 0 {
		b.WriteString("<h2>Storm: when each socket was subscribed again, from the event</h2>\n")
		b.WriteString(histSVG(s.BackHistogram, &s.Back))
	}
	return b.String()
}

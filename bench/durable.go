package main

import (
	"fmt"
	"html"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// -durable (fanout, spread) measures durable channels (Redis Streams,
// docs/DURABILITY.md) against pub/sub in one run: -rounds pairs of
// windows, pub/sub then durable, with the same sockets, rate, payload and
// client, against the same gateway process, so that the drift of a shared
// machine hits both kinds alike. Each window connects its own sockets
// (pub/sub channels <prefix>:<i>, durable ones <prefix>:durable:<i>),
// publishes for -duration after a short warm-up, and closes them. The
// gateway is started with -stream-channels '<prefix>:durable:*'; the
// durable publisher sends XADD stream:<channel> MAXLEN ~ 100000 * data
// <payload> with the same timestamped payload, so that the client's
// latency is measured alike. A durable subscribe completes with its
// "replayed" frame, after which the live entries come.

// durableTarget is the ratio durable ÷ pub/sub that passes, for gateway
// CPU per delivered frame and for p99.
const durableTarget = 1.3

// durableWarm is the publishing before each measured window: the durable
// readers block in XREAD and the caches are warm.
const durableWarm = time.Second

// durablePrefix is the channel prefix of the durable channels.
func (c *Config) durablePrefix() string { return c.Prefix + ":durable" }

// streamKeyPrefix is the started gateway's STREAM_KEY_PREFIX: its
// default, or the -stream-key-prefix of -gateway-args.
func (c *Config) streamKeyPrefix() string {
	args := strings.Fields(c.GatewayArgs)
	prefix := "stream:"
	for i, a := range args {
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name != "stream-key-prefix" {
			continue
		}
		switch {
		case hasVal:
			prefix = val
		case i+1 < len(args):
			prefix = args[i+1]
		}
	}
	return prefix
}

// gatewayArgsSet reports whether -gateway-args sets the flag name.
func (c *Config) gatewayArgsSet(name string) bool {
	for _, a := range strings.Fields(c.GatewayArgs) {
		n, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if n == name && strings.HasPrefix(a, "-") {
			return true
		}
	}
	return false
}

// durableGatewayArgs are the flags the harness gives a gateway it starts
// for durable channels, before -gateway-args (which win).
func (c *Config) durableGatewayArgs() []string {
	if !c.Durable && c.Scenario != "replay" {
		return nil
	}
	args := []string{"-stream-channels", c.durablePrefix() + ":*"}
	if c.Scenario == "replay" && !c.gatewayArgsSet("max-replay") {
		args = append(args, "-max-replay", strconv.Itoa(min(max(c.ReplayEntries, 1000), 1000000)))
	}
	return args
}

// DurableWindow is one measured window of -durable.
type DurableWindow struct {
	Round           int     `json:"round"`
	Kind            string  `json:"kind"` // pubsub or durable
	Seconds         float64 `json:"seconds"`
	PublishedPerSec float64 `json:"published_per_s"`
	Expected        int64   `json:"expected"`
	Delivered       int64   `json:"delivered"`
	Gaps            int64   `json:"gaps"`
	Missing         int64   `json:"missing"`
	PublishErrors   int64   `json:"publish_errors"`
	GwDropped       uint64  `json:"gateway_dropped"`
	Latency         Latency `json:"latency"`
	GwCPUSeconds    float64 `json:"gateway_cpu_s"`
	GwCPUPercent    float64 `json:"gateway_cpu_percent"`
	GwCPUPerFrameUS float64 `json:"gateway_cpu_us_per_frame"`
	RedisCPUSeconds float64 `json:"redis_cpu_s"`
	OtherCPUPercent float64 `json:"other_cpu_percent"`
	ConnectPerSec   float64 `json:"connects_per_s"`
}

// DurableSide is one kind's windows pooled.
type DurableSide struct {
	Frames          int64   `json:"frames"`
	GwCPUSeconds    float64 `json:"gateway_cpu_s"`
	GwCPUPerFrameUS float64 `json:"gateway_cpu_us_per_frame"`
	RedisCPUPerMsg  float64 `json:"redis_cpu_us_per_message"` // per message published
	Lost            int64   `json:"lost"`                     // gaps + missing
	Latency         Latency `json:"latency"`
}

// DurableResult is -durable's outcome: each kind pooled over its
// windows, and the ratios durable ÷ pub/sub.
type DurableResult struct {
	Rounds    int             `json:"rounds"`
	Channels  string          `json:"channels"` // the durable glob
	StreamKey string          `json:"stream_key_prefix"`
	Windows   []DurableWindow `json:"windows"` // pubsub, durable, pubsub, durable, ...
	PubSub    DurableSide     `json:"pubsub"`
	Durable   DurableSide     `json:"durable"`
	CPURatio  float64         `json:"cpu_ratio"` // durable ÷ pub/sub, gateway CPU per delivered frame
	P50Ratio  float64         `json:"p50_ratio"`
	P99Ratio  float64         `json:"p99_ratio"`
	P999Ratio float64         `json:"p999_ratio"`
	// Per round, durable ÷ pub/sub: how steady the ratios are.
	RoundCPURatios []float64 `json:"round_cpu_ratios"`
	RoundP99Ratios []float64 `json:"round_p99_ratios"`
	Target         float64   `json:"target"`
	Pass           bool      `json:"pass"`
	Verdict        string    `json:"verdict"`
	HistPubSub     []HistBar `json:"histogram_pubsub,omitempty"`
	HistDurable    []HistBar `json:"histogram_durable,omitempty"`
}

// judge pools the windows into the two sides (latencies are pooled by
// the caller) and sets the ratios and the verdict.
func (d *DurableResult) judge() {
	var cpu, frames, redis, msgs [2]float64
	var lost [2]int64
	d.RoundCPURatios, d.RoundP99Ratios = nil, nil
	var prev *DurableWindow
	for i := range d.Windows {
		w := &d.Windows[i]
		k := 0
		if w.Kind == "durable" {
			k = 1
		}
		cpu[k] += w.GwCPUSeconds
		frames[k] += float64(w.Delivered)
		redis[k] += w.RedisCPUSeconds
		msgs[k] += w.PublishedPerSec * w.Seconds
		lost[k] += w.Gaps + w.Missing
		if k == 1 && prev != nil && prev.Round == w.Round && prev.Kind == "pubsub" {
			d.RoundCPURatios = append(d.RoundCPURatios, ratio(w.GwCPUPerFrameUS, prev.GwCPUPerFrameUS))
			d.RoundP99Ratios = append(d.RoundP99Ratios, ratio(float64(w.Latency.P99), float64(prev.Latency.P99)))
		}
		prev = w
	}
	for k, s := range []*DurableSide{&d.PubSub, &d.Durable} {
		s.Frames = int64(frames[k])
		s.GwCPUSeconds = round3(cpu[k])
		s.GwCPUPerFrameUS = perUnit(cpu[k]*1e6, frames[k])
		s.RedisCPUPerMsg = perUnit(redis[k]*1e6, msgs[k])
		s.Lost = lost[k]
	}
	d.CPURatio = ratio(d.Durable.GwCPUPerFrameUS, d.PubSub.GwCPUPerFrameUS)
	d.P50Ratio = ratio(float64(d.Durable.Latency.P50), float64(d.PubSub.Latency.P50))
	d.P99Ratio = ratio(float64(d.Durable.Latency.P99), float64(d.PubSub.Latency.P99))
	d.P999Ratio = ratio(float64(d.Durable.Latency.P999), float64(d.PubSub.Latency.P999))
	d.Pass = false
	switch {
	case d.PubSub.Lost > 0 || d.Durable.Lost > 0:
		d.Verdict = fmt.Sprintf("LOSS: pub/sub lost %d frames, durable %d (gaps and missing): the ratios compare unequal work", d.PubSub.Lost, d.Durable.Lost)
	case d.PubSub.Frames == 0 || d.Durable.Frames == 0 || d.CPURatio == 0:
		d.Verdict = "INCONCLUSIVE: a kind delivered nothing, or its CPU was not measured"
	case d.CPURatio > d.Target || d.P99Ratio > d.Target:
		var over []string
		if d.CPURatio > d.Target {
			over = append(over, fmt.Sprintf("CPU per frame %.2fx", d.CPURatio))
		}
		if d.P99Ratio > d.Target {
			over = append(over, fmt.Sprintf("p99 %.2fx", d.P99Ratio))
		}
		d.Verdict = fmt.Sprintf("ABOVE TARGET: durable ÷ pub/sub %s > %.1fx", strings.Join(over, ", "), d.Target)
	default:
		d.Pass = true
		d.Verdict = fmt.Sprintf("PASS: durable ÷ pub/sub CPU per frame %.2fx, p99 %.2fx, both ≤ %.1fx, no loss", d.CPURatio, d.P99Ratio, d.Target)
	}
}

// durableRun runs -durable for fanout or spread.
func (r *runner) durableRun() error {
	cfg := r.cfg
	if err := r.ensurePublisher(); err != nil {
		return err
	}
	res := &DurableResult{Rounds: cfg.Rounds, Channels: cfg.durablePrefix() + ":*", StreamKey: cfg.streamKeyPrefix(), Target: durableTarget}
	r.rep.Durable = res
	pooled := [2]*hdr.Histogram{newHist(), newHist()}
	var first, last mark
	n := int64(cfg.N)
	for round := 1; round <= cfg.Rounds; round++ {
		for k, kind := range []string{"pubsub", "durable"} {
			prefix, stream := cfg.Prefix, ""
			if k == 1 {
				prefix, stream = cfg.durablePrefix(), cfg.streamKeyPrefix()
			}
			plan := subPlan{Prefix: prefix, Channels: cfg.Channels, Durable: k == 1}
			var pick target
			var expected func(m0, m mark) int64
			if cfg.Scenario == "fanout" {
				ch := prefix + ":0"
				pick = func(int64) (string, int) { return ch, 0 }
				expected = func(m0, m mark) int64 { return (m.recv[0] - m0.recv[0]) * m0.cl.Open }
			} else {
				pick = func(i int64) (string, int) { return prefix + ":" + strconv.FormatInt(i%n, 10), 0 }
				expected = func(m0, m mark) int64 { return m.recv[0] - m0.recv[0] }
			}
			name := fmt.Sprintf("%s#%d", kind, round)
			conn, err := r.connectPhase(plan, cfg.N)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			r.pub.setStream(stream)
			if _, _, _, err := r.publishUntil("warm-"+name, cfg.Rate, durableWarm, pick, expected, nil); err != nil {
				return err
			}
			r.resetWindow()
			// -profile: the first window of each kind, the durable one
			// in -profile and the pub/sub one beside it, to diff.
			var profiled chan struct{}
			if round == 1 && cfg.Profile != "" {
				profiled = r.profileWindow(durableProfilePath(cfg.Profile, kind), cfg.Duration)
			}
			m0, m1, secs, err := r.publishUntil(name, cfg.Rate, cfg.Duration, pick, expected, nil)
			if profiled != nil {
				<-profiled
			}
			if err != nil {
				return err
			}
			if round == 1 && k == 0 {
				first = m0
			}
			last = m1
			d := r.delivery(m0, m1, cfg.Rate, secs, expected(m0, m1))
			c := r.cost(m0, m1, d.Delivered)
			w := DurableWindow{
				Round: round, Kind: kind, Seconds: d.Seconds, PublishedPerSec: d.PublishedPerSec,
				Expected: d.Expected, Delivered: d.Delivered, Gaps: d.Gaps, Missing: d.Missing,
				PublishErrors: d.PublishErrors, GwDropped: d.GwDropped, Latency: summarize(r.latWin),
				GwCPUSeconds: c.GwCPUSeconds, GwCPUPercent: c.GwCPUPercent, GwCPUPerFrameUS: c.GwCPUPerFrameUS,
				RedisCPUSeconds: c.RedisCPUSeconds, OtherCPUPercent: r.noise(m0, m1).OtherCPUPercent, ConnectPerSec: conn.PerSec,
			}
			pooled[k].Merge(r.latWin)
			res.Windows = append(res.Windows, w)
			r.logf("durable %s: delivered %d of %d (gaps %d, missing %d), p50 %s p99 %s p99.9 %s, gateway %.3f µs per frame",
				name, w.Delivered, w.Expected, w.Gaps, w.Missing, fmtUS(w.Latency.P50), fmtUS(w.Latency.P99), fmtUS(w.Latency.P999), w.GwCPUPerFrameUS)
			if d.PublishErrors > 0 {
				if e, ok := r.pub.lastErr.Load().(string); ok {
					r.rep.Notes = append(r.rep.Notes, name+": publish error: "+e)
				}
			}
			r.stopClients()
		}
	}
	r.pub.setStream("")
	res.PubSub.Latency, res.Durable.Latency = summarize(pooled[0]), summarize(pooled[1])
	res.HistPubSub, res.HistDurable = logBars(pooled[0], 20), logBars(pooled[1], 20)
	res.judge()
	r.rep.Noise = r.noise(first, last)
	return nil
}

// durableProfilePath is where -profile's CPU profile of a kind's window
// goes: the path itself for durable, with ".pubsub" before the extension
// for pub/sub.
func durableProfilePath(path, kind string) string {
	if kind == "durable" {
		return path
	}
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + ".pubsub" + ext
}

// profileWindow fetches a CPU profile of the gateway over the next d into
// path; the channel is closed when it is saved (or failed).
func (r *runner) profileWindow(path string, d time.Duration) chan struct{} {
	done := make(chan struct{})
	if r.adminAddr == "" {
		r.rep.Notes = append(r.rep.Notes, "-profile: the gateway has no admin listener (-admin-addr): no profile")
		close(done)
		return done
	}
	secs := max(1, int(d.Round(time.Second)/time.Second))
	go func() {
		defer close(done)
		if err := fetchProfile(r.adminAddr, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), path, time.Duration(secs)*time.Second+30*time.Second); err != nil {
			r.logf("profile: %v", err)
			return
		}
		r.logf("CPU profile of the gateway (%ds) saved in %s", secs, path)
	}()
	return done
}

// lines is the -durable part of the summary.
func (d *DurableResult) lines() []string {
	var out []string
	add := func(f string, a ...any) { out = append(out, fmt.Sprintf(f, a...)) }
	for _, w := range d.Windows {
		add("durable round %d %-7s: delivered %d/%d (%.0f published/s) gaps %d missing %d dropped %d; p50 %s p99 %s p99.9 %s max %s; gateway %.1f%% CPU = %.3f µs per frame; redis %.2fs CPU; others %.0f%%",
			w.Round, w.Kind, w.Delivered, w.Expected, w.PublishedPerSec, w.Gaps, w.Missing, w.GwDropped,
			fmtUS(w.Latency.P50), fmtUS(w.Latency.P99), fmtUS(w.Latency.P999), fmtUS(w.Latency.Max),
			w.GwCPUPercent, w.GwCPUPerFrameUS, w.RedisCPUSeconds, w.OtherCPUPercent)
	}
	for _, s := range []struct {
		name string
		s    DurableSide
	}{{"pub/sub", d.PubSub}, {"durable", d.Durable}} {
		add("durable pooled %-7s: gateway %.3f µs CPU per delivered frame (%d frames); p50 %s p99 %s p99.9 %s; redis %.2f µs CPU per message; lost %d",
			s.name, s.s.GwCPUPerFrameUS, s.s.Frames, fmtUS(s.s.Latency.P50), fmtUS(s.s.Latency.P99), fmtUS(s.s.Latency.P999), s.s.RedisCPUPerMsg, s.s.Lost)
	}
	add("durable ÷ pub/sub: CPU per frame %.2f, p50 %.2f, p99 %.2f, p99.9 %.2f (target ≤ %.1f for CPU per frame and p99); per round CPU %s, p99 %s",
		d.CPURatio, d.P50Ratio, d.P99Ratio, d.P999Ratio, d.Target, fmtRatios(d.RoundCPURatios), fmtRatios(d.RoundP99Ratios))
	add("durable: %s", d.Verdict)
	return out
}

// durableHTML is -durable's table and the two latency histograms.
func durableHTML(d *DurableResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<h2>Durable channels vs pub/sub (%s)</h2>\n<p>%s</p>\n", html.EscapeString(d.Channels), html.EscapeString(d.Verdict))
	b.WriteString("<table><tr><th>round</th><th>kind</th><th>delivered</th><th>gaps</th><th>missing</th><th>p50</th><th>p99</th><th>p99.9</th><th>max</th><th>gw CPU</th><th>gw µs/frame</th><th>redis CPU</th><th>others' CPU</th></tr>\n")
	for _, w := range d.Windows {
		fmt.Fprintf(&b, "<tr><td>%d</td><td>%s</td><td>%d/%d</td><td>%d</td><td>%d</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%.0f%%</td><td>%.3f</td><td>%.2fs</td><td>%.0f%%</td></tr>\n",
			w.Round, w.Kind, w.Delivered, w.Expected, w.Gaps, w.Missing, fmtUS(w.Latency.P50), fmtUS(w.Latency.P99), fmtUS(w.Latency.P999), fmtUS(w.Latency.Max),
			w.GwCPUPercent, w.GwCPUPerFrameUS, w.RedisCPUSeconds, w.OtherCPUPercent)
	}
	for _, s := range []struct {
		name string
		s    DurableSide
	}{{"pub/sub", d.PubSub}, {"durable", d.Durable}} {
		fmt.Fprintf(&b, "<tr><th>pooled</th><th>%s</th><th>%d</th><th colspan=\"2\">lost %d</th><th>%s</th><th>%s</th><th>%s</th><th></th><th></th><th>%.3f</th><th></th><th></th></tr>\n",
			s.name, s.s.Frames, s.s.Lost, fmtUS(s.s.Latency.P50), fmtUS(s.s.Latency.P99), fmtUS(s.s.Latency.P999), s.s.GwCPUPerFrameUS)
	}
	fmt.Fprintf(&b, "<tr><th colspan=\"5\">durable ÷ pub/sub (target ≤ %.1f)</th><th>%.2f</th><th>%.2f</th><th>%.2f</th><th></th><th></th><th>%.2f</th><th></th><th></th></tr>\n</table>\n",
		d.Target, d.P50Ratio, d.P99Ratio, d.P999Ratio, d.CPURatio)
	if len(d.HistPubSub) > 0 {
		b.WriteString("<h2>Latency, pub/sub windows</h2>\n")
		b.WriteString(histSVG(d.HistPubSub, &d.PubSub.Latency))
	}
	if len(d.HistDurable) > 0 {
		b.WriteString("<h2>Latency, durable windows</h2>\n")
		b.WriteString(histSVG(d.HistDurable, &d.Durable.Latency))
	}
	return b.String()
}

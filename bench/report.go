package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"time"
)

// Report is what one run writes with -out (JSON) and -html. Durations and
// latencies carry their unit in the field name.
type Report struct {
	Scenario string         `json:"scenario"`
	Command  []string       `json:"command"`
	Started  time.Time      `json:"started"`
	Seconds  float64        `json:"seconds"` // wall time of the whole run
	Params   Params         `json:"params"`
	Host     Host           `json:"host"`
	Gateway  GatewayInfo    `json:"gateway"`            // the first gateway (Addr: every address the clients used)
	Gateways []GatewayInfo  `json:"gateways,omitempty"` // each, when there are several
	Connect  *ConnectResult `json:"connect,omitempty"`
	Memory   *Memory        `json:"memory,omitempty"`
	Idle     *IdleResult    `json:"idle,omitempty"`
	Delivery *Delivery      `json:"delivery,omitempty"`
	Latency  *Latency       `json:"latency,omitempty"`
	Cost     *Cost          `json:"cost,omitempty"`
	Churn    *ChurnResult   `json:"churn,omitempty"`
	Sweep    *SweepResult   `json:"sweep,omitempty"`
	Floor    *FloorResult   `json:"floor,omitempty"`
	// ConnectFloor is idle's -floor: CPU per connect and subscribe
	// against the least a server spends on a connect.
	ConnectFloor *ConnectFloor   `json:"connect_floor,omitempty"`
	Stalled      *StalledResult  `json:"stalled,omitempty"` // -stalled: the sockets that never read
	Fairness     *FairnessResult `json:"fairness,omitempty"`
	Storm        *StormResult    `json:"storm,omitempty"`
	Durable      *DurableResult  `json:"durable,omitempty"` // -durable: pub/sub and durable side by side
	Replay       *ReplayResult   `json:"replay,omitempty"`
	Noise        *Noise          `json:"noise,omitempty"` // the machine during the measured window
	// PerGateway is each gateway's share when the run drives several;
	// every other figure is their total.
	PerGateway []GatewayFigures `json:"per_gateway,omitempty"`
	Timeline   []Sample         `json:"timeline"`
	Histogram  []HistBar        `json:"latency_histogram,omitempty"`
	Limits     []string         `json:"limits,omitempty"` // system limits that stopped the run, in words
	Notes      []string         `json:"notes,omitempty"`
	Error      string           `json:"error,omitempty"`
}

type Params struct {
	Sockets          int     `json:"sockets"`
	Channels         int     `json:"channels,omitempty"`
	Rate             float64 `json:"rate_per_s,omitempty"`
	Size             int     `json:"size_bytes,omitempty"`
	DurationS        float64 `json:"duration_s"`
	PatternShare     float64 `json:"pattern_share,omitempty"`
	ChurnRate        float64 `json:"churn_per_s,omitempty"`
	StepS            float64 `json:"step_s,omitempty"`
	Factor           float64 `json:"factor,omitempty"`
	MaxP99US         int64   `json:"max_p99_us,omitempty"`
	Workers          int     `json:"workers"`
	ClientLoops      int     `json:"client_loops"`
	PerAddr          int     `json:"per_source_addr"`
	ConnConcurrency  int     `json:"connect_concurrency"`
	Prefix           string  `json:"prefix"`
	GatewayEventLoop int     `json:"gateway_event_loops,omitempty"`
	Floor            bool    `json:"floor,omitempty"`
	FloorK           int     `json:"floor_k,omitempty"`
	Stalled          int     `json:"stalled_sockets,omitempty"` // not counted in sockets
	Rounds           int     `json:"rounds,omitempty"`
	StormMode        string  `json:"storm_mode,omitempty"`
	StormHoldS       float64 `json:"storm_hold_s,omitempty"`
	Durable          bool    `json:"durable,omitempty"`
	ReplayEntries    int     `json:"replay_entries,omitempty"`
}

type Host struct {
	CPUs           int    `json:"cpus"`
	Kernel         string `json:"kernel"`
	GoVersion      string `json:"go"`
	NofileSoft     uint64 `json:"nofile_soft"`
	NofileHard     uint64 `json:"nofile_hard"`
	EphemeralPorts int    `json:"ephemeral_ports"`
	LoadAvg        string `json:"loadavg_at_start"`
	Somaxconn      int    `json:"somaxconn"` // the listen backlog gnet asks for
}

type GatewayInfo struct {
	Binary     string   `json:"binary,omitempty"`
	Started    bool     `json:"started_by_harness"`
	Pid        int      `json:"pid,omitempty"`
	Addr       string   `json:"addr"`
	Admin      string   `json:"admin,omitempty"`
	Args       []string `json:"args,omitempty"`
	Redis      string   `json:"redis"`
	RedisOwned bool     `json:"redis_started_by_harness"`
	Nofile     int64    `json:"nofile_soft,omitempty"`
	Version    string   `json:"version,omitempty"`
}

type ConnectResult struct {
	Target                int              `json:"target"`
	Connected             int64            `json:"connected"` // upgraded and subscribe acknowledged
	Failed                int64            `json:"failed"`
	FailKinds             map[string]int64 `json:"fail_kinds,omitempty"`
	Seconds               float64          `json:"seconds"`
	PerSec                float64          `json:"per_s"`
	Latency               Latency          `json:"latency"` // dial to subscribe ack
	GwCPUPerConnectUS     float64          `json:"gateway_cpu_us_per_connect"`
	ClientCPUPerConnectUS float64          `json:"client_cpu_us_per_connect"`
	// The balancer's processes (-balancer-pid) per connect.
	BalancerCPUPerConnectUS float64 `json:"balancer_cpu_us_per_connect,omitempty"`
	Workers                 int     `json:"workers"`
	// Refused upgrades (503; with Retry-After), and the attempts that
	// reconnecting clients (storm) made again after a backoff.
	Refused503 int64            `json:"refused_503,omitempty"`
	RetryAfter int64            `json:"refused_with_retry_after,omitempty"`
	Retried    int64            `json:"retried,omitempty"`
	RetryKinds map[string]int64 `json:"retry_kinds,omitempty"`
}

type Memory struct {
	GatewayRSSBefore    int64   `json:"gateway_rss_before"`
	GatewayRSSConnected int64   `json:"gateway_rss_connected"`
	GatewayRSSEnd       int64   `json:"gateway_rss_end"`
	PerSocketBytes      float64 `json:"gateway_rss_per_socket"`
	// PerSocketHeldBytes is RSS per socket at the end of the idle hold,
	// once the gateway has handed the connect burst's garbage back: the
	// figure the 1 KiB-per-idle-socket budget is about. Idle scenario only.
	PerSocketHeldBytes float64 `json:"gateway_rss_per_socket_held,omitempty"`
	ClientRSS          int64   `json:"client_rss"`
	ClientPerSocket    float64 `json:"client_rss_per_socket"`
}

type IdleResult struct {
	HoldSeconds          float64 `json:"hold_seconds"`
	GwCPUPercent         float64 `json:"gateway_cpu_percent"`
	GwCPUPerSocketUSPerS float64 `json:"gateway_cpu_us_per_socket_per_s"`
	ClientCPUPercent     float64 `json:"client_cpu_percent"`
	StillOpen            int64   `json:"still_open"`
	Unexpected           int64   `json:"unexpected_closes"`
}

type Delivery struct {
	Seconds         float64          `json:"seconds"` // publishing time
	Rate            float64          `json:"rate_per_s"`
	Published       int64            `json:"published"`
	PublishedPerSec float64          `json:"published_per_s"`
	NoReceiver      int64            `json:"published_without_receiver"`
	PublishErrors   int64            `json:"publish_errors"`
	Expected        int64            `json:"expected"`
	Delivered       int64            `json:"delivered"`
	DeliveredPerSec float64          `json:"delivered_per_s"`
	Missing         int64            `json:"missing"` // expected - delivered, when positive
	Gaps            int64            `json:"gaps"`    // seq jumps seen by clients
	Dups            int64            `json:"dups"`
	GwReceived      uint64           `json:"gateway_received"`
	GwDelivered     uint64           `json:"gateway_delivered"`
	GwDropped       uint64           `json:"gateway_dropped"`
	ErrorFrames     map[string]int64 `json:"error_frames,omitempty"`
	CloseCodes      map[int]int64    `json:"close_codes,omitempty"`
	Unexpected      int64            `json:"unexpected_closes"`
	AvgFrameBytes   float64          `json:"avg_frame_bytes"`
	// StalledSockets is how many stalled sockets (-stalled) were open:
	// every figure above but the gateway's is the measured sockets' only;
	// GwDelivered and GwDropped count the stalled sockets too.
	StalledSockets int `json:"stalled_sockets,omitempty"`
}

type Cost struct {
	Seconds         float64 `json:"seconds"`
	Frames          int64   `json:"frames"`
	GwCPUSeconds    float64 `json:"gateway_cpu_s"`
	GwCPUPercent    float64 `json:"gateway_cpu_percent"` // of one core
	GwCPUPerFrameUS float64 `json:"gateway_cpu_us_per_frame"`
	GwWriteSyscalls int64   `json:"gateway_write_syscalls"`
	// GwFramesPerWrite is frames / syscw of /proc/<pid>/io: the
	// gateway's batching (a few of its writes are event-loop wake-ups
	// and Redis commands).
	GwFramesPerWrite float64 `json:"gateway_frames_per_write"`
	// The gateway's context switches (summed over its threads,
	// /proc/<pid>/task/*/status) and read- and write-family system calls
	// (/proc/<pid>/io), in all and per Redis message it received
	// (/stats messages_received): the hops each message takes.
	GwMessages          int64   `json:"gateway_messages"`
	GwVolCtx            int64   `json:"gateway_voluntary_ctx_switches"`
	GwInvolCtx          int64   `json:"gateway_involuntary_ctx_switches"`
	GwReadSyscalls      int64   `json:"gateway_read_syscalls"`
	GwVolCtxPerMsg      float64 `json:"gateway_voluntary_ctx_switches_per_message"`
	GwInvolCtxPerMsg    float64 `json:"gateway_involuntary_ctx_switches_per_message"`
	GwSyscrPerMsg       float64 `json:"gateway_read_syscalls_per_message"`
	GwSyscwPerMsg       float64 `json:"gateway_write_syscalls_per_message"`
	ClientFramesPerRead float64 `json:"client_frames_per_read"`
	ClientCPUSeconds    float64 `json:"client_cpu_s"`
	ClientCPUPercent    float64 `json:"client_cpu_percent"`
	ClientCPUPerFrameUS float64 `json:"client_cpu_us_per_frame"`
	HarnessCPUSeconds   float64 `json:"harness_cpu_s"` // coordinator + publisher
	RedisCPUSeconds     float64 `json:"redis_cpu_s"`
	// The balancer's processes (-balancer-pid) over the same window.
	BalancerCPUSeconds    float64 `json:"balancer_cpu_s,omitempty"`
	BalancerCPUPercent    float64 `json:"balancer_cpu_percent,omitempty"`
	BalancerCPUPerFrameUS float64 `json:"balancer_cpu_us_per_frame,omitempty"`
}

// Noise is what else the machine did during the measured window.
type Noise struct {
	MachineCPUPercent float64 `json:"machine_cpu_percent"` // every process, % of one core (max 100 × CPUs)
	OtherCPUPercent   float64 `json:"other_cpu_percent"`   // processes not part of this run
	StealPercent      float64 `json:"steal_percent"`
}

type ChurnResult struct {
	Rate             float64 `json:"rate_per_s"`
	Seconds          float64 `json:"seconds"`
	Left             int64   `json:"left"`
	Joined           int64   `json:"joined"`
	PerSec           float64 `json:"joined_per_s"`
	Failed           int64   `json:"failed"`
	ConnectLatency   Latency `json:"connect_latency"`
	GwCPUPercent     float64 `json:"gateway_cpu_percent"`
	GwCPUPerCycleUS  float64 `json:"gateway_cpu_us_per_cycle"`
	GwRSSStart       int64   `json:"gateway_rss_start"`
	GwRSSEnd         int64   `json:"gateway_rss_end"`
	GwConnectionsEnd int64   `json:"gateway_connections_end"`
	ClientOpenEnd    int64   `json:"client_open_end"`
	Gaps             int64   `json:"gaps"`
}

type SweepStep struct {
	Rate            float64 `json:"rate_per_s"`
	Achieved        float64 `json:"published_per_s"`
	DeliveredPerSec float64 `json:"delivered_per_s"`
	Latency         Latency `json:"latency"`
	Gaps            int64   `json:"gaps"`
	Missing         int64   `json:"missing"`
	Dropped         uint64  `json:"gateway_dropped"`
	GwCPUPercent    float64 `json:"gateway_cpu_percent"`
	GwCPUPerFrameUS float64 `json:"gateway_cpu_us_per_frame"`
	OtherCPUPercent float64 `json:"other_cpu_percent"` // noise during the step
	Pass            bool    `json:"pass"`
	Why             string  `json:"why,omitempty"`
}

type SweepResult struct {
	MaxP99US       int64       `json:"max_p99_us"`
	Steps          []SweepStep `json:"steps"`
	BestRate       float64     `json:"best_rate_per_s"`
	BestDeliveries float64     `json:"best_delivered_per_s"`
	StoppedBy      string      `json:"stopped_by"`
}

// FloorRun is one run of the floor writer.
type FloorRun struct {
	K                   int     `json:"k"`     // frames per writev; 0 for the adaptive run
	Mode                string  `json:"mode"`  // adaptive, write or writev
	Shape               string  `json:"shape"` // fanout (every message to every socket) or spread
	Messages            int64   `json:"messages"`
	Frames              int64   `json:"frames"`
	Syscalls            int64   `json:"syscalls"`
	FramesPerSyscall    float64 `json:"frames_per_syscall"`
	Errors              int64   `json:"errors"`
	Received            int64   `json:"received"`
	CPUSeconds          float64 `json:"cpu_s"`
	CPUPerFrameUS       float64 `json:"cpu_us_per_frame"`
	ClientCPUPerFrameUS float64 `json:"client_cpu_us_per_frame"`
	GwRatio             float64 `json:"gateway_ratio,omitempty"` // gateway µs/frame ÷ this
	// Latency is publish (the message's due time) to client, measured
	// by the same client as the gateway's.
	Latency Latency `json:"latency"`
}

type FloorResult struct {
	Sockets          int        `json:"sockets"`
	Rate             float64    `json:"rate_per_s"`                  // per socket, fanout shape
	SpreadRate       float64    `json:"spread_rate_per_s,omitempty"` // in all, the adaptive run of spread
	FrameBytes       int        `json:"frame_bytes"`
	Seconds          float64    `json:"seconds"`
	Runs             []FloorRun `json:"runs"` // adaptive first
	GwCPUPerFrameUS  float64    `json:"gateway_cpu_us_per_frame,omitempty"`
	GwFramesPerWrite float64    `json:"gateway_frames_per_write,omitempty"`
	// The gateway against the adaptive run (Reference), side by side:
	// its latency in the measured window and the ratios gateway ÷ floor.
	Reference string    `json:"reference,omitempty"`
	GwLatency *Latency  `json:"gateway_latency,omitempty"`
	P50Ratio  float64   `json:"p50_ratio,omitempty"`
	P99Ratio  float64   `json:"p99_ratio,omitempty"`
	P999Ratio float64   `json:"p999_ratio,omitempty"`
	CPURatio  float64   `json:"cpu_ratio,omitempty"`
	Histogram []HistBar `json:"latency_histogram,omitempty"` // of the adaptive run
}

// Sample is one second of the timeline.
type Sample struct {
	T            float64 `json:"t"`
	Phase        string  `json:"phase"`
	Sockets      int64   `json:"sockets"`
	ConnectsPS   float64 `json:"connects_per_s"`
	PublishedPS  float64 `json:"published_per_s"`
	DeliveredPS  float64 `json:"delivered_per_s"`
	P50US        int64   `json:"p50_us"`
	P99US        int64   `json:"p99_us"`
	MaxUS        int64   `json:"max_us"`
	Gaps         int64   `json:"gaps"`
	GwCPUPercent float64 `json:"gateway_cpu_percent"`
	ClCPUPercent float64 `json:"client_cpu_percent"`
	GwRSS        int64   `json:"gateway_rss"`
	OtherCPU     float64 `json:"other_cpu_percent"` // CPU of processes outside this run
	GwCtxPS      float64 `json:"gateway_ctx_switches_per_s,omitempty"`
	GwSyscallsPS float64 `json:"gateway_syscalls_per_s,omitempty"` // syscr + syscw
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// round3 keeps reports readable.
func round3(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	return math.Round(x*1000) / 1000
}

func perUnit(num, den float64) float64 {
	if den <= 0 {
		return 0
	}
	return round3(num / den)
}

// fmtUS prints microseconds as µs, ms or s.
func fmtUS(us int64) string {
	switch {
	case us < 1000:
		return fmt.Sprintf("%dµs", us)
	case us < 1_000_000:
		return fmt.Sprintf("%.2fms", float64(us)/1000)
	default:
		return fmt.Sprintf("%.2fs", float64(us)/1e6)
	}
}

func fmtBytes(b float64) string {
	switch {
	case b < 10*1024:
		return fmt.Sprintf("%.0f B", b)
	case b < 10*1024*1024:
		return fmt.Sprintf("%.1f KiB", b/1024)
	default:
		return fmt.Sprintf("%.1f MiB", b/1024/1024)
	}
}

func fmtCount(x float64) string {
	switch {
	case x >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case x >= 1e4:
		return fmt.Sprintf("%.1fk", x/1e3)
	default:
		return fmt.Sprintf("%.0f", x)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

func fmtKinds(m map[string]int64) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// summaryLines is the human summary printed at the end of a run (and
// shown at the top of the HTML page).
func (r *Report) summaryLines() []string {
	var out []string
	add := func(f string, a ...any) { out = append(out, fmt.Sprintf(f, a...)) }
	add("scenario %s: %d sockets, %.0fs", r.Scenario, r.Params.Sockets, r.Params.DurationS)
	if c := r.Connect; c != nil {
		add("connect: %d/%d in %.2fs = %.0f/s, latency p50 %s p99 %s, gateway %.1f µs CPU per connect, failed %d %s",
			c.Connected, c.Target, c.Seconds, c.PerSec, fmtUS(c.Latency.P50), fmtUS(c.Latency.P99), c.GwCPUPerConnectUS, c.Failed, fmtKinds(c.FailKinds))
		if c.BalancerCPUPerConnectUS > 0 {
			add("connect: balancer %.1f µs CPU per connect (gateways and balancer %.1f)", c.BalancerCPUPerConnectUS, c.GwCPUPerConnectUS+c.BalancerCPUPerConnectUS)
		}
		if c.Refused503 > 0 || c.Retried > 0 {
			add("connect: refused 503 %d (%d with Retry-After); tried again after a backoff %d (%s)", c.Refused503, c.RetryAfter, c.Retried, fmtKinds(c.RetryKinds))
		}
	}
	if m := r.Memory; m != nil {
		add("memory: gateway RSS %s before, %s connected: %s per socket; client %s per socket",
			fmtBytes(float64(m.GatewayRSSBefore)), fmtBytes(float64(m.GatewayRSSConnected)), fmtBytes(m.PerSocketBytes), fmtBytes(m.ClientPerSocket))
		if m.PerSocketHeldBytes > 0 {
			add("memory after the idle hold: gateway RSS %s: %s per idle socket",
				fmtBytes(float64(m.GatewayRSSEnd)), fmtBytes(m.PerSocketHeldBytes))
		}
	}
	if c := r.ConnectFloor; c != nil {
		add("%s", c.line())
	}
	if i := r.Idle; i != nil {
		add("idle hold %.0fs: gateway %.2f%% CPU = %.3f µs per socket per second; client %.2f%%; still open %d, unexpected closes %d",
			i.HoldSeconds, i.GwCPUPercent, i.GwCPUPerSocketUSPerS, i.ClientCPUPercent, i.StillOpen, i.Unexpected)
	}
	if d := r.Delivery; d != nil {
		stalled := ""
		if d.StalledSockets > 0 {
			stalled = fmt.Sprintf(" (all sockets, with the %d stalled ones; delivered, missing and gaps are the measured sockets' only)", d.StalledSockets)
		}
		add("delivery: published %d (%.0f/s), delivered %d (%.0f/s) of %d expected; missing %d, gaps %d, gateway dropped %d%s",
			d.Published, d.PublishedPerSec, d.Delivered, d.DeliveredPerSec, d.Expected, d.Missing, d.Gaps, d.GwDropped, stalled)
	}
	if s := r.Stalled; s != nil {
		fill := "no fill before the window (sweep: they fill during the steps)"
		if s.FillSeconds > 0 {
			fill = fmt.Sprintf("publishing before the window %.1fs (measured sockets lost %d), overflowed %v", s.FillSeconds, s.FillMeasuredLost, s.Overflowed)
		}
		add("stalled: %d extra sockets subscribed like the measured ones and never read (SO_RCVBUF %d), in no figure but the gateway's; %s; in the window the gateway dropped %d (the measured sockets lost %d), closed %d of them",
			s.Sockets, s.RcvBuf, fill, s.GwDropped, s.MeasuredLost, s.ClosedByGateway)
	}
	if l := r.Latency; l != nil && l.Count > 0 {
		add("latency publish→client: p50 %s p90 %s p99 %s p99.9 %s max %s (n=%d)",
			fmtUS(l.P50), fmtUS(l.P90), fmtUS(l.P99), fmtUS(l.P999), fmtUS(l.Max), l.Count)
	}
	if c := r.Cost; c != nil {
		add("cost: gateway %.1f%% CPU = %.3f µs per frame, %.2f frames per write syscall; client %.1f%% = %.3f µs per frame, %.2f frames per read; harness %.2fs, redis %.2fs CPU",
			c.GwCPUPercent, c.GwCPUPerFrameUS, c.GwFramesPerWrite, c.ClientCPUPercent, c.ClientCPUPerFrameUS, c.ClientFramesPerRead, c.HarnessCPUSeconds, c.RedisCPUSeconds)
		if c.BalancerCPUSeconds > 0 {
			add("cost: balancer %.1f%% CPU = %.3f µs per frame (gateways and balancer %.3f)", c.BalancerCPUPercent, c.BalancerCPUPerFrameUS, c.GwCPUPerFrameUS+c.BalancerCPUPerFrameUS)
		}
		if c.GwMessages > 0 {
			add("gateway per Redis message (%d received): %.2f voluntary + %.2f involuntary context switches (all threads), %.2f read and %.2f write syscalls (%d, %d, %d and %d in all)",
				c.GwMessages, c.GwVolCtxPerMsg, c.GwInvolCtxPerMsg, c.GwSyscrPerMsg, c.GwSyscwPerMsg, c.GwVolCtx, c.GwInvolCtx, c.GwReadSyscalls, c.GwWriteSyscalls)
		}
	}
	if n := r.Noise; n != nil {
		add("noise: the machine used %.0f%% CPU (of %d00%%) in the measured window, %.0f%% of it by processes outside this run, %.1f%% stolen; load average at start %s",
			n.MachineCPUPercent, r.Host.CPUs, n.OtherCPUPercent, n.StealPercent, r.Host.LoadAvg)
	}
	out = append(out, perGatewayLines(r.PerGateway)...)
	if c := r.Churn; c != nil {
		add("churn: %d left, %d joined in %.1fs (%.0f/s of %.0f/s), failed %d, connect p50 %s p99 %s; gateway %.1f µs CPU per cycle; RSS %s → %s; connections at end: gateway %d, client %d",
			c.Left, c.Joined, c.Seconds, c.PerSec, c.Rate, c.Failed, fmtUS(c.ConnectLatency.P50), fmtUS(c.ConnectLatency.P99),
			c.GwCPUPerCycleUS, fmtBytes(float64(c.GwRSSStart)), fmtBytes(float64(c.GwRSSEnd)), c.GwConnectionsEnd, c.ClientOpenEnd)
	}
	if s := r.Sweep; s != nil {
		for _, st := range s.Steps {
			mark := "ok  "
			if !st.Pass {
				mark = "FAIL"
			}
			add("sweep %s rate %8.0f/s published %8.0f/s delivered %10.0f/s p50 %s p99 %s gaps %d missing %d dropped %d gw %.0f%% %.3fµs/frame others %.0f%% %s",
				mark, st.Rate, st.Achieved, st.DeliveredPerSec, fmtUS(st.Latency.P50), fmtUS(st.Latency.P99), st.Gaps, st.Missing, st.Dropped, st.GwCPUPercent, st.GwCPUPerFrameUS, st.OtherCPUPercent, st.Why)
		}
		add("sweep: highest sustained %.0f msgs/s = %.0f deliveries/s (p99 ≤ %s, no drops); stopped by %s",
			s.BestRate, s.BestDeliveries, fmtUS(s.MaxP99US), s.StoppedBy)
	}
	if f := r.Fairness; f != nil {
		out = append(out, f.lines()...)
	}
	if s := r.Storm; s != nil {
		out = append(out, s.lines()...)
	}
	if d := r.Durable; d != nil {
		out = append(out, d.lines()...)
	}
	if p := r.Replay; p != nil {
		out = append(out, p.lines()...)
	}
	if f := r.Floor; f != nil {
		out = append(out, f.lines()...)
	}
	for _, l := range r.Limits {
		add("LIMIT: %s", l)
	}
	for _, n := range r.Notes {
		add("note: %s", n)
	}
	if r.Error != "" {
		add("ERROR: %s", r.Error)
	}
	return out
}

package server

import (
	"fmt"
	"runtime"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgw/gateway/wsproto"
)

// refuseReason says why an upgrade request did not become a WebSocket.
// It indexes a fixed array of counters, so counting is one atomic add.
type refuseReason uint8

const (
	refuseMalformed refuseReason = iota
	refuseHeadTooLarge
	refuseShuttingDown
	refuseOrigin
	refuseUnauthorized
	refuseMaxConnections
	refuseRateLimited
	refusePerIP
	refuseBadUpgrade
	refuseHandshakeTimeout
	refuseFileLimit
	refuseUntrustedProxy
	refuseBadProxyHeader
	numRefuseReasons
)

// refuseReasonNames are the reason label values of
// gateway_upgrades_refused_total (docs/TUNING.md lists them).
var refuseReasonNames = [numRefuseReasons]string{
	refuseMalformed:        "malformed_request",
	refuseHeadTooLarge:     "head_too_large",
	refuseShuttingDown:     "shutting_down",
	refuseOrigin:           "origin",
	refuseUnauthorized:     "unauthorized",
	refuseMaxConnections:   "max_connections",
	refuseRateLimited:      "connection_rate",
	refusePerIP:            "max_connections_per_ip",
	refuseBadUpgrade:       "bad_upgrade",
	refuseHandshakeTimeout: "handshake_timeout",
	refuseFileLimit:        "file_limit",
	refuseUntrustedProxy:   "untrusted_proxy_header",
	refuseBadProxyHeader:   "bad_proxy_header",
}

// cmdResult is the outcome of one inbound client command.
type cmdResult uint8

const (
	resultOK cmdResult = iota
	resultBadRequest
	resultUnknownAction
	resultForbidden
	resultTooManyChannels
	resultTooManyWildcards
	resultRateLimited
	resultStreamRateLimited
	resultServerBusy
	numCmdResults
)

var cmdResultNames = [numCmdResults]string{
	resultOK:               "ok",
	resultBadRequest:       string(wsproto.CodeBadRequest),
	resultUnknownAction:    string(wsproto.CodeUnknownAction),
	resultForbidden:        string(wsproto.CodeForbidden),
	resultTooManyChannels:  string(wsproto.CodeTooManyChannels),
	resultTooManyWildcards: string(wsproto.CodeTooManyWildcards),
	resultRateLimited:      string(wsproto.CodeRateLimited),

	resultStreamRateLimited: string(wsproto.CodeStreamRateLimited),
	resultServerBusy:        string(wsproto.CodeServerBusy),
}

// resultOf maps the error code a command was refused with to its result.
func resultOf(code wsproto.ErrorCode) cmdResult {
	for r, name := range cmdResultNames {
		if name == string(code) {
			return cmdResult(r)
		}
	}
	return resultBadRequest
}

// numActions covers wsproto's actions plus 0, which labels commands whose
// action was never known (not JSON, no or unknown action, binary, or
// refused by the rate limit before parsing): Action(0).String() is
// "unknown".
const numActions = int(wsproto.ActionPing) + 1

// latencyBuckets bound the delivery latency histogram: 50µs (a frame
// written within the burst it arrived in) to 5s (a connection that was
// blocked on a full socket for seconds).
var latencyBuckets = []float64{
	50e-6, 100e-6, 250e-6, 500e-6,
	1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
	1, 2.5, 5,
}

// counters are the server's own counters beyond the connection gauges:
// plain atomics in fixed arrays, written on the event loops with one
// uncontended add and read only when metrics are scraped.
type counters struct {
	refused        [numRefuseReasons]atomic.Uint64
	commands       [numActions][numCmdResults]atomic.Uint64
	slowDisconnect atomic.Uint64
	// latency is observed once per Writev batch (see loopState.drain);
	// Observe is lock-free and allocation-free.
	latency prometheus.Histogram
}

func newLatencyHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "gateway_delivery_latency_seconds",
		Help: "Time from a message's receipt from Redis to the write of its frame on a socket, " +
			"measured once per write batch on the batch's oldest data frame.",
		Buckets: latencyBuckets,
	})
}

func (c *counters) refuse(r refuseReason) { c.refused[r].Add(1) }

func (c *counters) command(a wsproto.Action, r cmdResult) {
	if int(a) >= numActions {
		a = 0
	}
	c.commands[a][r].Add(1)
}

// Metrics exports a Server's and its fanout Hub's counters in the
// Prometheus format. It reads the atomics the delivery path already
// keeps when it is scraped; it adds nothing to the delivery path but the
// latency histogram's one Observe per write batch. Build it with
// NewMetrics and Register it on a registry.
type Metrics struct {
	srv *Server

	connections, sockets, streams, queues, redisUp, redisLinks, canaryRTT, buildInfo *prometheus.Desc
	refused, commands                                                                *prometheus.Desc
	received, delivered, dropped, handoff, slow, reconnects                          *prometheus.Desc
}

// NewMetrics builds the collector of s and of the Hub s was built with.
// Safe to scrape before s is started.
func NewMetrics(s *Server) *Metrics {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("gateway_"+name, help, labels, nil)
	}
	return &Metrics{
		srv:         s,
		connections: d("connections", "Open WebSocket connections."),
		sockets:     d("sockets", "Accepted TCP connections, upgraded or still in the handshake."),
		streams:     d("streams", "Upstream Redis subscriptions (exact channels plus patterns)."),
		queues:      d("queues", "Connections holding a send queue; an idle connection gives its queue back within seconds."),
		redisUp:     d("redis_up", "1 while the pub/sub links to Redis are up and every stream is subscribed."),
		redisLinks:  d("redis_links", "Pub/sub connections to Redis: one, plus one per Cluster node owning a followed sharded channel."),
		canaryRTT:   d("redis_canary_rtt_seconds", "Last round trip of the pub/sub canary through Redis (0 before the first or when disabled)."),
		buildInfo:   d("build_info", "Always 1; the labels carry the build.", "version", "goversion"),
		refused:     d("upgrades_refused_total", "Upgrade requests answered with an HTTP error instead of a WebSocket, by reason.", "reason"),
		commands:    d("commands_total", "Inbound client commands by action and result (the error code sent back, or ok).", "action", "result"),
		received:    d("redis_messages_received_total", "Messages received from Redis pub/sub (the canary excluded)."),
		delivered:   d("frames_delivered_total", "Frames written to sockets: data frames plus the acks and notices queued with them."),
		dropped:     d("frames_dropped_total", "Frames not queued for a connection because its queue was full (a slow reader)."),
		handoff:     d("handoff_dropped_total", "Messages a shard lost because its hand-off channel was full (the Redis reader outpaced a shard)."),
		slow:        d("slow_reader_disconnects_total", "Connections closed with 1013 for overflowing their queue (SLOW_CLIENT_TIMEOUT, SLOW_CLIENT_MAX_DROPS)."),
		reconnects:  d("redis_reconnects_total", "Times the pub/sub link to Redis went down and was re-established or retried."),
	}
}

// Register registers the gateway's metrics on reg: this collector and the
// delivery latency histogram. The Go runtime and process collectors are
// the caller's choice (cmd/gateway adds them).
func (m *Metrics) Register(reg prometheus.Registerer) error {
	if err := reg.Register(m); err != nil {
		return fmt.Errorf("server: register metrics: %w", err)
	}
	if err := reg.Register(m.srv.ctr.latency); err != nil {
		reg.Unregister(m)
		return fmt.Errorf("server: register latency histogram: %w", err)
	}
	return nil
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		m.connections, m.sockets, m.streams, m.queues, m.redisUp, m.redisLinks, m.canaryRTT, m.buildInfo,
		m.refused, m.commands, m.received, m.delivered, m.dropped, m.handoff, m.slow, m.reconnects,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. It runs on the scraping
// goroutine and only loads atomics.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	s := m.srv
	hs := s.hub.Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	up := 0.0
	if hs.RedisUp {
		up = 1
	}
	gauge(m.connections, float64(s.conns.Load()))
	gauge(m.sockets, float64(s.sockets.Load()))
	gauge(m.streams, float64(hs.Streams))
	gauge(m.queues, float64(hs.Queues))
	gauge(m.redisUp, up)
	gauge(m.redisLinks, float64(hs.RedisLinks))
	gauge(m.canaryRTT, hs.CanaryRTT.Seconds())
	gauge(m.buildInfo, 1, s.cfg.Version, runtime.Version())
	for r := range numRefuseReasons {
		counter(m.refused, s.ctr.refused[r].Load(), refuseReasonNames[r])
	}
	for a := range numActions {
		for r := range numCmdResults {
			counter(m.commands, s.ctr.commands[a][r].Load(), wsproto.Action(a).String(), cmdResultNames[r])
		}
	}
	counter(m.received, hs.MessagesReceived)
	counter(m.delivered, hs.Delivered)
	counter(m.dropped, hs.Dropped)
	counter(m.handoff, hs.HandoffDropped)
	counter(m.slow, s.ctr.slowDisconnect.Load())
	counter(m.reconnects, hs.Reconnects)
}

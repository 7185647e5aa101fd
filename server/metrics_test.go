package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server"
	"github.com/wsgw/gateway/server/servertest"
)

// scraper serves a gateway's metrics, registered on a fresh registry, over
// HTTP in the Prometheus text format, the way the admin listener does.
type scraper struct {
	url string
}

func newScraper(tb testing.TB, g *gateway) *scraper {
	tb.Helper()
	reg := prometheus.NewRegistry()
	if err := server.NewMetrics(g.srv).Register(reg); err != nil {
		tb.Fatalf("register metrics: %v", err)
	}
	ts := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	tb.Cleanup(ts.Close)
	return &scraper{url: ts.URL}
}

// families is one parsed scrape.
type families map[string]*dto.MetricFamily

func (s *scraper) scrape(tb testing.TB) families {
	tb.Helper()
	resp, err := http.Get(s.url)
	if err != nil {
		tb.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("scrape: HTTP %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		tb.Fatalf("scrape: parse the text format: %v", err)
	}
	return fams
}

// value is the gauge or counter name{labels} (label pairs as "k", "v", ...);
// it fails the test when the series does not exist.
func (f families) value(tb testing.TB, name string, labels ...string) float64 {
	tb.Helper()
	m := f.metric(tb, name, labels...)
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	tb.Fatalf("%s is neither a counter nor a gauge", name)
	return 0
}

func (f families) metric(tb testing.TB, name string, labels ...string) *dto.Metric {
	tb.Helper()
	fam, ok := f[name]
	if !ok {
		tb.Fatalf("no metric %s in the scrape", name)
	}
next:
	for _, m := range fam.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		return m
	}
	tb.Fatalf("no series %s%v in the scrape", name, labels)
	return nil
}

// TestMetricsEndToEnd runs a small load through a real gateway and a real
// redis-server, scrapes /metrics and checks that the counters agree with
// what the clients sent and received.
func TestMetricsEndToEnd(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs)
	sc := newScraper(t, g)

	const clients, n = 3, 40
	const channel = "market:tick:METRICS"
	queued := 0 // frames the clients received through their queues: acks and data
	var cls []*client
	for range clients {
		cl := dial(t, g.wsURL(""))
		cl.subscribe(t, channel)
		queued++
		cls = append(cls, cl)
	}
	// Commands answered directly by the loop (not through the queue, so
	// not in frames_delivered): one ping, one forbidden subscribe, one
	// message that is not JSON.
	cls[0].send(t, `{"action":"ping","requestId":"p"}`)
	cls[0].expect(t, "pong")
	cls[0].send(t, `{"action":"subscribe","channels":["engine:signal:X"],"requestId":"f"}`)
	if m := cls[0].expect(t, "error"); m.str("code") != "forbidden" {
		t.Fatalf("want forbidden, got %v", m)
	}
	cls[0].send(t, `not json`)
	if m := cls[0].expect(t, "error"); m.str("code") != "bad_request" {
		t.Fatalf("want bad_request, got %v", m)
	}
	// One refused upgrade: a token that is neither the API key nor a JWT.
	if c, err := dialErr(g.wsURL("token=not-a-valid-token"), nil); err == nil {
		_ = c.CloseNow()
		t.Fatal("upgrade with an invalid token was accepted")
	}

	for i := range n {
		rs.Publish(t, channel, `{"i":`+strconv.Itoa(i)+`}`)
	}
	for _, cl := range cls {
		for i := range n {
			if m := cl.expect(t, "data"); m.seq() != uint64(i+1) {
				t.Fatalf("data %d has seq %d", i, m.seq())
			}
			queued++
		}
	}

	// frames_delivered is counted right after the Writev the clients
	// read from, so it may trail their reads by a moment.
	var f families
	servertest.WaitFor(t, 5*time.Second, "frames_delivered to reach what the clients received", func() bool {
		f = sc.scrape(t)
		return f.value(t, "gateway_frames_delivered_total") >= float64(queued)
	})
	counters := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"gateway_frames_delivered_total", nil, float64(queued)},
		{"gateway_redis_messages_received_total", nil, n},
		{"gateway_connections", nil, clients},
		{"gateway_streams", nil, 1},
		{"gateway_redis_up", nil, 1},
		{"gateway_frames_dropped_total", nil, 0},
		{"gateway_handoff_dropped_total", nil, 0},
		{"gateway_slow_reader_disconnects_total", nil, 0},
		{"gateway_redis_reconnects_total", nil, 0},
		{"gateway_upgrades_refused_total", []string{"reason", "unauthorized"}, 1},
		{"gateway_upgrades_refused_total", []string{"reason", "max_connections"}, 0},
		{"gateway_commands_total", []string{"action", "subscribe", "result", "ok"}, clients},
		{"gateway_commands_total", []string{"action", "subscribe", "result", "forbidden"}, 1},
		{"gateway_commands_total", []string{"action", "ping", "result", "ok"}, 1},
		{"gateway_commands_total", []string{"action", "unknown", "result", "bad_request"}, 1},
		{"gateway_commands_total", []string{"action", "unsubscribe", "result", "ok"}, 0},
	}
	for _, c := range counters {
		t.Run(c.name+strings.Join(c.labels, ","), func(t *testing.T) {
			if got := f.value(t, c.name, c.labels...); got != c.want {
				t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
			}
		})
	}
	t.Run("delivery latency histogram", func(t *testing.T) {
		h := f.metric(t, "gateway_delivery_latency_seconds").GetHistogram()
		// One observation per write batch holding a data frame: at
		// least one, at most one per data frame written.
		if cnt := h.GetSampleCount(); cnt == 0 || cnt > clients*n {
			t.Errorf("latency histogram count = %d, want 1..%d", cnt, clients*n)
		}
		if s := h.GetSampleSum(); s <= 0 || s > 60 {
			t.Errorf("latency histogram sum = %vs, want a small positive time", s)
		}
		// The text format lists +Inf as a bucket of its own.
		b := h.GetBucket()
		if len(b) < 2 || b[0].GetUpperBound() != 50e-6 || b[len(b)-2].GetUpperBound() != 5 {
			t.Errorf("latency buckets do not span 50µs..5s: %v", b)
		}
	})

	// The gauges follow the clients out.
	for _, cl := range cls {
		_ = cl.c.Close(websocket.StatusNormalClosure, "")
	}
	servertest.WaitFor(t, 10*time.Second, "connections and streams back to 0", func() bool {
		f := sc.scrape(t)
		return f.value(t, "gateway_connections") == 0 && f.value(t, "gateway_streams") == 0
	})
}

// TestMetricsSlowReader: a client that stops reading is disconnected with
// 1013 once it has lost more than SLOW_CLIENT_MAX_DROPS frames, and both
// the drops and the disconnect are counted.
func TestMetricsSlowReader(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs, func(o *options) {
		o.hub.SendQueue = 4
		o.srv.MaxOutboundBytes = 64 << 10
		o.srv.SlowClientMaxDrops = 5
	})
	sc := newScraper(t, g)
	const channel = "market:tick:SLOW"
	cl := dial(t, g.wsURL(""))
	cl.subscribe(t, channel)
	// From here on the client reads nothing: the kernel's buffers, then
	// gnet's outbound buffer, then the 4-frame queue fill up.
	payload := `"` + strings.Repeat("x", 60<<10) + `"`
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var closed chan error
	for i := 0; ; i++ {
		f := sc.scrape(t)
		if closed == nil && f.value(t, "gateway_frames_dropped_total") > 5 {
			// Past the limit: the next sweep sends 1013 behind what is
			// queued, and cuts TCP if no answer comes within the close
			// grace period. Read again now, so the close frame arrives.
			closed = make(chan error, 1)
			go func() {
				for {
					if _, _, err := cl.c.Read(ctx); err != nil {
						closed <- err
						return
					}
				}
			}()
		}
		if f.value(t, "gateway_slow_reader_disconnects_total") == 1 {
			if d := f.value(t, "gateway_frames_dropped_total"); d <= 5 {
				t.Fatalf("disconnected after %v drops, want more than 5", d)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no slow-reader disconnect after %d messages of 60 KiB: dropped %v",
				i, f.value(t, "gateway_frames_dropped_total"))
		}
		for range 16 {
			rs.Publish(t, channel, payload)
		}
	}
	if err := <-closed; websocket.CloseStatus(err) != websocket.StatusTryAgainLater {
		t.Fatalf("the slow reader's connection ended with %v, want close 1013", err)
	}
}

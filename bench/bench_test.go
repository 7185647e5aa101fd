package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/wsproto"
)

// TestMain lets the test binary serve as the harness's worker and floor
// subprocesses, as the real binary does.
func TestMain(m *testing.M) {
	if code, ok := subprocessMain(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func TestScanDataOnGatewayFrames(t *testing.T) {
	sent := time.Now().UnixNano()
	payload := string(benchPayload(nil, sent, 100))
	if len(payload) != 100 {
		t.Fatalf("benchPayload length %d, want 100", len(payload))
	}
	for _, tc := range []struct {
		channel, pattern string
	}{
		{"market:tick:bench:0", ""},
		{"market:tick:bench:7", "market:tick:bench:*"},
		{`odd,"data":{"t":1}`, `pat,"pattern":"x"`}, // quotes are escaped inside strings
	} {
		f := wsproto.BuildData(182736, tc.channel, tc.pattern, payload, time.Now())
		frame := append([]byte(nil), f.Bytes()...)
		f.Release()

		// Every prefix is incomplete; the whole frame parses.
		for i := range len(frame) {
			if _, _, _, n, err := nextFrame(frame[:i]); n != 0 || err != nil {
				t.Fatalf("prefix %d: n=%d err=%v", i, n, err)
			}
		}
		op, fin, p, n, err := nextFrame(frame)
		if err != nil || n != len(frame) || op != ws.OpText || !fin {
			t.Fatalf("nextFrame: op %v fin %v n %d/%d err %v", op, fin, n, len(frame), err)
		}
		seq, pat, ts, ok := scanData(p)
		if !ok || seq != 182736 || pat != (tc.pattern != "") || ts != sent {
			t.Errorf("%s: scanData = seq %d pattern %v t %d ok %v, want 182736 %v %d", p, seq, pat, ts, ok, tc.pattern != "", sent)
		}
	}
	if _, _, _, ok := scanData([]byte(`{"type":"subscribed","channels":[]}`)); ok {
		t.Error("scanData accepted an ack")
	}
	ack := wsproto.NewError(wsproto.CodeUpstreamInterrupted, "x", nil, nil, time.Now())
	if got := errorCode(ack.Bytes()[2:]); got != "upstream_interrupted" {
		t.Errorf("errorCode = %q", got)
	}
	ack.Release()
}

func TestNextFrameRejectsMaskedAndRSV(t *testing.T) {
	masked := clientFrame(ws.OpText, []byte("hi"))
	if _, _, _, _, err := nextFrame(masked); err == nil {
		t.Error("masked server frame accepted")
	}
	if _, _, _, _, err := nextFrame([]byte{0xC1, 0x00}); err == nil {
		t.Error("RSV1 frame accepted")
	}
	big := serverFrame(bytes.Repeat([]byte("a"), 70000)) // 64-bit length
	if _, _, p, n, err := nextFrame(big); err != nil || n != len(big) || len(p) != 70000 {
		t.Errorf("64-bit length: n=%d len=%d err=%v", n, len(p), err)
	}
}

func TestCheckUpgrade(t *testing.T) {
	// RFC 6455 §1.3's example.
	acc := acceptFor("dGhlIHNhbXBsZSBub25jZQ==")
	if string(acc[:]) != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("accept = %s", acc)
	}
	head := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
	if st, ok := checkUpgrade(head, acc[:]); !ok || st != 101 {
		t.Errorf("valid upgrade refused: %d %v", st, ok)
	}
	if st, ok := checkUpgrade([]byte("HTTP/1.1 503 Service Unavailable\r\n\r\n"), acc[:]); ok || st != 503 {
		t.Errorf("503 accepted: %d %v", st, ok)
	}
}

func TestPercentiles(t *testing.T) {
	h := newHist()
	for v := int64(1); v <= 10000; v++ {
		recordUS(h, v)
	}
	l := summarize(h)
	near := func(name string, got, want int64) {
		t.Helper()
		if d := float64(got-want) / float64(want); d < -0.002 || d > 0.002 {
			t.Errorf("%s = %d, want %d ± 0.2%%", name, got, want)
		}
	}
	if l.Count != 10000 {
		t.Errorf("count %d", l.Count)
	}
	near("p50", l.P50, 5000)
	near("p90", l.P90, 9000)
	near("p99", l.P99, 9900)
	near("p99.9", l.P999, 9990)
	near("max", l.Max, 10000)
	if l.Min != 1 || l.Mean < 4999 || l.Mean > 5002 {
		t.Errorf("min %d mean %v", l.Min, l.Mean)
	}

	// Clamping.
	c := newHist()
	recordUS(c, -5)
	recordUS(c, histMax*10)
	if s := summarize(c); s.Min != histMin || s.Max < histMax {
		t.Errorf("clamped min %d max %d", s.Min, s.Max)
	}

	// The sparse form used between processes keeps every count, and two
	// halves add up to the whole.
	a, b := newHist(), newHist()
	for v := int64(1); v <= 10000; v++ {
		if v%2 == 0 {
			recordUS(a, v)
		} else {
			recordUS(b, v)
		}
	}
	sa, sb := takeSparse(a), takeSparse(b)
	if a.TotalCount() != 0 {
		t.Error("takeSparse did not reset")
	}
	js, _ := json.Marshal(appendSparse(sa, sb))
	var back sparseHist
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	whole := newHist()
	mergeSparse(back, whole)
	if got := summarize(whole); got != l {
		t.Errorf("merged %+v, want %+v", got, l)
	}

	bars := logBars(whole, 10)
	var sum int64
	for _, b := range bars {
		sum += b.Count
	}
	if sum != 10000 || len(bars) != 50 { // 1 µs to 100 ms... 1e0..1e5
		t.Errorf("logBars: %d bars, %d values", len(bars), sum)
	}
	if summarize(nil).Count != 0 || logBars(newHist(), 10) != nil {
		t.Error("empty histogram")
	}
}

func TestParseStatCPU(t *testing.T) {
	line := []byte("1234 (gate way) (x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0\n")
	d, err := parseStatCPU(line)
	if err != nil || d != 3*time.Second {
		t.Errorf("parseStatCPU = %v, %v; want 3s", d, err)
	}
	if _, err := parseStatCPU([]byte("garbage")); err == nil {
		t.Error("garbage parsed")
	}
}

func TestCompareRows(t *testing.T) {
	mk := func(us float64) *Report { return &Report{Cost: &Cost{GwCPUPerFrameUS: us}} }
	rows := compareRows([2][]*Report{{mk(2), mk(4), mk(3)}, {mk(1), mk(2), mk(9)}})
	if len(rows) != 1 || rows[0].MedianA != 3 || rows[0].MedianB != 2 || rows[0].Ratio != 0.667 {
		t.Errorf("rows = %+v", rows)
	}
}

func TestSourceAddr(t *testing.T) {
	for _, tc := range []struct {
		idx, per int
		want     string
	}{{0, 25000, "127.0.0.1"}, {24999, 25000, "127.0.0.1"}, {25000, 25000, "127.0.0.2"}, {255 * 10, 10, "127.0.1.0"}} {
		if got := sourceAddr(tc.idx, tc.per).String(); got != tc.want {
			t.Errorf("sourceAddr(%d, %d) = %s, want %s", tc.idx, tc.per, got, tc.want)
		}
	}
}

// TestSmokeFanout runs the fanout scenario end to end: the real gateway
// built from ./cmd/gateway, a real redis-server, a worker subprocess.
func TestSmokeFanout(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server and the gateway")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "gateway")
	build := exec.Command("go", "build", "-o", bin, "../cmd/gateway")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the gateway: %v\n%s", err, out)
	}
	rs := redistest.Start(t)
	page := filepath.Join(dir, "report.html")
	rep, stdout := runBench(t, "-scenario", "fanout", "-n", "50", "-rate", "200", "-duration", "2s",
		"-gateway", bin, "-redis", rs.Addr(), "-settle", "100ms", "-html", page)
	d := rep.Delivery
	switch {
	case d == nil:
		t.Fatal("no delivery section")
	case d.Delivered <= 0:
		t.Errorf("delivered %d", d.Delivered)
	case d.Gaps != 0:
		t.Errorf("gaps %d", d.Gaps)
	case d.Missing != 0:
		t.Errorf("missing %d of %d", d.Missing, d.Expected)
	}
	if rep.Connect == nil || rep.Connect.Connected != 50 {
		t.Errorf("connect: %+v", rep.Connect)
	}
	if rep.Latency == nil || rep.Latency.Count == 0 || rep.Latency.P50 <= 0 {
		t.Errorf("latency: %+v", rep.Latency)
	}
	if rep.Cost == nil || rep.Cost.GwCPUPerFrameUS <= 0 {
		t.Errorf("cost: %+v", rep.Cost)
	}
	if len(rep.Timeline) == 0 {
		t.Error("empty timeline")
	}
	html, err := os.ReadFile(page)
	if err != nil || !strings.Contains(string(html), "<svg") {
		t.Errorf("html page: %v, %d bytes", err, len(html))
	}
	for _, external := range []string{"<script", "<link", "src=", "@import"} {
		if strings.Contains(string(html), external) {
			t.Errorf("html page is not self-contained: has %s", external)
		}
	}
	if !strings.Contains(stdout, "delivered "+strconv.FormatInt(d.Delivered, 10)) {
		t.Errorf("summary does not show the deliveries:\n%s", stdout)
	}

	// The client inside the test process (-workers 0), so that -race
	// sees the event-loop code, through the churn scenario.
	t.Run("in-process churn", func(t *testing.T) {
		rep, stdout := runBench(t, "-scenario", "churn", "-n", "20", "-churn-rate", "20", "-rate", "50", "-duration", "1s",
			"-workers", "0", "-gateway", bin, "-redis", rs.Addr(), "-settle", "0s")
		if c := rep.Churn; c == nil || c.Joined == 0 || c.Failed != 0 || c.ClientOpenEnd != 20 {
			t.Errorf("churn: %+v\n%s", rep.Churn, stdout)
		}
	})

	// Two gateways started by the harness, the sockets split between
	// them: each gateway's share adds up to the total.
	t.Run("two gateways", func(t *testing.T) {
		rep, stdout := runBench(t, "-scenario", "fanout", "-n", "40", "-rate", "50", "-duration", "1s", "-gateways", "2",
			"-gateway", bin, "-redis", rs.Addr(), "-settle", "0s")
		if len(rep.PerGateway) != 2 || len(rep.Gateways) != 2 || rep.Delivery == nil {
			t.Fatalf("per gateway %+v, gateways %+v, delivery %+v", rep.PerGateway, rep.Gateways, rep.Delivery)
		}
		var frames int64
		for i, g := range rep.PerGateway {
			if g.Sockets != 20 || g.Cost == nil || g.Latency == nil || g.Pid != rep.Gateways[i].Pid {
				t.Errorf("gateway %d: %+v", i, g)
				continue
			}
			frames += g.Cost.Frames
		}
		if frames != rep.Delivery.Delivered || rep.Delivery.Missing != 0 {
			t.Errorf("the gateways' frames add up to %d, delivered %d (missing %d)", frames, rep.Delivery.Delivered, rep.Delivery.Missing)
		}
		if rep.Cost == nil || rep.Cost.GwMessages == 0 || !strings.Contains(stdout, "gateway 2 (") {
			t.Errorf("cost %+v; summary:\n%s", rep.Cost, stdout)
		}
	})

	// The floor side by side: the same clients measure the floor
	// writer's latency like the gateway's.
	t.Run("floor", func(t *testing.T) {
		rep, stdout := runBench(t, "-scenario", "fanout", "-n", "20", "-rate", "50", "-duration", "1s", "-floor", "-floor-k", "2",
			"-gateway", bin, "-redis", rs.Addr(), "-settle", "0s")
		f := rep.Floor
		if f == nil || len(f.Runs) != 3 || f.Runs[0].Mode != "adaptive" || f.GwLatency == nil {
			t.Fatalf("floor: %+v", f)
		}
		for _, run := range f.Runs {
			if run.Frames == 0 || run.Received != run.Frames || run.Latency.Count != run.Received {
				t.Errorf("floor %s: %d frames written, %d received, %d latencies", run.name(), run.Frames, run.Received, run.Latency.Count)
			}
		}
		if f.P99Ratio <= 0 || f.CPURatio <= 0 || !strings.Contains(stdout, "gateway vs floor adaptive (fanout)") {
			t.Errorf("ratios p99 %v cpu %v; summary:\n%s", f.P99Ratio, f.CPURatio, stdout)
		}
	})

	// The connect floor after the idle hold: the same sockets connect
	// and subscribe to it.
	t.Run("idle connect floor", func(t *testing.T) {
		rep, _ := runBench(t, "-scenario", "idle", "-n", "20", "-duration", "1s", "-floor",
			"-gateway", bin, "-redis", rs.Addr(), "-settle", "0s")
		if c := rep.ConnectFloor; c == nil || c.Connected != 20 || c.Failed != 0 || c.Latency.Count != 20 {
			t.Errorf("connect floor: %+v", rep.ConnectFloor)
		}
	})

	// Storms: every socket drops and comes back to the same gateway;
	// the gateway restarts (SIGTERM, a short paced shutdown) and they
	// come back to the new one, with the client in this process so that
	// -race sees the reconnect code.
	t.Run("storm drop", func(t *testing.T) {
		rep, stdout := runBench(t, "-scenario", "storm", "-storm-mode", "drop", "-n", "20", "-channels", "4", "-rate", "40",
			"-storm-hold", "500ms", "-duration", "30s", "-gateway", bin, "-redis", rs.Addr(), "-settle", "0s")
		checkStorm(t, rep, stdout, 20)
	})
	t.Run("storm restart", func(t *testing.T) {
		rep, stdout := runBench(t, "-scenario", "storm", "-n", "20", "-channels", "4", "-rate", "40", "-workers", "0",
			"-storm-hold", "500ms", "-duration", "30s", "-gateway", bin, "-gateway-args", "-shutdown-timeout 1s",
			"-redis", rs.Addr(), "-settle", "0s")
		checkStorm(t, rep, stdout, 20)
		if s := rep.Storm; s != nil && (s.GatewayExitSeconds <= 0 || s.CloseCodes[1001] == 0) {
			t.Errorf("restart: exit %vs, close codes %v", s.GatewayExitSeconds, s.CloseCodes)
		}
	})

	// Stalled sockets overflow (1.6 MB/s of 4 KiB messages fill the
	// gateway's socket buffer and a 512-frame queue in a few seconds)
	// while the measured ones lose nothing; the stalled sockets' drops
	// show as theirs.
	t.Run("fairness", func(t *testing.T) {
		rep, stdout := runBench(t, "-scenario", "fairness", "-n", "20", "-rate", "400", "-size", "4096", "-duration", "1s", "-rounds", "1", "-stalled", "2",
			"-gateway", bin, "-gateway-args", "-send-queue-size 512", "-redis", rs.Addr(), "-settle", "0s")
		f := rep.Fairness
		if f == nil || len(f.Windows) != 2 {
			t.Fatalf("fairness: %+v", f)
		}
		if w := f.Windows[1]; w.Stalled != 2 || !w.Overflowed || w.GwDropped == 0 {
			t.Errorf("window with stalled sockets: %+v", w)
		}
		if f.MeasuredLostWith != 0 || f.MeasuredLostWithout != 0 || f.GwDroppedWithout != 0 {
			t.Errorf("measured sockets lost %d with and %d without stalled sockets, gateway dropped %d without", f.MeasuredLostWith, f.MeasuredLostWithout, f.GwDroppedWithout)
		}
		if f.Without.Count != f.Windows[0].Delivered || f.With.Count != f.Windows[1].Delivered || f.P99Ratio <= 0 {
			t.Errorf("latency samples %d/%d for %d/%d measured deliveries, p99 ratio %v",
				f.Without.Count, f.With.Count, f.Windows[0].Delivered, f.Windows[1].Delivered, f.P99Ratio)
		}
		if f.Verdict == "" || !strings.Contains(stdout, "fairness: "+f.Verdict) {
			t.Errorf("the summary does not show the verdict %q", f.Verdict)
		}
	})
}

// checkStorm checks a storm's report: every socket lost its connection
// and came back, and the messages add up.
func checkStorm(tb testing.TB, rep Report, stdout string, n int64) {
	tb.Helper()
	s := rep.Storm
	switch {
	case s == nil:
		tb.Fatal("no storm section")
	case !s.AllBack || s.Sockets != n || s.Lost != n || s.Reconnected < n || s.Back.Count < n:
		tb.Errorf("storm: all back %v, sockets %d, lost %d, reconnected %d, back %d", s.AllBack, s.Sockets, s.Lost, s.Reconnected, s.Back.Count)
	case s.Expected == 0 || s.Delivered+s.LostWhileDown != s.Expected:
		tb.Errorf("storm messages: expected %d, delivered %d, lost %d", s.Expected, s.Delivered, s.LostWhileDown)
	case !strings.Contains(stdout, "storm: all back"):
		tb.Errorf("summary:\n%s", stdout)
	}
}

// runBench runs the harness in-process with args plus a JSON report in a
// temporary file and -q, fails the test on a non-zero exit, and returns
// the decoded report and the summary it printed.
func runBench(tb testing.TB, args ...string) (Report, string) {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), "report.json")
	var stdout, stderr bytes.Buffer
	code := benchMain(append(args, "-out", out, "-q"), &stdout, &stderr)
	tb.Logf("summary:\n%s", stdout.String())
	if code != 0 {
		tb.Fatalf("exit code %d\nstderr:\n%s", code, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		tb.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		tb.Fatalf("report does not parse: %v", err)
	}
	return rep, stdout.String()
}

// parseExpect parses args as the harness's flags. With wantErr it checks
// that parsing failed with an error naming it, and returns nil.
func parseExpect(tb testing.TB, args []string, wantErr string) *Config {
	tb.Helper()
	c, err := parseFlags(args, io.Discard)
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			tb.Fatalf("err %v, want one with %q", err, wantErr)
		}
		return nil
	}
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

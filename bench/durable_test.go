package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/wsproto"
)

func TestExactness(t *testing.T) {
	id := func(ms uint64) streamID { return streamID{ms, 0} }
	ids := func(v ...uint64) []streamID {
		out := make([]streamID, len(v))
		for i, x := range v {
			out[i] = id(x)
		}
		return out
	}
	for _, tc := range []struct {
		name                   string
		truth, got             []streamID
		missing, dups, unknown int64
	}{
		{"exact", ids(1, 2, 3), ids(1, 2, 3), 0, 0, 0},
		{"empty", nil, nil, 0, 0, 0},
		{"gap in the middle", ids(1, 2, 3, 4), ids(1, 4), 2, 0, 0},
		{"tail not received", ids(1, 2, 3), ids(1), 2, 0, 0},
		{"duplicate at a resume seam", ids(1, 2, 3), ids(1, 2, 2, 3), 0, 1, 0},
		{"out of order", ids(1, 2, 3), ids(1, 3, 2), 1, 1, 0},
		{"not in the stream", ids(1, 3), ids(1, 2, 3), 0, 0, 1},
		{"same ms, next seq", []streamID{{5, 0}, {5, 1}}, []streamID{{5, 1}}, 1, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, d, u := exactness(tc.truth, tc.got)
			if m != tc.missing || d != tc.dups || u != tc.unknown {
				t.Errorf("missing %d dups %d unknown %d, want %d %d %d", m, d, u, tc.missing, tc.dups, tc.unknown)
			}
		})
	}
}

func TestScanDurableOnGatewayFrames(t *testing.T) {
	sent := time.Now().UnixNano()
	payload := string(benchPayload(nil, sent, 100))
	wid, ok := wsproto.ParseStreamID("1764660000123-4")
	if !ok {
		t.Fatal("ParseStreamID")
	}
	for _, tc := range []struct {
		name   string
		frame  func() *wsproto.Frame
		replay bool
	}{
		{"live", func() *wsproto.Frame {
			return wsproto.BuildEntry(7, "market:tick:bench:durable:0", "", wid, payload, time.Now())
		}, false},
		{"replayed", func() *wsproto.Frame {
			return wsproto.BuildReplay("market:tick:bench:durable:0", "", wid, payload, time.Now())
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.frame()
			_, _, p, _, err := nextFrame(append([]byte(nil), f.Bytes()...))
			f.Release()
			if err != nil {
				t.Fatal(err)
			}
			id, replay, ok := scanDurable(p)
			if !ok || id != (streamID{1764660000123, 4}) || replay != tc.replay {
				t.Errorf("%s: scanDurable = %v %v %v", p, id, replay, ok)
			}
			if !tc.replay {
				// The pub/sub scan reads a live durable frame alike.
				if seq, _, ts, ok := scanData(p); !ok || seq != 7 || ts != sent {
					t.Errorf("scanData = %d %d %v", seq, ts, ok)
				}
			}
		})
	}
	if _, _, ok := scanDurable([]byte(`{"type":"replayed","channel":"c","count":0,"lastId":"0-0"}`)); ok {
		t.Error("scanDurable accepted a replayed frame")
	}
}

// TestXaddPublisher: the durable publisher adds one stream entry per
// message, with the timestamped payload in the data field, and counts
// each as received.
func TestXaddPublisher(t *testing.T) {
	rs := redistest.Start(t)
	p, err := newPublisher(rs.Addr(), 64)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	p.setStream("stream:")
	p.run(context.Background(), 200, 250*time.Millisecond, func(int64) (string, int) { return "c", 0 })
	if sent, recv := p.sent[0].Load(), p.received[0].Load(); sent != 50 || recv != 50 || p.errors.Load() != 0 {
		t.Fatalf("sent %d received %d errors %d, want 50 50 0", sent, recv, p.errors.Load())
	}
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{rs.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	es, err := c.Do(context.Background(), c.B().Xrange().Key("stream:c").Start("-").End("+").Build()).AsXRange()
	if err != nil || len(es) != 50 {
		t.Fatalf("XRANGE: %d entries, %v", len(es), err)
	}
	if d := es[0].FieldValues["data"]; len(d) != 64 || !strings.HasPrefix(d, `{"t":`) {
		t.Errorf("entry data %q", d)
	}
	ids, err := streamIDs(context.Background(), c, "stream:c", streamID{})
	if err != nil || len(ids) != 50 {
		t.Fatalf("streamIDs: %d, %v", len(ids), err)
	}
	if last, err := lastStreamID(context.Background(), c, "stream:c"); err != nil || last != ids[49] {
		t.Errorf("lastStreamID %v %v, want %v", last, err, ids[49])
	}
	// Back to PUBLISH: nobody subscribed, so nothing received.
	p.setStream("")
	p.run(context.Background(), 100, 50*time.Millisecond, func(int64) (string, int) { return "c", 0 })
	if sent, recv := p.sent[0].Load(), p.received[0].Load(); sent != 55 || recv != 50 {
		t.Errorf("after PUBLISH: sent %d received %d, want 55 50", sent, recv)
	}
}

func TestDurableFlags(t *testing.T) {
	c := parseExpect(t, []string{"-scenario", "spread", "-durable"}, "")
	if c.PatternShare != 0 {
		t.Errorf("spread -durable: pattern share %v, want 0", c.PatternShare)
	}
	if got := strings.Join(c.durableGatewayArgs(), " "); got != "-stream-channels market:tick:bench:durable:*" {
		t.Errorf("gateway args %q", got)
	}
	parseExpect(t, []string{"-scenario", "spread", "-durable", "-pattern-share", "0.1"}, "-pattern-share must be 0")
	parseExpect(t, []string{"-scenario", "idle", "-durable"}, "-durable is for fanout and spread")
	parseExpect(t, []string{"-scenario", "fanout", "-durable", "-floor"}, "-floor")
	parseExpect(t, []string{"-scenario", "replay", "-storm-mode", "drop"}, "want restart or kill")
	c = parseExpect(t, []string{"-scenario", "replay", "-replay-entries", "5000", "-gateway-args", "-stream-key-prefix=s: -send-queue-size 64"}, "")
	if got := strings.Join(c.durableGatewayArgs(), " "); got != "-stream-channels market:tick:bench:durable:* -max-replay 5000" || c.streamKeyPrefix() != "s:" {
		t.Errorf("gateway args %q, key prefix %q", got, c.streamKeyPrefix())
	}
	if a, b := durableProfilePath("/tmp/d.pprof", "durable"), durableProfilePath("/tmp/d.pprof", "pubsub"); a != "/tmp/d.pprof" || b != "/tmp/d.pubsub.pprof" {
		t.Errorf("profile paths %q %q", a, b)
	}
	c = parseExpect(t, []string{"-scenario", "replay", "-gateway-args", "-max-replay 10"}, "")
	if got := strings.Join(c.durableGatewayArgs(), " "); got != "-stream-channels market:tick:bench:durable:*" {
		t.Errorf("-max-replay given: gateway args %q", got)
	}
}

// TestSmokeDurable runs -durable and the replay scenario end to end
// against the real gateway and redis-server.
func TestSmokeDurable(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server and the gateway")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "gateway")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/gateway").CombinedOutput(); err != nil {
		t.Fatalf("building the gateway: %v\n%s", err, out)
	}
	rs := redistest.Start(t)

	t.Run("fanout durable", func(t *testing.T) {
		rep, stdout := runBench(t, "-scenario", "fanout", "-durable", "-n", "20", "-rate", "50", "-duration", "1s", "-rounds", "1",
			"-gateway", bin, "-redis", rs.Addr(), "-settle", "0s")
		d := rep.Durable
		if d == nil || len(d.Windows) != 2 || d.Windows[0].Kind != "pubsub" || d.Windows[1].Kind != "durable" {
			t.Fatalf("durable: %+v", d)
		}
		for _, w := range d.Windows {
			if w.Delivered == 0 || w.Delivered != w.Expected || w.Gaps != 0 || w.Latency.Count != w.Delivered {
				t.Errorf("%s window: delivered %d of %d, gaps %d, %d latencies", w.Kind, w.Delivered, w.Expected, w.Gaps, w.Latency.Count)
			}
		}
		if d.CPURatio <= 0 || d.P99Ratio <= 0 || !strings.Contains(stdout, "durable ÷ pub/sub: CPU per frame") {
			t.Errorf("ratios cpu %v p99 %v; summary:\n%s", d.CPURatio, d.P99Ratio, stdout)
		}
	})
	t.Run("spread durable", func(t *testing.T) {
		rep, _ := runBench(t, "-scenario", "spread", "-durable", "-n", "20", "-rate", "100", "-duration", "1s", "-rounds", "1",
			"-gateway", bin, "-redis", rs.Addr(), "-settle", "0s")
		d := rep.Durable
		if d == nil || len(d.Windows) != 2 || d.PubSub.Lost != 0 || d.Durable.Lost != 0 || d.Durable.Frames == 0 {
			t.Fatalf("durable: %+v", d)
		}
	})
	for _, mode := range []string{"restart", "kill"} {
		t.Run("replay "+mode, func(t *testing.T) {
			rep, stdout := runBench(t, "-scenario", "replay", "-storm-mode", mode, "-n", "20", "-replay-entries", "3000", "-rate", "100",
				"-storm-hold", "500ms", "-duration", "30s", "-gateway", bin, "-gateway-args", "-shutdown-timeout 1s",
				"-redis", rs.Addr(), "-settle", "0s")
			p := rep.Replay
			if p == nil || p.Whole == nil || p.Resume == nil {
				t.Fatalf("replay: %+v", p)
			}
			if w := p.Whole; !w.Exact || w.Received != 3000 || w.ReplayedCount != 3000 || w.PerSec <= 0 {
				t.Errorf("part a: %+v", w)
			}
			s := p.Resume
			if !s.AllResumed || s.ExactClients != 20 || s.Missing != 0 || s.Dups != 0 || s.StreamEntries == 0 || s.StreamEntries != s.Published {
				t.Errorf("part b: %+v", s)
			}
			// Entries were added while the gateway was down: the
			// resumes replayed them.
			if s.ReplayedEntries == 0 || s.ReplayFramesReceived != s.ReplayedEntries {
				t.Errorf("part b replayed %d entries, received %d", s.ReplayedEntries, s.ReplayFramesReceived)
			}
			if !strings.Contains(stdout, "replay (b) exactness") {
				t.Errorf("summary:\n%s", stdout)
			}
		})
	}
}

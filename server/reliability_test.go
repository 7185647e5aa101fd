package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sync/errgroup"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

// publishScript publishes ARGV[3] on KEYS[1] ARGV[2]-ARGV[1]+1 times in
// one round trip.
const publishScript = `for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do redis.call('PUBLISH', KEYS[1], ARGV[3]) end return 0`

// pausedReader is a raw client that reads nothing until resume, then
// reads everything, recording what a client doing gap detection sees.
type pausedReader struct {
	rc   *servertest.Conn
	done chan struct{}

	mu        sync.Mutex
	frames    int    // data frames read
	last      uint64 // last data seq
	gaps      int    // seq jumps
	closeCode int    // 0 until a close frame arrived
	err       error  // how reading ended
}

func (p *pausedReader) resume() {
	go func() {
		defer close(p.done)
		for {
			f, err := p.rc.ReadFrame(20 * time.Second)
			p.mu.Lock()
			switch {
			case err != nil:
				p.err = err
				p.mu.Unlock()
				return
			case f.Op == servertest.OpClose:
				p.closeCode = servertest.CloseCode(f.Payload)
				// Complete the handshake, then read on until
				// the gateway closes TCP.
				_ = p.rc.WriteFrame(servertest.OpClose, f.Payload[:min(2, len(f.Payload))])
			case f.Op == servertest.OpText:
				if seq := seqOf(f.Payload); seq != 0 {
					if seq != p.last+1 {
						p.gaps++
					}
					p.last = seq
					p.frames++
				}
			}
			p.mu.Unlock()
		}
	}()
}

func (p *pausedReader) snapshot() (frames int, last uint64, gaps, closeCode int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frames, p.last, p.gaps, p.closeCode, p.err
}

// readSeq reads one message from a coder/websocket client and returns its
// type and seq without decoding the 2 KB payload.
func readSeq(tb testing.TB, cl *client) (typ string, seq uint64) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, p, err := cl.c.Read(ctx)
	if err != nil {
		tb.Fatalf("fast reader: %v", err)
	}
	if !bytes.HasPrefix(p, []byte(`{"type":"`)) {
		tb.Fatalf("fast reader: unexpected message %.200q", p)
	}
	typ = string(p[len(`{"type":"`):][:bytes.IndexByte(p[len(`{"type":"`):], '"')])
	return typ, seqOf(p)
}

// slowMode is how a TestSlowReaderIsolated case ends for the paused
// reader.
type slowMode int

const (
	slowGap     slowMode = iota // limits off: it resumes and sees the gap
	slowDrops                   // SlowClientMaxDrops: it sees 1013
	slowTimeout                 // SlowClientTimeout: the gateway closes it
)

// TestSlowReaderIsolated: a raw client subscribes and stops reading while
// 20,000 messages of 2 KB flow to a fast reader on the same event loop.
// The fast reader sees every seq; the gateway's heap stays bounded; the
// paused reader's losses are counted and show up as a seq gap, or it is
// closed with 1013 once it has lost more than SlowClientMaxDrops frames or
// kept overflowing for SlowClientTimeout.
func TestSlowReaderIsolated(t *testing.T) {
	const (
		total   = 20000
		batch   = 50 // fewer than SendQueue, so the fast reader never overflows
		channel = "market:tick:FIREHOSE"
		// Unbounded buffering of 15,000 frames would hold 30 MB; the
		// bounds below allow well under 1 MB for the paused reader.
		heapBound = 10 << 20
	)
	payload := `{"pad":"` + strings.Repeat("x", 2040) + `"}`
	tests := []struct {
		name     string
		mode     slowMode
		maxDrops uint64
		timeout  time.Duration
	}{
		{name: "gap while paused, then recovers", mode: slowGap},
		{name: "1013 after too many drops", mode: slowDrops, maxDrops: 200},
		{name: "closed after overflowing for SlowClientTimeout", mode: slowTimeout, timeout: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := redistest.Start(t)
			logs := &servertest.LogRecorder{}
			g := startGateway(t, rs, func(o *options) {
				o.srv.Loops = 1 // both readers on the same loop and shard
				o.srv.MaxOutboundBytes = 32 << 10
				o.srv.SlowClientMaxDrops = tt.maxDrops
				o.srv.SlowClientTimeout = tt.timeout
				o.srv.Logger = logs.Logger()
				o.hub.SendQueue = 64
			})
			slow := &pausedReader{rc: servertest.Upgrade(t, g.addr, servertest.RcvBuf(4096)), done: make(chan struct{})}
			rawSubscribe(t, slow.rc, channel)
			fast := dial(t, g.wsURL(""))
			fast.subscribe(t, channel)
			heap0 := heapInuse()

			// Publishing goes on to the last message in every case, after
			// the paused reader is closed too: the fast reader must get
			// all of them.
			resumed, ended := false, false
			for first := 1; first <= total; first += batch {
				last := min(first+batch-1, total)
				rs.Do(t, "EVAL", publishScript, "1", channel, strconv.Itoa(first), strconv.Itoa(last), payload)
				for i := first; i <= last; i++ {
					if typ, seq := readSeq(t, fast); typ != "data" || seq != uint64(i) {
						t.Fatalf("fast reader: %s seq %d, want data seq %d (the paused reader must cost it nothing)", typ, seq, i)
					}
				}
				switch tt.mode {
				case slowGap:
					if !resumed && last >= 3*total/4 {
						if grew := int64(heapInuse()) - int64(heap0); grew > heapBound {
							t.Fatalf("heap grew by %d bytes while a reader was paused for %d messages of 2 KB (bound %d)", grew, last, heapBound)
						} else {
							t.Logf("heap growth with one reader paused for %d messages: %d KiB", last, grew>>10)
						}
						slow.resume()
						resumed = true
					}
				case slowDrops:
					if !resumed && g.srv.Stats().MessagesDropped > tt.maxDrops {
						// Read again before the 1013 (sent at the
						// next sweep) is lost with the socket after
						// the close grace period.
						slow.resume()
						resumed = true
					}
					if resumed && !ended {
						select {
						case <-slow.done:
							ended = true
						default:
						}
					}
				case slowTimeout:
					// Never resumed while flooded: the close frame
					// waits behind what the reader does not read, so
					// only the gateway's side shows the close.
					ended = ended || g.srv.Connections() == 1
				}
			}

			switch tt.mode {
			case slowDrops:
				if !resumed {
					t.Fatalf("the paused reader never lost more than %d frames", tt.maxDrops)
				}
				select {
				case <-slow.done:
				case <-time.After(30 * time.Second):
					t.Fatal("the slow reader was not closed")
				}
				frames, _, _, code, err := slow.snapshot()
				if code != 1013 || !errors.Is(err, io.EOF) {
					t.Fatalf("slow reader ended with close code %d, %v after %d frames; want 1013 then EOF", code, err, frames)
				}
				servertest.WaitFor(t, 10*time.Second, "the slow connection to be gone", func() bool { return g.srv.Connections() == 1 })
				return
			case slowTimeout:
				if !ended {
					// A fast publish can end before the overflow has
					// lasted SlowClientTimeout and the lingering close
					// its CLOSE_LINGER: the queue stays full, so the
					// close still comes.
					servertest.WaitFor(t, 20*time.Second, "the paused reader to be closed", func() bool { return g.srv.Connections() == 1 })
				}
				if l, ok := logs.Find("connection closed", "reason=too slow"); !ok {
					t.Fatalf("no 'connection closed' log with the slow-client reason: %q", logs.Lines())
				} else {
					t.Log(l)
				}
				return
			}
			servertest.WaitFor(t, 20*time.Second, "the resumed reader to reach the last message", func() bool {
				_, last, _, _, _ := slow.snapshot()
				return last == total
			})
			frames, _, gaps, code, err := slow.snapshot()
			dropped := g.srv.Stats().MessagesDropped
			t.Logf("paused reader: %d of %d frames, %d gaps, %d dropped", frames, total, gaps, dropped)
			switch {
			case gaps == 0:
				t.Fatal("the paused reader saw no seq gap")
			case dropped != uint64(total-frames):
				t.Fatalf("/stats messages_dropped = %d, but the paused reader is missing %d frames: every drop must be counted", dropped, total-frames)
			case code != 0 || err != nil:
				t.Fatalf("the paused reader was closed (code %d, %v) with slow-client limits off", code, err)
			case g.srv.Connections() != 2:
				t.Fatalf("%d connections, want 2", g.srv.Connections())
			}
		})
	}
}

// TestRedisKilledAndRestarted: redis-server dies with SIGKILL and comes
// back on the same port. /health answers 503 meanwhile, clients stay
// connected, each subscribed one gets exactly one upstream_interrupted
// naming its channels, every stream is subscribed again and the first
// message after recovery carries a seq at least 2 above the last before.
func TestRedisKilledAndRestarted(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs)
	a := dial(t, g.wsURL(""))
	a.subscribe(t, "market:tick:K", "market:tick:P*")
	b := dial(t, g.wsURL(""))
	b.subscribe(t, "market:tick:K")
	idle := dial(t, g.wsURL("")) // subscribed to nothing: told nothing

	rs.Publish(t, "market:tick:K", "1")
	rs.Publish(t, "market:tick:P1", "1")
	lastK, lastP := a.expect(t, "data").seq(), a.expect(t, "data").seq()
	b.expect(t, "data")

	rs.Kill(t)
	servertest.WaitFor(t, 10*time.Second, "/health 503", func() bool { return g.health(t) == 503 })
	tests := []struct {
		name string
		cl   *client
		want []string
	}{
		{"exact and pattern", a, []string{"market:tick:K", "market:tick:P*"}},
		{"exact only", b, []string{"market:tick:K"}},
	}
	for _, tt := range tests {
		t.Run("interrupted: "+tt.name, func(t *testing.T) {
			m := tt.cl.expect(t, "error")
			var got []string
			for _, c := range m["channels"].([]any) {
				got = append(got, c.(string))
			}
			slices.Sort(got)
			if m.str("code") != "upstream_interrupted" || !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want upstream_interrupted naming %v", m, tt.want)
			}
		})
	}
	a.send(t, `{"action":"ping","requestId":"down"}`)
	if m := a.expect(t, "pong"); m.str("requestId") != "down" {
		t.Fatalf("pong while Redis is down: %v", m)
	}
	if n := g.srv.Connections(); n != 3 {
		t.Fatalf("%d connections while Redis is down, want 3", n)
	}

	rs.Restart(t)
	servertest.WaitFor(t, 10*time.Second, "/health 200", func() bool { return g.health(t) == 200 })
	servertest.WaitFor(t, 10*time.Second, "streams subscribed again", func() bool {
		return rs.NumSub(t, "market:tick:K") == 1 && rs.NumPat(t) == 1
	})
	rs.Publish(t, "market:tick:K", "2")
	rs.Publish(t, "market:tick:P1", "2")
	for _, tt := range []struct {
		name       string
		cl         *client
		lastBefore uint64
	}{
		{"a exact", a, lastK}, {"a pattern", a, lastP}, {"b exact", b, lastK},
	} {
		t.Run("after recovery: "+tt.name, func(t *testing.T) {
			// expect fails on a second upstream_interrupted too.
			if m := tt.cl.expect(t, "data"); m.seq() < tt.lastBefore+2 {
				t.Fatalf("first seq after the outage %d, last before %d: want a gap of at least 2", m.seq(), tt.lastBefore)
			}
		})
	}
	idle.send(t, `{"action":"ping","requestId":"idle"}`)
	if m := idle.expect(t, "pong"); m.str("requestId") != "idle" {
		t.Fatalf("idle client: %v", m)
	}
}

// TestGatewayStartsBeforeRedis: pointed at a Redis that is not there, the
// gateway starts, answers 503 on /health, accepts and acknowledges
// clients, and delivers once Redis appears.
func TestGatewayStartsBeforeRedis(t *testing.T) {
	rs := redistest.Start(t)
	rs.Kill(t) // keeps the port for Restart
	g := startGateway(t, nil, func(o *options) { o.hub.RedisAddr = rs.Addr() })
	if code := g.health(t); code != 503 {
		t.Fatalf("/health without Redis = %d, want 503", code)
	}
	cl := dial(t, g.wsURL(""))
	cl.subscribe(t, "market:tick:EARLY")

	rs.Restart(t)
	servertest.WaitFor(t, 15*time.Second, "/health 200 once Redis is up", func() bool { return g.health(t) == 200 })
	servertest.WaitFor(t, 10*time.Second, "the upstream subscription", func() bool { return rs.NumSub(t, "market:tick:EARLY") == 1 })
	rs.Publish(t, "market:tick:EARLY", `{"first":true}`)
	if m := cl.expect(t, "data"); m.seq() != 1 || m.str("channel") != "market:tick:EARLY" {
		t.Fatalf("got %v, want the first message with seq 1", m)
	}
}

// TestCanaryDetectsWedgedPubSub: a proxy between the gateway and Redis
// stops forwarding Redis → gateway bytes on the pub/sub connection while
// both sockets stay open. Only the canary can notice: /health goes 503,
// clients are told, the wedged connection is dropped, streams are
// subscribed again on a new one, and seq shows the outage.
func TestCanaryDetectsWedgedPubSub(t *testing.T) {
	rs := redistest.Start(t)
	px := startWedgeProxy(t, rs.Addr())
	logs := &servertest.LogRecorder{}
	g := startGateway(t, nil, func(o *options) {
		o.hub.RedisAddr = px.Addr()
		o.hub.CanaryInterval = 200 * time.Millisecond
		o.hub.Logger = logs.Logger()
	})
	servertest.WaitFor(t, 10*time.Second, "/health 200", func() bool { return g.health(t) == 200 })
	cl := dial(t, g.wsURL(""))
	cl.subscribe(t, "market:tick:C")
	rs.Publish(t, "market:tick:C", "1")
	lastBefore := cl.expect(t, "data").seq()
	sc := newScraper(t, g)
	servertest.WaitFor(t, 10*time.Second, "the canary round trip in the metrics", func() bool {
		return sc.scrape(t).value(t, "gateway_redis_canary_rtt_seconds") > 0
	})

	if n := px.wedgePubSub(); n != 1 {
		t.Fatalf("wedged %d pub/sub connections, want 1", n)
	}
	servertest.WaitFor(t, 10*time.Second, "/health 503 on a wedged link", func() bool { return g.health(t) == 503 })
	// Promptly: before the fix, the control goroutine was stuck for
	// about 10 s handing the wedged connection back to rueidis's pool,
	// and told clients only afterwards.
	if m, err := cl.readErr(5 * time.Second); err != nil || m.str("code") != "upstream_interrupted" || fmt.Sprint(m["channels"]) != "[market:tick:C]" {
		t.Fatalf("got %v, %v; want upstream_interrupted naming market:tick:C within 5 s of /health going 503", m, err)
	}
	if l, ok := logs.Find("redis link down", "canary"); !ok {
		t.Fatalf("no 'redis link down' log naming the canary; logs: %q", logs.Lines())
	} else {
		t.Log(l)
	}
	servertest.WaitFor(t, 10*time.Second, "the wedged connection to be closed by the gateway", func() bool { return px.numWedgedOpen() == 0 })
	servertest.WaitFor(t, 10*time.Second, "/health 200 after reconnecting", func() bool { return g.health(t) == 200 })
	servertest.WaitFor(t, 10*time.Second, "exactly one upstream subscriber again", func() bool { return rs.NumSub(t, "market:tick:C") == 1 })
	rs.Publish(t, "market:tick:C", "2")
	if m := cl.expect(t, "data"); m.seq() < lastBefore+2 {
		t.Fatalf("first seq after the wedge %d, last before %d: want a gap of at least 2", m.seq(), lastBefore)
	}
}

// TestKeepalive: the gateway pings, answers client pings, closes with
// 1001 a peer that never answers (PingTimeout), and keeps a peer that
// does.
func TestKeepalive(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs, func(o *options) {
		o.srv.PingInterval = 300 * time.Millisecond
		o.srv.PingTimeout = time.Second
	})
	// Dialled first, so it has been connected longer than the silent
	// peer when that one is closed.
	live := dial(t, g.wsURL(""))
	msgs := make(chan msg, 16)
	go func() {
		defer close(msgs)
		for {
			// coder/websocket answers pings while a Read is running.
			m, err := live.readErr(time.Minute)
			if err != nil {
				return
			}
			msgs <- m
		}
	}()
	silent := servertest.Upgrade(t, g.addr)

	t.Run("client ping gets pong", func(t *testing.T) {
		rc := servertest.Upgrade(t, g.addr)
		if err := rc.WriteFrame(servertest.OpPing, []byte("are you there")); err != nil {
			t.Fatal(err)
		}
		for {
			f, err := rc.ReadFrame(5 * time.Second)
			if err != nil {
				t.Fatalf("no pong: %v", err)
			}
			if f.Op == servertest.OpPong {
				if string(f.Payload) != "are you there" {
					t.Fatalf("pong payload %q", f.Payload)
				}
				return
			}
		}
	})
	t.Run("silent peer is pinged, then closed with 1001", func(t *testing.T) {
		pings := 0
		for {
			f, err := silent.ReadFrame(10 * time.Second)
			if err != nil {
				t.Fatalf("after %d pings: %v, want a close frame", pings, err)
			}
			if f.Op == servertest.OpPing {
				pings++
				continue
			}
			if f.Op != servertest.OpClose || servertest.CloseCode(f.Payload) != 1001 || pings == 0 {
				t.Fatalf("got %v after %d pings, want close 1001 after pings", f, pings)
			}
			break
		}
		// No close reply from us: the gateway drops TCP after its grace.
		for {
			_, err := silent.ReadFrame(10 * time.Second)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the silent peer's TCP connection was not closed")
			}
			if err != nil {
				break
			}
		}
	})
	t.Run("answering peer stays open", func(t *testing.T) {
		live.send(t, `{"action":"ping","requestId":"still"}`)
		select {
		case m, ok := <-msgs:
			if !ok || m.str("type") != "pong" {
				t.Fatalf("got %v (open: %v), want a pong", m, ok)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no pong")
		}
	})
}

// TestConnectionChurn: 3 rounds of 1,000 connect-subscribe-disconnect,
// half of them closing properly and half dropping TCP (FIN or RST)
// without a close frame. Each round ends with zero connections and zero
// upstream subscriptions; goroutines and heap do not grow across rounds,
// and open connections cost no goroutine.
func TestConnectionChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const (
		rounds  = 3
		n       = 1000
		workers = 32
	)
	rs := redistest.Start(t)
	g := startGateway(t, rs)
	g0 := runtime.NumGoroutine()

	// each runs fn(i) for i in [0, n) on workers goroutines and returns
	// the first error.
	each := func(fn func(i int) error) error {
		var eg errgroup.Group
		eg.SetLimit(workers)
		for i := range n {
			eg.Go(func() error {
				if err := fn(i); err != nil {
					return fmt.Errorf("client %d: %w", i, err)
				}
				return nil
			})
		}
		return eg.Wait()
	}
	var baseG int
	var baseHeap uint64
	for round := 1; round <= rounds; round++ {
		t.Run("round "+strconv.Itoa(round), func(t *testing.T) {
			clients := make([]*servertest.Conn, n)
			t.Cleanup(func() {
				for _, c := range clients {
					if c != nil {
						_ = c.TCP.Close()
					}
				}
			})
			err := each(func(i int) error {
				rc, err := servertest.UpgradeErr(g.addr)
				if err != nil {
					return err
				}
				clients[i] = rc
				sub := `{"action":"subscribe","channels":["market:tick:` + strconv.Itoa(i%20) + `","market:tick:Z*"]}`
				if err := rc.WriteFrame(servertest.OpText, []byte(sub)); err != nil {
					return err
				}
				f, err := rc.ReadFrame(20 * time.Second)
				if err != nil || f.Op != servertest.OpText || !bytes.Contains(f.Payload, []byte(`"subscribed"`)) {
					return fmt.Errorf("subscribe ack: %v %v", f, err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if c := g.srv.Connections(); c != n {
				t.Fatalf("%d connections open, want %d", c, n)
			}
			if d := runtime.NumGoroutine() - g0; d > 50 {
				t.Fatalf("%d more goroutines with %d connections open: want none per connection", d, n)
			}
			if got := rs.NumSub(t, "market:tick:7"); got != 1 {
				t.Fatalf("NUMSUB = %d with 50 clients on the channel, want 1", got)
			}

			err = each(func(i int) error {
				rc := clients[i]
				switch i % 4 {
				case 0, 2: // close handshake
					if err := rc.WriteFrame(servertest.OpClose, []byte{0x03, 0xe8}); err != nil {
						return err
					}
					for {
						_, err := rc.ReadFrame(20 * time.Second)
						if errors.Is(err, io.EOF) {
							return nil
						}
						if err != nil {
							return fmt.Errorf("waiting for the close echo and EOF: %w", err)
						}
					}
				case 1: // FIN, no close frame
					return rc.TCP.Close()
				default: // RST, no close frame
					_ = rc.TCP.SetLinger(0)
					return rc.TCP.Close()
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			servertest.WaitFor(t, 20*time.Second, "zero connections, streams and upstream subscriptions", func() bool {
				st := g.stats(t)
				return st.Connections == 0 && st.Streams == 0 &&
					rs.NumPat(t) == 0 && rs.Do(t, "PUBSUB", "CHANNELS") == ""
			})
			if round == 1 {
				// The first round warms pools and grows slices to their
				// peak; later rounds must not grow past it.
				baseG, baseHeap = runtime.NumGoroutine(), heapInuse()
				return
			}
			servertest.WaitFor(t, 10*time.Second, "goroutines back to the level after round 1", func() bool {
				return runtime.NumGoroutine() <= baseG+5
			})
			servertest.WaitFor(t, 10*time.Second, "heap back to the level after round 1", func() bool {
				return heapInuse() <= baseHeap+4<<20
			})
		})
	}
}

// TestAcceptRateLimit: MaxConnectionsPerSecond paces upgrades; beyond it
// clients get 503 with Retry-After, and connected clients are served all
// the while.
func TestAcceptRateLimit(t *testing.T) {
	const rate = 5
	rs := redistest.Start(t)
	g := startGateway(t, rs, func(o *options) { o.srv.MaxConnectionsPerSecond = rate })
	existing := dial(t, g.wsURL(""))

	start := time.Now()
	ok, refused := 0, 0
	for range 30 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, resp, err := websocket.Dial(ctx, g.wsURL(""), nil)
		cancel()
		switch {
		case err == nil:
			ok++
			t.Cleanup(func() { _ = c.CloseNow() })
		case resp != nil && resp.StatusCode == 503:
			refused++
			if ra := resp.Header.Get("Retry-After"); ra == "" {
				t.Fatalf("503 without Retry-After: %v", resp.Header)
			}
		default:
			t.Fatalf("dial: %v", err)
		}
	}
	elapsed := time.Since(start)
	if refused == 0 || float64(ok) > rate+elapsed.Seconds()*rate+1 {
		t.Fatalf("%d accepted, %d refused in %v at %d per second", ok, refused, elapsed, rate)
	}
	existing.send(t, `{"action":"ping","requestId":"storm"}`)
	existing.expect(t, "pong")
	servertest.WaitFor(t, 5*time.Second, "an upgrade to be accepted again", func() bool {
		c, err := dialErr(g.wsURL(""), nil)
		if err == nil {
			_ = c.CloseNow()
		}
		return err == nil
	})
}

// TestShutdownAnswers503: during the paced drain of a shutdown, an upgrade
// is answered 503, also one whose TCP connection was accepted before the
// drain began but whose request arrives after the loop has started
// closing connections.
func TestShutdownAnswers503(t *testing.T) {
	rs := redistest.Start(t)
	// One loop: once an open connection has been closed, that loop's
	// drain has passed over every connection, the early one included.
	g := startGateway(t, rs, func(o *options) { o.srv.Loops = 1 })
	const clients = 20 // closed about one per 100 ms tick over the 3 s window
	for range clients {
		// Reading, so that each answers its close frame and the
		// shutdown ends well before its deadline.
		dial(t, g.wsURL("")).c.CloseRead(context.Background())
	}
	early := servertest.Dial(t, g.addr) // accepted, request not sent yet

	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- g.srv.Shutdown(ctx) }()
	servertest.WaitFor(t, 5*time.Second, "the drain to close a first connection", func() bool {
		return g.srv.Connections() < clients
	})
	if g.srv.Connections() == 0 {
		t.Fatal("every connection closed at once: the drain is not paced, nothing left to test")
	}
	early.Send(t, []byte(servertest.UpgradeRequest("/ws", "")))
	if code, head := early.ReadHead(t); code != http.StatusServiceUnavailable {
		t.Fatalf("upgrade sent during the drain on a connection accepted before it: %d %q, want 503", code, head)
	}
	if code := upgradeStatus(t, g.addr, "", "/ws", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("new upgrade during the drain: %d, want 503", code)
	}
	if code, body := g.get(t, "/health"); code != http.StatusServiceUnavailable || !strings.Contains(string(body), `"status":"shutting_down"`) {
		t.Fatalf("/health during the drain: %d %s, want 503 shutting_down", code, body)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

package fanout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

const waitTimeout = 5 * time.Second

// msg is a decoded server frame (docs/PROTOCOL.md).
type msg struct {
	Type      string          `json:"type"`
	Seq       uint64          `json:"seq"`
	Channel   string          `json:"channel"`
	Pattern   string          `json:"pattern"`
	Data      json.RawMessage `json:"data"`
	Channels  []string        `json:"channels"`
	Code      string          `json:"code"`
	Message   string          `json:"message"`
	RequestID json.RawMessage `json:"requestId"`
	Timestamp string          `json:"timestamp"`
}

// decodeFrame strips the unmasked WebSocket header of a single text frame
// and decodes its JSON payload.
func decodeFrame(tb testing.TB, b []byte) msg {
	tb.Helper()
	p, err := payloadOf(b)
	if err != nil {
		tb.Fatal(err)
	}
	var m msg
	if err := json.Unmarshal(p, &m); err != nil {
		tb.Fatalf("frame payload %q: %v", p, err)
	}
	return m
}

// client is the test's stand-in for a connection: the frames its event
// loop popped, in order.
type client struct {
	name   string
	sub    *Subscriber
	frames chan []byte
	// stalled: the consumer never pops this client (a slow reader).
	stalled atomic.Bool
	// gone: Remove was called; consumer goroutine only.
	gone bool
}

// next returns the next frame popped for c.
func (c *client) next(tb testing.TB) msg {
	tb.Helper()
	select {
	case b := <-c.frames:
		return decodeFrame(tb, b)
	case <-time.After(waitTimeout):
		tb.Fatalf("%s: no frame within %v", c.name, waitTimeout)
		return msg{}
	}
}

// expectData reads the next frame and checks it is a data frame.
func (c *client) expectData(tb testing.TB, channel, pattern, data string) msg {
	tb.Helper()
	m := c.next(tb)
	if m.Type != "data" || m.Channel != channel || m.Pattern != pattern || string(m.Data) != data {
		tb.Fatalf("%s: got %+v (data %s), want data on %q (pattern %q) with %s", c.name, m, m.Data, channel, pattern, data)
	}
	if _, err := time.Parse("2006-01-02T15:04:05.000Z", m.Timestamp); err != nil {
		tb.Fatalf("%s: timestamp %q: %v", c.name, m.Timestamp, err)
	}
	return m
}

// expectAck reads the next frame and checks it is an ack of typ.
func (c *client) expectAck(tb testing.TB, typ string, channels []string, reqID string) {
	tb.Helper()
	m := c.next(tb)
	if m.Type != typ || !slices.Equal(m.Channels, channels) || string(m.RequestID) != reqID {
		tb.Fatalf("%s: got %+v (requestId %s), want %s %q requestId %s", c.name, m, m.RequestID, typ, channels, reqID)
	}
}

// expectNothingQueued checks that no frame is waiting for c right now.
// Callers make sure whatever could be wrongly queued was delivered first
// (a later frame on the same connection acts as a barrier).
func (c *client) expectNothingQueued(tb testing.TB) {
	tb.Helper()
	select {
	case b := <-c.frames:
		tb.Fatalf("%s: unexpected frame %s", c.name, b)
	default:
	}
}

// loop stands in for one event loop: a single goroutine that owns the
// consumer side of its shard.
type loop struct {
	sh       *Shard
	owners   *sync.Map // *Subscriber → *client (the server uses Tag instead)
	wake     chan struct{}
	do       chan func()
	overflow atomic.Bool
	refusals chan Refusal // what TakeRefusals returned, for the test
}

func (l *loop) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case fn := <-l.do:
			fn()
		case <-l.wake:
			l.flush()
		}
	}
}

func (l *loop) flush() {
	l.sh.BeginFlush()
	for _, r := range l.sh.TakeRefusals() {
		select {
		case l.refusals <- r:
		default:
			l.overflow.Store(true)
		}
	}
	n := 0
	for s := l.sh.NextReady(); s != nil; s = l.sh.NextReady() {
		v, _ := l.owners.Load(s)
		c := v.(*client)
		if c.gone || c.stalled.Load() {
			continue
		}
		for f := s.Pop(); f != nil; f = s.Pop() {
			select {
			case c.frames <- bytes.Clone(f.Bytes()):
			default:
				l.overflow.Store(true)
			}
			f.Release()
			n++
		}
		// Caught up: the loss notice, as the server sends it.
		if f := s.TakeLoss(); f != nil {
			select {
			case c.frames <- bytes.Clone(f.Bytes()):
			default:
				l.overflow.Store(true)
			}
			f.Release()
		}
	}
	l.sh.AddDelivered(n)
}

// Wake is the shard's waker.
func (l *loop) Wake() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// onLoop runs fn on l's goroutine and waits for it.
func (l *loop) onLoop(tb testing.TB, fn func()) {
	tb.Helper()
	done := make(chan struct{})
	select {
	case l.do <- func() { fn(); close(done) }:
	case <-time.After(waitTimeout):
		tb.Fatal("event loop stuck")
	}
	select {
	case <-done:
	case <-time.After(waitTimeout):
		tb.Fatal("event loop stuck")
	}
}

// logRecorder is a slog.Handler that keeps the messages logged, and
// each one's err attribute (errs[i] is msgs[i]'s, "" when none).
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
	errs []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var e string
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			e = a.Value.String()
		}
		return true
	})
	r.mu.Lock()
	r.msgs = append(r.msgs, rec.Message)
	r.errs = append(r.errs, e)
	r.mu.Unlock()
	return nil
}

// errsOf returns the err attributes of the records of msg.
func (r *logRecorder) errsOf(msg string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for i, m := range r.msgs {
		if m == msg {
			out = append(out, r.errs[i])
		}
	}
	return out
}

func (r *logRecorder) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

type harness struct {
	owners sync.Map
	h      *Hub
	loops  []*loop
	logs   *logRecorder
}

// testShards is the number of shards (and stand-in loops) of startHub.
const testShards = 2

func testConfig(addr string) Config {
	return Config{
		RedisAddr: addr,
		SendQueue: 64,
		Linger:    50 * time.Millisecond,
		RetryMin:  20 * time.Millisecond,
		RetryMax:  200 * time.Millisecond,
	}
}

// startHub builds and starts a hub with one consumer goroutine per shard,
// stopped (with the hub) by a cleanup.
func startHub(tb testing.TB, cfg Config) *harness {
	tb.Helper()
	logs := &logRecorder{}
	cfg.Logger = slog.New(logs)
	hs := &harness{logs: logs}
	wakers := make([]Waker, testShards)
	for i := range wakers {
		l := &loop{wake: make(chan struct{}, 1), do: make(chan func()), owners: &hs.owners,
			refusals: make(chan Refusal, 64)}
		hs.loops = append(hs.loops, l)
		wakers[i] = l
	}
	h, err := New(cfg, wakers)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	hs.h = h
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, l := range hs.loops {
		l.sh = h.Shard(i)
		wg.Add(1)
		go func() { defer wg.Done(); l.run(stop) }()
	}
	h.Start()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			tb.Errorf("Close: %v", err)
		}
		close(stop)
		wg.Wait()
		for i, l := range hs.loops {
			if l.overflow.Load() {
				tb.Errorf("loop %d: a client's frame buffer overflowed", i)
			}
		}
	})
	return hs
}

func (hs *harness) newClient(tb testing.TB, name string, shard int) *client {
	tb.Helper()
	c := &client{name: name, frames: make(chan []byte, 1<<14)}
	c.sub = newSubscriber(hs.h, shard)
	hs.owners.Store(c.sub, c)
	if c.sub.shard.idx != shard {
		tb.Fatalf("subscriber in shard %d, want %d", c.sub.shard.idx, shard)
	}
	return c
}

// newSubscriber allocates a Subscriber of shard (the server embeds one in
// its connection instead).
func newSubscriber(h *Hub, shard int) *Subscriber {
	s := new(Subscriber)
	h.Init(s, shard)
	return s
}

// subscribe subscribes c to channels and checks the ack.
func (hs *harness) subscribe(tb testing.TB, c *client, channels []string, reqID string) {
	tb.Helper()
	hs.h.Subscribe(c.sub, channels, channels, []byte(reqID))
	c.expectAck(tb, "subscribed", channels, reqID)
}

// remove closes c the way the server does: from its event loop, which
// stops popping it first.
func (hs *harness) remove(tb testing.TB, c *client) {
	tb.Helper()
	hs.loops[c.sub.shard.idx].onLoop(tb, func() {
		c.gone = true
		hs.h.Remove(c.sub)
	})
}

func waitHealthy(tb testing.TB, h *Hub, want bool) {
	tb.Helper()
	servertest.WaitFor(tb, waitTimeout, fmt.Sprintf("Healthy() == %v", want), func() bool { return h.Healthy() == want })
}

// publishWhenSubscribed waits until Redis has a subscriber for channel
// (the hub subscribes upstream asynchronously) and publishes.
func publishWhenSubscribed(tb testing.TB, s *redistest.Server, channel, message string) {
	tb.Helper()
	servertest.WaitFor(tb, waitTimeout, "an upstream subscriber of "+channel, func() bool { return s.NumSub(tb, channel) > 0 })
	if n := s.Publish(tb, channel, message); n != 1 {
		tb.Fatalf("PUBLISH %s reached %d clients, want 1 (the hub)", channel, n)
	}
}

func TestHub(t *testing.T) {
	srv := redistest.Start(t)
	hs := startHub(t, testConfig(srv.Addr()))
	h := hs.h
	waitHealthy(t, h, true)
	if st := h.Stats(); !st.RedisUp || st.Streams != 0 || st.MessagesReceived != 0 || st.Reconnects != 0 {
		t.Fatalf("fresh Stats() = %+v", st)
	}

	a := hs.newClient(t, "a", 0)
	b := hs.newClient(t, "b", 1)
	p := hs.newClient(t, "p", 1)

	t.Run("subscribe and deliver", func(t *testing.T) {
		hs.subscribe(t, a, []string{"news", "sport"}, `"r1"`)
		hs.subscribe(t, b, []string{"news"}, `7`)
		publishWhenSubscribed(t, srv, "news", `{"n":1}`)
		servertest.WaitFor(t, waitTimeout, "sport upstream", func() bool { return srv.NumSub(t, "sport") == 1 })
		if n := srv.NumSub(t, "news"); n != 1 {
			t.Fatalf("NUMSUB news = %d, want 1: one upstream subscription however many clients", n)
		}
		srv.Publish(t, "news", `{"n":2}`)
		srv.Publish(t, "news", `not json`)
		srv.Publish(t, "sport", `"goal"`)
		for _, c := range []*client{a, b} {
			for i, data := range []string{`{"n":1}`, `{"n":2}`, `"not json"`} {
				if m := c.expectData(t, "news", "", data); m.Seq != uint64(i+1) {
					t.Fatalf("%s: seq %d, want %d", c.name, m.Seq, i+1)
				}
			}
		}
		if m := a.expectData(t, "sport", "", `"goal"`); m.Seq != 1 {
			t.Fatalf("sport seq %d, want 1 (seq is per stream)", m.Seq)
		}
		b.expectNothingQueued(t)
	})

	t.Run("pattern", func(t *testing.T) {
		hs.subscribe(t, p, []string{"news.*"}, "")
		servertest.WaitFor(t, waitTimeout, "a pattern subscription", func() bool { return srv.NumPat(t) == 1 })
		srv.Publish(t, "news.eu", `1`)
		srv.Publish(t, "news.us", `2`)
		if m := p.expectData(t, "news.eu", "news.*", "1"); m.Seq != 1 {
			t.Fatalf("pattern seq %d, want 1", m.Seq)
		}
		if m := p.expectData(t, "news.us", "news.*", "2"); m.Seq != 2 {
			t.Fatalf("pattern seq %d, want 2 (seq is per pattern stream)", m.Seq)
		}
	})

	t.Run("unsubscribe", func(t *testing.T) {
		h.Unsubscribe(a.sub, []string{"sport"}, []string{"sport"}, []byte(`"u"`))
		a.expectAck(t, "unsubscribed", []string{"sport"}, `"u"`)
		srv.Publish(t, "sport", `"late"`)
		// Barrier: news comes after sport on the same Redis link and
		// the same queue, so a sport frame would arrive first.
		srv.Publish(t, "news", `4`)
		a.expectData(t, "news", "", "4")
		b.expectData(t, "news", "", "4")
		a.expectNothingQueued(t)
		servertest.WaitFor(t, waitTimeout, "sport to be unsubscribed upstream after the linger", func() bool {
			return srv.NumSub(t, "sport") == 0
		})
	})

	t.Run("idle ring released, then delivery goes on", func(t *testing.T) {
		if q := h.Stats().Queues; q != 3 {
			t.Fatalf("Queues = %d before the release, want 3 (a, b, p hold rings)", q)
		}
		released := false
		hs.loops[1].onLoop(t, func() {
			for i := 0; i <= releaseRounds; i++ {
				released = b.sub.ReleaseIdle()
			}
		})
		if !released {
			t.Fatalf("b's ring was not released after %d quiet rounds", releaseRounds)
		}
		if q := h.Stats().Queues; q != 2 {
			t.Fatalf("Queues = %d after b's release, want 2", q)
		}
		srv.Publish(t, "news", `5`)
		if m := b.expectData(t, "news", "", "5"); m.Seq != 5 {
			t.Fatalf("seq after the release %d, want 5", m.Seq)
		}
		a.expectData(t, "news", "", "5")
		if q := h.Stats().Queues; q != 3 {
			t.Fatalf("Queues = %d after b's next frame, want 3", q)
		}
	})

	t.Run("stats", func(t *testing.T) {
		st := h.Stats()
		// news + news.* (sport expired).
		if st.Streams != 2 {
			t.Errorf("Streams = %d, want 2", st.Streams)
		}
		// news ×5, sport ×2, news.eu, news.us (the hub also receives
		// news.eu/news.us only through the pattern).
		if st.MessagesReceived != 9 {
			t.Errorf("MessagesReceived = %d, want 9", st.MessagesReceived)
		}
		if st.Dropped != 0 || !st.RedisUp || st.Reconnects != 0 {
			t.Errorf("Stats() = %+v", st)
		}
		// Acks count as delivered too: a 1 ack + 1 unsub ack + 6 data,
		// b 1 ack + 5 data, p 1 ack + 2 data. The loop counts after
		// its flush, so the count may trail the frames a moment.
		servertest.WaitFor(t, waitTimeout, "Delivered == 17", func() bool { return h.Stats().Delivered == 17 })
	})

	const lastPat = 2
	t.Run("remove", func(t *testing.T) {
		hs.remove(t, b)
		srv.Publish(t, "news", `6`)
		a.expectData(t, "news", "", "6")
		hs.remove(t, a)
		servertest.WaitFor(t, waitTimeout, "news to be unsubscribed upstream after its last subscriber left", func() bool {
			return srv.NumSub(t, "news") == 0
		})
		servertest.WaitFor(t, waitTimeout, "Streams == 1", func() bool { return h.Stats().Streams == 1 })
		if srv.NumPat(t) != 1 {
			t.Fatal("the pattern was dropped with news")
		}
		b.expectNothingQueued(t)
		a.expectNothingQueued(t)
		servertest.WaitFor(t, waitTimeout, "Queues == 1 (only p's)", func() bool { return h.Stats().Queues == 1 })
	})

	t.Run("redis down", func(t *testing.T) {
		c := hs.newClient(t, "c", 0)
		hs.subscribe(t, c, []string{"alerts", "news"}, "")
		publishWhenSubscribed(t, srv, "alerts", "1")
		c.expectData(t, "alerts", "", "1")
		srv.Publish(t, "news", `6`)
		srv.Publish(t, "news", `7`)
		// news had expired: a new stream, seq from 1.
		c.expectData(t, "news", "", "6")
		lastNews := c.expectData(t, "news", "", "7").Seq
		if lastNews != 2 {
			t.Fatalf("news seq %d, want 2 (a fresh stream)", lastNews)
		}

		srv.Kill(t)
		waitHealthy(t, h, false)
		for _, tc := range []struct {
			c        *client
			channels []string
		}{
			{c, []string{"alerts", "news"}},
			{p, []string{"news.*"}},
		} {
			m := tc.c.next(t)
			got := slices.Sorted(slices.Values(m.Channels))
			if m.Type != "error" || m.Code != "upstream_interrupted" || !slices.Equal(got, tc.channels) {
				t.Fatalf("%s: got %+v, want an upstream_interrupted error naming %q", tc.c.name, m, tc.channels)
			}
		}
		if st := h.Stats(); st.RedisUp || st.Reconnects != 1 {
			t.Fatalf("after the kill, Stats() = %+v", st)
		}

		srv.Restart(t)
		waitHealthy(t, h, true)
		publishWhenSubscribed(t, srv, "news", `8`)
		servertest.WaitFor(t, waitTimeout, "the pattern to be resubscribed", func() bool { return srv.NumPat(t) == 1 })
		srv.Publish(t, "news.eu", `3`)
		if m := c.expectData(t, "news", "", "8"); m.Seq < lastNews+2 {
			t.Fatalf("first news seq after the outage %d, want >= %d (a gap)", m.Seq, lastNews+2)
		}
		if m := p.expectData(t, "news.eu", "news.*", "3"); m.Seq < lastPat+2 {
			t.Fatalf("first pattern seq after the outage %d, want >= %d (a gap)", m.Seq, lastPat+2)
		}
		if n := srv.NumSub(t, "alerts"); n != 1 {
			t.Fatalf("alerts not resubscribed: NUMSUB %d", n)
		}
		if st := h.Stats(); !st.RedisUp || st.Reconnects != 1 || st.Streams != 3 {
			t.Fatalf("after the restart, Stats() = %+v", st)
		}
	})
}

// TestHubStartsWithoutRedis: the gateway starts while Redis is down,
// reports unhealthy, retries, and delivers once Redis appears.
func TestHubStartsWithoutRedis(t *testing.T) {
	// The port of a server that is not running: Start picks it, Kill
	// frees it, Restart brings Redis back on the same port.
	srv := redistest.Start(t)
	srv.Kill(t)

	hs := startHub(t, testConfig(srv.Addr()))
	servertest.WaitFor(t, waitTimeout, "two failed connection attempts", func() bool {
		return hs.logs.count("redis connect failed") >= 2
	})
	if hs.h.Healthy() || hs.h.Stats().RedisUp {
		t.Fatal("Healthy() with nothing listening")
	}
	// Subscribing while down is acknowledged; the stream is subscribed
	// upstream once Redis is there.
	c := hs.newClient(t, "c", 1)
	hs.subscribe(t, c, []string{"ch"}, "1")

	srv.Restart(t)
	waitHealthy(t, hs.h, true)
	publishWhenSubscribed(t, srv, "ch", `"hello"`)
	if m := c.expectData(t, "ch", "", `"hello"`); m.Seq != 1 {
		t.Fatalf("seq %d, want 1", m.Seq)
	}
	if hs.logs.count("redis link up") != 1 || hs.logs.count("redis link restored") != 0 {
		t.Fatalf("logs: %q", hs.logs.msgs)
	}
}

// TestHubDrops: a client that never reads gets its queue filled and then
// loses frames, counted per connection and in Stats; a client of the same
// stream that reads sees every seq.
func TestHubDrops(t *testing.T) {
	const n = 300
	srv := redistest.Start(t)
	cfg := testConfig(srv.Addr())
	hs := startHub(t, cfg)
	waitHealthy(t, hs.h, true)

	slow := hs.newClient(t, "slow", 0)
	fast := hs.newClient(t, "fast", 0)
	other := hs.newClient(t, "other shard", 1)
	slow.stalled.Store(true)
	hs.h.Subscribe(slow.sub, []string{"firehose"}, []string{"firehose"}, nil)
	for _, c := range []*client{fast, other} {
		hs.subscribe(t, c, []string{"firehose"}, "")
	}
	servertest.WaitFor(t, waitTimeout, "firehose upstream", func() bool { return srv.NumSub(t, "firehose") == 1 })

	// Batches of messages, each in one round trip. The reading clients
	// take each batch before the next is sent, so fewer than SendQueue
	// frames are ever owed to them, however slow their loop is (under
	// -race); the stalled client's queue fills up all the same.
	const script = `for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do redis.call('PUBLISH', KEYS[1], i) end`
	const batch = 50
	for first := 1; first <= n; first += batch {
		last := min(first+batch-1, n)
		srv.Do(t, "EVAL", script, "1", "firehose", strconv.Itoa(first), strconv.Itoa(last))
		for _, c := range []*client{fast, other} {
			for i := first; i <= last; i++ {
				if m := c.expectData(t, "firehose", "", strconv.Itoa(i)); m.Seq != uint64(i) {
					t.Fatalf("%s: seq %d, want %d (dropped %d)", c.name, m.Seq, i, c.sub.Dropped())
				}
			}
		}
	}

	// The slow client's queue went 4, 8, ... 64 slots, all still owed:
	// 124 frames, the ack first. The rest was dropped.
	queued := sum(ringSizes(cfg.SendQueue))
	wantDropped := uint64(n + 1 - queued)
	servertest.WaitFor(t, waitTimeout, "drops to be counted", func() bool { return slow.sub.Dropped() == wantDropped })
	if queued >= 2*cfg.SendQueue {
		t.Fatalf("bad test: %d queued", queued)
	}
	if d := fast.sub.Dropped() + other.sub.Dropped(); d != 0 {
		t.Fatalf("reading clients dropped %d frames", d)
	}
	st := hs.h.Stats()
	if st.Dropped != wantDropped || st.MessagesReceived != n {
		t.Fatalf("Stats() = %+v, want Dropped %d, MessagesReceived %d", st, wantDropped, n)
	}

	// The slow client reads at last: the ack, then the oldest frames in
	// order, nothing beyond the bound. Its loop skipped it while it was
	// stalled (popped from the ready queue, frames left in place), so it
	// puts it back with Requeue, as the server does after a partial
	// write, which schedules a flush.
	hs.loops[0].onLoop(t, func() {
		slow.stalled.Store(false)
		hs.loops[0].sh.Requeue(slow.sub)
	})
	slow.expectAck(t, "subscribed", []string{"firehose"}, "")
	for i := 1; i < queued; i++ {
		if m := slow.expectData(t, "firehose", "", strconv.Itoa(i)); m.Seq != uint64(i) {
			t.Fatalf("slow: seq %d, want %d", m.Seq, i)
		}
	}
	// Caught up, it is told at once what it lost after the last frame it
	// got, without waiting for the next message.
	lastSeq := uint64(queued - 1) // the ack took one slot
	slow.expectLoss(t, []lostStream{{"firehose", lastSeq, n - lastSeq}})
	slow.expectNothingQueued(t)

	// Room again: the next message reaches it, with the gap visible.
	srv.Publish(t, "firehose", "next")
	if m := slow.expectData(t, "firehose", "", `"next"`); m.Seq != n+1 {
		t.Fatalf("slow: seq %d, want %d", m.Seq, n+1)
	}
	if got := slow.sub.Dropped(); got != wantDropped {
		t.Fatalf("Dropped() = %d after reading, want %d", got, wantDropped)
	}
	slow.expectNothingQueued(t) // one notice per loss
}

// TestHubCloseWithoutStart: a hub that never started has nothing to wait
// for (a server that failed to listen, or was never started).
func TestHubCloseWithoutStart(t *testing.T) {
	h, err := New(testConfig("127.0.0.1:1"), []Waker{nopWaker{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := h.Close(ctx); err != nil {
		t.Fatalf("Close: %v, want nil at once", err)
	}
}

// TestHubConfig covers New's validation.
func TestHubConfig(t *testing.T) {
	ok := testConfig("127.0.0.1:1")
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		valid  bool
	}{
		{"valid", func(*Config) {}, true},
		{"no address", func(c *Config) { c.RedisAddr = "" }, false},
		{"no queue", func(c *Config) { c.SendQueue = 0 }, false},
		{"negative linger", func(c *Config) { c.Linger = -1 }, false},
		{"linger over a second", func(c *Config) { c.Linger = 2 * time.Second }, false},
		{"defaults", func(c *Config) { c.RetryMin, c.RetryMax, c.Handoff = 0, 0, 0 }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mutate(&cfg)
			h, err := New(cfg, []Waker{nopWaker{}})
			if tc.valid != (err == nil) {
				t.Fatalf("New: err = %v, want valid %v", err, tc.valid)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "invalid configuration") {
					t.Fatalf("error %v does not wrap ErrConfig", err)
				}
				return
			}
			if h.cfg.Handoff < 1 || h.cfg.RetryMin <= 0 || h.cfg.RetryMax < h.cfg.RetryMin || h.log == nil {
				t.Fatalf("defaults not applied: %+v", h.cfg)
			}
		})
	}
	for _, tc := range []struct {
		name   string
		wakers []Waker
	}{
		{"no waker", nil},
		{"a nil waker", []Waker{nopWaker{}, nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(ok, tc.wakers); !errors.Is(err, ErrConfig) {
				t.Fatalf("New: err = %v, want ErrConfig", err)
			}
		})
	}
}

// nopWaker is the waker of a shard whose loop the test plays itself.
type nopWaker struct{}

func (nopWaker) Wake() {}

// TestHubRefusedStreamKeepsLink: an upstream SUBSCRIBE that Redis refuses
// (NOPERM from an ACL channel rule of the gateway's Redis user) fails the
// request that asked for it, whole, and drops the stream; the link, its
// health and every other stream carry on, with no upstream_interrupted.
func TestHubRefusedStreamKeepsLink(t *testing.T) {
	srv := redistest.Start(t)
	if r := srv.Do(t, "ACL", "SETUSER", "gw", "on", ">pw", "~*", "resetchannels", "&ok:*", "+@all"); r != "OK" {
		t.Fatalf("ACL SETUSER = %q", r)
	}
	cfg := testConfig(srv.Addr())
	cfg.RedisUsername, cfg.RedisPassword = "gw", "pw"
	hs := startHub(t, cfg)
	waitHealthy(t, hs.h, true)

	c := hs.newClient(t, "c", 0)
	hs.subscribe(t, c, []string{"ok:1"}, "")
	publishWhenSubscribed(t, srv, "ok:1", "1")
	c.expectData(t, "ok:1", "", "1")

	// A request naming an allowed and a refused stream fails whole.
	hs.h.Subscribe(c.sub, []string{"ok:2", "forbidden", "ok:1*"}, []string{"ok:1", "ok:2", "forbidden", "ok:1*"}, []byte(`"r"`))
	m := c.next(t)
	if m.Type != "error" || m.Code != "upstream_refused" || string(m.RequestID) != `"r"` ||
		!slices.Equal(m.Channels, []string{"forbidden", "ok:1*"}) {
		t.Fatalf("got %+v, want upstream_refused for forbidden and ok:1* (Redis compares patterns as strings)", m)
	}
	select {
	case r := <-hs.loops[0].refusals:
		if r.Sub != c.sub || !slices.Equal(r.Channels, []string{"ok:2", "forbidden", "ok:1*"}) {
			t.Fatalf("refusal %+v, want every channel the request added", r)
		}
	case <-time.After(waitTimeout):
		t.Fatal("no Refusal for the loop")
	}
	if !hs.h.Healthy() {
		t.Fatal("a refused stream took the link down")
	}
	servertest.WaitFor(t, waitTimeout, "ok:2 to be dropped after its linger", func() bool { return hs.h.Stats().Streams == 1 })
	// The table forgets the stream before Redis has answered its
	// UNSUBSCRIBE: wait for that answer.
	servertest.WaitFor(t, waitTimeout, "no subscription to ok:2 left in Redis after the request was refused", func() bool {
		return srv.NumSub(t, "ok:2") == 0
	})
	// Delivery never stopped: the seq is contiguous, no interruption.
	srv.Publish(t, "ok:1", "2")
	if m := c.expectData(t, "ok:1", "", "2"); m.Seq != 2 {
		t.Fatalf("seq %d, want 2: the link must not have gone down", m.Seq)
	}
	if n := hs.h.Stats().Reconnects; n != 0 {
		t.Fatalf("%d reconnects", n)
	}
	// The same stream may be asked for again, and is refused again.
	hs.h.Subscribe(c.sub, []string{"forbidden"}, []string{"forbidden"}, nil)
	if m := c.next(t); m.Code != "upstream_refused" {
		t.Fatalf("got %+v, want upstream_refused", m)
	}
}

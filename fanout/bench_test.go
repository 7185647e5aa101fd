package fanout

import (
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsgw/gateway/wsproto"
)

// newOfflineHub builds a hub that is never started: no Redis, no shard or
// control goroutine. The caller plays those parts itself.
func newOfflineHub(tb testing.TB, shards, sendQueue int) *Hub {
	tb.Helper()
	wakers := make([]Waker, shards)
	for i := range wakers {
		wakers[i] = nopWaker{}
	}
	h, err := New(Config{
		RedisAddr: "127.0.0.1:1",
		SendQueue: sendQueue,
		Handoff:   64,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, wakers)
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// newOfflineStream builds a stream the way Hub.subscribe does, without
// registering it anywhere.
func newOfflineStream(h *Hub, name string) *stream {
	return &stream{
		name:      name,
		subs:      make([][]*Subscriber, len(h.shards)),
		shardSubs: make([]atomic.Int32, len(h.shards)),
	}
}

// addOffline joins n new subscribers of shard 0 to st, acting as the shard
// goroutine, and drains their acks acting as the loop.
func addOffline(tb testing.TB, h *Hub, st *stream, n int) []*Subscriber {
	tb.Helper()
	sh := h.Shard(0)
	subs := make([]*Subscriber, n)
	for i := range subs {
		subs[i] = newSubscriber(h, 0)
		st.refs.Add(1)
		sh.add(subs[i], []*stream{st}, wsproto.NewSubscribed([]string{st.name}, nil, time.Now()))
	}
	if got := drainShard(sh); got != n {
		tb.Fatalf("drained %d acks, want %d", got, n)
	}
	if got := st.shardSubs[0].Load(); got != int32(n) {
		tb.Fatalf("shardSubs = %d, want %d", got, n)
	}
	return subs
}

// drainShard is one flush of the event loop: every ready subscriber,
// every frame, released after "writing". It returns the frames written.
func drainShard(sh *Shard) int {
	sh.BeginFlush()
	n := 0
	for s := sh.NextReady(); s != nil; s = sh.NextReady() {
		for f := s.Pop(); f != nil; f = s.Pop() {
			f.Release()
			n++
		}
	}
	return n
}

const benchPayload = `{"price":101.25,"symbol":"ACME","size":300}`

// TestDeliverAllocs: fanning one frame out to 1,000 subscribers and
// draining them allocates nothing per subscriber; what is left is the
// frame itself (pooled, so usually nothing at all).
func TestDeliverAllocs(t *testing.T) {
	for _, tc := range []struct {
		name string
		subs int
	}{
		{"1 subscriber", 1},
		{"1000 subscribers", 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newOfflineHub(t, 1, 64)
			st := newOfflineStream(h, "ticks")
			addOffline(t, h, st, tc.subs)
			sh := h.Shard(0)
			now := time.Now()
			var seq uint64
			bad := 0
			allocs := testing.AllocsPerRun(200, func() {
				seq++
				sh.deliver(st, wsproto.BuildData(seq, "ticks", "", benchPayload, now))
				if drainShard(sh) != tc.subs {
					bad++
				}
			})
			if bad != 0 {
				t.Fatalf("%d runs did not deliver to every subscriber", bad)
			}
			t.Logf("%.2f allocs per deliver+drain", allocs)
			if allocs > 3 {
				t.Fatalf("deliver+drain to %d subscribers: %.1f allocs, want <= 3 (nothing per subscriber)", tc.subs, allocs)
			}
			if d := sh.dropped.Load(); d != 0 {
				t.Fatalf("%d frames dropped", d)
			}
		})
	}
}

// TestOnMessage covers the rueidis callback's hand-off: shards without
// subscribers of the stream are skipped, a full shard channel drops the
// message for that shard only (counted), and the seq is taken either way.
func TestOnMessage(t *testing.T) {
	h := newOfflineHub(t, 3, 64)
	st := newOfflineStream(h, "ch")
	h.channels.Store("ch", st)
	pat := newOfflineStream(h, "ch.*")
	pat.pattern = true
	h.patterns.Store("ch.*", pat)
	st.shardSubs[0].Store(1)
	st.shardSubs[2].Store(5)
	pat.shardSubs[1].Store(1)

	type want struct {
		shard int
		st    *stream
		seq   uint64
	}
	recv := func(t *testing.T, w want) {
		t.Helper()
		select {
		case op := <-h.Shard(w.shard).in:
			m := decodeFrame(t, op.frame.Bytes())
			if op.kind != opDeliver || op.st != w.st || m.Seq != w.seq {
				t.Fatalf("shard %d: op %v stream %q seq %d, want deliver of %q seq %d", w.shard, op.kind, op.st.name, m.Seq, w.st.name, w.seq)
			}
			op.frame.Release()
		default:
			t.Fatalf("shard %d: nothing handed over", w.shard)
		}
	}
	empty := func(t *testing.T) {
		t.Helper()
		for i, sh := range h.shards {
			if n := len(sh.in); n != 0 {
				t.Fatalf("shard %d has %d unexpected ops", i, n)
			}
		}
	}

	t.Run("channel", func(t *testing.T) {
		h.onMessage(rueidis.PubSubMessage{Channel: "ch", Message: "1"})
		recv(t, want{0, st, 1})
		recv(t, want{2, st, 1})
		empty(t)
	})
	t.Run("pattern", func(t *testing.T) {
		h.onMessage(rueidis.PubSubMessage{Channel: "ch.x", Pattern: "ch.*", Message: "1"})
		recv(t, want{1, pat, 1})
		empty(t)
	})
	t.Run("unknown stream", func(t *testing.T) {
		h.onMessage(rueidis.PubSubMessage{Channel: "gone", Message: "1"})
		empty(t)
	})
	t.Run("full shard", func(t *testing.T) {
		sh := h.Shard(2)
		for len(sh.in) < cap(sh.in) {
			sh.in <- shardOp{kind: opInterrupted}
		}
		before := h.Stats()
		h.onMessage(rueidis.PubSubMessage{Channel: "ch", Message: "2"})
		recv(t, want{0, st, 2})
		after := h.Stats()
		if after.HandoffDropped != before.HandoffDropped+1 || after.Dropped != before.Dropped || after.MessagesReceived != before.MessagesReceived+1 {
			t.Fatalf("Stats before %+v, after %+v: want one more hand-off drop and received, no queue drop", before, after)
		}
		for len(sh.in) > 0 {
			<-sh.in
		}
		h.onMessage(rueidis.PubSubMessage{Channel: "ch", Message: "3"})
		recv(t, want{0, st, 3})
		recv(t, want{2, st, 3}) // the gap (2) is visible
		empty(t)
	})
}

// TestStatsDropUnits: frames a connection's full queue refused and
// messages a shard's full hand-off channel refused are counted apart, each
// in its own unit and read once per Stats, so that a snapshot taken while
// hand-offs fail never shows them as connection drops (nor, subtracted
// from one another, as a counter that wrapped around).
func TestStatsDropUnits(t *testing.T) {
	const (
		sendQueue = 4 // the first ring is the whole queue
		frames    = 10
		messages  = 5000
	)
	h := newOfflineHub(t, 2, sendQueue)
	st := newOfflineStream(h, "ch")
	h.channels.Store("ch", st)
	addOffline(t, h, st, 1) // shard 0, its ack drained

	// A connection that does not read: its queue takes sendQueue frames
	// and refuses the rest.
	for i := range frames {
		h.Shard(0).deliver(st, wsproto.BuildData(uint64(i+1), "ch", "", "1", time.Now()))
	}
	const queueDrops = frames - sendQueue
	if s := h.Stats(); s.Dropped != queueDrops || s.HandoffDropped != 0 {
		t.Fatalf("after a full queue: Dropped %d, HandoffDropped %d; want %d and 0", s.Dropped, s.HandoffDropped, queueDrops)
	}

	// Nobody consumes the shards' channels now: once both are full,
	// every message is refused by both shards. Snapshots taken meanwhile
	// must keep the connection drops as they were.
	st.shardSubs[1].Store(1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range messages {
			h.onMessage(rueidis.PubSubMessage{Channel: "ch", Message: strconv.Itoa(i)})
		}
	}()
	var last uint64
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		s := h.Stats()
		if s.Dropped != queueDrops {
			t.Fatalf("Dropped = %d while only hand-offs failed, want %d (HandoffDropped %d)", s.Dropped, queueDrops, s.HandoffDropped)
		}
		if s.HandoffDropped < last {
			t.Fatalf("HandoffDropped went back from %d to %d", last, s.HandoffDropped)
		}
		last = s.HandoffDropped
	}
	held := 0
	for _, sh := range h.shards {
		held += len(sh.in)
		for len(sh.in) > 0 {
			(<-sh.in).frame.Release()
		}
	}
	if s := h.Stats(); s.HandoffDropped != uint64(2*messages-held) || s.Dropped != queueDrops {
		t.Fatalf("after %d messages to 2 shards holding %d: HandoffDropped %d, Dropped %d; want %d and %d",
			messages, held, s.HandoffDropped, s.Dropped, 2*messages-held, queueDrops)
	}
}

// BenchmarkRingPushPop is one push and one pop on a warmed queue.
func BenchmarkRingPushPop(b *testing.B) {
	f := wsproto.NewPong(nil, time.Now())
	defer f.Release()
	var q queue
	for range 64 { // grow to the bound first
		q.push(f, 64)
	}
	for q.pop() != nil {
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if !q.push(f, 64) {
			b.Fatal("push refused")
		}
		if q.pop() != f {
			b.Fatal("pop lost the frame")
		}
	}
	b.StopTimer()
	if a := testing.AllocsPerRun(1000, func() { q.push(f, 64); q.pop() }); a != 0 {
		b.Fatalf("push+pop allocates %.1f times, want 0", a)
	}
}

// BenchmarkFanout10k is the per-message work of one shard and its loop
// for a stream with 10,000 local subscribers: encode once, fan out, flush.
func BenchmarkFanout10k(b *testing.B) {
	const n = 10_000
	h := newOfflineHub(b, 1, 64)
	st := newOfflineStream(h, "ticks")
	addOffline(b, h, st, n)
	sh := h.Shard(0)
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		sh.deliver(st, wsproto.BuildData(uint64(i+1), "ticks", "", benchPayload, now))
		if got := drainShard(sh); got != n {
			b.Fatalf("drained %d frames, want %d", got, n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/sub")
}

// BenchmarkOnMessage is the rueidis callback for a stream followed in one
// shard: lookup, seq, encode, hand-off.
func BenchmarkOnMessage(b *testing.B) {
	h := newOfflineHub(b, 4, 64)
	st := newOfflineStream(h, "ticks")
	h.channels.Store("ticks", st)
	st.shardSubs[2].Store(1)
	sh := h.Shard(2)
	m := rueidis.PubSubMessage{Channel: "ticks", Message: benchPayload}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		h.onMessage(m)
		op := <-sh.in
		op.frame.Release()
	}
	b.StopTimer()
	if d := h.Stats().HandoffDropped; d != 0 {
		b.Fatalf("%d hand-offs dropped", d)
	}
}

// TestDurableDeliverAllocs: a live durable frame goes to the shards of its
// subscribers with no copy of their list per frame (the split by shard is
// rebuilt only when they change).
func TestDurableDeliverAllocs(t *testing.T) {
	h := newOfflineHub(t, 2, 64)
	k := hubSink{d: &DurableHub{hub: h}}
	st := &DurableStream{name: "d:x"}
	for i := range 10 {
		st.subs = append(st.subs, newSubscriber(h, i%2))
	}
	st.subsChanged++
	f := wsproto.BuildEntry(1, "d:x", "", id(t, "1-0"), "1", time.Now())
	defer f.Release()
	deliver := func() {
		f.Retain(1)
		k.Deliver(st, st.subs, f)
		for _, sh := range h.shards {
			op := <-sh.in
			if len(op.subs) != 5 {
				t.Fatalf("shard %d got %d subscribers, want 5", sh.idx, len(op.subs))
			}
			op.frame.Release()
		}
	}
	deliver() // builds the split
	if a := testing.AllocsPerRun(100, deliver); a != 0 {
		t.Fatalf("Deliver allocates %v times per frame, want 0", a)
	}
	// A change of subscribers is seen.
	st.subs = st.subs[:4]
	st.subsChanged++
	f.Retain(1)
	k.Deliver(st, st.subs, f)
	for _, sh := range h.shards {
		if op := <-sh.in; len(op.subs) != 2 {
			t.Fatalf("after the change shard %d got %d subscribers, want 2", sh.idx, len(op.subs))
		} else {
			op.frame.Release()
		}
	}
}

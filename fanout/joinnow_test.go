package fanout

import (
	"strconv"
	"testing"
	"time"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
	"github.com/wsgw/gateway/wsproto"
)

// joinNow calls JoinNow for c on its stand-in event loop.
func (hs *harness) joinNow(tb testing.TB, c *client, names ...string) bool {
	tb.Helper()
	var ok bool
	hs.loops[c.sub.shard.idx].onLoop(tb, func() { ok = hs.h.JoinNow(c.sub, names) })
	return ok
}

// TestJoinNow: a subscribe to streams the hub follows already joins at
// once, without an ack from the hub (the caller answers) and without
// Redis; anything else (a new stream, one gone after its linger) is left
// to Subscribe, with nothing changed.
func TestJoinNow(t *testing.T) {
	srv := redistest.Start(t)
	hs := startHub(t, testConfig(srv.Addr()))
	waitHealthy(t, hs.h, true)

	a := hs.newClient(t, "a", 0)
	b := hs.newClient(t, "b", 1)
	c := hs.newClient(t, "c", 0)

	t.Run("new stream: refused, nothing changed", func(t *testing.T) {
		if hs.joinNow(t, b, "news") {
			t.Fatal("JoinNow joined a stream nobody follows")
		}
		if n := hs.h.Stats().Streams; n != 0 {
			t.Fatalf("%d streams after a refused JoinNow, want 0", n)
		}
	})
	t.Run("followed streams: joined, data follows in order", func(t *testing.T) {
		hs.subscribe(t, a, []string{"news", "news.*"}, `1`)
		publishWhenSubscribed(t, srv, "news", `{"n":1}`)
		a.expectData(t, "news", "", `{"n":1}`)
		if !hs.joinNow(t, b, "news", "news.*") {
			t.Fatal("JoinNow refused streams the hub follows")
		}
		srv.Publish(t, "news", `{"n":2}`)
		// No ack from the hub: the first frame is data. It may be
		// message 1: the reader that dispatched it to a's shard can
		// still be on its way through the shards when b is counted
		// in (as on the Subscribe path, where the shard counts b in
		// while the reader runs); then it comes whole, with seq 1,
		// and message 2 follows.
		m := b.next(t)
		if m.Type == "data" && m.Seq == 1 && string(m.Data) == `{"n":1}` {
			m = b.next(t)
		}
		if m.Type != "data" || m.Channel != "news" || string(m.Data) != `{"n":2}` || m.Seq != 2 {
			t.Fatalf("b: got %+v (data %s), want message 2 with seq 2", m, m.Data)
		}
		a.expectData(t, "news", "", `{"n":2}`)
		srv.Publish(t, "news.eu", `3`)
		b.expectData(t, "news.eu", "news.*", `3`)
		a.expectData(t, "news.eu", "news.*", `3`)
		if n := srv.NumSub(t, "news"); n != 1 {
			t.Fatalf("NUMSUB news = %d, want 1", n)
		}
	})
	t.Run("one unknown name: refused whole, references given back", func(t *testing.T) {
		if hs.joinNow(t, c, "news", "sport") {
			t.Fatal("JoinNow joined with a stream nobody follows")
		}
		// a and b leave: with c's refused reference given back, news
		// lingers and goes.
		hs.remove(t, a)
		hs.remove(t, b)
		servertest.WaitFor(t, waitTimeout, "news unsubscribed upstream", func() bool { return srv.NumSub(t, "news") == 0 })
		servertest.WaitFor(t, waitTimeout, "no stream left", func() bool { return hs.h.Stats().Streams == 0 })
	})
	t.Run("gone after its linger: refused", func(t *testing.T) {
		if hs.joinNow(t, c, "news") {
			t.Fatal("JoinNow joined a stream removed after its linger")
		}
		hs.subscribe(t, c, []string{"news"}, `2`)
		publishWhenSubscribed(t, srv, "news", `{"n":4}`)
		if m := c.expectData(t, "news", "", `{"n":4}`); m.Seq != 1 {
			t.Fatalf("seq %d on the new stream, want 1", m.Seq)
		}
	})
}

// TestShardJoinDropped: a JoinNow subscriber reaching its shard after
// Redis refused one of the streams (dropped on a reconnect) joins the
// others and is refused that one, as every subscriber of it was.
func TestShardJoinDropped(t *testing.T) {
	h := newOfflineHub(t, 1, 64)
	sh := h.Shard(0)
	ok := newOfflineStream(h, "ok")
	gone := newOfflineStream(h, "gone")
	gone.dropped.Store(true)
	ok.refs.Add(1)
	gone.refs.Add(1)
	// As JoinNow does before the opJoin.
	ok.shardSubs[0].Add(1)
	gone.shardSubs[0].Add(1)
	s := newSubscriber(h, 0)
	sh.join(s, []*stream{ok, gone})

	if n := ok.shardSubs[0].Load(); n != 1 || len(ok.subs[0]) != 1 {
		t.Fatalf("ok: shardSubs %d, %d subs; want 1 and 1", n, len(ok.subs[0]))
	}
	if n := gone.shardSubs[0].Load(); n != 0 || len(gone.subs[0]) != 0 {
		t.Fatalf("gone: shardSubs %d, %d subs; want 0 and 0", n, len(gone.subs[0]))
	}
	if r := gone.refs.Load(); r != 0 {
		t.Fatalf("gone: refs %d, want 0 (given back)", r)
	}
	refs := sh.TakeRefusals()
	if len(refs) != 1 || refs[0].Sub != s || len(refs[0].Channels) != 1 || refs[0].Channels[0] != "gone" {
		t.Fatalf("refusals %+v, want one for gone", refs)
	}
	f := s.Pop()
	if f == nil {
		t.Fatal("no error frame queued")
	}
	m := decodeFrame(t, f.Bytes())
	f.Release()
	if m.Type != "error" || m.Code != string(wsproto.CodeUpstreamRefused) || len(m.Channels) != 1 || m.Channels[0] != "gone" {
		t.Fatalf("got %+v, want an upstream_refused error naming gone", m)
	}
}

// TestJoinNowRacesLinger joins a stream at moments around the end of its
// linger, over and over: a JoinNow that succeeds must find the stream
// still subscribed upstream and delivering (never a stream the control
// goroutine is removing), and one that fails leaves the stream to go.
func TestJoinNowRacesLinger(t *testing.T) {
	srv := redistest.Start(t)
	cfg := testConfig(srv.Addr())
	cfg.Linger = 20 * time.Millisecond
	hs := startHub(t, cfg)
	waitHealthy(t, hs.h, true)

	const rounds = 40
	joined := 0
	for i := range rounds {
		x := hs.newClient(t, "x", i%testShards)
		hs.subscribe(t, x, []string{"churn"}, `1`)
		servertest.WaitFor(t, waitTimeout, "churn subscribed upstream", func() bool { return srv.NumSub(t, "churn") == 1 })
		hs.remove(t, x)
		// Spread the join over the linger's end (20 ms, checked on
		// the control goroutine's 100 ms tick): 0 to 152 ms lands
		// before, around and after the expiry, so both outcomes
		// come up. The pause shapes the race; nothing waits on it.
		time.Sleep(time.Duration(i%20) * 8 * time.Millisecond)
		y := hs.newClient(t, "y", (i+1)%testShards)
		if hs.joinNow(t, y, "churn") {
			joined++
			publishWhenSubscribed(t, srv, "churn", `{"round":`+strconv.Itoa(i)+`}`)
			y.expectData(t, "churn", "", `{"round":`+strconv.Itoa(i)+`}`)
			hs.remove(t, y)
		}
		servertest.WaitFor(t, waitTimeout, "churn gone upstream", func() bool { return srv.NumSub(t, "churn") == 0 })
		servertest.WaitFor(t, waitTimeout, "no stream left", func() bool { return hs.h.Stats().Streams == 0 })
	}
	t.Logf("%d of %d joins succeeded", joined, rounds)
	if joined == 0 || joined == rounds {
		t.Logf("every join went the same way: the race was not exercised this run")
	}
}

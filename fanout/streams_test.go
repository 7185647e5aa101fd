package fanout

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
	"github.com/wsgw/gateway/wsproto"
)

// TestStreamsLive: a subscription without since starts at the stream's
// end ("replayed" with count 0 and the seam), then gets every live entry
// once, in order, seq rising by one, id and data as added; a stream that
// does not exist yet starts at 0-0 and gets its first entry.
func TestStreamsLive(t *testing.T) {
	rs := redistest.Start(t)
	sink := newTestSink()
	s := startStreams(t, rs, StreamConfig{Channels: []string{"ev:*"}}, sink)
	before := xadd(t, rs, "stream:ev:a", "old")

	subA, a := sink.newSub()
	subN, n := sink.newSub()
	s.Join(subA, Resume{Name: "ev:a"}, []byte(`"ra"`))
	s.Join(subN, Resume{Name: "ev:new"}, nil)
	fa, fn := waitFrames(t, a, 1), waitFrames(t, n, 1)
	if m := fa[0]; m.Type != "replayed" || m.Channel != "ev:a" || m.Count != 0 || m.LastID != before || string(m.RequestID) != `"ra"` {
		t.Fatalf("first frame %v %s, want replayed count 0 lastId %s requestId \"ra\"", m, m.RequestID, before)
	}
	if m := fn[0]; m.Type != "replayed" || m.LastID != "0-0" {
		t.Fatalf("first frame of a missing stream %v, want replayed lastId 0-0", m)
	}

	var ids []string
	for i := 1; i <= 50; i++ {
		ids = append(ids, xadd(t, rs, "stream:ev:a", fmt.Sprintf(`{"n":%d}`, i)))
	}
	first := xadd(t, rs, "stream:ev:new", "plain")
	rs.Do(t, "XADD", "stream:ev:new", "*", "other", "x") // no data field
	fa = waitFrames(t, a, 51)
	for i, m := range fa[1:] {
		if m.Type != "data" || m.Replay || m.Channel != "ev:a" || m.Pattern != "" || m.ID != ids[i] ||
			m.Seq != uint64(i+1) || string(m.Data) != fmt.Sprintf(`{"n":%d}`, i+1) {
			t.Fatalf("frame %d: %v, want data #%d %s", i+1, m, i+1, ids[i])
		}
	}
	fn = waitFrames(t, n, 3)
	if fn[1].ID != first || string(fn[1].Data) != `"plain"` || fn[1].Seq != 1 || string(fn[2].Data) != "null" {
		t.Fatalf("new stream frames %v, want its first entry (data \"plain\"), then data null", fn)
	}
	sink.check(t)
	if st := s.Stats(); st.Readers != 1 || st.Streams != 2 || st.Keys != 2 || st.Entries != 52 {
		t.Fatalf("stats %+v", st)
	}
}

// TestStreamsResume: a resume replays exactly the entries after its
// position, then live, with no gap or duplicate, for an exact channel and
// for a pattern (merged in ID order, positions per channel, the floor
// for the others).
func TestStreamsResume(t *testing.T) {
	rs := redistest.Start(t)
	sink := newTestSink()
	s := startStreams(t, rs, StreamConfig{Channels: []string{"rs:*"}}, sink)
	var a, b []string
	for i := range 10 {
		a = append(a, xadd(t, rs, "stream:rs:a", "a"+strconv.Itoa(i)))
		b = append(b, xadd(t, rs, "stream:rs:b", "b"+strconv.Itoa(i)))
	}

	t.Run("exact", func(t *testing.T) {
		sub, ss := sink.newSub()
		s.Join(sub, Resume{Name: "rs:a", Since: id(t, a[3]), HasSince: true}, []byte("1"))
		got := waitFrames(t, ss, 7)
		for i, m := range got[:6] {
			if m.Type != "data" || !m.Replay || m.Seq != 0 || m.ID != a[4+i] || string(m.Data) != fmt.Sprintf(`"a%d"`, 4+i) {
				t.Fatalf("frame %d: %v, want replay of %s", i, m, a[4+i])
			}
		}
		if m := got[6]; m.Type != "replayed" || m.Count != 6 || m.LastID != a[9] || string(m.RequestID) != "1" {
			t.Fatalf("frame 6: %v, want replayed count 6 lastId %s", m, a[9])
		}
		next := xadd(t, rs, "stream:rs:a", "live")
		if m := waitFrames(t, ss, 8)[7]; m.Replay || m.ID != next {
			t.Fatalf("after the seam: %v, want live %s", m, next)
		}
	})
	t.Run("pattern", func(t *testing.T) {
		sub, ss := sink.newSub()
		// rs:a from a[6], rs:b from the pattern's position b[1].
		s.Join(sub, Resume{Name: "rs:*", Since: id(t, b[1]), HasSince: true,
			Channels: []ChannelPosition{{Channel: "rs:a", ID: id(t, a[6])}}}, nil)
		var want []string // a[7..9], b[2..9] (and the live one on rs:a above) in ID order
		want = append(want, b[2:]...)
		want = append(want, a[7:]...)
		got := waitFrames(t, ss, 1)
		servertest.WaitFor(t, 10*time.Second, "replayed", func() bool {
			got = ss.snapshot()
			return got[len(got)-1].Type == "replayed"
		})
		var replayed []string
		for i, m := range got[:len(got)-1] {
			if !m.Replay || m.Pattern != "rs:*" {
				t.Fatalf("frame %v, want a replay of the pattern", m)
			}
			replayed = append(replayed, m.ID)
			// Two keys can have the same ID: the channel breaks the tie.
			if i > 0 && !above(id(t, m.ID), m.Channel, id(t, got[i-1].ID), got[i-1].Channel) {
				t.Fatalf("replay out of (ID, channel) order: %v", got)
			}
		}
		if len(replayed) != len(want)+1 { // + the live entry of the exact subtest
			t.Fatalf("replayed %d entries %v, want %d", len(replayed), replayed, len(want)+1)
		}
		last := got[len(got)-1]
		floor := id(t, last.LastID)
		if last.Count != uint64(len(replayed)) || floor.Seq != ^uint64(0) {
			t.Fatalf("replayed frame %v, want count %d and a floor (T-1)-max", last, len(replayed))
		}
		next := xadd(t, rs, "stream:rs:b", "live")
		if m := waitFrames(t, ss, len(got)+1)[len(got)]; m.Replay || m.ID != next || m.Channel != "rs:b" || !floor.Less(id(t, next)) {
			t.Fatalf("after the seam: %v, want live %s above the floor %s", m, next, floor)
		}
	})
	sink.check(t)
}

// TestStreamIDsFromRedis: what Redis generates parses strictly.
func TestStreamIDsFromRedis(t *testing.T) {
	rs := redistest.Start(t)
	for _, v := range []string{"1-1", "1-2", "18446744073709551615-0"} {
		if got := rs.Do(t, "XADD", "k", v, "f", "v"); got != v {
			t.Fatalf("XADD %s = %s", v, got)
		}
		if _, ok := wsproto.ParseStreamID(v); !ok {
			t.Fatalf("%s does not parse", v)
		}
	}
}

// exClient is a client of TestStreamsExactness: it subscribes to the
// three channels exactly or through the pattern, disconnects at random and
// resumes on either gateway with what it holds.
type exClient struct {
	pattern bool
	vals    map[string][]int            // per channel, the data received in order
	pos     map[string]wsproto.StreamID // per channel, the last id
	floor   *wsproto.StreamID           // the pattern's lastId from its last replayed
	resumes int
}

// absorb applies the frames one connection got, in order.
func (c *exClient) absorb(tb testing.TB, frames []dmsg) error {
	for _, m := range frames {
		switch m.Type {
		case "data":
			v, err := strconv.Atoi(string(m.Data))
			if err != nil {
				return fmt.Errorf("data %s: %v", m.Data, err)
			}
			c.vals[m.Channel] = append(c.vals[m.Channel], v)
			c.pos[m.Channel] = id(tb, m.ID)
		case "replayed":
			last := id(tb, m.LastID)
			if c.pattern {
				c.floor = &last
			} else if p, ok := c.pos[m.Channel]; !ok || p.Less(last) {
				c.pos[m.Channel] = last
			}
		default:
			return fmt.Errorf("unexpected frame %v", m)
		}
	}
	return nil
}

// resume is what the client sends when it comes back.
func (c *exClient) resume(names []string) []Resume {
	if c.pattern {
		r := Resume{Name: "ex:*"}
		if c.floor != nil {
			r.Since, r.HasSince = *c.floor, true
		}
		for ch, p := range c.pos {
			r.Channels = append(r.Channels, ChannelPosition{Channel: ch, ID: p})
		}
		return []Resume{r}
	}
	var out []Resume
	for _, n := range names {
		r := Resume{Name: n}
		if p, ok := c.pos[n]; ok {
			r.Since, r.HasSince = p, true
		}
		out = append(out, r)
	}
	return out
}

// TestStreamsExactness: a publisher adds entries at a steady rate to 3
// durable channels while clients, half on the channels and half on a
// pattern over them, disconnect at random moments and resume on either of
// two gateways (two Streams on one Redis). Every client must end with
// exactly the published sequence of each channel from its first entry: no
// gap, no duplicate, in order, up to the last one.
func TestStreamsExactness(t *testing.T) {
	tests := []struct {
		name              string
		pageMax, liveRead int
	}{
		{"default sizes", pageMax, liveCount},
		// Replays over many turns: the merge across keys bounded by a
		// full page, the seam reached after several live reads.
		{"small pages", 7, 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Restored after the readers stop (cleanups run last first).
			p, l := pageMax, liveCount
			t.Cleanup(func() { pageMax, liveCount = p, l })
			pageMax, liveCount = tt.pageMax, tt.liveRead
			testExactness(t)
		})
	}
}

func testExactness(t *testing.T) {
	rs := redistest.Start(t)
	sink := newTestSink()
	cfg := StreamConfig{Channels: []string{"ex:*"}, MaxReplay: 1_000_000}
	gws := []*Streams{startStreams(t, rs, cfg, sink), startStreams(t, rs, cfg, sink)}
	names := []string{"ex:k0", "ex:k1", "ex:k2"}
	const total = 6000
	var published [3]atomic.Int64
	pubDone := make(chan struct{})
	pubErr := make(chan error, 1)
	go func() {
		defer close(pubDone)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; i < total; i += 3 {
			<-tick.C
			for j := 0; j < 3; j++ {
				k := rand.IntN(3)
				n := published[k].Add(1)
				if _, err := rs.Exec("XADD", "stream:"+names[k], "*", "data", strconv.FormatInt(n, 10)); err != nil {
					pubErr <- err
					return
				}
			}
		}
	}()

	const nclients = 30
	clients := make([]*exClient, nclients)
	type conn struct {
		gw  *Streams
		sub *Subscriber
		ss  *sinkSub
	}
	final := make([]conn, nclients)
	var wg sync.WaitGroup
	errs := make(chan error, nclients)
	for i := range clients {
		c := &exClient{pattern: i%2 == 1, vals: map[string][]int{}, pos: map[string]wsproto.StreamID{}}
		clients[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			connect := func() conn {
				gw := gws[rand.IntN(2)]
				sub, ss := sink.newSub()
				for _, r := range c.resume(names) {
					gw.Join(sub, r, nil)
				}
				return conn{gw, sub, ss}
			}
			time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond) // a random start, not synchronisation
			cn := connect()
			for {
				select {
				case <-pubDone:
					final[i] = cn
					return
				case <-time.After(time.Duration(rand.IntN(200)) * time.Millisecond):
				}
				// Disconnect: what the connection got is all it got.
				cn.ss.close()
				cn.gw.Remove(cn.sub)
				if err := c.absorb(t, cn.ss.snapshot()); err != nil {
					errs <- err
					return
				}
				time.Sleep(time.Duration(rand.IntN(200)) * time.Millisecond) // offline for a random while
				c.resumes++
				cn = connect()
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-pubErr:
		t.Fatal(err)
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	// Each client's last connection ends with the last entry of each
	// channel.
	want := func(ch string) int { return int(published[slices.Index(names, ch)].Load()) }
	servertest.WaitFor(t, 2*time.Minute, "every client to have every channel's last entry", func() bool {
		for i, c := range clients {
			last := map[string]int{}
			for _, m := range final[i].ss.snapshot() {
				if m.Type == "data" {
					last[m.Channel], _ = strconv.Atoi(string(m.Data))
				}
			}
			for _, ch := range names {
				if l, ok := last[ch]; !ok && len(c.vals[ch]) > 0 && c.vals[ch][len(c.vals[ch])-1] == want(ch) {
					continue // had it before its last resume
				} else if l != want(ch) {
					return false
				}
			}
		}
		return true
	})
	resumes := 0
	for i, c := range clients {
		if err := c.absorb(t, final[i].ss.snapshot()); err != nil {
			t.Fatal(err)
		}
		resumes += c.resumes
		for _, ch := range names {
			v := c.vals[ch]
			if len(v) == 0 {
				t.Errorf("client %d (pattern %v): nothing on %s", i, c.pattern, ch)
				continue
			}
			for j := 1; j < len(v); j++ {
				if v[j] != v[j-1]+1 {
					t.Errorf("client %d (pattern %v) %s: %d after %d (%d resumes)", i, c.pattern, ch, v[j], v[j-1], c.resumes)
					break
				}
			}
			if v[len(v)-1] != want(ch) {
				t.Errorf("client %d %s: ends at %d, want %d", i, ch, v[len(v)-1], want(ch))
			}
		}
	}
	sink.check(t)
	t.Logf("%d entries, %d clients, %d resumes on 2 gateways; gateway stats %+v %+v", total, nclients, resumes, gws[0].Stats(), gws[1].Stats())
}

// TestStreamsAheadOfGateway: a client that resumes from a position this
// gateway's reader has not reached yet (it read the entries on a gateway
// ahead of this one) is attached only once the reader is past it: it gets
// none of the entries it has, and everything after.
func TestStreamsAheadOfGateway(t *testing.T) {
	// One entry per live read: the reader stays behind the client for
	// the turns its plan takes.
	l := liveCount
	t.Cleanup(func() { liveCount = l })
	liveCount = 1
	rs := redistest.Start(t)
	sink := newTestSink()
	s := startStreams(t, rs, StreamConfig{Channels: []string{"ah:*"}}, sink)
	// A subscriber keeps the stream read.
	sub0, ss0 := sink.newSub()
	s.Join(sub0, Resume{Name: "ah:c"}, nil)
	waitFrames(t, ss0, 1)
	// Hold the reader between turns once it has delivered e0.
	hold, held := make(chan struct{}), make(chan struct{}, 1)
	hook := func() {
		select {
		case held <- struct{}{}:
		default:
		}
		<-hold
	}
	s.turnHook.Store(&hook)
	xadd(t, rs, "stream:ah:c", "0")
	<-held
	waitFrames(t, ss0, 2)
	var ids []string
	for i := 1; i <= 8; i++ {
		ids = append(ids, xadd(t, rs, "stream:ah:c", strconv.Itoa(i)))
	}
	// The client read up to e6 elsewhere.
	sub, ss := sink.newSub()
	s.Join(sub, Resume{Name: "ah:c", Since: id(t, ids[5]), HasSince: true}, nil)
	s.turnHook.Store(nil)
	close(hold)
	got := waitFrames(t, ss, 3)
	servertest.WaitFor(t, 10*time.Second, "replayed", func() bool {
		got = ss.snapshot()
		for _, m := range got {
			if m.Type == "replayed" {
				return true
			}
		}
		return false
	})
	next := xadd(t, rs, "stream:ah:c", "9")
	servertest.WaitFor(t, 10*time.Second, "the live entry", func() bool {
		got = ss.snapshot()
		return got[len(got)-1].ID == next
	})
	var seen []string
	for _, m := range got {
		if m.Type == "data" {
			seen = append(seen, string(m.Data))
		}
	}
	if !slices.Equal(seen, []string{"7", "8", "9"}) {
		t.Fatalf("the client got %q (frames %v), want exactly 7, 8, 9", seen, got)
	}
	sink.check(t)
}

// seqIDs returns "a-0" to "b-0".
func seqIDs(a, b int) []string {
	var out []string
	for i := a; i <= b; i++ {
		out = append(out, strconv.Itoa(i)+"-0")
	}
	return out
}

// waitReplayed waits for ss's "replayed" frame and returns the frames up
// to it.
func waitReplayed(tb testing.TB, ss *sinkSub) []dmsg {
	tb.Helper()
	var got []dmsg
	servertest.WaitFor(tb, 10*time.Second, "the replayed frame", func() bool {
		got = ss.snapshot()
		for i, m := range got {
			if m.Type == "replayed" {
				got = got[:i+1]
				return true
			}
		}
		return false
	})
	return got
}

// TestStreamsReplayTruncated: complete replays, and incomplete ones told
// by replay_truncated with the right reason and starting point (entries
// 1-0 to 300-0 per stream, retention applied by the test).
func TestStreamsReplayTruncated(t *testing.T) {
	rs := redistest.Start(t)
	sink := newTestSink()
	byMax := map[int]*Streams{}
	for _, m := range []int{9, 10, 20, 1000} {
		byMax[m] = startStreams(t, rs, StreamConfig{Channels: []string{"tr:*"}, MaxReplay: m}, sink)
	}
	fill := func(key string, n int) {
		for i := 1; i <= n; i++ {
			rs.Do(t, "XADD", "stream:"+key, strconv.Itoa(i)+"-0", "data", strconv.Itoa(i))
		}
	}
	tests := []struct {
		name      string
		setup     func(key string)
		max       int
		resume    func(ch string) Resume
		reason    string // "": complete, no replay_truncated
		from      string // "": null
		channels  []string
		replay    []string // IDs
		lastID    string
		channelOf func(i int) string // of replay[i], when several
	}{
		{name: "complete", setup: func(k string) { fill(k, 300) }, max: 20,
			resume: exact("290-0"), replay: seqIDs(291, 300), lastID: "300-0"},
		{name: "exactly MAX_REPLAY", setup: func(k string) { fill(k, 300) }, max: 20,
			resume: exact("280-0"), replay: seqIDs(281, 300), lastID: "300-0"},
		{name: "one more than MAX_REPLAY", setup: func(k string) { fill(k, 300) }, max: 20,
			resume: exact("279-0"), reason: "max_replay", from: "281-0", replay: seqIDs(281, 300), lastID: "300-0"},
		{name: "far more than MAX_REPLAY", setup: func(k string) { fill(k, 300) }, max: 20,
			resume: exact("0-0"), reason: "max_replay", from: "281-0", replay: seqIDs(281, 300), lastID: "300-0"},
		{name: "from 0-0, never trimmed", setup: func(k string) { fill(k, 300) }, max: 1000,
			resume: exact("0-0"), replay: seqIDs(1, 300), lastID: "300-0"},
		{name: "trimmed by MAXLEN", setup: func(k string) { fill(k, 300); rs.Do(t, "XTRIM", "stream:"+k, "MAXLEN", "150") }, max: 1000,
			resume: exact("100-0"), reason: "trimmed", from: "151-0", replay: seqIDs(151, 300), lastID: "300-0"},
		{name: "first entry is the immediate successor: nothing missing", max: 1000,
			setup: func(k string) {
				for i := 1; i <= 300; i++ {
					rs.Do(t, "XADD", "stream:"+k, "7-"+strconv.Itoa(i), "data", strconv.Itoa(i))
				}
				rs.Do(t, "XTRIM", "stream:"+k, "MAXLEN", "150")
			},
			resume: exact("7-150"), replay: func() (ids []string) {
				for i := 151; i <= 300; i++ {
					ids = append(ids, "7-"+strconv.Itoa(i))
				}
				return ids
			}(), lastID: "7-300"},
		{name: "first entry is not the immediate successor", setup: func(k string) { fill(k, 300); rs.Do(t, "XTRIM", "stream:"+k, "MAXLEN", "150") }, max: 1000,
			resume: exact("150-0"), reason: "trimmed", from: "151-0", replay: seqIDs(151, 300), lastID: "300-0"},
		{name: "trimmed by MINID", setup: func(k string) { fill(k, 300); rs.Do(t, "XTRIM", "stream:"+k, "MINID", "250") }, max: 1000,
			resume: exact("100-0"), reason: "trimmed", from: "250-0", replay: seqIDs(250, 300), lastID: "300-0"},
		{name: "trimmed to nothing", setup: func(k string) { fill(k, 300); rs.Do(t, "XTRIM", "stream:"+k, "MAXLEN", "0") }, max: 1000,
			resume: exact("100-0"), reason: "trimmed", lastID: "300-0"},
		{name: "trimmed and more than MAX_REPLAY", setup: func(k string) { fill(k, 300); rs.Do(t, "XTRIM", "stream:"+k, "MAXLEN", "150") }, max: 20,
			resume: exact("100-0"), reason: "max_replay", from: "281-0", replay: seqIDs(281, 300), lastID: "300-0"},
		{name: "XDEL is not reported", setup: func(k string) { fill(k, 300); rs.Do(t, "XDEL", "stream:"+k, "295-0") }, max: 20,
			resume: exact("290-0"), replay: append(seqIDs(291, 294), seqIDs(296, 300)...), lastID: "300-0"},
		{name: "reset: above the last ID", setup: func(k string) { fill(k, 300) }, max: 20,
			resume: exact("350-0"), reason: "reset", from: "281-0", replay: seqIDs(281, 300), lastID: "300-0"},
		{name: "reset: the stream is gone", setup: func(string) {}, max: 20,
			resume: exact("5-0"), reason: "reset", lastID: "0-0"},
		{name: "pattern over MAX_REPLAY, cut between channels", max: 10,
			setup:  func(k string) { fill(k+":a", 50); fill(k+":b", 50) },
			resume: func(ch string) Resume { return Resume{Name: ch + ":*", Since: wsproto.StreamID{}, HasSince: true} },
			reason: "max_replay", from: "46-0", channels: []string{":a", ":b"},
			replay:    []string{"46-0", "46-0", "47-0", "47-0", "48-0", "48-0", "49-0", "49-0", "50-0", "50-0"},
			channelOf: func(i int) string { return map[int]string{0: ":a", 1: ":b"}[i%2] }},
		{name: "pattern over MAX_REPLAY, cut within a millisecond", max: 9,
			setup:  func(k string) { fill(k+":a", 50); fill(k+":b", 50) },
			resume: func(ch string) Resume { return Resume{Name: ch + ":*", Since: wsproto.StreamID{}, HasSince: true} },
			reason: "max_replay", from: "46-0", channels: []string{":a", ":b"},
			replay:    []string{"46-0", "47-0", "47-0", "48-0", "48-0", "49-0", "49-0", "50-0", "50-0"},
			channelOf: func(i int) string { return map[int]string{0: ":b", 1: ":a"}[i%2] }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := "tr:" + strconv.Itoa(i)
			tt.setup(ch)
			sub, ss := sink.newSub()
			r := tt.resume(ch)
			byMax[tt.max].Join(sub, r, nil)
			got := waitReplayed(t, ss)
			if tt.reason != "" {
				m := got[0]
				got = got[1:]
				from := ""
				if m.From != nil {
					from = *m.From
				}
				want := []string{ch}
				if tt.channels != nil {
					want = nil
					for _, c := range tt.channels {
						want = append(want, ch+c)
					}
				}
				if m.Type != "error" || m.Code != "replay_truncated" || m.Reason != tt.reason || from != tt.from ||
					m.Stream != r.Name || m.Since == nil || *m.Since != r.Since.String() || !slices.Equal(m.Channels, want) {
					t.Fatalf("first frame %v (since %v), want replay_truncated %s from %q channels %v", m, m.Since, tt.reason, tt.from, want)
				}
			}
			last := got[len(got)-1]
			var replayed []string
			for j, m := range got[:len(got)-1] {
				if m.Type != "data" || !m.Replay {
					t.Fatalf("frame %v, want a replayed entry", m)
				}
				if tt.channelOf != nil && m.Channel != ch+tt.channelOf(j) {
					t.Fatalf("replay %d on %s, want %s: %v", j, m.Channel, ch+tt.channelOf(j), got)
				}
				replayed = append(replayed, m.ID)
			}
			if !slices.Equal(replayed, tt.replay) {
				t.Fatalf("replayed %v, want %v", replayed, tt.replay)
			}
			if last.Count != uint64(len(tt.replay)) || (!r.Pattern() && last.LastID != tt.lastID) {
				t.Fatalf("%v, want count %d lastId %s", last, len(tt.replay), tt.lastID)
			}
		})
	}
	sink.check(t)
}

// exact resumes an exact channel from since.
func exact(since string) func(string) Resume {
	return func(ch string) Resume {
		v, _ := wsproto.ParseStreamID(since)
		return Resume{Name: ch, Since: v, HasSince: true}
	}
}

// TestStreamsReplayWaitsForRoom: a subscriber whose queue takes only a few
// frames at a time gets its whole replay, in order, then live: the reader
// polls for room and never drops a replay frame.
func TestStreamsReplayWaitsForRoom(t *testing.T) {
	rs := redistest.Start(t)
	sink := newTestSink()
	s := startStreams(t, rs, StreamConfig{Channels: []string{"room:*"}}, sink)
	var ids []string
	for i := 0; i < 50; i++ {
		ids = append(ids, xadd(t, rs, "stream:room:c", strconv.Itoa(i)))
	}
	sub, ss := sink.newSub()
	ss.setRoom(5)
	s.Join(sub, Resume{Name: "room:c", Since: wsproto.StreamID{}, HasSince: true}, nil)
	for n := 5; n < 50; n += 5 {
		waitFrames(t, ss, n)
		if got := ss.len(); got != n {
			t.Fatalf("%d frames pushed with room for %d", got, n)
		}
		ss.setRoom(5)
	}
	ss.setRoom(-1)
	got := waitReplayed(t, ss)
	var replayed []string
	for _, m := range got[:len(got)-1] {
		replayed = append(replayed, m.ID)
	}
	if !slices.Equal(replayed, ids) || got[len(got)-1].Count != 50 {
		t.Fatalf("got %v, want the 50 entries then replayed", got)
	}
	next := xadd(t, rs, "stream:room:c", "live")
	got = waitFrames(t, ss, 52)
	if m := got[51]; m.ID != next || m.Replay {
		t.Fatalf("after the replay: %v, want live %s", m, next)
	}
	sink.check(t)
}

// TestStreamsPatternDiscovery: a pattern gets a channel whose key is
// created after it subscribed, from the key's first entry, found by the
// SCAN sweep or by a keyspace notification (class Kn, with a sweep too
// slow to be the one); a key of another type matching the pattern is
// ignored and breaks nothing.
func TestStreamsPatternDiscovery(t *testing.T) {
	tests := []struct {
		name  string
		redis []redistest.Option
		cfg   StreamConfig
	}{
		{"SCAN sweep", nil, StreamConfig{Discovery: DiscoveryScan, ScanInterval: time.Second}},
		{"keyspace notifications", []redistest.Option{redistest.WithArgs("--notify-keyspace-events", "Kn")},
			StreamConfig{Discovery: DiscoveryAuto, ScanInterval: time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := redistest.Start(t, tt.redis...)
			sink := newTestSink()
			cfg := tt.cfg
			cfg.Channels = []string{"disc:*"}
			s := startStreams(t, rs, cfg, sink)
			xadd(t, rs, "stream:disc:old", "old")
			sub, ss := sink.newSub()
			s.Join(sub, Resume{Name: "disc:*"}, nil)
			waitReplayed(t, ss)
			if tt.cfg.Discovery == DiscoveryAuto {
				// Notifications are fire and forget: a key created
				// before the gateway listens waits for the sweep.
				servertest.WaitFor(t, 10*time.Second, "the notifications subscription", func() bool { return rs.NumPat(t) > 0 })
			}
			rs.Do(t, "SET", "stream:disc:str", "not a stream")
			first := xadd(t, rs, "stream:disc:new", "1")
			second := xadd(t, rs, "stream:disc:new", "2")
			live := xadd(t, rs, "stream:disc:old", "3")
			servertest.WaitFor(t, 20*time.Second, "the new channel's entries and the live one", func() bool {
				n := 0
				for _, m := range ss.snapshot() {
					if m.Type == "data" {
						n++
					}
				}
				return n >= 3
			})
			var got []string
			for _, m := range ss.snapshot() {
				if m.Type == "data" {
					got = append(got, m.Channel+" "+m.ID)
				}
			}
			slices.Sort(got)
			want := []string{"disc:new " + first, "disc:new " + second, "disc:old " + live}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
			sink.check(t)
		})
	}
}

// TestStreamsLinkBreak: a reader whose blocked connection breaks while
// the same Redis keeps every entry tells nobody (reads go by cursor, so
// nothing was lost) and goes on exactly; when entries after its cursor
// were trimmed before it got back, each subscriber gets one
// upstream_interrupted and seq jumps.
func TestStreamsLinkBreak(t *testing.T) {
	for _, tc := range []struct {
		name string
		trim bool // trim the stream while the reader is down
	}{
		{"intact", false},
		{"trimmed past the cursor", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := redistest.Start(t)
			sink := newTestSink()
			s := startStreams(t, rs, StreamConfig{Channels: []string{"lb:*"}}, sink)
			sub, ss := sink.newSub()
			s.Join(sub, Resume{Name: "lb:c"}, nil)
			waitFrames(t, ss, 1)
			xadd(t, rs, "stream:lb:c", "1")
			waitFrames(t, ss, 2)

			// Hold the reader at its first turn after the failure.
			hold, held := make(chan struct{}), make(chan struct{}, 1)
			hook := func() {
				if s.outages.Load() == 0 {
					return
				}
				select {
				case held <- struct{}{}:
					<-hold
				default:
				}
			}
			s.turnHook.Store(&hook)
			killBlockedReader(t, rs)
			<-held
			if tc.trim {
				xadd(t, rs, "stream:lb:c", "lost")
				rs.Do(t, "XTRIM", "stream:lb:c", "MAXLEN", "0")
			}
			close(hold)
			next := xadd(t, rs, "stream:lb:c", "2")
			var got []dmsg
			servertest.WaitFor(t, 10*time.Second, "the entry after the break", func() bool {
				got = ss.snapshot()
				return got[len(got)-1].ID == next
			})
			var kinds []string
			for _, m := range got[1:] {
				kinds = append(kinds, m.Type+":"+string(m.Data))
			}
			want := []string{"data:1", "data:2"}
			wantSeq, wantTold := uint64(2), uint64(0)
			if tc.trim {
				want = []string{"data:1", "error:", "data:2"}
				wantSeq, wantTold = 3, 1
			}
			if !slices.Equal(kinds, want) || got[len(got)-1].Seq != wantSeq {
				t.Fatalf("frames %v, want %v with the last at seq %d", got, want, wantSeq)
			}
			if st := s.Stats(); st.Outages != 1 || st.Interrupted != wantTold {
				t.Fatalf("stats %+v, want 1 outage, %d told", st, wantTold)
			}
			sink.check(t)
		})
	}
}

// killBlockedReader closes, from the server's side, the connection on
// which a reader waits in XREAD BLOCK.
func killBlockedReader(tb testing.TB, rs *redistest.Server) {
	tb.Helper()
	var id string
	servertest.WaitFor(tb, 10*time.Second, "a blocked XREAD", func() bool {
		for line := range strings.Lines(rs.Do(tb, "CLIENT", "LIST")) {
			if strings.Contains(line, " cmd=xread ") && strings.Contains(line, " flags=b ") {
				f := strings.Fields(line)
				id = strings.TrimPrefix(f[0], "id=")
				return true
			}
		}
		return false
	})
	rs.Do(tb, "CLIENT", "KILL", "ID", id)
}

// TestStreamsSentinel: durable readers on a Sentinel setup follow the
// promoted master after a SIGKILL of the old one: the subscriber is told
// upstream_interrupted once (another server answers), then gets every
// entry added on the new master, in order, after the entries it had.
func TestStreamsSentinel(t *testing.T) {
	st := redistest.StartSentinel(t, time.Second)
	opt, err := rueidis.ParseURL(st.URL())
	if err != nil {
		t.Fatal(err)
	}
	sink := newTestSink()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := NewStreams(StreamConfig{Channels: []string{"sf:*"}, KeyPrefix: "stream:"}, opt, sink, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	pub := urlClient(t, st.URL())
	add := func(v string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return pub.Do(ctx, pub.B().Xadd().Key("stream:sf:c").Id("*").FieldValue().FieldValue("data", v).Build()).Error()
	}
	sub, ss := sink.newSub()
	s.Join(sub, Resume{Name: "sf:c"}, nil)
	waitFrames(t, ss, 1)
	for i := 1; i <= 5; i++ {
		if err := add(strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFrames(t, ss, 6)
	// The replica has them before the master dies.
	if _, err := st.Master.Exec("WAIT", "1", "5000"); err != nil {
		t.Fatal(err)
	}

	st.Master.Kill(t)
	servertest.WaitFor(t, failoverTimeout, "an entry on the promoted master", func() bool { return add("6") == nil })
	for i := 7; i <= 10; i++ {
		if err := add(strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	var got []dmsg
	servertest.WaitFor(t, failoverTimeout, "the entries added after the failover", func() bool {
		got = ss.snapshot()
		return len(got) > 0 && string(got[len(got)-1].Data) == "10"
	})
	var kinds []string
	for _, m := range got[1:] {
		kinds = append(kinds, m.Type+":"+string(m.Data))
	}
	want := []string{"data:1", "data:2", "data:3", "data:4", "data:5", "error:", "data:6", "data:7", "data:8", "data:9", "data:10"}
	if !slices.Equal(kinds, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
	if st := s.Stats(); st.Interrupted != 1 {
		t.Fatalf("stats %+v, want 1 outage told", st)
	}
	sink.check(t)
}

// TestQueuePagesAfterGrow: a pattern that gains a key between a turn's
// plan and its replies (a SCAN or a notification in the same turn) has
// more tracks than the turn has pages: the pages are merged, and the new
// key keeps its position for the next turn.
func TestQueuePagesAfterGrow(t *testing.T) {
	st := &DurableStream{name: "p:*", pattern: true}
	for _, ch := range []string{"p:a", "p:b"} {
		st.tracks = append(st.tracks, &track{k: &rkey{key: "stream:" + ch}, st: st, channel: ch, cursor: id(t, "5-0"), ready: true})
	}
	res := &resume{st: st, started: true, phase: phasePage,
		pos: make([]wsproto.StreamID, 2), explicit: make([]bool, 2)}
	res.pages = [][]entry{{{id: id(t, "1-0"), payload: "1"}}, {{id: id(t, "2-0"), payload: "2"}}}
	res.paged = []bool{true, true}
	res.pageSize = pageFor(2)
	st.tracks = append(st.tracks, &track{k: &rkey{key: "stream:p:c"}, st: st, channel: "p:c", cursor: id(t, "3-0"), ready: true})
	res.grow()

	res.queuePages(nil, &turn{now: time.Now()})
	defer res.release()
	if len(res.pending) != 2 {
		t.Fatalf("%d replay frames, want the 2 paged entries", len(res.pending))
	}
	want := []wsproto.StreamID{id(t, "5-0"), id(t, "5-0"), id(t, "3-0")}
	if !slices.Equal(res.pos, want) {
		t.Fatalf("positions %v, want %v (the paged keys up to their cursor, the new one where it starts)", res.pos, want)
	}
}

package fanout

import (
	"fmt"
	"strconv"
	"testing"
	"time"

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

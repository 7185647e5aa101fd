package server_test

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/wsgw/gateway/fanout"
	"github.com/wsgw/gateway/fanout/redistest"
)

// startStreamGateway starts a gateway on rs whose channels matching globs
// are durable, served by its own stream readers.
func startStreamGateway(tb testing.TB, rs *redistest.Server, cfg fanout.StreamConfig, mutate ...func(*options)) *gateway {
	tb.Helper()
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = "stream:"
	}
	return startGateway(tb, rs, append(mutate, func(o *options) { o.streams = &cfg })...)
}

// dframe is what a test keeps of a durable frame.
type dframe struct {
	typ, channel, id, data string
	seq                    uint64
	replay                 bool
}

func (f dframe) String() string {
	return fmt.Sprintf("%s %s %s %s seq %d replay %v", f.typ, f.channel, f.id, f.data, f.seq, f.replay)
}

func toFrame(m msg) dframe {
	f := dframe{typ: m.str("type"), channel: m.str("channel"), id: m.str("id"), seq: m.seq()}
	f.replay, _ = m["replay"].(bool)
	switch v := m["data"].(type) {
	case string:
		f.data = v
	case float64:
		f.data = strconv.FormatFloat(v, 'f', -1, 64)
	}
	if f.typ == "replayed" {
		f.id = m.str("lastId")
		f.data = strconv.FormatFloat(m["count"].(float64), 'f', -1, 64)
	}
	return f
}

// readUntil reads frames until one satisfies stop, and returns them all.
func (cl *client) readUntil(tb testing.TB, stop func(dframe) bool) []dframe {
	tb.Helper()
	var out []dframe
	for {
		m := cl.read(tb)
		f := toFrame(m)
		out = append(out, f)
		if f.typ == "error" {
			tb.Fatalf("error frame %v after %v", m, out)
		}
		if stop(f) {
			return out
		}
	}
}

func isReplayed(f dframe) bool { return f.typ == "replayed" }

// TestDurableEndToEnd: durable channels through the whole gateway, real
// Redis, real sockets: a live subscription gets entries with their ids,
// a resume with since gets exactly the missed entries then live (also on
// another gateway on the same Redis), and a pattern gets a channel created
// after it subscribed from its first entry.
func TestDurableEndToEnd(t *testing.T) {
	rs := redistest.Start(t)
	cfg := fanout.StreamConfig{Channels: []string{"indicators:signal:*"}, ScanInterval: time.Second, Discovery: fanout.DiscoveryScan}
	g1 := startStreamGateway(t, rs, cfg)
	g2 := startStreamGateway(t, rs, cfg)
	const ch = "indicators:signal:X"
	add := func(ch, v string) string { return rs.Do(t, "XADD", "stream:"+ch, "*", "data", v) }

	a := dial(t, g1.wsURL(""))
	a.subscribe(t, ch)
	got := a.readUntil(t, isReplayed)
	if len(got) != 1 || got[0].id != "0-0" || got[0].data != "0" {
		t.Fatalf("a new subscription got %v, want replayed count 0 lastId 0-0", got)
	}
	var ids []string
	for i := 1; i <= 3; i++ {
		ids = append(ids, add(ch, `"`+strconv.Itoa(i)+`"`))
	}
	for i := 0; i < 3; i++ {
		f := toFrame(a.expect(t, "data"))
		if f.id != ids[i] || f.data != strconv.Itoa(i+1) || f.seq != uint64(i+1) || f.replay || f.channel != ch {
			t.Fatalf("live frame %d: %v, want id %s seq %d", i, f, ids[i], i+1)
		}
	}

	for _, g := range []*gateway{g1, g2} {
		t.Run("resume on "+g.addr, func(t *testing.T) {
			b := dial(t, g.wsURL(""))
			b.send(t, map[string]any{"action": "subscribe", "channels": []string{ch}, "since": map[string]string{ch: ids[0]}, "requestId": "r"})
			b.expect(t, "subscribed")
			got := b.readUntil(t, isReplayed)
			// Everything after the first entry: 2, 3, and the live
			// entries of the subtests before.
			var want []dframe
			for i, id := range ids[1:] {
				data := strconv.Itoa(i + 2)
				if i >= 2 {
					data = "live"
				}
				want = append(want, dframe{typ: "data", channel: ch, id: id, data: data, replay: true})
			}
			want = append(want, dframe{typ: "replayed", channel: ch, id: ids[len(ids)-1], data: strconv.Itoa(len(ids) - 1)})
			if !slices.Equal(got, want) {
				t.Fatalf("resume got\n%v\nwant\n%v", got, want)
			}
			next := add(ch, `"live"`)
			ids = append(ids, next)
			f := toFrame(b.expect(t, "data"))
			if f.id != next || f.replay || f.seq == 0 {
				t.Fatalf("after the replay: %v, want the live entry %s", f, next)
			}
			if f := toFrame(a.expect(t, "data")); f.id != next {
				t.Fatalf("the live subscriber got %v, want %s", f, next)
			}
		})
	}

	t.Run("pattern finds a new channel", func(t *testing.T) {
		c := dial(t, g2.wsURL(""))
		c.send(t, map[string]any{"action": "subscribe", "channels": []string{"indicators:signal:*"}, "since": map[string]string{"indicators:signal:*": "0-0"}, "requestId": "p"})
		c.expect(t, "subscribed")
		got := c.readUntil(t, isReplayed)
		var replayed []string
		for _, f := range got[:len(got)-1] {
			replayed = append(replayed, f.id)
		}
		if !slices.Equal(replayed, ids) {
			t.Fatalf("pattern replay %v, want %v", got, ids)
		}
		first := add("indicators:signal:NEW", `"first"`)
		f := toFrame(c.expect(t, "data"))
		if f.id != first || f.channel != "indicators:signal:NEW" || f.data != "first" {
			t.Fatalf("got %v, want the new channel's first entry %s", f, first)
		}
	})
}

// TestDurableSlowReplay: a replay far larger than the connection's queue
// reaches the client whole and in order, then live, with nothing dropped:
// replay frames wait for room instead.
func TestDurableSlowReplay(t *testing.T) {
	rs := redistest.Start(t)
	g := startStreamGateway(t, rs, fanout.StreamConfig{Channels: []string{"indicators:signal:*"}, MaxReplay: 5000},
		func(o *options) { o.hub.SendQueue = 16 })
	const ch, n = "indicators:signal:BIG", 3000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = rs.Do(t, "XADD", "stream:"+ch, "*", "data", strconv.Itoa(i))
	}
	cl := dial(t, g.wsURL(""))
	cl.send(t, map[string]any{"action": "subscribe", "channels": []string{ch}, "since": map[string]string{ch: "0-0"}, "requestId": "r"})
	cl.expect(t, "subscribed")
	got := cl.readUntil(t, isReplayed)
	if len(got) != n+1 {
		t.Fatalf("%d frames before replayed, want %d", len(got)-1, n)
	}
	for i, f := range got[:n] {
		if f.id != ids[i] || f.data != strconv.Itoa(i) || !f.replay {
			t.Fatalf("replay frame %d: %v, want %s", i, f, ids[i])
		}
	}
	if r := got[n]; r.id != ids[n-1] || r.data != strconv.Itoa(n) {
		t.Fatalf("%v, want replayed count %d lastId %s", r, n, ids[n-1])
	}
	next := rs.Do(t, "XADD", "stream:"+ch, "*", "data", "live")
	if f := toFrame(cl.expect(t, "data")); f.id != next || f.replay {
		t.Fatalf("after the replay: %v, want live %s", f, next)
	}
	if st := g.stats(t); st.MessagesDropped != 0 || st.HandoffDropped != 0 {
		t.Fatalf("stats: %d frames dropped, %d handoffs", st.MessagesDropped, st.HandoffDropped)
	}
}

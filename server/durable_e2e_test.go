package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/rueidis"

	"github.com/wsgw/gateway/fanout"
	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
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
	st := g.stats(t)
	if st.MessagesDropped != 0 || st.HandoffDropped != 0 {
		t.Fatalf("stats: %d frames dropped, %d handoffs", st.MessagesDropped, st.HandoffDropped)
	}
	if st.Durable == nil || st.Durable.Replayed != n || st.Durable.Streams != 1 || st.Durable.Readers != 1 {
		t.Fatalf("stats: durable %+v, want %d replayed on 1 stream, 1 reader", st.Durable, n)
	}
}

// exactClient is a client of TestDurableExactness: what it got per
// channel, and its positions.
type exactClient struct {
	name    string // the channel or pattern it follows
	pattern bool
	vals    map[string][]int
	pos     map[string]string
	floor   string
}

// session connects to g, resumes, and reads until ctx ends (a disconnect
// at a random moment) or done reports true.
func (c *exactClient) session(ctx context.Context, g *gateway, done func() bool) error {
	ws, _, err := websocket.Dial(ctx, g.wsURL(""), nil)
	if err != nil {
		return nil // a disconnect before the connection was up
	}
	defer ws.CloseNow()
	req := map[string]any{"action": "subscribe", "channels": []string{c.name}, "requestId": "r"}
	since := map[string]string{}
	if c.pattern {
		if c.floor != "" {
			since[c.name] = c.floor
		}
		maps.Copy(since, c.pos)
	} else if id, ok := c.pos[c.name]; ok {
		since[c.name] = id
	}
	if len(since) > 0 {
		req["since"] = since
	}
	p, _ := json.Marshal(req)
	if err := ws.Write(ctx, websocket.MessageText, p); err != nil {
		return nil
	}
	for !done() {
		_, p, err := ws.Read(ctx)
		if err != nil {
			return nil // disconnected: what it got is all it got
		}
		var m msg
		if err := json.Unmarshal(p, &m); err != nil {
			return fmt.Errorf("frame %s: %v", p, err)
		}
		switch m.str("type") {
		case "subscribed":
		case "replayed":
			if c.pattern {
				c.floor = m.str("lastId")
			}
		case "data":
			f, ok := m["data"].(float64)
			if !ok {
				return fmt.Errorf("data %s: not a number", p)
			}
			v := int(f)
			ch := m.str("channel")
			c.vals[ch] = append(c.vals[ch], v)
			c.pos[ch] = m.str("id")
		default:
			return fmt.Errorf("%s: unexpected frame %s", c.name, p)
		}
	}
	return nil
}

// TestDurableExactness: a publisher adds entries at a steady rate to 3
// durable channels while clients (on one channel each, or on a pattern
// over the three) disconnect at random moments and resume with since on
// either of two gateways on one Redis. Each client ends with exactly the
// published sequence of each of its channels from its first entry on: no
// gap, no duplicate, in order.
func TestDurableExactness(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	rs := redistest.Start(t)
	cfg := fanout.StreamConfig{Channels: []string{"indicators:ex:*"}, MaxReplay: 100_000}
	gws := []*gateway{startStreamGateway(t, rs, cfg), startStreamGateway(t, rs, cfg)}
	names := []string{"indicators:ex:a", "indicators:ex:b", "indicators:ex:c"}
	for _, n := range names {
		rs.Do(t, "XADD", "stream:"+n, "*", "data", "0") // the keys exist before the patterns scan
	}
	const total, nclients = 20_000, 100
	pub, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{rs.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var published [3]atomic.Int64
	pubErr := make(chan error, 1)
	pubDone := make(chan struct{})
	go func() {
		// A steady 1,000 entries a second, ten per 10 ms in one round
		// trip: one at a time, a round trip each, the rate would be what
		// the machine leaves to this goroutine.
		defer close(pubDone)
		const batch = 10
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var next [3]int64
		for i := 0; i < total; i += batch {
			<-tick.C
			cmds := make(rueidis.Commands, 0, batch)
			for j := i; j < min(i+batch, total); j++ {
				k := j % 3
				next[k]++
				cmds = append(cmds, pub.B().Xadd().Key("stream:"+names[k]).Id("*").FieldValue().
					FieldValue("data", strconv.FormatInt(next[k], 10)).Build())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			for _, r := range pub.DoMulti(ctx, cmds...) {
				if err := r.Error(); err != nil {
					cancel()
					pubErr <- err
					return
				}
			}
			cancel()
			for k := range next {
				published[k].Store(next[k])
			}
		}
	}()
	clients := make([]*exactClient, nclients)
	errs := make(chan error, nclients)
	var wg sync.WaitGroup
	var resumes atomic.Int64
	start := time.Now()
	for i := range clients {
		c := &exactClient{name: names[i%3], vals: map[string][]int{}, pos: map[string]string{}}
		if i%4 == 3 {
			c.name, c.pattern = "indicators:ex:*", true
		}
		clients[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-pubDone:
					return
				default:
				}
				// Online for a random while, then gone at once.
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(100+rand.IntN(500))*time.Millisecond)
				err := c.session(ctx, gws[rand.IntN(2)], func() bool { return false })
				cancel()
				if err != nil {
					errs <- err
					return
				}
				resumes.Add(1)
				select {
				case <-pubDone:
					return
				case <-time.After(time.Duration(rand.IntN(200)) * time.Millisecond): // offline for a random while
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("publisher done after %v", time.Since(start))
	select {
	case err := <-pubErr:
		t.Fatal(err)
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	// The last session of each client: until it has every channel's last
	// entry.
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := func() bool {
				for k, n := range names {
					if !c.pattern && n != c.name {
						continue
					}
					v := c.vals[n]
					if len(v) == 0 || v[len(v)-1] != int(published[k].Load()) {
						return false
					}
				}
				return true
			}
			// Under -race on a loaded machine the readers trail the
			// publisher by tens of seconds (about 50 s here, quiet):
			// the last sessions wait for them.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if err := c.session(ctx, gws[rand.IntN(2)], done); err != nil {
				errs <- err
			} else if !done() {
				last := map[string]int{}
				for n, v := range c.vals {
					last[n] = v[len(v)-1]
				}
				errs <- fmt.Errorf("%s: the last session ended without the last entries: has up to %v, published %d %d %d", c.name, last, published[0].Load(), published[1].Load(), published[2].Load())
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	for i, c := range clients {
		for _, n := range names {
			if !c.pattern && n != c.name {
				continue
			}
			v := c.vals[n]
			for j := 1; j < len(v); j++ {
				if v[j] != v[j-1]+1 {
					t.Fatalf("client %d (%s) on %s: %d after %d", i, c.name, n, v[j], v[j-1])
				}
			}
		}
	}
	t.Logf("%d entries, %d clients, %d sessions on 2 gateways, %v", total, nclients, resumes.Load()+int64(nclients), time.Since(start))
}

// TestDurableRedisRestart: Redis with appendonly yes is killed (SIGKILL)
// and restarted. A durable subscriber is told upstream_interrupted, then
// gets the entries added after the restart live, none twice; a client
// resuming afterwards from an entry before the crash gets every persisted
// entry after it.
func TestDurableRedisRestart(t *testing.T) {
	rs := redistest.Start(t, redistest.WithArgs("--appendonly", "yes"))
	g := startStreamGateway(t, rs, fanout.StreamConfig{Channels: []string{"indicators:signal:*"}})
	const ch = "indicators:signal:AOF"
	var ids []string
	add := func(n int) {
		for range n {
			ids = append(ids, rs.Do(t, "XADD", "stream:"+ch, "*", "data", strconv.Itoa(len(ids)+1)))
		}
	}
	add(1)
	a := dial(t, g.wsURL(""))
	a.subscribe(t, ch)
	a.readUntil(t, isReplayed)
	add(19)
	for i := 2; i <= 20; i++ {
		if f := toFrame(a.expect(t, "data")); f.data != strconv.Itoa(i) {
			t.Fatalf("before the crash: %v, want %d", f, i)
		}
	}

	rs.Restart(t) // SIGKILL, then the same port and directory: the AOF is replayed
	if got := rs.Do(t, "XLEN", "stream:"+ch); got != "20" {
		t.Fatalf("after the restart the stream holds %s entries, want 20", got)
	}
	m := a.expect(t, "error")
	if m.str("code") != "upstream_interrupted" || !slices.Equal(strs(m["channels"]), []string{ch}) {
		t.Fatalf("got %v, want upstream_interrupted on %s", m, ch)
	}
	add(10)
	for i := 21; i <= 30; i++ {
		if f := toFrame(a.expect(t, "data")); f.data != strconv.Itoa(i) || f.id != ids[i-1] || f.replay {
			t.Fatalf("after the crash: %v, want live %d (%s)", f, i, ids[i-1])
		}
	}

	b := dial(t, g.wsURL(""))
	b.send(t, map[string]any{"action": "subscribe", "channels": []string{ch}, "since": map[string]string{ch: ids[4]}, "requestId": "r"})
	b.expect(t, "subscribed")
	got := b.readUntil(t, isReplayed)
	var replayed []string
	for _, f := range got[:len(got)-1] {
		replayed = append(replayed, f.id)
	}
	if !slices.Equal(replayed, ids[5:]) {
		t.Fatalf("resume after the crash replayed %v, want %v", replayed, ids[5:])
	}
}

// TestDurableHugeReplay: a client resuming 100,000 missed entries of
// 1 KiB gets them all, in order, then live. While it does not read, a
// client on the same event loop keeps getting its live messages (the
// replay does not stall the loop), and the gateway pushes only a bounded
// part of the replay (the connection's queue, the socket buffers, a
// reader's page), not the 100 MB.
func TestDurableHugeReplay(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	rs := redistest.Start(t)
	g := startStreamGateway(t, rs, fanout.StreamConfig{Channels: []string{"indicators:signal:*"}, MaxReplay: 100_000},
		func(o *options) { o.srv.Loops = 1 })
	const ch, n = "indicators:signal:HUGE", 100_000
	pad := strings.Repeat("x", 1000)
	pub, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{rs.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ids := make([]string, 0, n)
	for i := 0; i < n; i += 1000 {
		cmds := make(rueidis.Commands, 0, 1000)
		for j := i; j < i+1000; j++ {
			cmds = append(cmds, pub.B().Xadd().Key("stream:"+ch).Id("*").FieldValue().
				FieldValue("data", `{"i":`+strconv.Itoa(j)+`,"pad":"`+pad+`"}`).Build())
		}
		for _, r := range pub.DoMulti(context.Background(), cmds...) {
			id, err := r.ToString()
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
	}

	b := dial(t, g.wsURL(""))
	b.subscribe(t, "market:tick:HUGE")
	a := dial(t, g.wsURL(""))
	a.send(t, map[string]any{"action": "subscribe", "channels": []string{ch}, "since": map[string]string{ch: "0-0"}, "requestId": "r"})
	type frame struct {
		Type, ID, LastID string
		Count            int
		Replay           bool
		Data             struct{ I int }
	}
	next := 0 // index of the next entry a should get
	readA := func(stop func(f frame) bool) {
		t.Helper()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, p, err := a.c.Read(ctx)
			cancel()
			if err != nil {
				t.Fatalf("after %d entries: %v", next, err)
			}
			var f frame
			if err := json.Unmarshal(p, &f); err != nil {
				t.Fatal(err)
			}
			switch {
			case f.Type == "subscribed", f.Type == "replayed":
			case f.Type == "data" && f.Replay && next < n && f.ID == ids[next] && f.Data.I == next:
				next++
			default:
				t.Fatalf("after %d entries: %.200s", next, p)
			}
			if stop(f) {
				return
			}
		}
	}
	readA(func(frame) bool { return next == 1000 })

	// a reads nothing now. b's live messages still flow on the loop.
	for i := range 5 {
		rs.Publish(t, "market:tick:HUGE", strconv.Itoa(i))
		if m := b.expect(t, "data"); m["data"] != float64(i) {
			t.Fatalf("b got %v, want %d", m, i)
		}
	}
	// What the gateway pushed for a settles well below the whole replay.
	var pushed uint64
	same := 0
	servertest.WaitFor(t, 30*time.Second, "the replay to wait for a", func() bool {
		st := g.stats(t)
		if st.Durable.Replayed == pushed {
			same++
		} else {
			pushed, same = st.Durable.Replayed, 0
		}
		return same >= 20 // unchanged over 20 polls
	})
	if pushed >= 30_000 {
		t.Fatalf("%d replay frames pushed to a client that read 1,000: the replay is not bounded by its room", pushed)
	}
	t.Logf("pushed %d of %d replay frames while the client read none", pushed, n)

	var end frame
	readA(func(f frame) bool { end = f; return f.Type == "replayed" })
	if next != n || end.Count != n || end.LastID != ids[n-1] {
		t.Fatalf("replayed %d entries, then %+v; want %d up to %s", next, end, n, ids[n-1])
	}
	live := rs.Do(t, "XADD", "stream:"+ch, "*", "data", "1")
	if f := toFrame(a.expect(t, "data")); f.id != live || f.replay {
		t.Fatalf("after the replay: %v, want live %s", f, live)
	}
}

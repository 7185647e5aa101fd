package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

func TestHTTPEndpoints(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs)
	tests := []struct {
		path string
		code int
		want string
	}{
		{"/health", 200, `"redis":true`},
		{"/stats", 200, `"connections":0`},
		{"/nope", 404, "not found"},
		{"/ws", 400, "WebSocket"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			code, body := g.get(t, tt.path)
			if code != tt.code || !strings.Contains(string(body), tt.want) {
				t.Fatalf("GET %s = %d %s, want %d containing %q", tt.path, code, body, tt.code, tt.want)
			}
		})
	}
	t.Run("stats fields", func(t *testing.T) {
		_, body := g.get(t, "/stats")
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"connections", "streams", "messages_received", "messages_delivered", "messages_dropped", "handoff_dropped", "uptime_seconds", "redis"} {
			if _, ok := m[k]; !ok {
				t.Errorf("/stats lacks %q: %s", k, body)
			}
		}
	})
}

func TestHealthWithoutRedis(t *testing.T) {
	g := startGateway(t, nil)
	code, body := g.get(t, "/health")
	if code != 503 {
		t.Fatalf("/health without Redis = %d %s, want 503", code, body)
	}
	// Clients are accepted all the same.
	cl := dial(t, g.wsURL(""))
	cl.subscribe(t, "market:tick:X")
}

func TestSubscribeAndData(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs)
	cl := dial(t, g.wsURL(""))
	ack := cl.subscribe(t, "market:tick:BANKNIFTY", "market:tick:N*")
	if ack.str("requestId") != "sub" || ack.str("timestamp") == "" {
		t.Fatalf("ack lacks requestId/timestamp: %v", ack)
	}
	if got := fmt.Sprint(ack["channels"]); got != "[market:tick:BANKNIFTY market:tick:N*]" {
		t.Fatalf("ack channels = %s", got)
	}
	tests := []struct {
		name, channel, payload string
		wantData               any
		wantPattern            string
	}{
		{"object", "market:tick:BANKNIFTY", `{"ltp":48000.5}`, map[string]any{"ltp": 48000.5}, ""},
		{"array", "market:tick:BANKNIFTY", `[1,2,3]`, []any{1.0, 2.0, 3.0}, ""},
		{"number", "market:tick:BANKNIFTY", `42`, 42.0, ""},
		{"plain string", "market:tick:BANKNIFTY", `hello world`, "hello world", ""},
		{"invalid json", "market:tick:BANKNIFTY", `{"a":`, `{"a":`, ""},
		{"invalid utf8", "market:tick:BANKNIFTY", "bad\xff\xfebytes", "bad\ufffd\ufffdbytes", ""},
		{"pattern", "market:tick:NIFTY", `{"p":1}`, map[string]any{"p": 1.0}, "market:tick:N*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := rs.Publish(t, tt.channel, tt.payload); n != 1 {
				t.Fatalf("PUBLISH reached %d subscribers, want 1 (the gateway)", n)
			}
			m := cl.expect(t, "data")
			if m.str("channel") != tt.channel {
				t.Errorf("channel = %q", m.str("channel"))
			}
			if got, want := fmt.Sprint(m["data"]), fmt.Sprint(tt.wantData); got != want {
				t.Errorf("data = %s, want %s", got, want)
			}
			if m.str("pattern") != tt.wantPattern {
				t.Errorf("pattern = %q, want %q", m.str("pattern"), tt.wantPattern)
			}
			if _, ok := m["pattern"]; tt.wantPattern == "" && ok {
				t.Errorf("pattern present on an exact delivery: %v", m)
			}
			ts, err := time.Parse(time.RFC3339Nano, m.str("timestamp"))
			if err != nil || !strings.HasSuffix(m.str("timestamp"), "Z") || len(m.str("timestamp")) != len("2026-01-09T10:30:00.123Z") {
				t.Errorf("timestamp %q not RFC 3339 UTC with milliseconds (%v)", m.str("timestamp"), err)
			}
			if time.Since(ts) > time.Minute {
				t.Errorf("timestamp %v is not the receive time", ts)
			}
		})
	}
}

func TestSeqContiguousPerStream(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs)
	a := dial(t, g.wsURL(""))
	b := dial(t, g.wsURL(""))
	a.subscribe(t, "market:tick:A", "market:tick:B")
	b.subscribe(t, "market:tick:A")
	const n = 200
	for i := 0; i < n; i++ {
		rs.Publish(t, "market:tick:A", strconv.Itoa(i))
		if i%2 == 0 {
			rs.Publish(t, "market:tick:B", strconv.Itoa(i))
		}
	}
	last := map[string]uint64{}
	for i := 0; i < n+n/2; i++ {
		m := a.expect(t, "data")
		ch := m.str("channel")
		if m.seq() != last[ch]+1 {
			t.Fatalf("client a, %s: seq %d after %d", ch, m.seq(), last[ch])
		}
		last[ch] = m.seq()
	}
	for i := 1; i <= n; i++ {
		m := b.expect(t, "data")
		if m.seq() != uint64(i) {
			t.Fatalf("client b: seq %d, want %d (same seq for every client of a stream)", m.seq(), i)
		}
	}
}

func TestExactAndPatternBothDeliver(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs)
	cl := dial(t, g.wsURL(""))
	cl.subscribe(t, "market:tick:X", "market:tick:*")
	rs.Publish(t, "market:tick:X", `1`)
	got := map[string]bool{}
	for i := 0; i < 2; i++ {
		m := cl.expect(t, "data")
		got[m.str("pattern")] = true
	}
	if !got[""] || !got["market:tick:*"] {
		t.Fatalf("want one exact and one pattern delivery, got %v", got)
	}
}

func TestSubscribeIdempotentAndUnsubscribe(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs)
	cl := dial(t, g.wsURL(""))
	cl.subscribe(t, "market:tick:X")
	cl.subscribe(t, "market:tick:X") // idempotent: acked again, one delivery
	rs.Publish(t, "market:tick:X", `1`)
	cl.expect(t, "data")
	cl.send(t, `{"action":"unsubscribe","channels":["market:tick:X","market:tick:never"],"requestId":7}`)
	m := cl.expect(t, "unsubscribed")
	if m["requestId"] != 7.0 {
		t.Fatalf("numeric requestId not echoed: %v", m)
	}
	cl.send(t, `{"action":"unsubscribe","channels":["market:tick:X"]}`)
	cl.expect(t, "unsubscribed")
	// A pong proves nothing here: the loop answers a ping at once while
	// data comes through Redis. A sentinel does: Redis and the gateway
	// keep the order of one pub/sub connection, so a message on X, were
	// it still followed, would arrive first.
	cl.subscribe(t, "market:tick:SENTINEL")
	rs.Publish(t, "market:tick:X", `2`)
	rs.Publish(t, "market:tick:SENTINEL", `3`)
	if m := cl.expect(t, "data"); m.str("channel") != "market:tick:SENTINEL" {
		t.Fatalf("after unsubscribe got %v, want only the sentinel", m)
	}
}

func TestErrors(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs)
	cl := dial(t, g.wsURL(""))
	tests := []struct {
		name, send, code string
	}{
		{"not json", `hello`, "bad_request"},
		{"array", `[1]`, "bad_request"},
		{"unknown action", `{"action":"dance"}`, "unknown_action"},
		{"channels not array", `{"action":"subscribe","channels":"x"}`, "bad_request"},
		{"empty channel", `{"action":"subscribe","channels":[""]}`, "bad_request"},
		{"space in channel", `{"action":"subscribe","channels":["a b"]}`, "bad_request"},
		{"long channel", `{"action":"subscribe","channels":["` + strings.Repeat("a", 257) + `"]}`, "bad_request"},
		{"forbidden", `{"action":"subscribe","channels":["engine:signal:X"],"requestId":"f"}`, "forbidden"},
		{"forbidden pattern", `{"action":"subscribe","channels":["market:*"]}`, "forbidden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl.send(t, tt.send)
			m := cl.expect(t, "error")
			if m.str("code") != tt.code || m.str("message") == "" || m.str("timestamp") == "" {
				t.Fatalf("got %v, want code %s with message and timestamp", m, tt.code)
			}
		})
	}
	t.Run("all or nothing", func(t *testing.T) {
		cl.send(t, `{"action":"subscribe","channels":["market:tick:OK","engine:signal:NO"],"requestId":"x"}`)
		m := cl.expect(t, "error")
		if m.str("code") != "forbidden" || fmt.Sprint(m["channels"]) != "[engine:signal:NO]" || m.str("requestId") != "x" {
			t.Fatalf("got %v", m)
		}
		// Nothing of the refused request was subscribed: a message on
		// market:tick:OK would arrive before the sentinel's (one pub/sub
		// connection keeps its order; a pong, answered by the loop at
		// once, could overtake it).
		cl.subscribe(t, "market:tick:SENTINEL")
		rs.Publish(t, "market:tick:OK", "1")
		rs.Publish(t, "market:tick:SENTINEL", "2")
		if m := cl.expect(t, "data"); m.str("channel") != "market:tick:SENTINEL" {
			t.Fatalf("got %v from a refused request", m)
		}
	})
	t.Run("binary", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := cl.c.Write(ctx, websocket.MessageBinary, []byte{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		cl.expect(t, "error")
	})
	t.Run("still open", func(t *testing.T) {
		cl.send(t, `{"action":"ping"}`)
		cl.expect(t, "pong")
	})
}

func TestLimits(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs, func(o *options) {
		o.srv.MaxChannels = 3
		o.srv.MaxWildcards = 1
	})
	cl := dial(t, g.wsURL(""))
	cl.subscribe(t, "market:tick:A", "market:tick:B*")
	cl.send(t, `{"action":"subscribe","channels":["market:tick:C*"]}`)
	if m := cl.expect(t, "error"); m.str("code") != "too_many_wildcards" {
		t.Fatalf("got %v", m)
	}
	cl.send(t, `{"action":"subscribe","channels":["market:tick:C","market:tick:D"]}`)
	if m := cl.expect(t, "error"); m.str("code") != "too_many_channels" {
		t.Fatalf("got %v", m)
	}
	cl.subscribe(t, "market:tick:C") // exactly at the limit
}

func TestOneUpstreamSubscriptionAndRelease(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs)
	var clients []*client
	for i := 0; i < 20; i++ {
		cl := dial(t, g.wsURL(""))
		cl.subscribe(t, "market:tick:SHARED", "market:tick:S*")
		clients = append(clients, cl)
	}
	if got := rs.NumSub(t, "market:tick:SHARED"); got != 1 {
		t.Fatalf("NUMSUB = %d, want one upstream subscriber for 20 clients", got)
	}
	if got := rs.NumPat(t); got != 1 {
		t.Fatalf("NUMPAT = %d, want 1", got)
	}
	for _, cl := range clients[:19] {
		_ = cl.c.Close(websocket.StatusNormalClosure, "")
	}
	rs.Publish(t, "market:tick:SHARED", "still here")
	clients[19].expect(t, "data")
	clients[19].expect(t, "data")
	_ = clients[19].c.Close(websocket.StatusNormalClosure, "")
	// After the linger (100 ms here, at most a second by configuration);
	// the deadline leaves room for a loaded machine.
	servertest.WaitFor(t, 5*time.Second, "upstream unsubscribe", func() bool {
		return rs.NumSub(t, "market:tick:SHARED") == 0 && rs.NumPat(t) == 0
	})
	servertest.WaitFor(t, 5*time.Second, "zero streams in /stats", func() bool {
		st := g.stats(t)
		return st.Streams == 0 && st.Connections == 0
	})
}

func TestLargeMessages(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs)
	cl := dial(t, g.wsURL(""))
	cl.subscribe(t, "market:tick:BIG")
	big := `{"blob":"` + strings.Repeat("x", 1<<20) + `"}`
	rs.Publish(t, "market:tick:BIG", big)
	m := cl.expect(t, "data")
	blob, _ := m["data"].(map[string]any)["blob"].(string)
	if len(blob) != 1<<20 {
		t.Fatalf("1 MiB message arrived with %d bytes", len(blob))
	}
}

func TestFragmentedClientMessage(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs)
	cl := dial(t, g.wsURL(""))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w, err := cl.c.Writer(ctx, websocket.MessageText)
	if err != nil {
		t.Fatal(err)
	}
	// coder/websocket sends each Write as its own frame.
	for _, part := range []string{`{"action":"sub`, `scribe","channels":["market:tick:`, `F\u00e9"],"requestId":"frag"}`} {
		if _, err := w.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if m := cl.expect(t, "subscribed"); m.str("requestId") != "frag" {
		t.Fatalf("got %v", m)
	}
}

func TestControlFramesAndClose(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs)
	cl := dial(t, g.wsURL(""))
	readCtx := cl.c.CloseRead(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := cl.c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if err := cl.c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close handshake: %v", err)
	}
	<-readCtx.Done()
	servertest.WaitFor(t, 5*time.Second, "connection count back to 0", func() bool {
		return g.srv.Connections() == 0
	})
}

// TestRawUpgradeAndFrameSplits drives the server with hand-made bytes: the
// upgrade request and a command, delivered one byte per write.
func TestRawUpgradeAndFrameSplits(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs)
	c := servertest.Dial(t, g.addr)
	req := servertest.UpgradeRequest("/ws", "")
	frame := servertest.Frame(0x81, []byte(`{"action":"ping","requestId":"split"}`), false)
	for _, b := range append([]byte(req), frame...) {
		c.Send(t, []byte{b})
	}
	_ = c.TCP.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	var got []byte
	for !bytes.Contains(got, []byte(`"split"`)) {
		n, err := c.R.Read(buf)
		if err != nil {
			t.Fatalf("read: %v (got %q)", err, got)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 101 ")) || !bytes.Contains(got, []byte(servertest.SampleAccept)) {
		t.Fatalf("bad upgrade response: %q", got)
	}
	if bytes.Contains(bytes.ToLower(got), []byte("permessage-deflate")) {
		t.Fatalf("permessage-deflate must not be negotiated: %q", got)
	}
}

func TestThousandClients(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	rs := redistest.Start(t)
	g := startGateway(t, rs)
	const n = 1000
	clients := make([]*client, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range clients {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := dialErr(g.wsURL(""), nil)
			if err != nil {
				errs <- err
				return
			}
			clients[i] = &client{c: c}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("dial: %v", err)
	}
	for i, cl := range clients {
		ch := "market:tick:" + strconv.Itoa(i%10)
		cl.send(t, map[string]any{"action": "subscribe", "channels": []string{ch, "market:tick:*"}})
	}
	for _, cl := range clients {
		cl.expect(t, "subscribed")
	}
	for i := 0; i < 10; i++ {
		rs.Publish(t, "market:tick:"+strconv.Itoa(i), `{"i":`+strconv.Itoa(i)+`}`)
	}
	var fail sync.Once
	for _, cl := range clients {
		wg.Add(1)
		go func(cl *client) {
			defer wg.Done()
			// 1 exact + 10 pattern deliveries each.
			for k := 0; k < 11; k++ {
				m, err := cl.readErr(20 * time.Second)
				if err != nil || m.str("type") != "data" || !utf8.ValidString(m.str("channel")) {
					fail.Do(func() { t.Errorf("client read %d: %v %v", k, m, err) })
					return
				}
			}
		}(cl)
	}
	wg.Wait()
	st := g.stats(t)
	if st.Connections != n || st.MessagesDelivered < n*11 {
		t.Fatalf("stats after delivery: %+v", st)
	}
	for i, cl := range clients {
		if i%2 == 0 {
			_ = cl.c.Close(websocket.StatusNormalClosure, "")
		} else {
			_ = cl.c.CloseNow() // TCP drop without a close frame
		}
	}
	servertest.WaitFor(t, 20*time.Second, "clean /stats after 1000 clients left", func() bool {
		st := g.stats(t)
		return st.Connections == 0 && st.Streams == 0
	})
	// The stream table empties before the UNSUBSCRIBE reaches Redis.
	servertest.WaitFor(t, 5*time.Second, "no pattern subscription upstream after everyone left", func() bool {
		return rs.NumPat(t) == 0
	})
}

// TestIdleQueueReleased: a connection that has received nothing for a few
// seconds gives its send queue back (/stats queues goes to 0: an idle
// socket holds no ring), and the next message still arrives, with the
// next seq, through a fresh queue.
func TestIdleQueueReleased(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs)
	cl := dial(t, g.wsURL(""))
	cl.subscribe(t, "market:tick:IDLE")
	rs.Publish(t, "market:tick:IDLE", "1")
	if m := cl.expect(t, "data"); m.seq() != 1 {
		t.Fatalf("seq %d, want 1", m.seq())
	}
	if q := g.stats(t).Queues; q != 1 {
		t.Fatalf("queues = %d while the connection has just been served, want 1", q)
	}
	// Released after five quiet sweeps, one a second.
	servertest.WaitFor(t, 15*time.Second, "the idle connection's queue to be released", func() bool {
		return g.stats(t).Queues == 0
	})
	rs.Publish(t, "market:tick:IDLE", "2")
	if m := cl.expect(t, "data"); m.seq() != 2 || m.str("channel") != "market:tick:IDLE" {
		t.Fatalf("after the release: %v, want seq 2 on market:tick:IDLE", m)
	}
	if q := g.stats(t).Queues; q != 1 {
		t.Fatalf("queues = %d after the next message, want 1", q)
	}
}

package server_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgw/gateway/fanout"
	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server"
	"github.com/wsgw/gateway/server/servertest"
	"github.com/wsgw/gateway/wsproto"
)

// recordingDurable is a server.DurableHub that records what the server
// hands it and subscribes every name through the pub/sub hub, so that the
// client gets its ack as it will from the real durable side.
type recordingDurable struct {
	d   *fanout.Durability
	hub *fanout.Hub

	mu    sync.Mutex
	subs  []durableSub
	unsub [][]string
}

type durableSub struct {
	pubsub  []string
	durable []fanout.Resume
}

func (r *recordingDurable) Durable(name string) bool { return r.d.Durable(name) }

func (r *recordingDurable) SubscribeDurable(s *fanout.Subscriber, add []string, durable []fanout.Resume, all []string, requestID []byte) error {
	r.mu.Lock()
	r.subs = append(r.subs, durableSub{slices.Clone(add), durable})
	r.mu.Unlock()
	names := slices.Clone(add)
	for _, d := range durable {
		names = append(names, d.Name)
	}
	return r.hub.Subscribe(s, names, all, requestID)
}

func (r *recordingDurable) UnsubscribeDurable(s *fanout.Subscriber, del, durable, all []string, requestID []byte) error {
	r.mu.Lock()
	r.unsub = append(r.unsub, slices.Clone(durable))
	r.mu.Unlock()
	return r.hub.Unsubscribe(s, append(slices.Clone(del), durable...), all, requestID)
}

func (r *recordingDurable) Remove(s *fanout.Subscriber) { r.hub.Remove(s) }

func (r *recordingDurable) lastSub(tb testing.TB) durableSub {
	tb.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.subs) == 0 {
		tb.Fatal("SubscribeDurable was not called")
	}
	return r.subs[len(r.subs)-1]
}

func (r *recordingDurable) calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.subs)
}

// startDurableGateway starts a gateway whose durable channels are globs,
// with a recordingDurable as its durable side.
func startDurableGateway(tb testing.TB, globs []string, mutate ...func(*options)) (*gateway, *recordingDurable) {
	tb.Helper()
	d, err := fanout.NewDurability(globs)
	if err != nil {
		tb.Fatal(err)
	}
	rec := &recordingDurable{d: d}
	g := startGateway(tb, redistest.Start(tb), append(mutate, func(o *options) {
		o.durable = func(srv *server.Server) server.DurableHub {
			rec.hub = srv.Hub()
			return rec
		}
	})...)
	return g, rec
}

// TestSinceRules: the order of the checks of a subscribe with "since"
// (parse, ACL, since rules) and what each refusal names. The default ACL
// lets role user read market:tick:* and indicators:*, not engine:*.
func TestSinceRules(t *testing.T) {
	g, rec := startDurableGateway(t, []string{"market:tick:D*", "indicators:signal:*", "engine:signal:*"})
	tooMany := make([]string, wsproto.MaxSinceEntries+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf(`"market:tick:D%d":"1-0"`, i)
	}
	tests := []struct {
		name     string
		req      string
		code     string
		msg      string   // part of the error message
		channels []string // the error's channels
	}{
		{name: "forbidden wins over a malformed ID", code: "forbidden",
			req:      `{"action":"subscribe","channels":["engine:signal:X"],"since":{"engine:signal:X":"garbage"},"requestId":"r"}`,
			channels: []string{"engine:signal:X"}},
		{name: "forbidden wins over an unknown key", code: "forbidden",
			req:      `{"action":"subscribe","channels":["engine:signal:X","market:tick:DEMO"],"since":{"nowhere":"1-0"},"requestId":"r"}`,
			channels: []string{"engine:signal:X"}},
		{name: "a parse error comes first", code: "bad_request", msg: "more than 1024 entries",
			req: `{"action":"subscribe","channels":["engine:signal:X"],"since":{` + strings.Join(tooMany, ",") + `},"requestId":"r"}`},
		{name: "malformed ID", code: "bad_request", msg: "malformed",
			req:      `{"action":"subscribe","channels":["market:tick:DEMO"],"since":{"market:tick:DEMO":"01-0"},"requestId":"r"}`,
			channels: []string{"market:tick:DEMO"}},
		{name: "overflowing ID", code: "bad_request", msg: "malformed",
			req:      `{"action":"subscribe","channels":["market:tick:DEMO"],"since":{"market:tick:DEMO":"99999999999999999999-0"},"requestId":"r"}`,
			channels: []string{"market:tick:DEMO"}},
		{name: "key neither named nor matched", code: "bad_request", msg: "neither",
			req:      `{"action":"subscribe","channels":["market:tick:D*"],"since":{"market:tick:X":"1-0","indicators:signal:A":"1-0"},"requestId":"r"}`,
			channels: []string{"market:tick:X", "indicators:signal:A"}},
		{name: "a pattern key is not matched by a pattern", code: "bad_request", msg: "neither",
			req:      `{"action":"subscribe","channels":["market:tick:D*"],"since":{"market:tick:DE*":"1-0"},"requestId":"r"}`,
			channels: []string{"market:tick:DE*"}},
		{name: "not durable", code: "bad_request", msg: "not durable",
			req:      `{"action":"subscribe","channels":["market:tick:NIFTY","market:tick:DEMO"],"since":{"market:tick:NIFTY":"1-0","market:tick:DEMO":"1-0"},"requestId":"r"}`,
			channels: []string{"market:tick:NIFTY"}},
		{name: "a mixed pattern is not durable", code: "bad_request", msg: "not durable",
			req:      `{"action":"subscribe","channels":["market:tick:*"],"since":{"market:tick:*":"1-0","market:tick:DEMO":"2-0"},"requestId":"r"}`,
			channels: []string{"market:tick:*", "market:tick:DEMO"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := rec.calls()
			cl := dial(t, g.wsURL(""))
			cl.send(t, tt.req)
			m := cl.expect(t, "error")
			if m.str("code") != tt.code || !strings.Contains(m.str("message"), tt.msg) || m.str("requestId") != "r" {
				t.Fatalf("got %v, want %s containing %q", m, tt.code, tt.msg)
			}
			if tt.channels != nil && !slices.Equal(strs(m["channels"]), tt.channels) {
				t.Fatalf("channels %v, want %v", m["channels"], tt.channels)
			}
			if rec.calls() != before {
				t.Fatal("a refused request reached the durable side")
			}
			// Nothing of the request was subscribed: a ping comes back next.
			cl.send(t, `{"action":"ping","requestId":"p"}`)
			cl.expect(t, "pong")
		})
	}
}

// TestSinceRouting: what the durable side is handed for accepted requests,
// and the requests that never reach it.
func TestSinceRouting(t *testing.T) {
	g, rec := startDurableGateway(t, []string{"market:tick:D*", "indicators:signal:*"})
	id := func(s string) wsproto.StreamID {
		v, ok := wsproto.ParseStreamID(s)
		if !ok {
			t.Fatalf("bad ID %q", s)
		}
		return v
	}

	t.Run("exact channel", func(t *testing.T) {
		cl := dial(t, g.wsURL(""))
		cl.send(t, `{"action":"subscribe","channels":["market:tick:DEMO","market:tick:NIFTY"],"since":{"market:tick:DEMO":"1764660000123-4"},"requestId":"r"}`)
		cl.expect(t, "subscribed")
		got := rec.lastSub(t)
		want := durableSub{[]string{"market:tick:NIFTY"}, []fanout.Resume{{Name: "market:tick:DEMO", Since: id("1764660000123-4"), HasSince: true}}}
		if !sameSub(got, want) {
			t.Fatalf("SubscribeDurable(%+v), want %+v", got, want)
		}
	})
	t.Run("pattern with positions per channel", func(t *testing.T) {
		cl := dial(t, g.wsURL(""))
		cl.send(t, `{"action":"subscribe","channels":["indicators:signal:*"],"since":{"indicators:signal:*":"1-0","indicators:signal:A":"7-3","indicators:signal:B":"0-1"},"requestId":"r"}`)
		cl.expect(t, "subscribed")
		want := durableSub{nil, []fanout.Resume{{Name: "indicators:signal:*", Since: id("1-0"), HasSince: true,
			Channels: []fanout.ChannelPosition{{Channel: "indicators:signal:A", ID: id("7-3")}, {Channel: "indicators:signal:B", ID: id("0-1")}}}}}
		if got := rec.lastSub(t); !sameSub(got, want) {
			t.Fatalf("SubscribeDurable(%+v), want %+v", got, want)
		}
	})
	t.Run("a position for an exact channel and the pattern matching it", func(t *testing.T) {
		cl := dial(t, g.wsURL(""))
		cl.send(t, `{"action":"subscribe","channels":["market:tick:D*","market:tick:DEMO"],"since":{"market:tick:DEMO":"5-0"},"requestId":"r"}`)
		cl.expect(t, "subscribed")
		want := durableSub{nil, []fanout.Resume{
			{Name: "market:tick:D*", Channels: []fanout.ChannelPosition{{Channel: "market:tick:DEMO", ID: id("5-0")}}},
			{Name: "market:tick:DEMO", Since: id("5-0"), HasSince: true}}}
		if got := rec.lastSub(t); !sameSub(got, want) {
			t.Fatalf("SubscribeDurable(%+v), want %+v", got, want)
		}
	})
	t.Run("durable without since, then since on it again", func(t *testing.T) {
		cl := dial(t, g.wsURL(""))
		cl.send(t, `{"action":"subscribe","channels":["market:tick:DEMO"],"requestId":"r"}`)
		cl.expect(t, "subscribed")
		want := durableSub{nil, []fanout.Resume{{Name: "market:tick:DEMO"}}}
		if got := rec.lastSub(t); !sameSub(got, want) {
			t.Fatalf("SubscribeDurable(%+v), want %+v", got, want)
		}
		before := rec.calls()
		cl.send(t, `{"action":"subscribe","channels":["market:tick:DEMO"],"since":{"market:tick:DEMO":"5-0"},"requestId":"again"}`)
		m := cl.expect(t, "error")
		if m.str("code") != "bad_request" || !strings.Contains(m.str("message"), "already follows") || !slices.Equal(strs(m["channels"]), []string{"market:tick:DEMO"}) {
			t.Fatalf("got %v, want bad_request: already follows", m)
		}
		// Subscribing again without since is as idempotent as ever.
		cl.send(t, `{"action":"subscribe","channels":["market:tick:DEMO"],"requestId":"idem"}`)
		cl.expect(t, "subscribed")
		if rec.calls() != before {
			t.Fatal("a request naming only followed channels reached the durable side")
		}
		cl.send(t, `{"action":"unsubscribe","channels":["market:tick:DEMO","market:tick:NIFTY"],"requestId":"u"}`)
		cl.expect(t, "unsubscribed")
		rec.mu.Lock()
		last := rec.unsub[len(rec.unsub)-1]
		rec.mu.Unlock()
		if !slices.Equal(last, []string{"market:tick:DEMO"}) {
			t.Fatalf("UnsubscribeDurable durable names %q, want [market:tick:DEMO]", last)
		}
	})
	t.Run("pub/sub only goes to the hub", func(t *testing.T) {
		before := rec.calls()
		cl := dial(t, g.wsURL(""))
		cl.subscribe(t, "market:tick:NIFTY", "market:tick:*")
		if rec.calls() != before {
			t.Fatal("a request without durable names reached the durable side")
		}
	})
}

// TestSinceWithoutDurableSide: a gateway without durable channels refuses
// every since, after the ACL, and serves the rest as before.
func TestSinceWithoutDurableSide(t *testing.T) {
	g := startGateway(t, redistest.Start(t))
	cl := dial(t, g.wsURL(""))
	cl.send(t, `{"action":"subscribe","channels":["market:tick:DEMO"],"since":{"market:tick:DEMO":"5-0"},"requestId":"r"}`)
	if m := cl.expect(t, "error"); m.str("code") != "bad_request" || !strings.Contains(m.str("message"), "not durable") {
		t.Fatalf("got %v, want bad_request: not durable", m)
	}
	cl.send(t, `{"action":"subscribe","channels":["engine:signal:X"],"since":{"engine:signal:X":"5-0"},"requestId":"r"}`)
	if m := cl.expect(t, "error"); m.str("code") != "forbidden" {
		t.Fatalf("got %v, want forbidden", m)
	}
	cl.subscribe(t, "market:tick:DEMO")
}

func sameSub(a, b durableSub) bool {
	if !slices.Equal(a.pubsub, b.pubsub) || len(a.durable) != len(b.durable) {
		return false
	}
	for i := range a.durable {
		x, y := a.durable[i], b.durable[i]
		if x.Name != y.Name || x.Since != y.Since || x.HasSince != y.HasSince || !slices.Equal(x.Channels, y.Channels) {
			return false
		}
	}
	return true
}

// strs converts a decoded JSON array of strings.
func strs(v any) []string {
	a, _ := v.([]any)
	out := make([]string, 0, len(a))
	for _, e := range a {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

// TestSinceCostsTokens: each since key that is not a channel of the request
// takes a token of MAX_MESSAGES_PER_SECOND, as it is matched against the
// request's patterns. With 10 tokens a second, a subscribe with 9 such keys
// takes the whole bucket, so a ping in the same TCP segment is refused;
// without them the ping passes.
func TestSinceCostsTokens(t *testing.T) {
	g, _ := startDurableGateway(t, []string{"indicators:signal:*"}, func(o *options) { o.srv.MaxMessagesPerSecond = 10 })
	keys := make([]string, 9)
	for i := range keys {
		keys[i] = fmt.Sprintf(`"indicators:signal:K%d":"1-0"`, i)
	}
	tests := []struct {
		name  string
		since string
		reply string // to the ping: its type and code
	}{
		{"without since keys", "", "pong"},
		{"with 9 since keys", `,"since":{` + strings.Join(keys, ",") + `}`, "error rate_limited"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := servertest.Upgrade(t, g.addr)
			req := `{"action":"subscribe","channels":["indicators:signal:*"]` + tt.since + `,"requestId":"r"}`
			c.Send(t, append(servertest.DataFrame(servertest.OpText, true, 0, []byte(req)),
				servertest.DataFrame(servertest.OpText, true, 0, []byte(`{"action":"ping","requestId":"p"}`))...))
			var got []string
			for len(got) < 2 {
				f, err := c.ReadFrame(10 * time.Second)
				if err != nil {
					t.Fatalf("after %q: %v", got, err)
				}
				var m msg
				if err := json.Unmarshal(f.Payload, &m); err != nil {
					t.Fatal(err)
				}
				got = append(got, strings.TrimSpace(m.str("type")+" "+m.str("code")))
			}
			// The ack comes from the hub, the ping's reply from the
			// loop: in either order.
			slices.Sort(got)
			want := []string{tt.reply, "subscribed"}
			if !slices.Equal(got, want) {
				t.Fatalf("replies %q, want %q", got, want)
			}
		})
	}
}

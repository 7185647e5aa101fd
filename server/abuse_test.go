package server_test

// Abuse by clients that are allowed in: requests that cost CPU, churn that
// costs memory and Redis work, upstream refusals of one stream, partial
// messages held open, and tokens valid for centuries. Each runs against a
// real gateway and a real redis-server; docs/SECURITY.md lists them.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

// TestFarFutureToken: a token that expires after 2262 (where Unix
// nanoseconds overflow an int64) is valid for the connection's life, not
// expired at once. A witness whose token expires in about a second proves
// that the expiry sweep has run over the far-future connections (one loop,
// so one sweep sees them all).
func TestFarFutureToken(t *testing.T) {
	rs, g := startAbused(t, func(o *options) {
		o.srv.Loops = 1
		o.auth.JWTSecret = secJWTSecret
	})
	tests := []struct {
		name string
		exp  int64
	}{
		{"9999-12-31", 253402300799},
		{"exp 9999999999999", 9999999999999},
		{"just past 2262", time.Unix(0, 1<<63-1).Unix() + 1},
	}
	clients := make([]*client, len(tests))
	for i, tt := range tests {
		clients[i] = dial(t, g.wsURL("token="+hsToken(t, "user", map[string]any{"exp": tt.exp})))
		clients[i].subscribe(t, "market:tick:FAR")
	}
	witness := dial(t, g.wsURL("token="+hsToken(t, "user", map[string]any{"exp": time.Now().Add(time.Second).Unix() + 1})))
	if code, err := witness.waitClosed(t, 10*time.Second); code != websocket.StatusPolicyViolation {
		t.Fatalf("witness closed with %d (%v), want 1008 token expired", code, err)
	}
	rs.Publish(t, "market:tick:FAR", "still here")
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := clients[i]
			if m := cl.expect(t, "data"); m.str("channel") != "market:tick:FAR" {
				t.Fatalf("got %v", m)
			}
			cl.send(t, `{"action":"ping"}`)
			cl.expect(t, "pong")
		})
	}
}

// startAbused starts a redis-server and a gateway on it, with the options
// mutate sets.
func startAbused(tb testing.TB, mutate func(*options)) (*redistest.Server, *gateway) {
	tb.Helper()
	rs := redistest.Start(tb)
	return rs, startGateway(tb, rs, mutate)
}

// channelsOf is the "channels" field of an error frame.
func channelsOf(m msg) []string {
	var out []string
	if list, ok := m["channels"].([]any); ok {
		for _, c := range list {
			s, _ := c.(string)
			out = append(out, s)
		}
	}
	return out
}

// subscribeReq is a subscribe command naming channels.
func subscribeReq(id string, channels ...string) string {
	b, _ := json.Marshal(map[string]any{"action": "subscribe", "channels": channels, "requestId": id})
	return string(b)
}

// hostilePatterns are n distinct 255-byte patterns of classes, each costly
// to check against an ACL rule that needs the general containment search.
func hostilePatterns(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = strings.Repeat("[!-~]", 50) + fmt.Sprintf("[%04d", i)
	}
	return out
}

// TestSubscribeRequestBounds: what a single subscribe request can make the
// gateway do is bounded before any ACL work: a request naming more
// channels or patterns than a connection may hold is refused as such (a
// request of forbidden names proves that no ACL check ran first), and
// the rate limit counts channels, not messages.
func TestSubscribeRequestBounds(t *testing.T) {
	rs, g := startAbused(t, func(o *options) {
		o.srv.MaxChannels = 50
		o.srv.MaxWildcards = 5
		o.srv.MaxMessagesPerSecond = 100
	})
	by := newBystander(t, g, rs)
	forbidden := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprint("engine:signal:", i)
		}
		return out
	}
	tests := []struct {
		name     string
		channels []string
		code     string
		listed   bool // the error lists the request's channels
	}{
		{"51 forbidden channels: too many, not forbidden", forbidden(51), "too_many_channels", false},
		{"252 hostile patterns", hostilePatterns(252), "too_many_channels", false},
		{"6 hostile patterns: too many wildcards, before the ACL", hostilePatterns(6), "too_many_wildcards", true},
		{"5 hostile patterns reach the ACL", hostilePatterns(5), "forbidden", true},
		{"50 forbidden channels reach the ACL", forbidden(50), "forbidden", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := dial(t, g.wsURL(""))
			cl.send(t, subscribeReq("r", tt.channels...))
			m := cl.expect(t, "error")
			if m.str("code") != tt.code || m.str("requestId") != "r" {
				t.Fatalf("got %v, want %s", m, tt.code)
			}
			if got := channelsOf(m); tt.listed != (len(got) > 0) {
				t.Fatalf("error lists %d channels, want listed=%v", len(got), tt.listed)
			}
			by.alive(t)
		})
	}
	t.Run("rate limit counts channels", func(t *testing.T) {
		cl := dial(t, g.wsURL(""))
		// 100 tokens: two requests of 40 channels take 80; the bucket
		// refills one token per 10 ms, so the third, sent right after,
		// finds its message's token but not its channels' (it would
		// need 200 ms more).
		unsub := `{"action":"unsubscribe","channels":` + string(must(json.Marshal(forbidden(40)))) + `,"requestId":"u"}`
		for i := range 2 {
			cl.send(t, unsub)
			if m := cl.read(t); m.str("type") != "unsubscribed" {
				t.Fatalf("request %d: got %v", i+1, m)
			}
		}
		cl.send(t, unsub)
		if m := cl.expect(t, "error"); m.str("code") != "rate_limited" || m.str("requestId") != "u" {
			t.Fatalf("got %v, want rate_limited", m)
		}
		by.alive(t)
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestNewStreamRate: MAX_NEW_STREAMS_PER_SECOND bounds the channels a
// connection newly names per second (with a burst of
// MAX_CHANNELS_PER_CLIENT), granted or not; beyond it stream_rate_limited,
// and the connection and its subscriptions carry on.
func TestNewStreamRate(t *testing.T) {
	rs, g := startAbused(t, func(o *options) { o.srv.MaxChannels, o.srv.MaxNewStreamsPerSecond = 10, 2 })
	cl := dial(t, g.wsURL(""))
	burst := make([]string, 10)
	for i := range burst {
		burst[i] = fmt.Sprint("market:tick:R", i)
	}
	cl.subscribe(t, burst...) // the whole burst at once
	cl.send(t, `{"action":"unsubscribe","channels":["market:tick:R0"]}`)
	cl.expect(t, "unsubscribed")
	cl.send(t, subscribeReq("again", "market:tick:R0"))
	m := cl.expect(t, "error")
	if m.str("code") != "stream_rate_limited" || !slices.Equal(channelsOf(m), []string{"market:tick:R0"}) {
		t.Fatalf("got %v, want stream_rate_limited for market:tick:R0", m)
	}
	// Refused names cost tokens too: the ACL work is what is bounded.
	rs.Publish(t, "market:tick:R1", "still")
	if m := cl.expect(t, "data"); m.str("channel") != "market:tick:R1" {
		t.Fatalf("got %v", m)
	}
	// The bucket refills (one token per 500 ms here).
	servertest.WaitFor(t, 10*time.Second, "a token for a new channel", func() bool {
		cl.send(t, subscribeReq("retry", "market:tick:R0"))
		m := cl.read(t)
		switch {
		case m.str("type") == "subscribed":
			return true
		case m.str("code") == "stream_rate_limited":
			return false
		}
		t.Fatalf("got %v", m)
		return false
	})
}

// TestStreamCapRefusal: a subscribe the hub refuses for MAX_STREAMS is
// answered server_busy, and the connection does not count the refused
// channels (MAX_CHANNELS_PER_CLIENT is 2 here: after the refusal the client
// can still hold two).
func TestStreamCapRefusal(t *testing.T) {
	rs, g := startAbused(t, func(o *options) { o.srv.MaxChannels, o.hub.MaxStreams = 2, 2 })
	a := dial(t, g.wsURL(""))
	a.subscribe(t, "market:tick:X", "market:tick:Y")
	b := dial(t, g.wsURL(""))
	b.send(t, subscribeReq("z", "market:tick:Z"))
	m := b.expect(t, "error")
	if m.str("code") != "server_busy" || m.str("requestId") != "z" || !slices.Equal(channelsOf(m), []string{"market:tick:Z"}) {
		t.Fatalf("got %v, want server_busy for market:tick:Z", m)
	}
	b.subscribe(t, "market:tick:X", "market:tick:Y") // existing streams; Z not counted
	rs.Publish(t, "market:tick:Y", "1")
	for _, cl := range []*client{a, b} {
		if m := cl.expect(t, "data"); m.str("channel") != "market:tick:Y" {
			t.Fatalf("got %v", m)
		}
	}
}

// TestUpstreamRefusal: when the gateway's own Redis user has channel ACLs
// and Redis refuses one client's stream (PSUBSCRIBE patterns are compared
// as strings: &market:tick:* does not grant market:tick:A*), that client's
// request fails with upstream_refused and the stream is dropped; the link
// stays up (/health 200, no upstream_interrupted, no reconnect) and every
// other client's delivery goes on with a contiguous seq.
func TestUpstreamRefusal(t *testing.T) {
	rs := redistest.Start(t)
	if r := rs.Do(t, "ACL", "SETUSER", "gw", "on", ">pw", "resetchannels", "&market:tick:*", "&indicators:*",
		"&__ws_gateway:canary:*", "~*", "+@all"); r != "OK" {
		t.Fatalf("ACL SETUSER = %q", r)
	}
	g := startGateway(t, rs, func(o *options) {
		o.hub.RedisUsername, o.hub.RedisPassword = "gw", "pw"
		o.hub.CanaryInterval = 100 * time.Millisecond
		o.srv.MaxChannels = 2
	})
	reader := dial(t, g.wsURL(""))
	reader.subscribe(t, "market:tick:*")
	attacker := dial(t, g.wsURL(""))
	var last uint64
	for i := range 20 {
		attacker.send(t, subscribeReq(fmt.Sprint("p", i), fmt.Sprintf("market:tick:A%d*", i%3)))
		m := attacker.expect(t, "error")
		if m.str("code") != "upstream_refused" || m.str("requestId") != fmt.Sprint("p", i) {
			t.Fatalf("request %d: got %v, want upstream_refused", i, m)
		}
		if code := g.health(t); code != 200 {
			t.Fatalf("/health %d after a refused stream", code)
		}
		rs.Publish(t, "market:tick:T", fmt.Sprint(i))
		d := reader.read(t)
		if d.str("type") != "data" || d.seq() != last+1 {
			t.Fatalf("reader got %v after seq %d: delivery interrupted", d, last)
		}
		last = d.seq()
	}
	// The refused channels are not held: two channels still fit.
	attacker.subscribe(t, "market:tick:B", "market:tick:C")
	if st := g.hub.Stats(); st.Reconnects != 0 || !st.RedisUp {
		t.Fatalf("Stats %+v: the link went down", st)
	}
	servertest.WaitFor(t, 5*time.Second, "the refused streams to be gone", func() bool { return g.hub.Stats().Streams == 3 })
}

// paddedPing is a ping command of exactly n bytes (an ignored field pads
// it), to be sent in fragments.
func paddedPing(n int) []byte {
	const head, tail = `{"action":"ping","pad":"`, `"}`
	return []byte(head + strings.Repeat("p", n-len(head)-len(tail)) + tail)
}

// pingUntilClosed sends a ping every 100 ms on rc (keeping the peer
// lively, as the attack does) until stop is closed.
func pingUntilClosed(rc *servertest.Conn, stop <-chan struct{}) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	ping := servertest.Frame(0x89, nil, false)
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if _, err := rc.TCP.Write(ping); err != nil {
				return
			}
		}
	}
}

// TestPartialMessageTimeout: a message has PARTIAL_MESSAGE_TIMEOUT to
// complete, however lively its sender otherwise is: sockets that send a
// first fragment and then only pings are closed with 1008, not before
// the timeout; a fragmented message that completes in time is answered.
func TestPartialMessageTimeout(t *testing.T) {
	const timeout = time.Second
	rs, g := startAbused(t, func(o *options) {
		o.srv.PartialMessageTimeout = timeout
		o.srv.MaxPartialBytes = 64 << 20
		// The closed sockets keep pinging: they are gone only because a
		// lingering close is bounded as a whole (five times this).
		o.srv.CloseLinger = 200 * time.Millisecond
	})
	by := newBystander(t, g, rs)
	msg := paddedPing(60000)
	const n = 20
	conns := make([]*servertest.Conn, n)
	stop := make(chan struct{})
	defer close(stop)
	start := time.Now()
	for i := range conns {
		conns[i] = servertest.Upgrade(t, g.addr)
		conns[i].Send(t, servertest.Frame(0x01, msg[:len(msg)-10], false))
		go pingUntilClosed(conns[i], stop)
	}
	// One frame, never completed: no pings can follow it.
	trickle := servertest.Upgrade(t, g.addr)
	trickle.Send(t, servertest.Frame(0x81, msg, false)[:1000])
	// Completed in time, in fragments spread over a third of the timeout.
	ok := servertest.Upgrade(t, g.addr)
	okStart := time.Now()
	ok.Send(t, servertest.Frame(0x01, msg[:30000], false))
	for i := 1; i <= 3; i++ {
		servertest.WaitFor(t, time.Second, "the next pacing step", func() bool { return time.Since(okStart) > time.Duration(i)*timeout/10 })
		ok.Send(t, servertest.Frame(0x89, nil, false))
	}
	ok.Send(t, servertest.Frame(0x80, msg[30000:], false))
	ok.ExpectText(t, `"type":"pong"`)

	for i, rc := range append(conns, trickle) {
		texts := rc.ExpectClose(t, 1008)
		if len(texts) != 0 {
			t.Fatalf("conn %d: text frames before the close: %q", i, texts)
		}
	}
	if d := time.Since(start); d < timeout {
		t.Fatalf("closed after %v, before the %v timeout", d, timeout)
	}
	by.alive(t)
	servertest.WaitFor(t, 10*time.Second, "the closed sockets to be gone", func() bool { return g.srv.Connections() == 2 })
}

// TestPartialMessageBytes: the bytes of unfinished messages across all
// connections are bounded by MAX_PARTIAL_MESSAGE_BYTES; the connection
// that would pass it is closed with 1009, the others keep theirs and
// complete them, and the bytes are given back once they do.
func TestPartialMessageBytes(t *testing.T) {
	rs, g := startAbused(t, func(o *options) {
		o.srv.MaxPartialBytes = 200_000
		o.srv.PartialMessageTimeout = time.Minute
	})
	by := newBystander(t, g, rs)
	msg := paddedPing(60000)
	first, last := servertest.Frame(0x01, msg[:59000], false), servertest.Frame(0x80, msg[59000:], false)
	// settled sends a ping and waits for its pong. The gateway counts
	// the bytes an unfinished message holds at the end of each read, and
	// may answer within it, so a ping sent after the answer to what
	// changed them is read once they are counted.
	settled := func(rc *servertest.Conn) {
		rc.Send(t, servertest.Frame(0x89, []byte("x"), false))
		for {
			f, err := rc.ReadFrame(10 * time.Second)
			if err != nil {
				t.Fatalf("waiting for the pong: %v", err)
			}
			if f.Op == servertest.OpPong {
				return
			}
		}
	}
	// hold sends a first fragment and has it counted.
	hold := func(rc *servertest.Conn) {
		rc.Send(t, first)
		settled(rc)
		settled(rc)
	}
	var holders []*servertest.Conn
	for range 3 {
		rc := servertest.Upgrade(t, g.addr)
		hold(rc) // 177,000 bytes held in all
		holders = append(holders, rc)
	}
	over := servertest.Upgrade(t, g.addr)
	over.Send(t, first)
	over.ExpectClose(t, 1009)
	by.alive(t)
	for _, rc := range holders {
		rc.Send(t, last)
		rc.ExpectText(t, `"type":"pong"`)
		settled(rc)
	}
	// Completed messages hold nothing: three more fit again.
	for range 3 {
		hold(servertest.Upgrade(t, g.addr))
	}
}

// TestStatsPrivate: with StatsPrivate (STATS_ADMIN_ONLY) the public port
// answers /stats with 404; /health stays.
func TestStatsPrivate(t *testing.T) {
	_, g := startAbused(t, func(o *options) { o.srv.StatsPrivate = true })
	if code, body := g.get(t, "/stats"); code != 404 {
		t.Fatalf("/stats: %d %s, want 404", code, body)
	}
	if code := g.health(t); code != 200 {
		t.Fatalf("/health: %d", code)
	}
}

// TestAbusiveSubscriberBounded: one connection sending costly subscribe
// requests (patterns that need the general containment search against
// the ACL) at its rate limit gets ACL work done for at most
// MAX_NEW_STREAMS_PER_SECOND patterns a second after a burst of
// MAX_CHANNELS_PER_CLIENT, each check bounded by auth's work budget
// (TestContainsWork): the rest is refused before any ACL work. That bound
// is what the test asserts, as it does not depend on the machine's speed.
// The p99 round trip of another client on the same event loop is measured
// too, abuse and quiet phases alternating within one run, and logged: on
// this shared machine a timing assertion would be noise.
func TestAbusiveSubscriberBounded(t *testing.T) {
	const (
		streamRate = 20
		burst      = 50 // MaxChannels
		patterns   = 5  // MaxWildcards: what a request can bring to the ACL
	)
	rs := redistest.Start(t)
	acl, err := auth.NewACL(map[string][]string{"user": {"market:tick:*", "indicators:*:1m"}})
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, rs, func(o *options) {
		o.srv.Loops = 1 // victim and abuser on the same loop
		o.srv.MaxChannels = burst
		o.srv.MaxWildcards = patterns
		o.srv.MaxNewStreamsPerSecond = streamRate
		o.acl = acl
	})
	victim := dial(t, g.wsURL(""))
	abuser, err := dialErr(g.wsURL(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer abuser.CloseNow()
	var abusing atomic.Bool
	var checked, refusedEarly, other atomic.Int64
	abuseErr := make(chan error, 1)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		req := subscribeReq("a", hostilePatterns(patterns)...)
		// At the rate limit, never past it: 5 channels a request, 200
		// requests a second.
		pace := time.NewTicker(5 * time.Millisecond)
		defer pace.Stop()
		for {
			select {
			case <-stop:
				return
			case <-pace.C:
			}
			if !abusing.Load() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := abuser.Write(ctx, websocket.MessageText, []byte(req))
			var p []byte
			if err == nil {
				_, p, err = abuser.Read(ctx)
			}
			cancel()
			if err != nil {
				abuseErr <- err
				return
			}
			var m struct{ Code string }
			_ = json.Unmarshal(p, &m)
			switch m.Code {
			case "forbidden":
				checked.Add(1) // the ACL checked its patterns
			case "stream_rate_limited":
				refusedEarly.Add(1)
			default:
				other.Add(1)
			}
		}
	}()

	var quiet, abused []time.Duration
	var abuseTime time.Duration
	var firstAbuse, lastAbuse time.Time
	// The victim pings 400 times a second, below its own rate limit.
	pace := time.NewTicker(2500 * time.Microsecond)
	defer pace.Stop()
	for round := range 12 {
		abusing.Store(round%2 == 1)
		start := time.Now()
		for time.Since(start) < 400*time.Millisecond {
			<-pace.C
			sent := time.Now()
			victim.send(t, `{"action":"ping"}`)
			victim.expect(t, "pong")
			if round%2 == 1 {
				abused = append(abused, time.Since(sent))
			} else {
				quiet = append(quiet, time.Since(sent))
			}
		}
		if round%2 == 1 {
			abuseTime += time.Since(start)
			if firstAbuse.IsZero() {
				firstAbuse = start
			}
			lastAbuse = time.Now()
		}
	}
	abusing.Store(false)
	close(stop)
	<-done
	select {
	case err := <-abuseErr:
		t.Fatalf("the abuser was cut off: %v", err)
	default:
	}
	p99 := func(d []time.Duration) time.Duration {
		slices.Sort(d)
		return d[len(d)*99/100]
	}
	t.Logf("abuser: %d requests checked by the ACL, %d refused before it, %d other, in %v of abuse",
		checked.Load(), refusedEarly.Load(), other.Load(), abuseTime.Round(time.Millisecond))
	t.Logf("victim p99: %v quiet (%d samples), %v under abuse (%d samples)",
		p99(quiet), len(quiet), p99(abused), len(abused))
	if other.Load() != 0 {
		t.Fatalf("%d unexpected answers", other.Load())
	}
	if refusedEarly.Load() == 0 {
		t.Fatal("the stream rate never refused a request: the abuse was too slow to test the bound")
	}
	// Every pattern a checked request names cost one token: at most the
	// burst plus the refill from the first abusive request to the last
	// (quiet phases refill the bucket too), plus one in flight.
	maxChecked := int64((burst+streamRate*lastAbuse.Sub(firstAbuse).Seconds())/patterns) + 1
	if checked.Load() > maxChecked {
		t.Fatalf("%d requests reached the ACL, want at most %d", checked.Load(), maxChecked)
	}
}

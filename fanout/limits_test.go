package fanout

// The bounds on what clients can make the hub do: MaxStreams, MaxPending,
// pipelined upstream commands, and streams Redis refuses.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

// pauseRedis makes redis-server hold every client command for d (CLIENT
// PAUSE ALL): the control goroutine then waits in its upstream round trip,
// as with a slow Redis. Redis refuses CLIENT UNPAUSE meanwhile, so the
// pause ends by itself; d stays below the upstream timeout.
func pauseRedis(tb testing.TB, srv *redistest.Server, d time.Duration) {
	tb.Helper()
	if r := srv.Do(tb, "CLIENT", "PAUSE", fmt.Sprint(d.Milliseconds()), "ALL"); r != "OK" {
		tb.Fatalf("CLIENT PAUSE = %q", r)
	}
}

// startLimitedHub starts a redis-server and a hub on it whose Config
// mutate adjusts, and waits for the link.
func startLimitedHub(tb testing.TB, mutate func(*Config)) (*redistest.Server, *harness, Config) {
	tb.Helper()
	srv := redistest.Start(tb)
	cfg := testConfig(srv.Addr())
	mutate(&cfg)
	hs := startHub(tb, cfg)
	waitHealthy(tb, hs.h, true)
	return srv, hs, cfg
}

// blockControl pauses Redis and hands the control goroutine a subscribe of
// a new stream, then waits until it has taken that request: it is now
// stuck in its upstream round trip until the pause ends, and every later
// request waits in pending.
func blockControl(tb testing.TB, hs *harness, srv *redistest.Server, c *client) {
	tb.Helper()
	pauseRedis(tb, srv, 3*time.Second)
	if err := hs.h.Subscribe(c.sub, []string{"blocker"}, []string{"blocker"}, nil); err != nil {
		tb.Fatal(err)
	}
	servertest.WaitFor(tb, waitTimeout, "the control goroutine to take the request", func() bool {
		hs.h.mu.Lock()
		defer hs.h.mu.Unlock()
		return len(hs.h.pending) == 0
	})
}

// TestHubMaxPending: while Redis is slow, subscribe and unsubscribe
// requests beyond MaxPending are refused at once with ErrBusy instead of
// piling up; closing connections are still accepted; once Redis answers,
// everything accepted is acknowledged.
func TestHubMaxPending(t *testing.T) {
	srv, hs, cfg := startLimitedHub(t, func(c *Config) { c.MaxPending = 5 })
	c := hs.newClient(t, "c", 0)
	gone := hs.newClient(t, "gone", 1)
	blockControl(t, hs, srv, c)

	for i := range cfg.MaxPending {
		ch := fmt.Sprint("p", i)
		if err := hs.h.Subscribe(c.sub, []string{ch}, []string{ch}, nil); err != nil {
			t.Fatalf("request %d of %d refused: %v", i+1, cfg.MaxPending, err)
		}
	}
	if err := hs.h.Subscribe(c.sub, []string{"over"}, []string{"over"}, nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("subscribe past MaxPending: %v, want ErrBusy", err)
	}
	if err := hs.h.Unsubscribe(c.sub, []string{"p0"}, []string{"p0"}, nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("unsubscribe past MaxPending: %v, want ErrBusy", err)
	}
	hs.remove(t, gone) // never refused
	hs.h.mu.Lock()
	n := len(hs.h.pending)
	hs.h.mu.Unlock()
	if n != cfg.MaxPending+1 {
		t.Fatalf("%d requests pending, want %d accepted plus the close", n, cfg.MaxPending+1)
	}

	c.expectAck(t, "subscribed", []string{"blocker"}, "")
	for i := range cfg.MaxPending {
		c.expectAck(t, "subscribed", []string{fmt.Sprint("p", i)}, "")
	}
	if err := hs.h.Subscribe(c.sub, []string{"after"}, []string{"after"}, nil); err != nil {
		t.Fatalf("subscribe once Redis answers again: %v", err)
	}
	c.expectAck(t, "subscribed", []string{"after"}, "")
}

// TestHubMaxStreams: a subscribe request that would take the hub past
// MaxStreams streams is refused whole (server_busy, and a Refusal for the
// loop); requests for existing streams go on; a stream that has expired
// frees its place.
func TestHubMaxStreams(t *testing.T) {
	srv, hs, _ := startLimitedHub(t, func(c *Config) { c.MaxStreams = 3 })
	a := hs.newClient(t, "a", 0)
	b := hs.newClient(t, "b", 1)

	hs.subscribe(t, a, []string{"s1", "s2"}, "")
	hs.subscribe(t, b, []string{"s2", "s3"}, "") // one new: 3 in all
	hs.h.Subscribe(b.sub, []string{"s1", "s4"}, []string{"s1", "s4"}, []byte(`"x"`))
	m := b.next(t)
	if m.Type != "error" || m.Code != "server_busy" || string(m.RequestID) != `"x"` || !slices.Equal(m.Channels, []string{"s1", "s4"}) {
		t.Fatalf("got %+v, want server_busy for s1 and s4", m)
	}
	select {
	case r := <-hs.loops[1].refusals:
		if r.Sub != b.sub || !slices.Equal(r.Channels, []string{"s1", "s4"}) {
			t.Fatalf("refusal %+v", r)
		}
	case <-time.After(waitTimeout):
		t.Fatal("no Refusal for the loop")
	}
	// Nothing of the refused request was joined: s1 delivers to a only.
	publishWhenSubscribed(t, srv, "s1", "1")
	a.expectData(t, "s1", "", "1")
	hs.subscribe(t, b, []string{"s1"}, "") // an existing stream
	if n := hs.h.Stats().Streams; n != 3 {
		t.Fatalf("%d streams, want 3", n)
	}

	hs.h.Unsubscribe(a.sub, []string{"s1", "s2"}, []string{"s1", "s2"}, nil)
	a.expectAck(t, "unsubscribed", []string{"s1", "s2"}, "")
	hs.h.Unsubscribe(b.sub, []string{"s3"}, []string{"s3"}, nil)
	b.expectAck(t, "unsubscribed", []string{"s3"}, "")
	servertest.WaitFor(t, waitTimeout, "s3 to expire", func() bool { return hs.h.Stats().Streams == 2 })
	hs.subscribe(t, a, []string{"s4"}, "")
}

// monitorRedis counts the commands redis-server executes whose name is
// one of names (MONITOR), from now until the test ends.
type monitorRedis struct {
	mu     sync.Mutex
	counts map[string]int
}

func startMonitorRedis(tb testing.TB, srv *redistest.Server) *monitorRedis {
	tb.Helper()
	c, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	if _, err := c.Write([]byte("MONITOR\r\n")); err != nil {
		tb.Fatal(err)
	}
	br := bufio.NewReader(c)
	if line, err := br.ReadString('\n'); err != nil || line != "+OK\r\n" {
		tb.Fatalf("MONITOR: %q %v", line, err)
	}
	m := &monitorRedis{counts: map[string]int{}}
	go func() {
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			// +1700000000.123456 [0 127.0.0.1:5678] "SUBSCRIBE" "a" "b"
			f := strings.SplitN(line, `"`, 3)
			if len(f) < 3 {
				continue
			}
			m.mu.Lock()
			m.counts[strings.ToUpper(f[1])]++
			m.mu.Unlock()
		}
	}()
	return m
}

func (m *monitorRedis) count(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counts[name]
}

// TestHubPipelinesUpstream: requests that arrive while the control
// goroutine waits on Redis go upstream together, in chunked commands sent
// in one round trip, not one command per request; their unsubscribes too.
func TestHubPipelinesUpstream(t *testing.T) {
	const n = 1200 // three SUBSCRIBE chunks
	// A queue with room for every ack.
	srv, hs, _ := startLimitedHub(t, func(c *Config) { c.SendQueue = 2 * n })
	c := hs.newClient(t, "c", 0)
	mon := startMonitorRedis(t, srv)
	blockControl(t, hs, srv, c)
	for i := range n {
		ch := fmt.Sprint("c", i)
		if err := hs.h.Subscribe(c.sub, []string{ch}, []string{ch}, nil); err != nil {
			t.Fatal(err)
		}
	}
	c.expectAck(t, "subscribed", []string{"blocker"}, "")
	for i := range n {
		c.expectAck(t, "subscribed", []string{fmt.Sprint("c", i)}, "")
	}
	want := 1 + (n+upstreamChunk-1)/upstreamChunk
	servertest.WaitFor(t, waitTimeout, "the SUBSCRIBEs in MONITOR", func() bool { return mon.count("SUBSCRIBE") >= want })
	if got := mon.count("SUBSCRIBE"); got != want {
		t.Fatalf("%d SUBSCRIBE commands for %d requests, want %d (the blocker, then chunks of %d)", got, n, want, upstreamChunk)
	}
	hs.remove(t, c)
	servertest.WaitFor(t, waitTimeout, "every stream to expire", func() bool { return hs.h.Stats().Streams == 0 })
	if got := mon.count("UNSUBSCRIBE"); got > 2*((n+1+upstreamChunk-1)/upstreamChunk) {
		t.Fatalf("%d UNSUBSCRIBE commands for %d streams: not batched", got, n+1)
	}
}

// TestHubDropsStreamRefusedOnReconnect: when the gateway's Redis user
// loses a channel (Redis drops the pub/sub connection), the hub
// reconnects, and the streams Redis now refuses are dropped, each
// subscriber told with upstream_refused (and a Refusal for its loop),
// while the others resume. A Redis user without the canary's channel
// turns the canary off with a warning rather than failing the link.
func TestHubDropsStreamRefusedOnReconnect(t *testing.T) {
	srv := redistest.Start(t)
	if r := srv.Do(t, "ACL", "SETUSER", "gw", "on", ">pw", "~*", "resetchannels", "&ok:*", "&gone", "+@all"); r != "OK" {
		t.Fatalf("ACL SETUSER = %q", r)
	}
	cfg := testConfig(srv.Addr())
	cfg.RedisUsername, cfg.RedisPassword = "gw", "pw"
	cfg.CanaryInterval = 50 * time.Millisecond
	hs := startHub(t, cfg)
	waitHealthy(t, hs.h, true)
	servertest.WaitFor(t, waitTimeout, "the canary warning", func() bool {
		return hs.logs.count("redis refused the canary channel: grant the gateway's Redis user &__ws_gateway:canary:*; the canary is off on this link") > 0
	})
	a := hs.newClient(t, "a", 0)
	b := hs.newClient(t, "b", 1)
	hs.subscribe(t, a, []string{"ok:1", "gone"}, "")
	hs.subscribe(t, b, []string{"gone"}, "")
	publishWhenSubscribed(t, srv, "gone", "1")
	a.expectData(t, "gone", "", "1")
	b.expectData(t, "gone", "", "1")

	if r := srv.Do(t, "ACL", "SETUSER", "gw", "resetchannels", "&ok:*"); r != "OK" {
		t.Fatalf("ACL SETUSER = %q", r)
	}
	for _, c := range []*client{a, b} {
		var m msg
		for m = c.next(t); m.Code == "upstream_interrupted"; m = c.next(t) {
		}
		if m.Type != "error" || m.Code != "upstream_refused" || !slices.Equal(m.Channels, []string{"gone"}) {
			t.Fatalf("%s: got %+v, want upstream_refused for gone", c.name, m)
		}
	}
	for i, c := range []*client{a, b} {
		select {
		case r := <-hs.loops[i].refusals:
			if r.Sub != c.sub || !slices.Equal(r.Channels, []string{"gone"}) {
				t.Fatalf("%s: refusal %+v", c.name, r)
			}
		case <-time.After(waitTimeout):
			t.Fatalf("%s: no Refusal for the loop", c.name)
		}
	}
	waitHealthy(t, hs.h, true)
	publishWhenSubscribed(t, srv, "ok:1", "2")
	a.expectData(t, "ok:1", "", "2")
	if n := hs.h.Stats().Streams; n != 1 {
		t.Fatalf("%d streams, want 1 (gone dropped)", n)
	}
	// The canary being off, its silence does not take the link down:
	// watched for well over the three intervals that would.
	reconnects := hs.h.Stats().Reconnects
	for end := time.Now().Add(12 * cfg.CanaryInterval); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if !hs.h.Healthy() || hs.h.Stats().Reconnects != reconnects {
			t.Fatal("the link went down without the canary")
		}
	}
}

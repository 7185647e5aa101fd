package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/fanout"
	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server"
	"github.com/wsgw/gateway/server/servertest"
)

// gateway is a real gateway (gnet server plus fanout hub) on a free port,
// connected to a real redis-server.
type gateway struct {
	srv   *server.Server
	hub   *fanout.Hub
	redis *redistest.Server
	addr  string
}

type options struct {
	srv  server.Config
	hub  fanout.Config
	auth auth.Config
	acl  *auth.ACL
	// durable, when set, gives the server its durable side (see
	// server.DurableHub), built from the server.
	durable func(*server.Server) server.DurableHub
	// streams, when set, makes the server's own durable side
	// (Server.EnableDurable).
	streams *fanout.StreamConfig
}

func defaultOptions(redisAddr string) options {
	return options{
		srv: server.Config{
			Addr:                 "127.0.0.1:0",
			Loops:                2,
			MaxMessageBytes:      64 << 10,
			MaxChannels:          50,
			MaxWildcards:         5,
			MaxMessagesPerSecond: 1000,
			HandshakeTimeout:     5 * time.Second,
			MaxOutboundBytes:     4 << 20,
			PingInterval:         25 * time.Second,
			PingTimeout:          60 * time.Second,
			Logger:               testLogger(),
		},
		hub: fanout.Config{
			RedisAddr: redisAddr,
			SendQueue: 1024,
			Linger:    100 * time.Millisecond,
			RetryMin:  50 * time.Millisecond,
			RetryMax:  500 * time.Millisecond,
			Logger:    testLogger(),
		},
		auth: auth.Config{DefaultRole: "user", RoleClaim: "role", Leeway: 5 * time.Second},
		acl:  auth.DefaultACL(),
	}
}

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startGateway starts a gateway against rs (which may be nil for a Redis
// address nobody listens on) and stops it when the test ends.
func startGateway(tb testing.TB, rs *redistest.Server, mutate ...func(*options)) *gateway {
	tb.Helper()
	addr := "127.0.0.1:1" // nothing listens there
	if rs != nil {
		addr = rs.Addr()
	}
	o := defaultOptions(addr)
	for _, m := range mutate {
		m(&o)
	}
	authn, err := auth.NewAuthenticator(o.auth, o.acl)
	if err != nil {
		tb.Fatalf("auth.NewAuthenticator: %v", err)
	}
	srv, err := server.New(o.srv, o.hub, authn, o.acl)
	if err != nil {
		tb.Fatalf("server.New: %v", err)
	}
	if o.durable != nil {
		srv.SetDurable(o.durable(srv))
	}
	if o.streams != nil {
		if err := srv.EnableDurable(*o.streams); err != nil {
			tb.Fatalf("EnableDurable: %v", err)
		}
	}
	if err := srv.Start(); err != nil {
		tb.Fatalf("server.Start: %v", err)
	}
	hub := srv.Hub()
	g := &gateway{srv: srv, hub: hub, redis: rs, addr: srv.Addr()}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx) // closes the hub too
	})
	if rs != nil {
		servertest.WaitFor(tb, 10*time.Second, "gateway's Redis link", hub.Healthy)
	}
	return g
}

func (g *gateway) wsURL(query string) string {
	u := "ws://" + g.addr + "/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

// get performs a plain HTTP GET on the gateway's port.
func (g *gateway) get(tb testing.TB, path string) (int, []byte) {
	tb.Helper()
	resp, err := http.Get("http://" + g.addr + path)
	if err != nil {
		tb.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func (g *gateway) stats(tb testing.TB) server.Stats {
	tb.Helper()
	code, body := g.get(tb, "/stats")
	if code != 200 {
		tb.Fatalf("/stats: %d %s", code, body)
	}
	var st server.Stats
	if err := json.Unmarshal(body, &st); err != nil {
		tb.Fatalf("/stats: %v: %s", err, body)
	}
	return st
}

// client is a WebSocket client from github.com/coder/websocket (not the
// gobwas/ws the server uses, so the two implementations check each other).
// Its methods take the testing.TB of the test or subtest using it, so a
// failure is reported where it happens.
type client struct {
	c *websocket.Conn
}

func dial(tb testing.TB, url string) *client {
	tb.Helper()
	c, err := dialErr(url, nil)
	if err != nil {
		tb.Fatalf("dial %s: %v", redactURL(url), err)
	}
	cl := &client{c: c}
	tb.Cleanup(func() { _ = c.CloseNow() })
	return cl
}

func dialErr(url string, hdr http.Header) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, err
	}
	c.SetReadLimit(8 << 20)
	return c, nil
}

func redactURL(u string) string {
	if i := strings.Index(u, "token="); i >= 0 {
		return u[:i] + "token=REDACTED"
	}
	return u
}

func (cl *client) send(tb testing.TB, v any) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var p []byte
	switch v := v.(type) {
	case string:
		p = []byte(v)
	case []byte:
		p = v
	default:
		var err error
		if p, err = json.Marshal(v); err != nil {
			tb.Fatalf("marshal: %v", err)
		}
	}
	if err := cl.c.Write(ctx, websocket.MessageText, p); err != nil {
		tb.Fatalf("write: %v", err)
	}
}

// msg is one decoded server message.
type msg map[string]any

func (m msg) str(k string) string { s, _ := m[k].(string); return s }
func (m msg) seq() uint64         { f, _ := m["seq"].(float64); return uint64(f) }

func (cl *client) read(tb testing.TB) msg {
	tb.Helper()
	m, err := cl.readErr(10 * time.Second)
	if err != nil {
		tb.Fatalf("read: %v", err)
	}
	return m
}

func (cl *client) readErr(timeout time.Duration) (msg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	typ, p, err := cl.c.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageText {
		return nil, fmt.Errorf("got a binary message")
	}
	var m msg
	if err := json.Unmarshal(p, &m); err != nil {
		return nil, fmt.Errorf("not JSON: %v: %q", err, p)
	}
	return m, nil
}

// expect reads the next message and checks its type.
func (cl *client) expect(tb testing.TB, typ string) msg {
	tb.Helper()
	m := cl.read(tb)
	if m.str("type") != typ {
		tb.Fatalf("got %v, want type %q", m, typ)
	}
	return m
}

// subscribe subscribes and waits for the ack.
func (cl *client) subscribe(tb testing.TB, channels ...string) msg {
	tb.Helper()
	cl.send(tb, map[string]any{"action": "subscribe", "channels": channels, "requestId": "sub"})
	return cl.expect(tb, "subscribed")
}

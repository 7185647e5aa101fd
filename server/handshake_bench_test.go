package server

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/panjf2000/gnet/v2"

	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/fanout"
)

// fakeConn is the part of gnet.Conn the handshake uses: the request is
// served from in, the response collected in out. Any other method panics
// (the embedded nil interface), which a benchmark would show at once.
type fakeConn struct {
	gnet.Conn
	in, out []byte
	addr    net.Addr
}

func (c *fakeConn) Peek(n int) ([]byte, error) {
	if n < 0 || n > len(c.in) {
		return c.in, nil
	}
	return c.in[:n], nil
}

func (c *fakeConn) Discard(n int) (int, error) {
	if n < 0 || n > len(c.in) {
		n = len(c.in)
	}
	c.in = c.in[n:]
	return n, nil
}

func (c *fakeConn) Write(b []byte) (int, error) { c.out = append(c.out, b...); return len(b), nil }
func (c *fakeConn) OutboundBuffered() int       { return 0 }
func (c *fakeConn) RemoteAddr() net.Addr        { return c.addr }

// benchServer builds a Server whose hub is never started: the handshake
// does not touch Redis.
func benchServer(tb testing.TB, secret []byte) *Server {
	tb.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	hub, err := fanout.New(fanout.Config{RedisAddr: "127.0.0.1:1", Shards: 1, SendQueue: 1024, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	acl := auth.DefaultACL()
	authn, err := auth.NewAuthenticator(auth.Config{DefaultRole: "user", RoleClaim: "role", JWTSecret: secret, Leeway: 5 * time.Second}, acl)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := New(Config{
		Addr: "127.0.0.1:0", Loops: 1, MaxMessageBytes: 64 << 10, MaxHeaderBytes: 8 << 10,
		MaxChannels: 50, MaxWildcards: 5, MaxMessagesPerSecond: 1000, HandshakeTimeout: 5 * time.Second,
		MaxOutboundBytes: 4 << 20, PingInterval: 25 * time.Second, PingTimeout: time.Minute, Logger: log,
	}, hub, authn, acl)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// BenchmarkHandshake is the server's side of one WebSocket upgrade, from
// a complete request head in gnet's buffer to the 101 response written:
// parsing, Origin and token checks, the upgrade itself and the
// connection's setup (issue 5). Every allocation here is garbage of a
// connect burst, which the idle-memory figure pays for as heap growth.
func BenchmarkHandshake(b *testing.B) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"role": "user", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(secret)
	if err != nil {
		b.Fatal(err)
	}
	head := func(extra string) []byte {
		return []byte("GET /ws" + extra + " HTTP/1.1\r\nHost: gw.example:8889\r\n" +
			"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36\r\n" +
			"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
			"Sec-WebSocket-Version: 13\r\nOrigin: http://gw.example\r\n\r\n")
	}
	for _, tc := range []struct {
		name string
		req  []byte
	}{
		{"anonymous", head("")},
		{"jwt in query", head("?token=" + token)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := benchServer(b, secret)
			l := &loopState{srv: s, up: newUpgradeState()}
			addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
			fc := &fakeConn{addr: addr}
			b.ReportAllocs()
			for b.Loop() {
				fc.in, fc.out = tc.req, fc.out[:0]
				cn := &conn{gc: fc, loop: l}
				if s.handshake(cn) != gnet.None || cn.state != stateOpen {
					b.Fatalf("upgrade failed: %q", fc.out)
				}
				s.conns.Add(-1)
			}
		})
	}
}

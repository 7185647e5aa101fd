package server

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/panjf2000/gnet/v2"

	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/fanout"
	"github.com/wsgw/gateway/server/servertest"
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
// does not touch Redis. origins is ALLOWED_ORIGINS.
func benchServer(tb testing.TB, secret []byte, origins ...string) *Server {
	tb.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	acl := auth.DefaultACL()
	authn, err := auth.NewAuthenticator(auth.Config{DefaultRole: "user", RoleClaim: "role", JWTSecret: secret, Leeway: 5 * time.Second}, acl)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := New(Config{
		Addr: "127.0.0.1:0", Loops: 1, MaxMessageBytes: 64 << 10, MaxHeaderBytes: 8 << 10,
		MaxChannels: 50, MaxWildcards: 5, MaxMessagesPerSecond: 1000, HandshakeTimeout: 5 * time.Second,
		MaxOutboundBytes: 4 << 20, PingInterval: 25 * time.Second, PingTimeout: time.Minute, Logger: log,
		AllowedOrigins: origins, Echo: true,
	}, fanout.Config{RedisAddr: "127.0.0.1:1", SendQueue: 1024, Logger: log}, authn, acl)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// BenchmarkHandshake is the server's side of one WebSocket upgrade, from
// a complete request head in gnet's buffer to the 101 response written:
// parsing, Origin and token checks, the upgrade itself and the
// connection's setup. Every allocation here is garbage of a
// connect burst, which the idle-memory figure pays for as heap growth.
func BenchmarkHandshake(b *testing.B) {
	secret := []byte(testJWTSecret)
	token := servertest.Sign(b, jwt.SigningMethodHS256, secret, jwt.MapClaims{"role": "user", "exp": time.Now().Add(time.Hour).Unix()})
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

// bothPaths answers head with the fast path and, separately, with the
// net/http path alone, on fresh connections of the same server, and
// returns both answers. fast reports whether the fast path answered at
// all (it hands everything else to the slow path).
func bothPaths(tb testing.TB, s *Server, head []byte) (fastOut, slowOut []byte, fastAction, slowAction gnet.Action, fast bool) {
	tb.Helper()
	fastOut, fastAction, fast, _ = onePath(s, head, false)
	slowOut, slowAction, _, _ = onePath(s, head, true)
	return fastOut, slowOut, fastAction, slowAction, fast
}

// onePath answers head on a fresh connection and loop with the fast path
// or, when slow, the net/http path alone. fast reports whether the fast
// path answered at all; u is the loop's upgrader, holding what gobwas/ws
// read of the head.
func onePath(s *Server, head []byte, slow bool) (out []byte, a gnet.Action, fast bool, u *upgradeState) {
	l := &loopState{srv: s, up: newUpgradeState()}
	fc := &fakeConn{addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, in: head}
	cn := &conn{gc: fc, loop: l}
	if slow {
		a = s.slowHandshake(cn, head)
	} else {
		a, fast = l.up.upgrade(s, cn, head)
	}
	if cn.state == stateOpen {
		s.conns.Add(-1)
	}
	return fc.out, a, fast, l.up
}

const testJWTSecret = "0123456789abcdef0123456789abcdef"

func upgradeHead(target string, headers ...string) []byte {
	h := "GET " + target + " HTTP/1.1\r\nHost: gw.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, x := range headers {
		h += x + "\r\n"
	}
	return []byte(h + "\r\n")
}

// TestUpgradeFastPathMatchesNetHTTP: whatever the per-loop gobwas/ws
// upgrader answers, the net/http path alone answers the same bytes with
// the same action, so the fast path changes no behaviour (every refusal
// test in security_test.go goes through it too).
func TestUpgradeFastPathMatchesNetHTTP(t *testing.T) {
	token := upgradeToken(t, "admin")
	s := benchServer(t, []byte(testJWTSecret), "http://ok.example")
	for _, tc := range []struct {
		name string
		head []byte
		fast bool // the fast path answers (else it defers)
	}{
		{"anonymous", upgradeHead("/ws"), true},
		{"echo", upgradeHead("/echo"), true},
		{"token in query", upgradeHead("/ws?x=1&token=" + token), true},
		{"token in header", upgradeHead("/ws", "Authorization: Bearer "+token), true},
		{"lower-case header names", upgradeHead("/ws", "authorization: Bearer "+token, "origin: http://ok.example"), true},
		{"bad token", upgradeHead("/ws?token=nope"), true},
		{"query and header tokens differ", upgradeHead("/ws?token=a", "Authorization: Bearer b"), true},
		{"allowed origin", upgradeHead("/ws", "Origin: http://ok.example"), true},
		{"origin refused", upgradeHead("/ws", "Origin: http://evil.example"), true},
		{"first origin wins", upgradeHead("/ws", "Origin: http://evil.example", "Origin: http://ok.example"), true},
		{"other path", upgradeHead("/nope"), false},
		{"no upgrade header", []byte("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"), false},
		{"health", []byte("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"), false},
		{"bad version", bytes.Replace(upgradeHead("/ws"), []byte("Version: 13"), []byte("Version: 8"), 1), false},
		{"POST", bytes.Replace(upgradeHead("/ws"), []byte("GET"), []byte("POST"), 1), false},
		{"HTTP/1.0", bytes.Replace(upgradeHead("/ws"), []byte("HTTP/1.1"), []byte("HTTP/1.0"), 1), false},
		{"garbage", []byte("\x00\x01 nonsense\r\n\r\n"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fastOut, slowOut, fa, sa, fast := bothPaths(t, s, tc.head)
			if fast != tc.fast {
				t.Fatalf("fast path answered: %v, want %v", fast, tc.fast)
			}
			if fast && (!bytes.Equal(fastOut, slowOut) || fa != sa) {
				t.Fatalf("fast path answered %q (%v), net/http path %q (%v)", fastOut, fa, slowOut, sa)
			}
		})
	}
}

// malformedHead is a head net/http rejects but gobwas/ws upgrades (a
// control character in a header value), and the fast path's answer.
type malformedHead struct {
	name string
	head []byte
	want int
}

// malformedHeads are TestUpgradeFastPathMalformedHeads' cases and seeds of
// FuzzUpgradeFastPath; ok is a valid token.
func malformedHeads(ok string) []malformedHead {
	return []malformedHead{
		{"anonymous", upgradeHead("/ws", "X-Ctl: a\x01b"), http.StatusSwitchingProtocols},
		{"valid token", upgradeHead("/ws?token="+ok, "X-Ctl: a\x01b"), http.StatusSwitchingProtocols},
		{"valid bearer, allowed origin", upgradeHead("/ws", "X-Ctl: a\x01b", "Authorization: Bearer "+ok, "Origin: http://ok.example"), http.StatusSwitchingProtocols},
		{"foreign origin", upgradeHead("/ws", "X-Ctl: a\x01b", "Origin: http://evil.example"), http.StatusForbidden},
		{"control character in the origin", upgradeHead("/ws", "Origin: http://ok.example\x01"), http.StatusForbidden},
		{"bad token", upgradeHead("/ws?token=nope", "X-Ctl: a\x01b"), http.StatusUnauthorized},
		{"bad bearer on echo", upgradeHead("/echo", "X-Ctl: a\x01b", "Authorization: Bearer nope"), http.StatusUnauthorized},
	}
}

// TestUpgradeFastPathMalformedHeads pins the heads net/http rejects but
// gobwas/ws upgrades: the fast path answers them itself, after the same
// Origin and token checks (FuzzUpgradeFastPath checks any such head).
func TestUpgradeFastPathMalformedHeads(t *testing.T) {
	s := benchServer(t, []byte(testJWTSecret), "http://ok.example")
	for _, tc := range malformedHeads(upgradeToken(t, "user")) {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(tc.head))); err == nil {
				t.Fatalf("net/http accepts %q: not a case for the fast path alone", tc.head)
			}
			out, _, fast, _ := onePath(s, tc.head, false)
			if !fast {
				t.Fatalf("the fast path left %q to net/http", tc.head)
			}
			if want := fmt.Sprintf("HTTP/1.1 %d ", tc.want); !bytes.HasPrefix(out, []byte(want)) {
				t.Fatalf("answered %q, want %d", out, tc.want)
			}
			checkedAnswer(t, s, tc.head)
		})
	}
}

// FuzzUpgradeFastPath: for any request head net/http can parse, an answer
// of the fast path is byte for byte the net/http path's. Heads net/http
// rejects as malformed but gobwas/ws reads as a valid upgrade (control
// characters in a header value, for one) are upgraded or refused by the
// fast path as gobwas/ws reads them; the token and Origin checks are the
// same either way: checkedAnswer.
func FuzzUpgradeFastPath(f *testing.F) {
	for _, seed := range [][]byte{
		upgradeHead("/ws"), upgradeHead("/echo?token=x"), upgradeHead("/ws", "Origin: http://evil.example"),
		upgradeHead("/ws", "Authorization: Basic abc"), upgradeHead("http://gw.example/ws"),
		upgradeHead("/ws?token=%zz"), upgradeHead("/ws", "Connection: keep-alive, Upgrade"),
	} {
		f.Add(seed)
	}
	for _, m := range malformedHeads(upgradeToken(f, "user")) {
		f.Add(m.head)
	}
	s := benchServer(f, []byte(testJWTSecret), "http://ok.example")
	f.Fuzz(func(t *testing.T, head []byte) {
		if i := bytes.Index(head, []byte("\r\n\r\n")); i >= 0 {
			head = head[:i+4] // as handshake cuts it
		} else {
			head = append(head, "\r\n\r\n"...)
		}
		if _, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head))); err != nil {
			checkedAnswer(t, s, head)
			return
		}
		fastOut, slowOut, fa, sa, fast := bothPaths(t, s, head)
		if fast && (!bytes.Equal(fastOut, slowOut) || fa != sa) {
			t.Fatalf("head %q: fast path answered %q (%v), net/http path %q (%v)", head, fastOut, fa, slowOut, sa)
		}
	})
}

// upgradeToken is a JWT for role signed with testJWTSecret, valid for an
// hour.
func upgradeToken(tb testing.TB, role string) string {
	tb.Helper()
	return servertest.Sign(tb, jwt.SigningMethodHS256, []byte(testJWTSecret), servertest.Claims(role, time.Now()))
}

// checkedAnswer runs the fast path alone on head, which net/http rejects.
// When the fast path answers (gobwas/ws read a valid upgrade), its answer
// must be the one the Origin and token checks give for the Origin, query
// and Authorization gobwas/ws read: 403 for a foreign Origin, else 401 for
// a token that is present and invalid, else 101. The server has no
// connection limits, so nothing else refuses.
func checkedAnswer(tb testing.TB, s *Server, head []byte) {
	tb.Helper()
	out, a, fast, u := onePath(s, head, false)
	if !fast {
		return // the net/http path answers it: 400
	}
	want, why := http.StatusSwitchingProtocols, "no Origin or an allowed one, and no token or a valid one"
	token, err := auth.TokenFromRequest(string(u.query), string(u.authorization))
	if err == nil {
		_, err = s.authn.Authenticate(token, time.Now())
	}
	switch {
	case u.hasOrigin && len(u.origin) > 0 && !slices.Contains(s.cfg.AllowedOrigins, string(u.origin)):
		want, why = http.StatusForbidden, fmt.Sprintf("Origin %q is not allowed", u.origin)
	case err != nil:
		want, why = http.StatusUnauthorized, fmt.Sprintf("the credentials do not authenticate (%v)", err)
	}
	wantAction := gnet.Close
	if want == http.StatusSwitchingProtocols {
		wantAction = gnet.None
	}
	if got := fmt.Sprintf("HTTP/1.1 %d ", want); !bytes.HasPrefix(out, []byte(got)) || a != wantAction {
		tb.Fatalf("head %q, malformed for net/http: the fast path answered %q (%v), want %d (%s)", head, out, a, want, why)
	}
}

package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

// Credentials of the security tests. The secret is longer than
// auth.MinSecretLen; the API key is distinctive so that a log search for it
// cannot match anything else.
var (
	secJWTSecret = []byte("security-test-hmac-secret-0123456789abcdef")
	secAPIKey    = "sec-api-key-7f3a9c1e5b2d8f4a6c0e"
)

// secClaims is a claim set for role valid for an hour; a nil override
// deletes a claim.
func secClaims(role string, overrides map[string]any) jwt.MapClaims {
	return servertest.Claims(role, time.Now(), overrides)
}

// hsToken is an HS256 token for role signed with secJWTSecret.
func hsToken(tb testing.TB, role string, overrides map[string]any) string {
	tb.Helper()
	return servertest.Sign(tb, jwt.SigningMethodHS256, secJWTSecret, secClaims(role, overrides))
}

// bearer is the header set of a service client.
func bearer(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

// dialHdr connects a coder/websocket client with extra request headers.
func dialHdr(tb testing.TB, url string, hdr http.Header) *client {
	tb.Helper()
	c, err := dialErr(url, hdr)
	if err != nil {
		tb.Fatalf("dial %s: %v", redactURL(url), err)
	}
	tb.Cleanup(func() { _ = c.CloseNow() })
	return &client{c: c}
}

// waitClosed reads until the connection ends and returns the close status
// the server sent (-1 when there was no close frame).
func (cl *client) waitClosed(tb testing.TB, timeout time.Duration) (websocket.StatusCode, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if _, _, err := cl.c.Read(ctx); err != nil {
			if ctx.Err() != nil {
				tb.Fatalf("connection still open after %v", timeout)
			}
			return websocket.CloseStatus(err), err
		}
	}
}

// bystander is a client that watches one channel while hostile clients do
// their worst on the same gateway; alive proves it still receives data.
type bystander struct {
	cl *client
	rs *redistest.Server
	ch string
	n  int
}

func newBystander(tb testing.TB, g *gateway, rs *redistest.Server) *bystander {
	tb.Helper()
	b := &bystander{cl: dial(tb, g.wsURL("")), rs: rs, ch: "market:tick:BYSTANDER"}
	b.cl.subscribe(tb, b.ch)
	return b
}

func (b *bystander) alive(tb testing.TB) {
	tb.Helper()
	b.n++
	want := strconv.Itoa(b.n)
	if got := b.rs.Publish(tb, b.ch, want); got != 1 {
		tb.Fatalf("bystander: PUBLISH reached %d subscribers, want 1", got)
	}
	// Read through readErr so that a failure is reported on tb (a
	// subtest), not on the test that created the bystander.
	m, err := b.cl.readErr(10 * time.Second)
	if err != nil {
		tb.Fatalf("bystander stopped receiving: %v", err)
	}
	if m.str("type") != "data" || fmt.Sprint(m["data"]) != want {
		tb.Fatalf("bystander got %v, want data %s", m, want)
	}
}

// upgradeStatus sends an upgrade request from localIP ("" for the
// default) and returns the answer's status. Any answer but 101 must be
// followed by the server closing the TCP connection with no WebSocket
// frame: a refused client never holds an accepted WebSocket. A 101 is
// closed at once.
func upgradeStatus(tb testing.TB, addr, localIP, target, extra string) int {
	tb.Helper()
	var opts []servertest.DialOption
	if localIP != "" {
		opts = append(opts, servertest.LocalIP(localIP))
	}
	rc := servertest.Dial(tb, addr, opts...)
	rc.Send(tb, []byte(servertest.UpgradeRequest(target, extra)))
	code, head := rc.ReadHead(tb)
	if code == http.StatusSwitchingProtocols {
		_ = rc.TCP.Close()
		return code
	}
	body := rc.ExpectEOF(tb, 10*time.Second)
	if strings.Contains(string(body), "\x88") {
		tb.Fatalf("a WebSocket frame followed HTTP %d: %q%q", code, head, body)
	}
	return code
}

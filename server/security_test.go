package server_test

// Security tests: authentication during the upgrade, the channel
// ACL, guardrails and hostile input, each against a real gateway and a real
// redis-server. docs/SECURITY.md maps every threat to the test covering it.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

func tokenQuery(tok string) string { return "/ws?token=" + url.QueryEscape(tok) }

// TestAuthUpgrade checks every credential outcome at the HTTP level: a
// refusal is an HTTP 401 followed by the server closing TCP, never an
// accepted WebSocket that closes later.
func TestAuthUpgrade(t *testing.T) {
	rs := redistest.Start(t)
	open := startGateway(t, rs, func(o *options) {
		o.auth.APIKey = secAPIKey
		o.auth.JWTSecret = secJWTSecret
	})
	strict := startGateway(t, rs, func(o *options) {
		o.auth.RequireAuth = true
		o.auth.APIKey = secAPIKey
		o.auth.JWTSecret = secJWTSecret
		o.auth.Issuer = "https://issuer.example"
		o.auth.Audience = "wsgw"
		o.auth.RoleClaim = "wsgw_role"
	})
	now := time.Now()
	hs := func(role string, over map[string]any) string { return hsToken(t, role, over) }
	strictTok := func(over map[string]any) string {
		c := secClaims("", map[string]any{"role": nil, "wsgw_role": "admin", "iss": "https://issuer.example", "aud": "wsgw"})
		for k, v := range over {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return servertest.Sign(t, jwt.SigningMethodHS256, secJWTSecret, c)
	}
	userTok := hs("user", nil)
	// A user token whose payload is swapped for an admin one, signature
	// kept: the signature no longer matches.
	adminPayload := strings.Split(hs("admin", nil), ".")[1]
	parts := strings.Split(userTok, ".")
	tampered := parts[0] + "." + adminPayload + "." + parts[2]

	tests := []struct {
		name   string
		g      *gateway
		target string
		auth   string // Authorization header value
		want   int
	}{
		{"no token gets the default role", open, "/ws", "", 101},
		{"API key in query", open, tokenQuery(secAPIKey), "", 101},
		{"API key as Bearer", open, "/ws", "Bearer " + secAPIKey, 101},
		{"Bearer scheme is case-insensitive", open, "/ws", "bearer " + secAPIKey, 101},
		{"wrong API key", open, tokenQuery("sec-api-key-wrong"), "", 401},
		{"API key prefix", open, tokenQuery(secAPIKey[:len(secAPIKey)-1]), "", 401},
		{"API key with a suffix", open, tokenQuery(secAPIKey + "0"), "", 401},
		{"HS256 in query", open, tokenQuery(userTok), "", 101},
		{"HS384", open, tokenQuery(servertest.Sign(t, jwt.SigningMethodHS384, secJWTSecret, secClaims("user", nil))), "", 101},
		{"HS512", open, tokenQuery(servertest.Sign(t, jwt.SigningMethodHS512, secJWTSecret, secClaims("user", nil))), "", 101},
		{"HS256 as Bearer", open, "/ws", "Bearer " + userTok, 101},
		{"same token in query and header", open, tokenQuery(userTok), "Bearer " + userTok, 101},
		{"expired", open, tokenQuery(hs("user", map[string]any{"exp": now.Add(-time.Hour).Unix()})), "", 401},
		{"expired within the leeway", open, tokenQuery(hs("user", map[string]any{"exp": now.Add(-2 * time.Second).Unix()})), "", 101},
		{"not valid yet", open, tokenQuery(hs("user", map[string]any{"nbf": now.Add(time.Hour).Unix()})), "", 401},
		{"nbf within the leeway", open, tokenQuery(hs("user", map[string]any{"nbf": now.Add(2 * time.Second).Unix()})), "", 101},
		{"alg none", open, tokenQuery(servertest.Sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, secClaims("admin", nil))), "", 401},
		{"wrong secret", open, tokenQuery(servertest.Sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-0123456789"), secClaims("admin", nil))), "", 401},
		{"tampered payload", open, tokenQuery(tampered), "", 401},
		{"RS256 when only HMAC is configured", open, tokenQuery(servertest.Sign(t, jwt.SigningMethodRS256, servertest.RSAKey(), secClaims("user", nil))), "", 401},
		{"unknown role", open, tokenQuery(hs("superuser", nil)), "", 401},
		{"no role claim", open, tokenQuery(hs("", map[string]any{"role": nil})), "", 401},
		{"role not a string", open, tokenQuery(hs("", map[string]any{"role": 1})), "", 401},
		{"not a JWT", open, tokenQuery("not-a-jwt"), "", 401},
		{"query and header differ", open, tokenQuery(userTok), "Bearer " + hs("admin", nil), 401},
		{"Basic authorization", open, "/ws", "Basic dXNlcjpwYXNz", 401},
		{"REQUIRE_AUTH without a token", strict, "/ws", "", 401},
		{"REQUIRE_AUTH with an empty token", strict, "/ws?token=", "", 401},
		{"REQUIRE_AUTH with the API key", strict, "/ws", "Bearer " + secAPIKey, 101},
		{"issuer, audience and role claim", strict, tokenQuery(strictTok(nil)), "", 101},
		{"wrong issuer", strict, tokenQuery(strictTok(map[string]any{"iss": "https://evil.example"})), "", 401},
		{"no issuer", strict, tokenQuery(strictTok(map[string]any{"iss": nil})), "", 401},
		{"wrong audience", strict, tokenQuery(strictTok(map[string]any{"aud": "other"})), "", 401},
		{"audience list containing ours", strict, tokenQuery(strictTok(map[string]any{"aud": []string{"other", "wsgw"}})), "", 101},
		{"role in the default claim, not JWT_ROLE_CLAIM", strict, tokenQuery(strictTok(map[string]any{"wsgw_role": nil, "role": "admin"})), "", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			extra := ""
			if tt.auth != "" {
				extra = "Authorization: " + tt.auth + "\r\n"
			}
			if got := upgradeStatus(t, tt.g.addr, "", tt.target, extra); got != tt.want {
				t.Fatalf("upgrade answered %d, want %d", got, tt.want)
			}
		})
	}
	t.Run("client library sees the 401", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, open.wsURL("token=wrong"), nil)
		if err == nil {
			_ = c.CloseNow()
			t.Fatal("dial with a wrong token succeeded")
		}
		if resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("dial error %v, response %v: want HTTP 401", err, resp)
		}
	})
	servertest.WaitFor(t, 10*time.Second, "no connection left open", func() bool {
		return open.srv.Connections() == 0 && strict.srv.Connections() == 0
	})
}

// TestAuthPublicKeys checks RS256, ES256 and EdDSA: each gateway accepts
// only the one algorithm of its key, so an HMAC token signed with the public
// key (algorithm confusion) or a token of another algorithm is refused.
func TestAuthPublicKeys(t *testing.T) {
	rs := redistest.Start(t)
	tests := []struct {
		name    string
		method  jwt.SigningMethod
		private any
		public  any
		// other signs with the same algorithm and another key (nil:
		// skipped, a second RSA key is slow to generate); wrongAlg with
		// another algorithm.
		other    any
		wrongAlg func() string
	}{
		{"RS256", jwt.SigningMethodRS256, servertest.RSAKey(), &servertest.RSAKey().PublicKey, nil,
			func() string {
				return servertest.Sign(t, jwt.SigningMethodRS384, servertest.RSAKey(), secClaims("admin", nil))
			}},
		{"ES256", jwt.SigningMethodES256, servertest.ECKey(), &servertest.ECKey().PublicKey, servertest.OtherECKey(),
			func() string {
				return servertest.Sign(t, jwt.SigningMethodEdDSA, servertest.EdKey(), secClaims("admin", nil))
			}},
		{"EdDSA", jwt.SigningMethodEdDSA, servertest.EdKey(), servertest.EdKey().Public(), servertest.OtherEdKey(),
			func() string {
				return servertest.Sign(t, jwt.SigningMethodES256, servertest.ECKey(), secClaims("admin", nil))
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pemKey := servertest.PublicPEM(t, tt.public)
			g := startGateway(t, rs, func(o *options) {
				o.auth.RequireAuth = true
				o.auth.JWTPublicKeyPEM = pemKey
			})
			valid := servertest.Sign(t, tt.method, tt.private, secClaims("admin", nil))
			cases := []struct {
				name  string
				token string
				want  int
			}{
				{"valid", valid, 101},
				{"HMAC keyed with the public key", servertest.Sign(t, jwt.SigningMethodHS256, pemKey, secClaims("admin", nil)), 401},
				{"alg none", servertest.Sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, secClaims("admin", nil)), 401},
				{"another algorithm", tt.wrongAlg(), 401},
				{"expired", servertest.Sign(t, tt.method, tt.private, secClaims("admin", map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})), 401},
			}
			if tt.other != nil {
				cases = append(cases, struct {
					name  string
					token string
					want  int
				}{"another key", servertest.Sign(t, tt.method, tt.other, secClaims("admin", nil)), 401})
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					if got := upgradeStatus(t, g.addr, "", tokenQuery(c.token), ""); got != c.want {
						t.Fatalf("upgrade answered %d, want %d", got, c.want)
					}
				})
			}
			t.Run("admin may read engine signals", func(t *testing.T) {
				cl := dialHdr(t, g.wsURL(""), bearer(valid))
				cl.subscribe(t, "engine:signal:*")
				rs.Publish(t, "engine:signal:NIFTY", `{"side":"buy"}`)
				if m := cl.expect(t, "data"); m.str("channel") != "engine:signal:NIFTY" {
					t.Fatalf("got %v", m)
				}
			})
		})
	}
}

// TestRoleDecidesACL: the role comes from the credential, and the ACL of
// that role decides every subscription.
func TestRoleDecidesACL(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs, func(o *options) {
		o.auth.APIKey = secAPIKey
		o.auth.JWTSecret = secJWTSecret
	})
	clients := map[string]*client{
		"anonymous": dial(t, g.wsURL("")),
		"user":      dial(t, g.wsURL("token="+hsToken(t, "user", nil))),
		"admin":     dialHdr(t, g.wsURL(""), bearer(hsToken(t, "admin", nil))),
		"internal":  dial(t, g.wsURL("token="+hsToken(t, "internal", nil))),
		"apikey":    dialHdr(t, g.wsURL(""), bearer(secAPIKey)),
	}
	tests := []struct {
		who, channel string
		allowed      bool
	}{
		{"anonymous", "market:tick:NIFTY", true},
		{"anonymous", "engine:signal:NIFTY", false},
		{"user", "market:tick:*", true},
		{"user", "indicators:rsi:NIFTY", true},
		{"user", "engine:signal:NIFTY", false},
		{"user", "engine:signal:*", false},
		{"user", "engine:decision:NIFTY", false},
		{"admin", "engine:signal:*", true},
		{"admin", "engine:decision:NIFTY", true},
		{"admin", "market:tick:*", true},
		{"admin", "secret:thing", false},
		{"admin", "*", false},
		{"internal", "*", true},
		{"apikey", "engine:signal:*", true},
		{"apikey", "engine:*", false},
	}
	for _, tt := range tests {
		t.Run(tt.who+" "+tt.channel, func(t *testing.T) {
			cl := clients[tt.who]
			cl.send(t, map[string]any{"action": "subscribe", "channels": []string{tt.channel}, "requestId": "acl"})
			m := cl.read(t)
			switch {
			case tt.allowed && m.str("type") != "subscribed":
				t.Fatalf("got %v, want subscribed", m)
			case !tt.allowed && (m.str("code") != "forbidden" || fmt.Sprint(m["channels"]) != "["+tt.channel+"]"):
				t.Fatalf("got %v, want forbidden listing %s", m, tt.channel)
			}
		})
	}
	t.Run("deliveries follow the ACL", func(t *testing.T) {
		// anonymous holds market:tick:NIFTY and user market:tick:*;
		// Redis and the gateway keep the order of one pub/sub
		// connection, so an engine signal they could read would show
		// before the tick.
		rs.Publish(t, "engine:signal:NIFTY", `1`)
		rs.Publish(t, "market:tick:NIFTY", `2`)
		for who, want := range map[string]string{"admin": "engine:signal:NIFTY", "internal": "engine:signal:NIFTY",
			"apikey": "engine:signal:NIFTY", "anonymous": "market:tick:NIFTY", "user": "market:tick:NIFTY"} {
			if m := clients[who].expect(t, "data"); m.str("channel") != want {
				t.Fatalf("%s got %v, want data on %s", who, m, want)
			}
		}
	})
}

// TestACLFileReplacesDefaults: an ACL_FILE replaces the built-in roles; a
// token naming a role the file does not define is refused.
func TestACLFileReplacesDefaults(t *testing.T) {
	rs := redistest.Start(t)
	path := filepath.Join(t.TempDir(), "acl.json")
	if err := os.WriteFile(path, []byte(`{"roles":{"user":["indicators:rsi:*"],"ops":["engine:*"]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	acl, err := auth.LoadACL(path)
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, rs, func(o *options) {
		o.acl = acl
		o.auth.JWTSecret = secJWTSecret
	})
	if got := upgradeStatus(t, g.addr, "", tokenQuery(hsToken(t, "admin", nil)), ""); got != 401 {
		t.Fatalf("token with role admin (not in the file) answered %d, want 401", got)
	}
	user := dial(t, g.wsURL(""))
	ops := dial(t, g.wsURL("token="+hsToken(t, "ops", nil)))
	tests := []struct {
		cl      *client
		who     string
		channel string
		allowed bool
	}{
		{user, "user", "market:tick:NIFTY", false}, // allowed by the defaults only
		{user, "user", "indicators:rsi:NIFTY", true},
		{user, "user", "indicators:rsi:N*", true},
		{user, "user", "indicators:*", false},
		{ops, "ops", "engine:signal:*", true},
		{ops, "ops", "market:tick:NIFTY", false},
	}
	for _, tt := range tests {
		t.Run(tt.who+" "+tt.channel, func(t *testing.T) {
			tt.cl.send(t, map[string]any{"action": "subscribe", "channels": []string{tt.channel}})
			m := tt.cl.read(t)
			if got := m.str("type") == "subscribed"; got != tt.allowed || (!got && m.str("code") != "forbidden") {
				t.Fatalf("got %v, want allowed=%v", m, tt.allowed)
			}
		})
	}
}

// TestPatternACLContainment: a pattern subscription is allowed only when
// every channel it could match is allowed; a refused request subscribes
// nothing.
func TestPatternACLContainment(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs, func(o *options) { o.srv.MaxWildcards = 20 })
	cl := dial(t, g.wsURL("")) // role user: market:tick:*, indicators:*
	tests := []struct {
		pattern string
		allowed bool
	}{
		{"market:tick:*", true},
		{"market:tick:N*", true},
		{"market:tick:[AB]*", true},
		{"market:tick:?", true},
		{"market:tick[:]*", true},
		{"indicators:*:1m", true},
		{"market:*", false},
		{"*", false},
		{"market:tick?*", false},
		{"market:tick[:x]*", false},
		{"[mi]*", false},
		{"market:tic[k]*", false},
		{"?arket:tick:*", false},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			cl.send(t, map[string]any{"action": "subscribe", "channels": []string{tt.pattern}})
			m := cl.read(t)
			if got := m.str("type") == "subscribed"; got != tt.allowed || (!got && m.str("code") != "forbidden") {
				t.Fatalf("got %v, want allowed=%v", m, tt.allowed)
			}
			if tt.allowed {
				cl.send(t, map[string]any{"action": "unsubscribe", "channels": []string{tt.pattern}})
				cl.expect(t, "unsubscribed")
			}
		})
	}
	t.Run("refused request subscribes nothing", func(t *testing.T) {
		cl.send(t, `{"action":"subscribe","channels":["market:tick:A*","market:*"],"requestId":"mix"}`)
		m := cl.expect(t, "error")
		if m.str("code") != "forbidden" || fmt.Sprint(m["channels"]) != "[market:*]" || m.str("requestId") != "mix" {
			t.Fatalf("got %v", m)
		}
		// Redis and the gateway keep the order of one pub/sub
		// connection: a subscribed market:tick:A* would show first.
		cl.subscribe(t, "market:tick:SENTINEL")
		rs.Publish(t, "market:tick:A1", "1")
		rs.Publish(t, "market:tick:SENTINEL", "2")
		if m := cl.expect(t, "data"); m.str("channel") != "market:tick:SENTINEL" {
			t.Fatalf("got %v from a refused request", m)
		}
	})
}

// TestGuardrailLimits: the channel and wildcard limits refuse a request
// whole and leave the existing subscriptions as they were; names and
// requestIds over their bounds are bad requests.
func TestGuardrailLimits(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs, func(o *options) {
		o.srv.MaxChannels = 3
		o.srv.MaxWildcards = 1
	})
	cl := dial(t, g.wsURL(""))
	cl.subscribe(t, "market:tick:A", "market:tick:B*")
	// deliveries publishes on the refused channels first, then on the
	// delivered ones, and checks that the client's next data frames are
	// exactly the delivered ones: Redis and the gateway keep the order
	// of one pub/sub connection, so a refused channel would show first.
	deliveries := func(t *testing.T, delivered, refused []string) {
		t.Helper()
		for _, ch := range append(refused, delivered...) {
			rs.Publish(t, ch, "x")
		}
		for _, ch := range delivered {
			if m := cl.expect(t, "data"); m.str("channel") != ch {
				t.Fatalf("got data on %s, want %s (refused: %v)", m.str("channel"), ch, refused)
			}
		}
	}
	tests := []struct {
		name, send, code string
	}{
		{"second pattern", `{"action":"subscribe","channels":["market:tick:C*"]}`, "too_many_wildcards"},
		{"two more channels", `{"action":"subscribe","channels":["market:tick:C","market:tick:D"]}`, "too_many_channels"},
		{"channel and pattern, both over", `{"action":"subscribe","channels":["market:tick:C","market:tick:D*"]}`, "too_many_channels"},
		{"channel 257 bytes", `{"action":"subscribe","channels":["market:tick:` + strings.Repeat("A", 245) + `"]}`, "bad_request"},
		{"tab in channel", `{"action":"subscribe","channels":["market:tick:A\tB"]}`, "bad_request"},
		{"control character", `{"action":"subscribe","channels":["market:tick:A\u0001"]}`, "bad_request"},
		{"DEL", `{"action":"subscribe","channels":["market:tick:A\u007f"]}`, "bad_request"},
		{"no-break space", `{"action":"subscribe","channels":["market:tick:A\u00a0B"]}`, "bad_request"},
		{"requestId 129 bytes", `{"action":"ping","requestId":"` + strings.Repeat("r", 129) + `"}`, "bad_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl.send(t, tt.send)
			if m := cl.expect(t, "error"); m.str("code") != tt.code {
				t.Fatalf("got %v, want code %s", m, tt.code)
			}
			deliveries(t, []string{"market:tick:A", "market:tick:B1"}, []string{"market:tick:C", "market:tick:D1"})
		})
	}
	t.Run("at the bounds", func(t *testing.T) {
		id := strings.Repeat("r", 128)
		cl.send(t, `{"action":"ping","requestId":"`+id+`"}`)
		if m := cl.expect(t, "pong"); m.str("requestId") != id {
			t.Fatalf("requestId of 128 bytes not echoed: %v", m)
		}
		cl.subscribe(t, "market:tick:A", "market:tick:B*") // already held: counts nothing
		long := "market:tick:" + strings.Repeat("A", 244)
		cl.subscribe(t, long) // 256 bytes, and the third channel: exactly at the limit
		cl.send(t, `{"action":"subscribe","channels":["market:tick:E"]}`)
		if m := cl.expect(t, "error"); m.str("code") != "too_many_channels" {
			t.Fatalf("got %v", m)
		}
		deliveries(t, []string{long, "market:tick:A"}, []string{"market:tick:E"})
	})
}

// TestRateLimit: a client over MAX_MESSAGES_PER_SECOND is answered
// rate_limited, and one that keeps going is closed with 1008; other
// clients are untouched. Every inbound message counts, whatever it holds:
// a binary or malformed message is answered too (bad_request), so it must
// not be a way around the limit.
func TestRateLimit(t *testing.T) {
	rs := redistest.Start(t)
	const rate = 5
	g := startGateway(t, rs, func(o *options) { o.srv.MaxMessagesPerSecond = rate })
	by := newBystander(t, g, rs)
	tests := []struct {
		name    string
		typ     websocket.MessageType
		payload string
		// answered tells the reply to an allowed message.
		answered func(msg) bool
	}{
		{"commands", websocket.MessageText, `{"action":"ping"}`, func(m msg) bool { return m.str("type") == "pong" }},
		{"binary messages", websocket.MessageBinary, "\x00\x01", func(m msg) bool { return m.str("code") == "bad_request" }},
		{"malformed text", websocket.MessageText, `not json`, func(m msg) bool { return m.str("code") == "bad_request" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			c, err := dialErr(g.wsURL(""), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.CloseNow() })
			done := make(chan int)
			go func() {
				// Writes as fast as it can until the server closes;
				// errors are expected once it has.
				n := 0
				for ; n < 2000; n++ {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					err := c.Write(ctx, tt.typ, []byte(tt.payload))
					cancel()
					if err != nil {
						break
					}
				}
				done <- n
			}()
			answers, limited := 0, 0
			var status websocket.StatusCode
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, p, err := c.Read(ctx)
				cancel()
				if err != nil {
					status = websocket.CloseStatus(err)
					if status == -1 {
						t.Fatalf("read ended without a close frame: %v (answers %d, rate_limited %d)", err, answers, limited)
					}
					break
				}
				var m msg
				if err := json.Unmarshal(p, &m); err != nil {
					t.Fatalf("not JSON: %q", p)
				}
				switch {
				case m.str("code") == "rate_limited":
					if answers == 0 {
						t.Fatalf("rate_limited before any answer")
					}
					limited++
				case tt.answered(m):
					answers++
				default:
					t.Fatalf("unexpected %v", m)
				}
			}
			sent := <-done
			elapsed := time.Since(start)
			if status != websocket.StatusPolicyViolation {
				t.Fatalf("closed with %d, want 1008 (answers %d, rate_limited %d)", status, answers, limited)
			}
			if limited == 0 {
				t.Fatalf("closed without a rate_limited answer first (answers %d)", answers)
			}
			// The bucket holds rate tokens and refills at rate per second.
			if maxAnswers := rate + int(elapsed.Seconds()*rate) + 1; answers > maxAnswers {
				t.Fatalf("%d answers in %v, the limit allows at most %d", answers, elapsed, maxAnswers)
			}
			t.Logf("sent %d, answers %d, rate_limited %d, in %v", sent, answers, limited, elapsed)
			by.alive(t)
			by.cl.send(t, `{"action":"ping"}`)
			by.cl.expect(t, "pong")
		})
	}
}

// TestMessageTooBig: one inbound message over MAX_MESSAGE_BYTES (64 KiB),
// in one frame or in fragments, is closed with 1009, and the close comes
// from the frame header: the client need not send the body.
func TestMessageTooBig(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs) // MaxMessageBytes: 64 KiB
	by := newBystander(t, g, rs)
	const limit = 64 << 10
	// ping builds a ping command of exactly n bytes.
	ping := func(n int) []byte {
		p := []byte(`{"action":"ping","requestId":"big","pad":"`)
		p = append(p, bytes.Repeat([]byte("x"), n-len(p)-2)...)
		return append(p, `"}`...)
	}
	t.Run("exactly the limit", func(t *testing.T) {
		cl := dial(t, g.wsURL(""))
		cl.send(t, ping(limit))
		cl.expect(t, "pong")
	})
	t.Run("one frame one byte over", func(t *testing.T) {
		cl := dial(t, g.wsURL(""))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = cl.c.Write(ctx, websocket.MessageText, ping(limit+1))
		if code, err := cl.waitClosed(t, 10*time.Second); code != websocket.StatusMessageTooBig {
			t.Fatalf("closed with %d (%v), want 1009", code, err)
		}
	})
	t.Run("fragments over", func(t *testing.T) {
		cl := dial(t, g.wsURL(""))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Each Write of coder/websocket's writer is one frame.
		w, err := cl.c.Writer(ctx, websocket.MessageText)
		if err != nil {
			t.Fatal(err)
		}
		p := ping(limit + 1)
		for i := 0; i < len(p); i += 16 << 10 {
			if _, err := w.Write(p[i:min(i+16<<10, len(p))]); err != nil {
				break // the server may already have closed
			}
		}
		_ = w.Close()
		if code, err := cl.waitClosed(t, 10*time.Second); code != websocket.StatusMessageTooBig {
			t.Fatalf("closed with %d (%v), want 1009", code, err)
		}
	})
	// The raw cases announce 10 MiB and send only part of it: the close
	// must come anyway, so the server did not wait to buffer the message.
	hdr10MiB := func(b0 byte) []byte {
		h := []byte{b0, 0x80 | 127}
		h = append(h, 0, 0, 0, 0, 0, 0xa0, 0, 0) // 10 MiB
		return append(h, 1, 2, 3, 4)             // mask
	}
	fragment := servertest.Frame(0x01, bytes.Repeat([]byte("a"), 40<<10), false) // text, not FIN
	raw := []struct {
		name  string
		first []byte
	}{
		{"10 MiB frame, partial body", hdr10MiB(0x81)},
		{"fragment then a 10 MiB continuation", append(append([]byte(nil), fragment...), hdr10MiB(0x80)...)},
		{"fragments summing over", append(append([]byte(nil), fragment...), servertest.Frame(0x80, bytes.Repeat([]byte("b"), 40<<10), false)...)},
	}
	for _, tt := range raw {
		t.Run(tt.name, func(t *testing.T) {
			rc := servertest.Upgrade(t, g.addr)
			rc.Send(t, tt.first)
			done := make(chan struct{})
			go func() {
				// Part of the announced body; the server may have
				// closed already, so errors are expected.
				defer close(done)
				_ = rc.TCP.SetWriteDeadline(time.Now().Add(10 * time.Second))
				_, _ = rc.TCP.Write(bytes.Repeat([]byte("z"), 128<<10))
			}()
			rc.ExpectClose(t, 1009)
			<-done
			by.alive(t)
		})
	}
	servertest.WaitFor(t, 10*time.Second, "only the bystander left", func() bool { return g.srv.Connections() == 1 })
	by.alive(t)
}

// TestHostileFrames sends each protocol violation over raw TCP after a
// valid upgrade and reads the exact close code from the server's close
// frame; a bystander on the same gateway keeps receiving.
func TestHostileFrames(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs)
	by := newBystander(t, g, rs)
	text := func(p string) []byte { return servertest.Frame(0x81, []byte(p), false) }
	closeFrame := func(p []byte) []byte { return servertest.Frame(0x88, p, false) }
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	tests := []struct {
		name  string
		bytes []byte
		want  int
	}{
		{"unmasked text", servertest.Frame(0x81, []byte(`{"action":"ping"}`), true), 1002},
		{"unmasked close", servertest.Frame(0x88, servertest.ClosePayload(1000, ""), true), 1002},
		{"RSV1 without extension", servertest.Frame(0xC1, []byte("hi"), false), 1002},
		{"RSV2", servertest.Frame(0xA1, []byte("hi"), false), 1002},
		{"RSV3 on a ping", servertest.Frame(0x99, nil, false), 1002},
		{"reserved data opcode 3", servertest.Frame(0x83, []byte("hi"), false), 1002},
		{"reserved control opcode 0xB", servertest.Frame(0x8B, nil, false), 1002},
		{"ping over 125 bytes", servertest.Frame(0x89, bytes.Repeat([]byte("p"), 126), false), 1002},
		{"close over 125 bytes", closeFrame(servertest.ClosePayload(1000, strings.Repeat("r", 124))), 1002},
		{"fragmented ping", servertest.Frame(0x09, []byte("p"), false), 1002},
		{"continuation without a start", servertest.Frame(0x80, []byte("x"), false), 1002},
		{"new message inside a fragmented one", cat(servertest.Frame(0x01, []byte("a"), false), text("b")), 1002},
		{"64-bit length with the top bit set", []byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}, 1002},
		{"invalid UTF-8", text("bad \xff byte"), 1007},
		{"overlong UTF-8", text("\xc0\xaf"), 1007},
		{"UTF-16 surrogate", text("\xed\xa0\x80"), 1007},
		{"invalid UTF-8 across fragments", cat(servertest.Frame(0x01, []byte("\xe2\x82"), false), servertest.Frame(0x80, []byte("("), false)), 1007},
		{"truncated UTF-8 at the end", cat(servertest.Frame(0x01, []byte("ok"), false), servertest.Frame(0x80, []byte("\xe2\x82"), false)), 1007},
		{"close reason not UTF-8", closeFrame(servertest.ClosePayload(1000, "\xff")), 1007},
		{"close code 1005", closeFrame(servertest.ClosePayload(1005, "")), 1002},
		{"close code 1006", closeFrame(servertest.ClosePayload(1006, "")), 1002},
		{"close code 999", closeFrame(servertest.ClosePayload(999, "")), 1002},
		{"close code 1004", closeFrame(servertest.ClosePayload(1004, "")), 1002},
		{"close code 1015", closeFrame(servertest.ClosePayload(1015, "")), 1002},
		{"close code 5000", closeFrame(servertest.ClosePayload(5000, "")), 1002},
		{"one-byte close body", closeFrame([]byte{3}), 1002},
		{"valid close 1000 is echoed", closeFrame(servertest.ClosePayload(1000, "bye")), 1000},
		{"valid close 4000 is echoed", closeFrame(servertest.ClosePayload(4000, "")), 4000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := servertest.Upgrade(t, g.addr)
			rc.Send(t, tt.bytes)
			rc.ExpectClose(t, tt.want)
			servertest.WaitFor(t, 10*time.Second, "only the bystander left", func() bool { return g.srv.Connections() == 1 })
			by.alive(t)
		})
	}
	t.Run("binary message answered bad_request, connection stays", func(t *testing.T) {
		rc := servertest.Upgrade(t, g.addr)
		rc.Send(t, servertest.Frame(0x82, []byte{0, 1, 2, 0xff}, false))
		rc.ExpectText(t, `"code":"bad_request"`)
		rc.Send(t, text(`{"action":"ping","requestId":"after-binary"}`))
		rc.ExpectText(t, `"after-binary"`)
		rc.Send(t, closeFrame(servertest.ClosePayload(1000, "")))
		rc.ExpectClose(t, 1000)
		by.alive(t)
	})
}

// TestFloodWithoutReading: a client that sends and never reads must not
// make the gateway buffer its answers without bound. Pings are not rate
// limited (they are control frames), and a bad request may be answered
// with an error as large as the request; either, sent by a client that
// reads nothing, once grew gnet's outbound buffer by as much as was sent.
// Now pongs are skipped while the peer does not read what it is already
// owed (MaxOutboundBytes), and a command answered then closes it with 1013.
func TestFloodWithoutReading(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs, func(o *options) { o.srv.MaxOutboundBytes = 64 << 10 })
	by := newBystander(t, g, rs)
	// Each bad request lists its 200 invalid names in the error: about
	// 40 KiB answered for 40 KiB sent, within the default rate limit.
	var names []string
	for i := 0; i < 200; i++ {
		names = append(names, fmt.Sprintf("bad name %03d %s", i, strings.Repeat("n", 186)))
	}
	badReq, err := json.Marshal(map[string]any{"action": "subscribe", "channels": names})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		frame []byte
		count int
		// stays: the connection is still open afterwards.
		stays bool
	}{
		{"pings", servertest.Frame(0x89, bytes.Repeat([]byte("p"), 125), false), 128 << 10, true}, // 16 MiB
		{"large error replies", servertest.Frame(0x81, badReq, false), 100, false},                // 4 MiB
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The previous case's buffers must be gone before measuring.
			servertest.WaitFor(t, 10*time.Second, "only the bystander", func() bool { return g.srv.Connections() == 1 })
			// A small receive buffer keeps the kernels from absorbing
			// what the gateway answers: it has to hold it, or not.
			rc := servertest.Upgrade(t, g.addr, servertest.RcvBuf(4096))
			heap0 := secHeapInuse()
			batch := bytes.Repeat(tt.frame, max(1, (256<<10)/len(tt.frame)))
			per := len(batch) / len(tt.frame)
			_ = rc.TCP.SetWriteDeadline(time.Now().Add(60 * time.Second))
			sent := 0
			for sent < tt.count {
				if _, err := rc.TCP.Write(batch); err != nil {
					break // closed by the server: fine, checked below
				}
				sent += per
			}
			grew := int64(secHeapInuse()) - int64(heap0)
			t.Logf("sent %d frames (%d MiB) without reading; heap grew by %d KiB", sent, sent*len(tt.frame)>>20, grew>>10)
			if grew > 8<<20 {
				t.Fatalf("heap grew by %d MiB for a client that reads nothing", grew>>20)
			}
			if tt.stays {
				if c := g.srv.Connections(); c != 2 {
					t.Fatalf("%d connections, want the flooder and the bystander", c)
				}
			} else {
				servertest.WaitFor(t, 10*time.Second, "the flooder closed", func() bool { return g.srv.Connections() == 1 })
			}
			_ = rc.TCP.Close()
			by.alive(t)
		})
	}
}

func secHeapInuse() uint64 {
	// Twice: pooled buffers survive one collection in sync.Pool's
	// victim cache.
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// streamBytes writes prefix and then fill bytes up to total in a
// goroutine, stopping at the first error (the server closing). written
// counts what the kernel accepted.
func streamBytes(c net.Conn, prefix []byte, fill byte, total int) (written *atomic.Int64, done <-chan struct{}) {
	written = new(atomic.Int64)
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		n, err := c.Write(prefix)
		written.Add(int64(n))
		chunk := bytes.Repeat([]byte{fill}, 64<<10)
		for err == nil && written.Load() < int64(total) {
			n, err = c.Write(chunk[:min(len(chunk), total-int(written.Load()))])
			written.Add(int64(n))
		}
	}()
	return written, ch
}

// An endless request head is answered 431 once it passes the 8 KiB limit,
// not after the server has buffered it: with the client's send buffer
// held at endlessSndbuf, what the client has written when the answer
// reaches it is what the server read (the limit and the rest of one
// read), what waits in the server's receive buffer, and that small send
// buffer, at most endlessAnswerBound.
const (
	endlessSndbuf      = 16 << 10
	endlessAnswerBound = 1 << 20
)

// endlessHead streams prefix and then fill bytes, up to total, to addr from
// a socket with a send buffer of endlessSndbuf, and checks that the 431
// arrives within endlessAnswerBound bytes and that the server then closes.
func endlessHead(tb testing.TB, addr, prefix string, fill byte, total int) {
	tb.Helper()
	rc := servertest.Dial(tb, addr, servertest.SndBuf(endlessSndbuf))
	written, done := streamBytes(rc.TCP, []byte(prefix), fill, total)
	code, head := rc.ReadHead(tb)
	answeredAt := written.Load()
	if code != http.StatusRequestHeaderFieldsTooLarge {
		tb.Fatalf("answered %d, want 431: %q", code, head)
	}
	rc.ExpectEOF(tb, 10*time.Second)
	<-done
	if answeredAt > endlessAnswerBound {
		tb.Fatalf("the 431 came after %d KiB of the endless head, want within %d KiB: the server buffered far more than its 8 KiB limit",
			answeredAt>>10, endlessAnswerBound>>10)
	}
	tb.Logf("answered 431 after %d KiB of a %d MiB head (%d KiB written in all)", answeredAt>>10, total>>20, written.Load()>>10)
}

// TestHostileHTTP: garbage before the upgrade gets an HTTP error or is cut
// by the handshake timeout, never buffered without bound, and other
// clients keep receiving.
func TestHostileHTTP(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs, func(o *options) { o.srv.HandshakeTimeout = time.Second })
	by := newBystander(t, g, rs)
	rnd := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rnd.Uint32())
			if p[i] == '\n' {
				p[i] = 'n' // keep the head unterminated until we say so
			}
		}
		return p
	}
	t.Run("random bytes", func(t *testing.T) {
		rc := servertest.Dial(t, g.addr)
		rc.Send(t, append(random(4096), "\r\n\r\n"...))
		if code, head := rc.ReadHead(t); code != http.StatusBadRequest {
			t.Fatalf("answered %d, want 400: %q", code, head)
		}
		rc.ExpectEOF(t, 10*time.Second)
	})
	t.Run("random bytes without an end", func(t *testing.T) {
		rc := servertest.Dial(t, g.addr)
		rc.Send(t, random(16<<10))
		if code, head := rc.ReadHead(t); code != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("answered %d, want 431: %q", code, head)
		}
		rc.ExpectEOF(t, 10*time.Second)
	})
	t.Run("request line with no end", func(t *testing.T) {
		endlessHead(t, g.addr, "GET /ws?", 'a', 8<<20)
	})
	t.Run("unterminated request line, then silence", func(t *testing.T) {
		rc := servertest.Dial(t, g.addr)
		start := time.Now()
		rc.Send(t, []byte("GET /ws HTTP/1.1"))
		if rest := rc.ExpectEOF(t, 10*time.Second); len(rest) != 0 {
			t.Fatalf("got %q, want the connection cut", rest)
		}
		if d := time.Since(start); d < time.Second {
			t.Fatalf("cut after %v, before the handshake timeout", d)
		}
	})
	t.Run("multi-megabyte header", func(t *testing.T) {
		endlessHead(t, g.addr, "GET /ws HTTP/1.1\r\nHost: gateway\r\nX-Big: ", 'b', 64<<20)
	})
	t.Run("upgrade without a key", func(t *testing.T) {
		rc := servertest.Dial(t, g.addr)
		rc.Send(t, []byte("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"))
		if code, head := rc.ReadHead(t); code != http.StatusBadRequest {
			t.Fatalf("answered %d, want 400: %q", code, head)
		}
		rc.ExpectEOF(t, 10*time.Second)
	})
	by.alive(t)
	servertest.WaitFor(t, 10*time.Second, "only the bystander left", func() bool { return g.srv.Connections() == 1 })
}

// TestHandshakeTimeout: a client that has not completed its upgrade within
// HANDSHAKE_TIMEOUT is cut, whatever it sends meanwhile.
func TestHandshakeTimeout(t *testing.T) {
	rs := redistest.Start(t)
	const timeout = 300 * time.Millisecond
	g := startGateway(t, rs, func(o *options) { o.srv.HandshakeTimeout = timeout })
	tests := []struct {
		name string
		// drip is written one byte every 50 ms until the server cuts.
		first, drip string
	}{
		{"silent", "", ""},
		{"half a request", "GET /ws HTTP/1.1\r\nHost: x\r\n", ""},
		{"slowloris", "GET /ws HTTP/1.1\r\n", "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			rc := servertest.Dial(t, g.addr)
			if tt.first != "" {
				rc.Send(t, []byte(tt.first))
			}
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				tick := time.NewTicker(50 * time.Millisecond)
				defer tick.Stop()
				for i := 0; i < len(tt.drip); i++ {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					if _, err := rc.TCP.Write([]byte{tt.drip[i]}); err != nil {
						return
					}
				}
			}()
			rest := rc.ExpectEOF(t, 10*time.Second)
			close(stop)
			<-done
			if len(rest) != 0 {
				t.Fatalf("got %q before the cut, want nothing", rest)
			}
			if d := time.Since(start); d < timeout {
				t.Fatalf("cut after %v, before the %v timeout", d, timeout)
			}
		})
	}
}

// TestHalfOpenHandshakes: a thousand sockets that send half a request do
// not stop a normal client from connecting, subscribing and receiving, are
// not counted as connections, and are all cut by the handshake timeout.
func TestHalfOpenHandshakes(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	rs := redistest.Start(t)
	const timeout = 3 * time.Second
	g := startGateway(t, rs, func(o *options) { o.srv.HandshakeTimeout = timeout })
	const n = 1000
	type halfOpen struct {
		c      net.Conn
		dialed time.Time
		closed atomic.Int64 // unix nanos when the server's close was seen
	}
	half := make([]*halfOpen, n)
	var wg sync.WaitGroup
	for i := range half {
		h := &halfOpen{dialed: time.Now()}
		c, err := net.DialTimeout("tcp", g.addr, 10*time.Second)
		if err != nil {
			t.Fatalf("half-open socket %d: %v", i, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		h.c = c
		half[i] = h
		if _, err := c.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")); err != nil {
			t.Fatalf("half-open socket %d: %v", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			var b [64]byte
			for {
				if _, err := c.Read(b[:]); err != nil {
					var ne net.Error
					if !errors.As(err, &ne) || !ne.Timeout() {
						h.closed.Store(time.Now().UnixNano())
					}
					return
				}
			}
		}()
	}

	cl := dial(t, g.wsURL(""))
	cl.subscribe(t, "market:tick:HALF")
	rs.Publish(t, "market:tick:HALF", `{"ok":true}`)
	cl.expect(t, "data")
	checked := time.Now()
	if c := g.srv.Connections(); c != 1 {
		t.Fatalf("Connections() = %d with %d half-open sockets, want 1", c, n)
	}
	if st := g.stats(t); st.Connections != 1 {
		t.Fatalf("/stats connections = %d, want 1", st.Connections)
	}
	// The server cannot cut a socket before its timeout: every one dialed
	// less than timeout before the client was served was still open.
	for i, h := range half {
		if cut := h.closed.Load(); cut != 0 && cut < checked.UnixNano() && checked.Sub(h.dialed) < timeout {
			t.Fatalf("half-open socket %d was cut %v after dialing, before the %v timeout", i, time.Unix(0, cut).Sub(h.dialed), timeout)
		}
	}

	wg.Wait() // every reader has seen a close or its 30 s deadline
	for i, h := range half {
		cut := h.closed.Load()
		if cut == 0 {
			t.Fatalf("half-open socket %d was never cut", i)
		}
		if d := time.Unix(0, cut).Sub(h.dialed); d < timeout {
			t.Fatalf("half-open socket %d cut after %v, before the %v timeout", i, d, timeout)
		}
	}
	if c := g.srv.Connections(); c != 1 {
		t.Fatalf("Connections() = %d after the cut, want 1", c)
	}
	cl.send(t, `{"action":"ping"}`)
	cl.expect(t, "pong")
	rs.Publish(t, "market:tick:HALF", `2`)
	cl.expect(t, "data")
}

// TestJWTExpiryCloses: a connection whose JWT expires is closed with 1008
// at expiry (the sweep runs once a second); others stay open.
func TestJWTExpiryCloses(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs, func(o *options) {
		o.auth.APIKey = secAPIKey
		o.auth.JWTSecret = secJWTSecret
	})
	by := newBystander(t, g, rs)
	admin := dialHdr(t, g.wsURL(""), bearer(secAPIKey)) // no expiry
	exp := time.Now().Add(2 * time.Second).Truncate(time.Second)
	if time.Until(exp) < time.Second {
		exp = exp.Add(time.Second)
	}
	cl := dial(t, g.wsURL("token="+hsToken(t, "user", map[string]any{"exp": exp.Unix()})))
	cl.subscribe(t, "market:tick:EXP")
	rs.Publish(t, "market:tick:EXP", "before")
	cl.expect(t, "data")
	code, err := cl.waitClosed(t, time.Until(exp)+5*time.Second)
	closedAt := time.Now()
	if code != websocket.StatusPolicyViolation {
		t.Fatalf("closed with %d (%v), want 1008", code, err)
	}
	var ce websocket.CloseError
	if errors.As(err, &ce) && !strings.Contains(ce.Reason, "expired") {
		t.Errorf("close reason %q does not say the token expired", ce.Reason)
	}
	if closedAt.Before(exp) {
		t.Fatalf("closed at %v, before the token's expiry %v", closedAt, exp)
	}
	t.Logf("closed %v after expiry", closedAt.Sub(exp))
	by.alive(t)
	admin.send(t, `{"action":"ping"}`)
	admin.expect(t, "pong")
}

// TestOriginCheck: with ALLOWED_ORIGINS set, a browser upgrade from
// another Origin is answered 403; requests without Origin pass.
func TestOriginCheck(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs, func(o *options) {
		o.srv.AllowedOrigins = []string{"https://app.example.com", "http://localhost:3000"}
	})
	open := startGateway(t, rs)
	tests := []struct {
		name   string
		g      *gateway
		origin string
		want   int
	}{
		{"allowed", g, "https://app.example.com", 101},
		{"second allowed", g, "http://localhost:3000", 101},
		{"no Origin (not a browser)", g, "", 101},
		{"foreign", g, "https://evil.example.com", 403},
		{"allowed host, other scheme", g, "http://app.example.com", 403},
		{"allowed host, other port", g, "https://app.example.com:8443", 403},
		{"suffix trick", g, "https://app.example.com.evil.example", 403},
		{"null", g, "null", 403},
		{"empty list allows any", open, "https://evil.example.com", 101},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			extra := ""
			if tt.origin != "" {
				extra = "Origin: " + tt.origin + "\r\n"
			}
			if got := upgradeStatus(t, tt.g.addr, "", "/ws", extra); got != tt.want {
				t.Fatalf("upgrade answered %d, want %d", got, tt.want)
			}
		})
	}
	t.Run("browser-like client", func(t *testing.T) {
		cl := dialHdr(t, g.wsURL(""), http.Header{"Origin": {"https://app.example.com"}})
		cl.subscribe(t, "market:tick:ORIGIN")
		rs.Publish(t, "market:tick:ORIGIN", "1")
		cl.expect(t, "data")
	})
}

// TestConnectionLimits: over MAX_CONNECTIONS or MAX_CONNECTIONS_PER_IP the
// upgrade is answered 503, and a slot freed by a leaving client is usable
// again.
func TestConnectionLimits(t *testing.T) {
	rs := redistest.Start(t)
	t.Run("MAX_CONNECTIONS", func(t *testing.T) {
		g := startGateway(t, rs, func(o *options) { o.srv.MaxConnections = 2 })
		by := newBystander(t, g, rs)
		second := dial(t, g.wsURL(""))
		for _, from := range []string{"127.0.0.1", secondLoopback(t)} {
			if got := upgradeStatus(t, g.addr, from, "/ws", ""); got != http.StatusServiceUnavailable {
				t.Fatalf("third connection from %s answered %d, want 503", from, got)
			}
		}
		by.alive(t)
		_ = second.c.Close(websocket.StatusNormalClosure, "")
		servertest.WaitFor(t, 10*time.Second, "slot freed", func() bool { return g.srv.Connections() == 1 })
		third := dial(t, g.wsURL(""))
		third.subscribe(t, "market:tick:THIRD")
	})
	t.Run("MAX_CONNECTIONS under concurrent upgrades", func(t *testing.T) {
		// Upgrades race on every event loop at once: the limit must
		// hold for their sum, not only for each loop's view of it.
		const limit, n = 4, 200
		g := startGateway(t, rs, func(o *options) { o.srv.MaxConnections = limit })
		var wg sync.WaitGroup
		var upgraded, refused atomic.Int64
		start := make(chan struct{})
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.DialTimeout("tcp", g.addr, 10*time.Second)
				if err != nil {
					t.Errorf("dial: %v", err)
					return
				}
				t.Cleanup(func() { _ = c.Close() })
				<-start
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				if _, err := c.Write([]byte(servertest.UpgradeRequest("/ws", ""))); err != nil {
					t.Errorf("write: %v", err)
					return
				}
				var b [12]byte
				if _, err := io.ReadFull(c, b[:]); err != nil {
					t.Errorf("read: %v", err)
					return
				}
				switch string(b[:]) {
				case "HTTP/1.1 101":
					upgraded.Add(1)
				case "HTTP/1.1 503":
					refused.Add(1)
				default:
					t.Errorf("answer %q", b[:])
				}
			}()
		}
		close(start)
		wg.Wait()
		if u := upgraded.Load(); u != limit || refused.Load() != n-limit {
			t.Fatalf("%d upgraded and %d refused with MAX_CONNECTIONS=%d, want %d and %d (Connections()=%d)",
				u, refused.Load(), limit, limit, n-limit, g.srv.Connections())
		}
	})
	t.Run("MAX_CONNECTIONS_PER_IP", func(t *testing.T) {
		g := startGateway(t, rs, func(o *options) { o.srv.MaxConnectionsPerIP = 2 })
		by := newBystander(t, g, rs)
		second := dial(t, g.wsURL(""))
		if got := upgradeStatus(t, g.addr, "127.0.0.1", "/ws", ""); got != http.StatusServiceUnavailable {
			t.Fatalf("third connection from 127.0.0.1 answered %d, want 503", got)
		}
		// Another address is counted apart.
		other := servertest.Dial(t, g.addr, servertest.LocalIP(secondLoopback(t)))
		other.Send(t, []byte(servertest.UpgradeRequest("/ws", "")))
		if code, head := other.ReadHead(t); code != http.StatusSwitchingProtocols {
			t.Fatalf("first connection from 127.0.0.2 answered %d: %q", code, head)
		}
		by.alive(t)
		_ = second.c.Close(websocket.StatusNormalClosure, "")
		servertest.WaitFor(t, 10*time.Second, "slot freed", func() bool { return g.srv.Connections() == 2 })
		if got := upgradeStatus(t, g.addr, "127.0.0.1", "/ws", ""); got != http.StatusSwitchingProtocols {
			t.Fatalf("connection after a slot was freed answered %d, want 101", got)
		}
	})
}

// secondLoopback is a second local source address. Linux routes all of
// 127.0.0.0/8 to the loopback interface; other systems may not.
func secondLoopback(tb testing.TB) string {
	tb.Helper()
	if runtime.GOOS != "linux" {
		tb.Skip("needs 127.0.0.2 as a source address (Linux)")
	}
	return "127.0.0.2"
}

// TestNoTokenInLogs captures the gateway's log output around refused and
// accepted connections: no token, API key or JWT ever appears in it.
func TestNoTokenInLogs(t *testing.T) {
	rs := redistest.Start(t)
	var sink servertest.LogRecorder
	g := startGateway(t, rs, func(o *options) {
		o.auth.APIKey = secAPIKey
		o.auth.JWTSecret = secJWTSecret
		o.srv.Logger = sink.Logger()
		o.hub.Logger = sink.Logger()
	})
	wrongKey := "sec-wrong-key-2b7e151628aed2a6abf7"
	badJWT := servertest.Sign(t, jwt.SigningMethodHS256, []byte("not-the-secret-not-the-secret-not-the-secret"), secClaims("admin", nil))
	expiredJWT := hsToken(t, "admin", map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})
	unknownRole := hsToken(t, "root-role-xyz", nil)
	goodJWT := hsToken(t, "admin", map[string]any{"sub": "client-log-test"})
	refused := []struct{ target, extra string }{
		{tokenQuery(wrongKey), ""},
		{"/ws", "Authorization: Bearer " + badJWT + "\r\n"},
		{tokenQuery(expiredJWT), ""},
		{tokenQuery(unknownRole), ""},
		{tokenQuery(goodJWT), "Authorization: Bearer " + wrongKey + "\r\n"},
	}
	for _, r := range refused {
		if got := upgradeStatus(t, g.addr, "", r.target, r.extra); got != 401 {
			t.Fatalf("answered %d, want 401", got)
		}
	}
	a := dial(t, g.wsURL("token="+url.QueryEscape(secAPIKey)))
	b := dialHdr(t, g.wsURL(""), bearer(goodJWT))
	c := dial(t, g.wsURL("token="+goodJWT))
	for _, cl := range []*client{a, b, c} {
		cl.subscribe(t, "engine:signal:LOG")
		_ = cl.c.Close(websocket.StatusNormalClosure, "")
	}
	servertest.WaitFor(t, 10*time.Second, "three connection-closed log lines", func() bool {
		return strings.Count(sink.String(), "connection closed") >= 3
	})
	logs := sink.String()
	for _, want := range []string{"upgrade refused", "connection opened", "connection closed"} {
		if !strings.Contains(logs, want) {
			t.Fatalf("log lacks %q, so the capture is not working:\n%s", want, logs)
		}
	}
	secrets := map[string]string{"API key": secAPIKey, "wrong key": wrongKey, "JWT secret": string(secJWTSecret)}
	for name, tok := range map[string]string{"bad JWT": badJWT, "expired JWT": expiredJWT, "unknown-role JWT": unknownRole, "good JWT": goodJWT} {
		secrets[name] = tok
		// Any signature or claims segment alone would leak too.
		for i, part := range strings.Split(tok, ".")[1:] {
			secrets[fmt.Sprintf("%s segment %d", name, i+1)] = part
		}
	}
	for name, s := range secrets {
		if strings.Contains(logs, s) || strings.Contains(logs, url.QueryEscape(s)) {
			t.Errorf("the %s appears in the log", name)
		}
	}
	if strings.Contains(logs, "root-role-xyz") {
		t.Logf("note: the unknown role's name is logged (issuer-controlled, not a secret)")
	}
}

package server_test

// Abuse by clients that are allowed in: requests that cost CPU, churn that
// costs memory and Redis work, upstream refusals of one stream, partial
// messages held open, and tokens valid for centuries. Each runs against a
// real gateway and a real redis-server; docs/SECURITY.md lists them.

import (
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgw/gateway/fanout/redistest"
)

// TestFarFutureToken: a token that expires after 2262 (where Unix
// nanoseconds overflow an int64) is valid for the connection's life, not
// expired at once. A witness whose token expires in about a second proves
// that the expiry sweep has run over the far-future connections (one loop,
// so one sweep sees them all).
func TestFarFutureToken(t *testing.T) {
	rs := redistest.Start(t)
	g := startGateway(t, rs, func(o *options) {
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
		clients[i].subscribe("market:tick:FAR")
	}
	witness := dial(t, g.wsURL("token="+hsToken(t, "user", map[string]any{"exp": time.Now().Add(time.Second).Unix() + 1})))
	if code, err := witness.waitClosed(10 * time.Second); code != websocket.StatusPolicyViolation {
		t.Fatalf("witness closed with %d (%v), want 1008 token expired", code, err)
	}
	rs.Publish(t, "market:tick:FAR", "still here")
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := clients[i]
			cl.tb = t
			if m := cl.expect("data"); m.str("channel") != "market:tick:FAR" {
				t.Fatalf("got %v", m)
			}
			cl.send(`{"action":"ping"}`)
			cl.expect("pong")
		})
	}
}

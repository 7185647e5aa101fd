package server_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/server"
	"github.com/wsgw/gateway/server/servertest"
)

// TestListenAddrInUse: the loops listen with SO_REUSEPORT, which would let
// a second gateway share the port unnoticed; Start refuses an address
// something already listens on, and the first listener keeps serving.
func TestListenAddrInUse(t *testing.T) {
	cases := []struct {
		name  string
		taken func(t *testing.T) string // returns the taken address
	}{
		{"another gateway", func(t *testing.T) string {
			return startGateway(t, nil).addr
		}},
		{"a plain listener", func(t *testing.T) string {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ln.Close() })
			return ln.Addr().String()
		}},
		{"a plain listener on the wildcard address", func(t *testing.T) string {
			ln, err := net.Listen("tcp4", "0.0.0.0:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ln.Close() })
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			return net.JoinHostPort("127.0.0.1", port)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.taken(t)
			srv := newUnstarted(t, addr)
			err := srv.Start()
			if err == nil {
				t.Cleanup(func() { _ = srv.Shutdown(t.Context()) })
				t.Fatalf("Start on %s, which is taken: no error", addr)
			}
			if !errors.Is(err, server.ErrAddrInUse) {
				t.Fatalf("Start on a taken address: %v, want ErrAddrInUse", err)
			}
			// The one listening there still accepts.
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatalf("dial the first listener after the refused start: %v", err)
			}
			_ = c.Close()
		})
	}
}

// TestListenLoopsSharePort: with port 0 every loop's listener must end up
// on the one port the gateway reports, or the loops past the first would
// listen on ports of their own and never get a connection.
func TestListenLoopsSharePort(t *testing.T) {
	g := startGateway(t, nil)
	// The kernel spreads connections over the loops' listeners by a hash
	// of their addresses: 64 connections all on one of two listeners
	// would be a 1 in 2^63 event.
	conns := make([]net.Conn, 0, 64)
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	for range 64 {
		c, err := net.DialTimeout("tcp", g.addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", g.addr, err)
		}
		conns = append(conns, c)
	}
	servertest.WaitFor(t, 10*time.Second, "both loops to have a connection", func() bool {
		return g.srv.LoopsSeen() == 2
	})
}

// TestListenRefusedThenRetry: a Start refused because the address is taken
// leaves the server as New made it: Shutdown has no engine to stop and
// says nothing is wrong, and Start may be tried again once the address
// is free.
func TestListenRefusedThenRetry(t *testing.T) {
	take := func(t *testing.T) net.Listener {
		t.Helper()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		return ln
	}
	t.Run("shutdown", func(t *testing.T) {
		ln := take(t)
		srv := newUnstarted(t, ln.Addr().String())
		if err := srv.Start(); !errors.Is(err, server.ErrAddrInUse) {
			t.Fatalf("Start on a taken address: %v, want ErrAddrInUse", err)
		}
		if err := srv.Shutdown(t.Context()); err != nil {
			t.Fatalf("Shutdown after a refused Start: %v, want nil", err)
		}
	})
	t.Run("retry", func(t *testing.T) {
		ln := take(t)
		srv := newUnstarted(t, ln.Addr().String())
		if err := srv.Start(); !errors.Is(err, server.ErrAddrInUse) {
			t.Fatalf("Start on a taken address: %v, want ErrAddrInUse", err)
		}
		_ = ln.Close()
		if err := srv.Start(); err != nil {
			t.Fatalf("Start again once the address is free: %v", err)
		}
		if err := srv.Shutdown(t.Context()); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	})
}

// newUnstarted builds a gateway on addr (Redis on a port nobody listens
// on) without starting it.
func newUnstarted(tb testing.TB, addr string) *server.Server {
	tb.Helper()
	o := defaultOptions("127.0.0.1:1")
	o.srv.Addr = addr
	authn, err := auth.NewAuthenticator(o.auth, o.acl)
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := server.New(o.srv, o.hub, authn, o.acl)
	if err != nil {
		tb.Fatal(err)
	}
	return srv
}

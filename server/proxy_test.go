package server_test

import (
	"encoding/binary"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/wsgw/gateway/fanout/redistest"
	"github.com/wsgw/gateway/server/servertest"
)

// v2Header is a PROXY protocol v2 header (HAProxy's send-proxy-v2) for a
// TCP/IPv4 connection from src; local makes it a LOCAL one (a health
// check of the proxy itself).
func v2Header(local bool, src string) []byte {
	b := []byte("\r\n\r\n\x00\r\nQUIT\n")
	if local {
		return append(b, 0x20, 0x00, 0x00, 0x00)
	}
	ap := netip.MustParseAddrPort(src)
	b = append(b, 0x21, 0x11, 0x00, 12)
	s, d := ap.Addr().As4(), [4]byte{127, 0, 0, 1}
	b = append(b, s[:]...)
	b = append(b, d[:]...)
	b = binary.BigEndian.AppendUint16(b, ap.Port())
	return binary.BigEndian.AppendUint16(b, 8889)
}

// sendUpgrade dials addr, sends pre and then an upgrade request with the
// extra header lines, each in its own write when split, and returns the
// status (a 101 connection is closed at once; any other answer must be
// followed by the close).
func sendUpgrade(tb testing.TB, addr string, pre []byte, extra string, split bool) int {
	tb.Helper()
	rc := servertest.Dial(tb, addr)
	req := append(append([]byte(nil), pre...), servertest.UpgradeRequest("/ws", extra)...)
	if split {
		// One byte at a time: the gateway must wait for a whole
		// header, whatever the reads cut.
		for i := range req {
			rc.Send(tb, req[i:i+1])
			time.Sleep(time.Millisecond) // spreads the bytes over reads; not a synchronisation
		}
	} else {
		rc.Send(tb, req)
	}
	code, _ := rc.ReadHead(tb)
	if code == http.StatusSwitchingProtocols {
		return code
	}
	rc.ExpectEOF(tb, 10*time.Second)
	return code
}

// TestTrustedProxies: from an address in TRUSTED_PROXIES, the PROXY
// header (v1 or v2, whole or cut by the reads) and X-Forwarded-For give
// the client's address, which the per-address limit and the logs use; a
// LOCAL header (HAProxy's health check) keeps the socket's. From any
// other address, or malformed, each is refused with 400 and counted.
func TestTrustedProxies(t *testing.T) {
	rs := redistest.Start(t)
	logs := &servertest.LogRecorder{}
	trusted := startGateway(t, rs, func(o *options) {
		o.srv.TrustedProxies = []string{"127.0.0.1/32"}
		o.srv.MaxConnectionsPerIP = 1
		o.srv.Logger = logs.Logger()
	})
	untrusted := startGateway(t, rs, func(o *options) {
		o.srv.TrustedProxies = []string{"10.0.0.0/8"}
	})
	sc, scU := newScraper(t, trusted), newScraper(t, untrusted)

	t.Run("PROXY v2 from a trusted proxy", func(t *testing.T) {
		if code := sendUpgrade(t, trusted.addr, v2Header(false, "203.0.113.7:5555"), "", true); code != 101 {
			t.Fatalf("upgrade through PROXY v2 answered %d", code)
		}
		servertest.WaitFor(t, 5*time.Second, "the log naming the client", func() bool {
			_, ok := logs.Find("connection opened", "remote=203.0.113.7:5555")
			return ok
		})
	})
	t.Run("per-address limit on the client's address", func(t *testing.T) {
		c := servertest.Dial(t, trusted.addr)
		c.Send(t, append(v2Header(false, "203.0.113.8:1"), servertest.UpgradeRequest("/ws", "")...))
		if code, _ := c.ReadHead(t); code != 101 {
			t.Fatalf("first connection of 203.0.113.8 answered %d", code)
		}
		if code := sendUpgrade(t, trusted.addr, v2Header(false, "203.0.113.8:2"), "", false); code != 503 {
			t.Fatalf("second connection of 203.0.113.8 answered %d, want 503 (MAX_CONNECTIONS_PER_IP 1)", code)
		}
		// Another client behind the same proxy is not limited by it.
		c2 := servertest.Dial(t, trusted.addr)
		c2.Send(t, append(v2Header(false, "203.0.113.9:1"), servertest.UpgradeRequest("/ws", "")...))
		if code, _ := c2.ReadHead(t); code != 101 {
			t.Fatalf("203.0.113.9 answered %d", code)
		}
		c3 := servertest.Dial(t, trusted.addr)
		c3.Send(t, []byte("PROXY TCP4 203.0.113.10 127.0.0.1 7 8889\r\n"+servertest.UpgradeRequest("/ws", "")))
		if code, _ := c3.ReadHead(t); code != 101 {
			t.Fatalf("PROXY v1 of 203.0.113.10 answered %d", code)
		}
	})
	t.Run("X-Forwarded-For from a trusted proxy", func(t *testing.T) {
		c := servertest.Dial(t, trusted.addr)
		c.Send(t, []byte(servertest.UpgradeRequest("/ws", "X-Forwarded-For: 198.51.100.1, 203.0.113.20\r\n")))
		if code, _ := c.ReadHead(t); code != 101 {
			t.Fatalf("upgrade with X-Forwarded-For answered %d", code)
		}
		if code := sendUpgrade(t, trusted.addr, nil, "X-Forwarded-For: 203.0.113.20\r\n", false); code != 503 {
			t.Fatalf("second connection of 203.0.113.20 answered %d, want 503", code)
		}
		if _, ok := logs.Find("connection opened", "remote=203.0.113.20:0"); !ok {
			t.Fatalf("no log naming 203.0.113.20: %s", logs)
		}
	})
	t.Run("LOCAL header, then /health", func(t *testing.T) {
		c := servertest.Dial(t, trusted.addr)
		c.Send(t, v2Header(true, ""))
		c.Send(t, []byte("GET /health HTTP/1.0\r\n\r\n"))
		if code, _ := c.ReadHead(t); code != 200 {
			t.Fatalf("/health after a LOCAL header answered %d", code)
		}
	})
	for _, tc := range []struct {
		name   string
		g      *gateway
		pre    []byte
		extra  string
		reason string
	}{
		{"PROXY v2 from an untrusted address", untrusted, v2Header(false, "203.0.113.7:5555"), "", "untrusted_proxy_header"},
		{"PROXY v1 from an untrusted address", untrusted, []byte("PROXY TCP4 203.0.113.7 127.0.0.1 1 2\r\n"), "", "untrusted_proxy_header"},
		{"X-Forwarded-For from an untrusted address", untrusted, nil, "X-Forwarded-For: 203.0.113.7\r\n", "untrusted_proxy_header"},
		{"malformed PROXY v1", trusted, []byte("PROXY TCP4 nonsense\r\n"), "", "bad_proxy_header"},
		{"malformed X-Forwarded-For", trusted, nil, "X-Forwarded-For: 203.0.113.7, x\r\n", "bad_proxy_header"},
		// A client behind a trusted proxy in TCP mode must not pass
		// its own X-Forwarded-For as the truth.
		{"X-Forwarded-For behind PROXY", trusted, v2Header(false, "203.0.113.30:1"), "X-Forwarded-For: 198.51.100.9\r\n", "untrusted_proxy_header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := sc
			if tc.g == untrusted {
				s = scU
			}
			before := s.scrape(t).value(t, "gateway_upgrades_refused_total", "reason", tc.reason)
			if code := sendUpgrade(t, tc.g.addr, tc.pre, tc.extra, false); code != 400 {
				t.Fatalf("answered %d, want 400", code)
			}
			if after := s.scrape(t).value(t, "gateway_upgrades_refused_total", "reason", tc.reason); after != before+1 {
				t.Fatalf("refusals %s: %v → %v, want one more", tc.reason, before, after)
			}
		})
	}
	t.Run("X-Forwarded-For on plain HTTP from an untrusted address", func(t *testing.T) {
		c := servertest.Dial(t, untrusted.addr)
		c.Send(t, []byte("GET /health HTTP/1.1\r\nHost: gw\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n"))
		if code, _ := c.ReadHead(t); code != 400 {
			t.Fatalf("answered %d, want 400", code)
		}
	})
}

package server

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// proxyV2 builds a PROXY v2 header: PROXY (or LOCAL) over TCP/IPv4 from
// src to dst, with tlv bytes appended to the address block.
func proxyV2(local bool, src, dst netip.AddrPort, tlv []byte) []byte {
	b := append([]byte(nil), proxyV2Sig...)
	if local {
		b = append(b, 0x20, 0x00)
		return binary.BigEndian.AppendUint16(b, 0)
	}
	b = append(b, 0x21, 0x11)
	b = binary.BigEndian.AppendUint16(b, uint16(12+len(tlv)))
	s, d := src.Addr().As4(), dst.Addr().As4()
	b = append(b, s[:]...)
	b = append(b, d[:]...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	return append(b, tlv...)
}

func TestProxyHeaderLen(t *testing.T) {
	src, dst := netip.MustParseAddrPort("203.0.113.7:5555"), netip.MustParseAddrPort("10.0.0.1:8889")
	v2 := proxyV2(false, src, dst, nil)
	v1 := []byte("PROXY TCP4 203.0.113.7 10.0.0.1 5555 8889\r\n")
	get := []byte("GET /ws HTTP/1.1\r\n")
	for _, tc := range []struct {
		name  string
		in    []byte
		state proxyState
		n     int
	}{
		{"empty", nil, proxyMore, 0},
		{"HTTP", get, proxyNone, 0},
		{"CRLF then HTTP", []byte("\r\nGET"), proxyNone, 0},
		{"v2 signature cut", v2[:7], proxyMore, 0},
		{"v2 fixed part cut", v2[:14], proxyMore, 0},
		{"v2 addresses cut", v2[:20], proxyMore, 0},
		{"v2 whole", v2, proxyComplete, 28},
		{"v2 and the request", append(append([]byte(nil), v2...), get...), proxyComplete, 28},
		{"v2 LOCAL", proxyV2(true, src, dst, nil), proxyComplete, 16},
		{"v2 too long", append(append([]byte(nil), v2[:14]...), 0xff, 0xff), proxyMalformed, 0},
		{"v1 prefix cut", v1[:3], proxyMore, 0},
		{"v1 cut", v1[:30], proxyMore, 0},
		{"v1 whole", v1, proxyComplete, len(v1)},
		{"v1 and the request", append(append([]byte(nil), v1...), get...), proxyComplete, len(v1)},
		{"v1 without end", append([]byte("PROXY "), bytes.Repeat([]byte("1"), 200)...), proxyMalformed, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if state, n := proxyHeaderLen(tc.in); state != tc.state || n != tc.n {
				t.Fatalf("proxyHeaderLen = %d, %d; want %d, %d", state, n, tc.state, tc.n)
			}
		})
	}
	for _, tc := range []struct {
		name string
		hdr  []byte
		src  string // "" for no address (LOCAL, UNKNOWN)
		bad  bool
	}{
		{"v2", v2, "203.0.113.7:5555", false},
		{"v2 with a TLV", proxyV2(false, src, dst, []byte{0x04, 0x00, 0x01, 'x'}), "203.0.113.7:5555", false},
		{"v2 LOCAL", proxyV2(true, src, dst, nil), "", false},
		{"v1", v1, "203.0.113.7:5555", false},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), "", false},
		{"v1 bad address", []byte("PROXY TCP4 300.0.0.1 10.0.0.1 1 2\r\n"), "", true},
		{"v1 without CR", []byte("PROXY TCP4 203.0.113.7 10.0.0.1 5555 8889\n"), "", true},
	} {
		t.Run("parse "+tc.name, func(t *testing.T) {
			a, ok, err := parseProxyHeader(tc.hdr)
			if (err != nil) != tc.bad || ok != (tc.src != "") || ok && a.String() != tc.src {
				t.Fatalf("parseProxyHeader = %v, %v, %v; want %q (error %v)", a, ok, err, tc.src, tc.bad)
			}
		})
	}
}

// TestClientOf: the client in X-Forwarded-For is the last address that
// is not a trusted proxy.
func TestClientOf(t *testing.T) {
	s := &Server{}
	for _, p := range []string{"10.0.0.0/8", "192.0.2.1"} {
		pfx, err := parseTrusted(p)
		if err != nil {
			t.Fatal(err)
		}
		s.proxies = append(s.proxies, pfx)
	}
	for _, tc := range []struct {
		xff  []string
		want string // "" for malformed
	}{
		{[]string{"203.0.113.7"}, "203.0.113.7"},
		{[]string{"198.51.100.1, 203.0.113.7"}, "203.0.113.7"},
		{[]string{"198.51.100.1, 203.0.113.7, 10.1.2.3"}, "203.0.113.7"},
		{[]string{"198.51.100.1", "203.0.113.7, 192.0.2.1"}, "203.0.113.7"},
		{[]string{"10.0.0.5, 192.0.2.1"}, "10.0.0.5"},
		{[]string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{[]string{"203.0.113.7:1234"}, "203.0.113.7"},
		{[]string{"::ffff:203.0.113.7"}, "203.0.113.7"},
		{[]string{"unknown, 203.0.113.7"}, "203.0.113.7"},
		{[]string{"203.0.113.7, unknown"}, ""},
		{[]string{""}, ""},
	} {
		got, ok := s.clientOf(tc.xff)
		if ok != (tc.want != "") || ok && got.String() != tc.want {
			t.Errorf("clientOf(%q) = %v, %v; want %q", tc.xff, got, ok, tc.want)
		}
	}
}

// FuzzProxyHeader: whatever a connection starts with, the completeness
// check and the parser agree and never read past what they were given.
func FuzzProxyHeader(f *testing.F) {
	src, dst := netip.MustParseAddrPort("203.0.113.7:5555"), netip.MustParseAddrPort("10.0.0.1:8889")
	f.Add(proxyV2(false, src, dst, nil))
	f.Add(proxyV2(true, src, dst, nil))
	f.Add(proxyV2(false, src, dst, []byte{0x04, 0x00, 0x01, 'x'}))
	f.Add([]byte("PROXY TCP4 203.0.113.7 10.0.0.1 5555 8889\r\nGET / HTTP/1.1\r\n"))
	f.Add([]byte("PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte("GET /ws HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		state, n := proxyHeaderLen(b)
		switch state {
		case proxyComplete:
			if n <= 0 || n > len(b) {
				t.Fatalf("complete header of %d bytes in %d", n, len(b))
			}
			a, ok, err := parseProxyHeader(b[:n])
			if err == nil && ok && !a.Addr().IsValid() {
				t.Fatalf("parsed an invalid source %v", a)
			}
		case proxyNone:
			if bytes.HasPrefix(b, proxyV1Prefix) || bytes.HasPrefix(b, proxyV2Sig) {
				t.Fatal("a header taken for a request")
			}
		}
	})
}

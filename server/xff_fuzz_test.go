package server

import (
	"net/netip"
	"testing"
)

// FuzzForwardedFor: whatever X-Forwarded-For values a trusted proxy
// passes on, clientOf returns a valid, unmapped address or refuses them;
// the answer is the rightmost entry that is not a trusted proxy, so what
// a client wrote to the left of it (which it controls) changes nothing,
// and when every entry is a trusted proxy an untrusted one to their left
// is the answer.
func FuzzForwardedFor(f *testing.F) {
	s := &Server{}
	for _, p := range []string{"10.0.0.0/8", "192.0.2.1", "2001:db8::/32"} {
		pfx, err := parseTrusted(p)
		if err != nil {
			f.Fatal(err)
		}
		s.proxies = append(s.proxies, pfx)
	}
	f.Add("203.0.113.7", "")
	f.Add("198.51.100.1, 203.0.113.7", "10.1.2.3")
	f.Add("[2001:db8::1]:443", "::ffff:203.0.113.7")
	f.Add("unknown, 203.0.113.7", "")
	f.Add("10.0.0.1", "192.0.2.1")
	f.Add(",,", " ")
	spoof := netip.MustParseAddr("198.51.100.99")
	f.Fuzz(func(t *testing.T, a, b string) {
		got, ok := s.clientOf([]string{a, b})
		if !ok {
			return
		}
		if !got.IsValid() || got.Is4In6() {
			t.Fatalf("clientOf(%q, %q) = %v", a, b, got)
		}
		left, ok := s.clientOf([]string{spoof.String(), a, b})
		switch {
		case !ok:
			t.Fatalf("clientOf(%q, %q) = %v, but refused with an entry to the left", a, b, got)
		case s.trustedIP(got) && left != spoof:
			t.Fatalf("clientOf(%q, %q) = trusted %v; with %v to the left: %v", a, b, got, spoof, left)
		case !s.trustedIP(got) && left != got:
			t.Fatalf("clientOf(%q, %q) = %v; with %v to the left: %v", a, b, got, spoof, left)
		}
	})
}

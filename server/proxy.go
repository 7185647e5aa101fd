package server

// The client's real address behind a load balancer: the PROXY protocol
// header (v1 text, v2 binary; HAProxy's send-proxy and send-proxy-v2) at
// the start of a connection, and X-Forwarded-For in the request head,
// both believed only from a peer in Config.TrustedProxies. From anyone
// else they are refused and counted, so a client cannot pose as another
// address to escape the per-address limit or to forge the logs.
// Event-loop only, except the parsing helpers, which are pure.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/panjf2000/gnet/v2"
	proxyproto "github.com/pires/go-proxyproto"
)

// proxyV2Sig opens a PROXY protocol v2 header (its spec, section 2.2).
var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// proxyV1Prefix opens a v1 header (section 2.1).
var proxyV1Prefix = []byte("PROXY ")

const (
	// proxyV1Max is the longest v1 header, CRLF included (section 2.1).
	proxyV1Max = 107
	// proxyV2Max bounds a v2 header (16 bytes and the address block
	// with its TLVs). HAProxy sends well under 300; the format allows
	// 64 KiB, which no trusted proxy of ours needs.
	proxyV2Max = 4096
)

// proxyState is what the first bytes of a connection say about a PROXY
// header.
type proxyState uint8

const (
	proxyNone      proxyState = iota // no header: the request starts here
	proxyMore                        // too few bytes to tell, or a header still arriving
	proxyComplete                    // a whole header of n bytes
	proxyMalformed                   // a header that can never be complete
)

// proxyHeaderLen tells whether b starts with a PROXY header and, once it
// is whole, its length. go-proxyproto cannot tell a header cut short from
// a bad one, so completeness is decided here before it parses. Pure.
func proxyHeaderLen(b []byte) (proxyState, int) {
	switch {
	case len(b) == 0:
		return proxyMore, 0
	case bytes.HasPrefix(b, proxyV2Sig):
		if len(b) < 16 {
			return proxyMore, 0
		}
		n := 16 + int(binary.BigEndian.Uint16(b[14:16]))
		if n > proxyV2Max {
			return proxyMalformed, 0
		}
		if len(b) < n {
			return proxyMore, 0
		}
		return proxyComplete, n
	case bytes.HasPrefix(proxyV2Sig, b[:min(len(b), len(proxyV2Sig))]):
		return proxyMore, 0
	case bytes.HasPrefix(b, proxyV1Prefix):
		if i := bytes.IndexByte(b[:min(len(b), proxyV1Max)], '\n'); i >= 0 {
			return proxyComplete, i + 1
		}
		if len(b) >= proxyV1Max {
			return proxyMalformed, 0
		}
		return proxyMore, 0
	case bytes.HasPrefix(proxyV1Prefix, b[:min(len(b), len(proxyV1Prefix))]):
		return proxyMore, 0
	}
	return proxyNone, 0
}

var errProxyNotTCP = errors.New("server: PROXY header without a TCP source")

// parseProxyHeader parses the complete header hdr with go-proxyproto and
// returns the client's address. ok is false for a LOCAL header (a
// health check of the proxy itself) or one that carries no TCP source
// (UNKNOWN): the socket's peer stands. Pure; hdr is not kept.
func parseProxyHeader(hdr []byte) (src netip.AddrPort, ok bool, err error) {
	// bufio's smallest buffer holds a v2 address block in one fill;
	// the reader gets exactly the header, so it cannot read past it.
	h, err := proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(hdr), 256))
	if err != nil {
		return src, false, err
	}
	if h.Command.IsLocal() {
		return src, false, nil
	}
	ta, isTCP := h.SourceAddr.(*net.TCPAddr)
	if !isTCP {
		if h.TransportProtocol == proxyproto.UNSPEC {
			return src, false, nil
		}
		return src, false, errProxyNotTCP
	}
	return ta.AddrPort(), true, nil
}

// trustedProxy reports whether a is in Config.TrustedProxies.
func (s *Server) trustedProxy(a net.Addr) bool {
	if len(s.proxies) == 0 {
		return false
	}
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	return ok && s.trustedIP(ip.Unmap())
}

func (s *Server) trustedIP(ip netip.Addr) bool {
	for _, p := range s.proxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// proxyHeader handles the PROXY header at the start of cn's bytes, buf
// (Peek'd, not kept): from a trusted proxy it is parsed, consumed and
// its source becomes cn's address; from anyone else, the connection is
// refused. done is false while the connection must wait for more bytes
// or was refused (a says which). Event-loop only.
func (s *Server) proxyHeader(cn *conn, buf []byte) (a gnet.Action, done bool) {
	state, n := proxyHeaderLen(buf)
	switch state {
	case proxyNone:
		cn.set(flagProxyChecked, true)
		return gnet.None, true
	case proxyMore:
		if !s.trustedProxy(cn.gc.RemoteAddr()) && len(buf) >= len(proxyV1Prefix) {
			// "PROXY " or the v2 signature's first bytes from a
			// client: no need to wait for the rest to refuse it.
			return s.refuse(cn, refuseUntrustedProxy, http.StatusBadRequest, "PROXY protocol header from an address not in TRUSTED_PROXIES"), false
		}
		return gnet.None, false
	}
	if !s.trustedProxy(cn.gc.RemoteAddr()) {
		return s.refuse(cn, refuseUntrustedProxy, http.StatusBadRequest, "PROXY protocol header from an address not in TRUSTED_PROXIES"), false
	}
	if state == proxyMalformed {
		return s.refuse(cn, refuseBadProxyHeader, http.StatusBadRequest, "malformed PROXY protocol header"), false
	}
	src, ok, err := parseProxyHeader(buf[:n])
	if err != nil {
		return s.refuse(cn, refuseBadProxyHeader, http.StatusBadRequest, "malformed PROXY protocol header"), false
	}
	_, _ = cn.gc.Discard(n)
	cn.set(flagProxyChecked, true)
	if ok {
		s.setPeer(cn, src)
	}
	return gnet.None, true
}

// forwardedFor applies the X-Forwarded-For values xff (every such
// header, in order; nil when none) of a request on cn: from a trusted
// peer, the client is the last address not itself a trusted proxy;
// from anyone else the header is refused. ok is false when the request
// was refused (a is the action). Event-loop only.
func (s *Server) forwardedFor(cn *conn, xff []string) (a gnet.Action, ok bool) {
	if xff == nil {
		return gnet.None, true
	}
	if !s.trustedProxy(s.peer(cn)) {
		return s.refuse(cn, refuseUntrustedProxy, http.StatusBadRequest, "X-Forwarded-For from an address not in TRUSTED_PROXIES"), false
	}
	ip, ok := s.clientOf(xff)
	if !ok {
		return s.refuse(cn, refuseBadProxyHeader, http.StatusBadRequest, "malformed X-Forwarded-For"), false
	}
	s.setPeer(cn, netip.AddrPortFrom(ip, 0))
	return gnet.None, true
}

// clientOf walks X-Forwarded-For from the right (the entry the nearest
// proxy added) past the trusted proxies to the client. Every proxy
// appends what it saw, so only the entries added by trusted ones can be
// believed; the first untrusted one is the client. Pure but for the
// trusted set.
func (s *Server) clientOf(xff []string) (netip.Addr, bool) {
	var entries []string
	for _, v := range xff {
		entries = append(entries, strings.Split(v, ",")...)
	}
	var last netip.Addr
	for i := len(entries) - 1; i >= 0; i-- {
		e := strings.TrimSpace(entries[i])
		ip, err := netip.ParseAddr(e)
		if err != nil {
			ap, err := netip.ParseAddrPort(e)
			if err != nil {
				return netip.Addr{}, false
			}
			ip = ap.Addr()
		}
		ip = ip.Unmap()
		if !s.trustedIP(ip) {
			return ip, true
		}
		last = ip
	}
	return last, last.IsValid()
}

// setPeer records cn's real address. Event-loop only.
func (s *Server) setPeer(cn *conn, a netip.AddrPort) {
	s.peers[cn.loop.idx][cn] = a
	cn.set(flagProxied, true)
}

// peer returns cn's client address: the one a trusted proxy gave, else
// the socket's. Event-loop only.
func (s *Server) peer(cn *conn) net.Addr {
	if cn.is(flagProxied) {
		if a, ok := s.peers[cn.loop.idx][cn]; ok {
			return net.TCPAddrFromAddrPort(a)
		}
	}
	return cn.gc.RemoteAddr()
}

package server

// Admission: the HTTP upgrade (a fast path on gobwas/ws, the net/http
// path for everything else), Origin, token and connection limits.
// Event-loop only.

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
	"github.com/wsgw/gateway/auth"
)

// upgradeState is one event loop's WebSocket upgrader: gobwas/ws parses
// the request head straight from gnet's buffer and reports the request
// target and the headers the gateway needs through callbacks, into this
// state, which the next upgrade on the loop reuses. So an upgrade costs a
// few small allocations instead of net/http's request, header map and
// strings (BenchmarkHandshake): less CPU per connect, and less garbage
// left in the heap after a connect burst, which an idle gateway's RSS
// would otherwise carry (the budget is 1 KiB per idle socket).
//
// Event-loop only: each loop owns one, and an upgrade runs from start to
// end inside one OnTraffic call, so the callbacks never interleave.
type upgradeState struct {
	upgrader ws.Upgrader
	in       bytes.Reader
	out      bytes.Buffer
	rw       struct {
		io.Reader
		io.Writer
	}

	// What the callbacks saw of the current request.
	echo, wsPath         bool
	query, authorization []byte
	origin               []byte
	hasOrigin, hasAuthz  bool
	xff                  []string // X-Forwarded-For values, in order; nil when none
}

func newUpgradeState() *upgradeState {
	u := &upgradeState{}
	u.rw.Reader, u.rw.Writer = &u.in, &u.out
	// permessage-deflate and subprotocols are not negotiated,
	// as in Server.upgrader.
	u.upgrader = ws.Upgrader{
		OnRequest: u.onRequest,
		OnHeader:  u.onHeader,
	}
	return u
}

func (u *upgradeState) onRequest(uri []byte) error {
	path, query, _ := bytes.Cut(uri, []byte{'?'})
	u.wsPath = string(path) == "/ws"
	u.echo = string(path) == "/echo"
	u.query = append(u.query[:0], query...)
	return nil
}

func (u *upgradeState) onHeader(key, value []byte) error {
	// First occurrence wins, as with net/http's Header.Get.
	switch {
	case !u.hasOrigin && bytes.EqualFold(key, []byte("Origin")):
		u.origin, u.hasOrigin = append(u.origin[:0], value...), true
	case !u.hasAuthz && bytes.EqualFold(key, []byte("Authorization")):
		u.authorization, u.hasAuthz = append(u.authorization[:0], value...), true
	case bytes.EqualFold(key, []byte("X-Forwarded-For")):
		// Every one counts: proxies may append their own header.
		u.xff = append(u.xff, string(value))
	}
	return nil
}

// upgrade is the fast path of a handshake: done is false, and nothing was
// written, unless head is a valid WebSocket upgrade of /ws (or /echo when
// enabled) by gobwas/ws's reading; everything else, errors included, goes
// to Server.slowHandshake, which answers it as before. Event-loop only.
func (u *upgradeState) upgrade(s *Server, cn *conn, head []byte) (a gnet.Action, done bool) {
	// gobwas/ws takes any HTTP/1.x version from 1.1 up (say "HTTP/1.10"),
	// net/http only well-formed ones: leave anything but the HTTP/1.1
	// every client sends to the net/http path (FuzzUpgradeFastPath).
	line, _, _ := bytes.Cut(head, []byte{'\n'})
	if !bytes.HasSuffix(bytes.TrimSuffix(line, []byte{'\r'}), []byte(" HTTP/1.1")) {
		return gnet.None, false
	}
	u.in.Reset(head)
	u.out.Reset()
	u.wsPath, u.echo, u.hasOrigin, u.hasAuthz = false, false, false, false
	u.query, u.origin, u.authorization, u.xff = u.query[:0], u.origin[:0], u.authorization[:0], nil
	if _, err := u.upgrader.Upgrade(&u.rw); err != nil {
		return gnet.None, false
	}
	echo := u.echo && s.cfg.Echo
	if !u.wsPath && !echo {
		return gnet.None, false
	}
	if a, ok := s.forwardedFor(cn, u.xff); !ok {
		return a, true
	}
	id, role, a, ok := s.admit(cn, u.originAllowed(s), string(u.query), string(u.authorization))
	if !ok {
		return a, true
	}
	return s.open(cn, echo, id, role, u.out.Bytes(), len(head)), true
}

// originAllowed is Server.originAllowed on the Origin bytes, without
// making a string of them.
func (u *upgradeState) originAllowed(s *Server) bool {
	if !u.hasOrigin || len(u.origin) == 0 || len(s.cfg.AllowedOrigins) == 0 {
		return true
	}
	for _, o := range s.cfg.AllowedOrigins {
		if string(u.origin) == o {
			return true
		}
	}
	return false
}

// handshake waits for a complete HTTP request head, then answers it: a
// WebSocket upgrade on /ws, or a plain HTTP response that closes the
// connection. Event-loop only.
func (s *Server) handshake(cn *conn) gnet.Action {
	c := cn.gc
	if cn.is(flagAnswered) {
		// One request per connection: whatever follows it is ignored.
		_, _ = c.Discard(-1)
		return gnet.None
	}
	buf, _ := c.Peek(-1)
	if !cn.is(flagProxyChecked) {
		// Before the head: a PROXY v2 header starts with CRLFCRLF.
		a, done := s.proxyHeader(cn, buf)
		if !done {
			return a
		}
		if buf, _ = c.Peek(-1); len(buf) == 0 {
			return gnet.None // the header came alone (a proxy's health check does)
		}
	}
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		if len(buf) > s.cfg.MaxHeaderBytes {
			return s.refuse(cn, refuseHeadTooLarge, http.StatusRequestHeaderFieldsTooLarge, "request head too large")
		}
		return gnet.None
	}
	headLen := end + 4
	if headLen > s.cfg.MaxHeaderBytes {
		return s.refuse(cn, refuseHeadTooLarge, http.StatusRequestHeaderFieldsTooLarge, "request head too large")
	}
	head := buf[:headLen]
	if a, done := cn.loop.up.upgrade(s, cn, head); done {
		return a
	}
	return s.slowHandshake(cn, head)
}

// slowHandshake answers everything the fast path (upgradeState.upgrade)
// did not upgrade: plain HTTP (/health, /stats, the demo page, 404s),
// malformed requests, WebSocket requests gobwas/ws refuses, and any that
// admit refuses. It parses with net/http, then applies the same checks in
// the same order, so every answer is what it was before the fast path
// existed. Event-loop only.
func (s *Server) slowHandshake(cn *conn, head []byte) gnet.Action {
	c := cn.gc
	req, err := http.ReadRequest(bufio.NewReaderSize(bytes.NewReader(head), len(head)))
	if err != nil {
		return s.refuse(cn, refuseMalformed, http.StatusBadRequest, "malformed HTTP request")
	}
	if a, ok := s.forwardedFor(cn, req.Header.Values("X-Forwarded-For")); !ok {
		return a
	}
	path := req.URL.Path
	isWS := hasToken(req.Header.Get("Connection"), "upgrade") && strings.EqualFold(req.Header.Get("Upgrade"), "websocket")
	wsPath := path == "/ws" || (s.cfg.Echo && path == "/echo")
	if !isWS || !wsPath {
		_, _ = c.Write(s.plainHTTP(req.Method, path, isWS))
		cn.setCloseReason("plain HTTP")
		if c.OutboundBuffered() > 0 {
			// Closing now would lose what the socket did not take:
			// gnet tries one more write and discards the rest (tens
			// of KiB of a demo asset on a real network).
			// gnet flushes it as the peer reads; the sweep closes.
			cn.set(flagAnswered, true)
			_, _ = c.Discard(-1)
			return gnet.None
		}
		return gnet.Close
	}
	origin := req.Header.Get("Origin")
	id, role, a, ok := s.admit(cn, s.originAllowed(origin), req.URL.RawQuery, req.Header.Get("Authorization"))
	if !ok {
		return a
	}
	var out bytes.Buffer
	if _, err := s.upgrader.Upgrade(struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(head), &out}); err != nil {
		s.releaseIP(s.peer(cn))
		// gobwas/ws has already written the matching 4xx response.
		_, _ = c.Write(out.Bytes())
		cn.setCloseReason("bad upgrade: " + err.Error())
		s.ctr.refuse(refuseBadUpgrade)
		return gnet.Close
	}
	return s.open(cn, path == "/echo", id, role, out.Bytes(), len(head))
}

// originAllowed applies ALLOWED_ORIGINS: no Origin header (a non-browser
// client) or no list allows the upgrade.
func (s *Server) originAllowed(origin string) bool {
	return origin == "" || len(s.cfg.AllowedOrigins) == 0 || slices.Contains(s.cfg.AllowedOrigins, origin)
}

// admit applies the checks every upgrade goes through, in this order:
// shutdown, Origin, token, connection limits, accept pacing, per-IP
// limit. A refused request has its answer written and gets ok == false
// with the action to return. An admitted one holds a per-IP slot, which
// open (or the caller, if the upgrade then fails) gives back on failure.
// Event-loop only.
func (s *Server) admit(cn *conn, originOK bool, rawQuery, authorization string) (id auth.Identity, role uint16, a gnet.Action, ok bool) {
	if s.draining.Load() {
		return id, 0, s.refuse(cn, refuseShuttingDown, http.StatusServiceUnavailable, "server is shutting down"), false
	}
	if !originOK {
		return id, 0, s.refuse(cn, refuseOrigin, http.StatusForbidden, "origin not allowed"), false
	}
	token, err := auth.TokenFromRequest(rawQuery, authorization)
	if err == nil {
		id, err = s.authn.Authenticate(token, time.Now())
	}
	if err == nil {
		role, err = s.roleIndex(id.Role)
	}
	if err != nil {
		s.log.Info("upgrade refused", "remote", s.peer(cn).String(), "reason", err)
		return id, 0, s.refuse(cn, refuseUnauthorized, http.StatusUnauthorized, "unauthorized"), false
	}
	if s.cfg.MaxConnections > 0 && s.conns.Load() >= int64(s.cfg.MaxConnections) {
		return id, 0, s.refuse(cn, refuseMaxConnections, http.StatusServiceUnavailable, "too many connections"), false
	}
	if !s.acceptRate.allow(time.Now()) {
		return id, 0, s.refuse(cn, refuseRateLimited, http.StatusServiceUnavailable, "too many new connections: retry shortly"), false
	}
	if !s.acquireIP(s.peer(cn)) {
		return id, 0, s.refuse(cn, refusePerIP, http.StatusServiceUnavailable, "too many connections from this address"), false
	}
	return id, role, gnet.None, true
}

// open completes an admitted upgrade whose 101 response is resp: it
// claims the connection slot, sends resp, drops the request head (headLen
// bytes) and makes cn a WebSocket. Event-loop only.
func (s *Server) open(cn *conn, echo bool, id auth.Identity, role uint16, resp []byte, headLen int) gnet.Action {
	c := cn.gc
	// The MaxConnections check in admit is only the cheap early refusal:
	// every event loop upgrades at once, so the slot is claimed
	// atomically here, before the 101 goes out.
	if n := s.conns.Add(1); s.cfg.MaxConnections > 0 && n > int64(s.cfg.MaxConnections) {
		s.conns.Add(-1)
		s.releaseIP(s.peer(cn))
		return s.refuse(cn, refuseMaxConnections, http.StatusServiceUnavailable, "too many connections")
	}
	_, _ = c.Write(resp)
	_, _ = c.Discard(headLen)

	now := time.Now().UnixNano()
	cn.state = stateOpen
	cn.set(flagEcho, echo)
	cn.role = role
	if !id.Expires.IsZero() {
		cn.expires = expiryNanos(id.Expires)
	}
	cn.lastRead = now
	cn.reader.MaxMessage = s.cfg.MaxMessageBytes
	if echo {
		cn.reader.MaxMessage = s.cfg.EchoMaxMessageBytes
	}
	if s.log.Enabled(context.Background(), slog.LevelInfo) {
		// Guarded: the address string is garbage of every connect.
		s.log.Info("connection opened", "remote", s.peer(cn).String(), "role", id.Role, "auth", id.Method)
	}
	return gnet.None
}

// maxExpiry is the latest instant whose Unix nanoseconds fit an int64
// (April 2262). time.Time.UnixNano is undefined past it, and a token's
// exp may lie far beyond (9999-12-31, or 1e13 seconds).
var maxExpiry = time.Unix(0, math.MaxInt64)

// expiryNanos is t in Unix nanoseconds, clamped to maxExpiry: a token
// valid past 2262 is valid for the connection's whole life.
func expiryNanos(t time.Time) int64 {
	if t.After(maxExpiry) {
		return math.MaxInt64
	}
	return t.UnixNano()
}

// refuse answers the upgrade with an HTTP error and closes: a refused
// client never holds an accepted WebSocket.
func (s *Server) refuse(cn *conn, why refuseReason, status int, msg string) gnet.Action {
	s.ctr.refuse(why)
	if status == http.StatusServiceUnavailable {
		// Every 503 here is temporary (shutting down, full, this
		// address's share taken): RFC 9110 §10.2.3 lets a client that
		// honours it come back in a second rather than guess.
		_, _ = cn.gc.Write(appendHTTP(nil, status, "text/plain; charset=utf-8", "Retry-After: 1\r\n", []byte(msg+"\n")))
	} else {
		_, _ = cn.gc.Write(httpError(status, msg))
	}
	cn.setCloseReason(msg)
	return gnet.Close
}

func remoteIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return a.String()
}

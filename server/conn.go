package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unique"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/wsgw/gateway/auth"
	"github.com/wsgw/gateway/fanout"
	"github.com/wsgw/gateway/wsproto"
)

// Connection states. Ordered: comparisons like state >= stateOpen mean
// "was upgraded".
const (
	stateHandshake uint8 = iota
	stateOpen
	stateClosing // our close frame is sent; waiting for the peer's
	stateClosed
)

// conn is one client connection. Event-loop only: every field is touched
// only on the loop that owns gc (house rule 2), except sub, whose queue is
// fed by the shard goroutine through its own atomics.
//
// It is kept small on purpose: an idle subscribed socket must cost under
// 1 KiB of gateway memory in total (issue 2), gnet's own connection takes
// about 400 B of it, so the fanout Subscriber is embedded (one allocation
// per socket, not two), fields are packed, and state that few connections
// ever need lives behind cold. TestConnSize pins the size class.
type conn struct {
	// sub.Tag is the connection's index in loop.conns.
	sub  fanout.Subscriber
	gc   gnet.Conn
	loop *loopState
	cold *connCold // nil until needed

	// Subscriptions as the client sees them; the hub holds the streams.
	// Interned: the 10,000 subscribers of a channel share its name.
	chans []unique.Handle[string]

	reader wsproto.Reader

	since    int64 // accept time, unix nanos
	lastRead int64 // last inbound frame; flagPinged is cleared with it
	expires  int64 // token expiry, 0 = never
	// tat is the inbound rate limit as a GCRA ("theoretical arrival
	// time", equivalent to a token bucket refilled at
	// MaxMessagesPerSecond with as many tokens of burst): one word
	// instead of a token count and a refill time.
	tat  int64
	sent uint64 // frames written, for the close log line

	strikes int32  // refusals since the rate-limit bucket was last full
	role    uint16 // index in Server.roles
	state   uint8
	flags   connFlags
}

type connFlags uint8

const (
	// flagBlocked: waiting in loop.blocked for its outbound buffer to
	// drain.
	flagBlocked connFlags = 1 << iota
	// flagEcho: an /echo connection (conformance mode).
	flagEcho
	// flagAnswered: a plain-HTTP response is still draining; the sweep
	// closes the connection once gnet has flushed it.
	flagAnswered
	// flagPinged: a ping went out and nothing has been read since. The
	// sweep pings a connection silent for PingInterval and closes one
	// still silent PingTimeout after its last frame (RFC 6455 §5.5.2).
	flagPinged
)

func (cn *conn) is(f connFlags) bool { return cn.flags&f != 0 }

func (cn *conn) set(f connFlags, on bool) {
	if on {
		cn.flags |= f
	} else {
		cn.flags &^= f
	}
}

// connCold is the state of a connection that is closing, staging a large
// frame or dropping frames: allocated on first use, never for an idle
// socket.
type connCold struct {
	// stage holds the inbound bytes of a large frame still arriving (see
	// stageAbove); nil otherwise.
	stage       []byte
	closeReason string
	closeSent   int64  // when our close frame went out
	dropsSeen   uint64 // sub.Dropped() at the last sweep
	fullSince   int64  // start of the current run of drops, 0 when none
}

// c returns the cold state, allocating it.
func (cn *conn) c() *connCold {
	if cn.cold == nil {
		cn.cold = new(connCold)
	}
	return cn.cold
}

func (cn *conn) closeReason() string {
	if cn.cold == nil {
		return ""
	}
	return cn.cold.closeReason
}

func (cn *conn) setCloseReason(r string) { cn.c().closeReason = r }

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
	path := req.URL.Path
	isWS := hasToken(req.Header.Get("Connection"), "upgrade") && strings.EqualFold(req.Header.Get("Upgrade"), "websocket")
	wsPath := path == "/ws" || (s.cfg.Echo && path == "/echo")
	if !isWS || !wsPath {
		_, _ = c.Write(s.plainHTTP(req.Method, path, isWS))
		cn.setCloseReason("plain HTTP")
		if c.OutboundBuffered() > 0 {
			// Closing now would lose what the socket did not take:
			// gnet tries one more write and discards the rest (tens
			// of KiB of a demo asset on a real network, issue 7).
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
		s.releaseIP(c.RemoteAddr())
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
	c := cn.gc
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
		s.log.Info("upgrade refused", "remote", c.RemoteAddr().String(), "reason", err)
		return id, 0, s.refuse(cn, refuseUnauthorized, http.StatusUnauthorized, "unauthorized"), false
	}
	if s.cfg.MaxConnections > 0 && s.conns.Load() >= int64(s.cfg.MaxConnections) {
		return id, 0, s.refuse(cn, refuseMaxConnections, http.StatusServiceUnavailable, "too many connections"), false
	}
	if !s.acceptRate.allow(time.Now()) {
		_, _ = c.Write(appendHTTP(nil, http.StatusServiceUnavailable, "text/plain; charset=utf-8",
			"Retry-After: 1\r\n", []byte("too many new connections: retry shortly\n")))
		cn.setCloseReason("connection rate limit")
		s.ctr.refuse(refuseRateLimited)
		return id, 0, gnet.Close, false
	}
	if !s.acquireIP(c.RemoteAddr()) {
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
	// atomically here, before the 101 goes out (issue 3).
	if n := s.conns.Add(1); s.cfg.MaxConnections > 0 && n > int64(s.cfg.MaxConnections) {
		s.conns.Add(-1)
		s.releaseIP(c.RemoteAddr())
		return s.refuse(cn, refuseMaxConnections, http.StatusServiceUnavailable, "too many connections")
	}
	_, _ = c.Write(resp)
	_, _ = c.Discard(headLen)

	now := time.Now().UnixNano()
	cn.state = stateOpen
	cn.set(flagEcho, echo)
	cn.role = role
	if !id.Expires.IsZero() {
		cn.expires = id.Expires.UnixNano()
	}
	cn.lastRead = now
	cn.reader.MaxMessage = s.cfg.MaxMessageBytes
	if echo {
		cn.reader.MaxMessage = s.cfg.EchoMaxMessageBytes
	}
	if s.log.Enabled(context.Background(), slog.LevelInfo) {
		// Guarded: the address string is garbage of every connect.
		s.log.Info("connection opened", "remote", c.RemoteAddr().String(), "role", id.Role, "auth", id.Method)
	}
	return gnet.None
}

// refuse answers the upgrade with an HTTP error and closes: a refused
// client never holds an accepted WebSocket (issue 3).
func (s *Server) refuse(cn *conn, why refuseReason, status int, msg string) gnet.Action {
	s.ctr.refuse(why)
	_, _ = cn.gc.Write(httpError(status, msg))
	cn.setCloseReason(msg)
	return gnet.Close
}

func remoteIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return a.String()
}

// frames reads every complete frame in the inbound buffer. Event-loop only.
func (s *Server) frames(cn *conn) gnet.Action {
	c := cn.gc
	buf, _ := c.Peek(-1)
	staged := cn.cold != nil && cn.cold.stage != nil
	if staged {
		// gnet's buffer is kept empty while staging, so this Peek was a
		// view of the last read, copied once here.
		cn.cold.stage = append(cn.cold.stage, buf...)
		if len(buf) > 0 {
			_, _ = c.Discard(len(buf))
		}
		buf = cn.cold.stage
	}
	off := 0
	action := gnet.None
	for off < len(buf) && cn.state < stateClosed && action == gnet.None {
		ev, n, err := cn.reader.Next(buf[off:])
		if err != nil {
			var r wsproto.CloseReason
			if !errors.As(err, &r) {
				r = wsproto.CloseProtocol
			}
			cn.fail(r)
			off = len(buf)
			action = gnet.Close
			break
		}
		if n == 0 {
			break
		}
		off += n
		cn.lastRead = time.Now().UnixNano()
		cn.flags &^= flagPinged
		action = s.event(cn, ev)
	}
	// Every byte up to off belongs to frames handled above; their
	// payloads are not referenced past this point. Discard(0) would
	// discard everything in gnet, so a partial frame is left alone.
	switch {
	case staged:
		if off > 0 {
			cn.cold.stage = cn.cold.stage[:copy(cn.cold.stage, cn.cold.stage[off:])]
		}
		if len(cn.cold.stage) == 0 {
			cn.cold.stage = nil
		}
	case action == gnet.None && cn.state == stateOpen && len(buf)-off >= stageAbove:
		cn.c().stage = append(make([]byte, 0, 2*(len(buf)-off)), buf[off:]...)
		_, _ = c.Discard(len(buf))
	case off > 0:
		_, _ = c.Discard(off)
	}
	return action
}

// stageAbove: once this many bytes of one incomplete frame are buffered,
// frames moves them out of gnet's inbound buffer into conn.stage and
// keeps appending there until the stage is parsed empty. Peek copies all
// of gnet's buffered bytes into a fresh slice whenever they span more
// than one read, so re-peeking a frame of several MiB (the echo's limit,
// issue 8) on every 64 KiB read would copy O(n²) bytes; staged, each
// byte is copied once. The stage is bounded by the Reader's MaxMessage,
// which rejects a larger frame from its header.
const stageAbove = 64 << 10

// event handles one frame or message. Event-loop only.
func (s *Server) event(cn *conn, ev wsproto.Event) gnet.Action {
	switch ev.Kind {
	case wsproto.KindPing:
		// Pings are not rate limited: a peer that sends them without
		// reading would grow gnet's outbound buffer by every pong. While
		// it does not read what it is already owed, its pings go
		// unanswered (RFC 6455 §5.5.3 lets an endpoint answer only the
		// latest one; issue 3, hostile input).
		if cn.state == stateOpen && (cn.is(flagEcho) || cn.gc.OutboundBuffered() < s.cfg.MaxOutboundBytes) {
			_, _ = cn.gc.Write(wsproto.AppendControl(nil, ws.OpPong, ev.Payload))
		}
	case wsproto.KindPong:
		// lastRead is already updated: that is all a pong is for.
	case wsproto.KindClose:
		if cn.state == stateOpen {
			// Echo the peer's code (RFC 6455 §5.5.1), then close
			// the TCP connection: the server closes first (§7.1.1).
			code := ev.CloseCode
			if code == ws.StatusNoStatusRcvd {
				_, _ = cn.gc.Write(wsproto.AppendControl(nil, ws.OpClose, nil))
			} else {
				_, _ = cn.gc.Write(wsproto.AppendClose(nil, code, ""))
			}
			cn.setCloseReason("client closed with " + strconv.Itoa(int(code)))
		} else if cn.closeReason() == "" {
			cn.setCloseReason("close handshake completed")
		}
		cn.state = stateClosing
		return gnet.Close
	case wsproto.KindMessage:
		if cn.state != stateOpen {
			return gnet.None // §5.5.1: after our close, data is ignored
		}
		if cn.is(flagEcho) {
			s.echo(cn, ev)
			return gnet.None
		}
		if ev.Op != ws.OpText {
			now := time.Now()
			if s.rateLimited(cn, now) {
				return gnet.None
			}
			s.ctr.command(0, resultBadRequest)
			cn.reply(wsproto.NewError(wsproto.CodeBadRequest, "binary messages are not supported: send JSON text", nil, nil, now))
			return gnet.None
		}
		return s.command(cn, ev.Payload)
	}
	return gnet.None
}

// reply writes a per-connection frame and releases it. A peer that keeps
// sending while it does not read what it is already owed (gnet's outbound
// buffer at MaxOutboundBytes) is closed with 1013 instead: writing would
// grow that buffer by every answer, as large as each request (issue 3).
func (cn *conn) reply(f *wsproto.Frame) {
	if cn.gc.OutboundBuffered() >= cn.loop.srv.cfg.MaxOutboundBytes {
		f.Release()
		cn.startClose(wsproto.CloseSlowConsumer)
		return
	}
	_, _ = cn.gc.Write(f.Bytes())
	f.Release()
}

// startClose sends a close frame and waits (up to closeGrace, see sweep)
// for the peer's answer before closing TCP.
func (cn *conn) startClose(r wsproto.CloseReason) {
	if cn.state != stateOpen {
		return
	}
	_, _ = cn.gc.Write(wsproto.AppendClose(nil, r.Code, r.Text))
	cn.state = stateClosing
	cn.c().closeSent = time.Now().UnixNano()
	cn.setCloseReason(r.Text)
}

// fail sends a close frame for a protocol violation; the caller closes the
// TCP connection right away (RFC 6455 §7.1.7, "fail the connection").
func (cn *conn) fail(r wsproto.CloseReason) {
	if cn.state == stateOpen {
		_, _ = cn.gc.Write(wsproto.AppendClose(nil, r.Code, r.Text))
	}
	cn.state = stateClosing
	cn.setCloseReason(r.Text)
}

// allow takes one token from the connection's bucket: GCRA with an
// emission interval of 1s/rate and a burst of rate messages. The bucket is
// full when tat is not ahead of now.
func (cn *conn) allow(rate int) bool {
	now := time.Now().UnixNano()
	interval := int64(time.Second) / int64(rate)
	tat := max(cn.tat, now)
	if tat == now {
		cn.strikes = 0
	}
	if tat-now > int64(rate-1)*interval {
		if cn.strikes < math.MaxInt32 {
			cn.strikes++
		}
		return false
	}
	cn.tat = tat + interval
	return true
}

// rateLimited takes one token of the inbound message budget. Without one
// it answers rate_limited, or closes with 1008 a client that keeps going,
// and reports true. Every message counts, binary ones included: each is
// answered, so none may be a way around the limit (issue 3).
func (s *Server) rateLimited(cn *conn, now time.Time) bool {
	if cn.allow(s.cfg.MaxMessagesPerSecond) {
		return false
	}
	s.ctr.command(0, resultRateLimited)
	if int(cn.strikes) > s.cfg.MaxMessagesPerSecond {
		cn.startClose(wsproto.CloseRateLimited)
		return true
	}
	cn.reply(wsproto.NewError(wsproto.CodeRateLimited, "too many messages: slow down", nil, nil, now))
	return true
}

// command parses and executes one client command. Event-loop only.
func (s *Server) command(cn *conn, p []byte) gnet.Action {
	now := time.Now()
	if s.rateLimited(cn, now) {
		return gnet.None
	}
	cmd, cerr := wsproto.ParseCommand(p)
	if cerr != nil {
		s.ctr.command(0, resultOf(cerr.Code))
		cn.reply(wsproto.NewError(cerr.Code, cerr.Message, cerr.Channels, cerr.RequestID, now))
		return gnet.None
	}
	switch cmd.Action {
	case wsproto.ActionPing:
		s.ctr.command(cmd.Action, resultOK)
		cn.reply(wsproto.NewPong(cmd.RequestID, now))
	case wsproto.ActionSubscribe:
		s.subscribe(cn, cmd, now)
	case wsproto.ActionUnsubscribe:
		var del []string
		for _, ch := range cmd.Channels {
			if i := cn.follows(ch); i >= 0 {
				cn.chans = slices.Delete(cn.chans, i, i+1)
				del = append(del, ch)
			}
		}
		if len(cn.chans) == 0 {
			cn.chans = nil // give the array back
		}
		s.ctr.command(cmd.Action, resultOK)
		s.hub.Unsubscribe(&cn.sub, del, cmd.Channels, cmd.RequestID)
	}
	return gnet.None
}

// follows returns the index of ch in cn.chans, or -1.
func (cn *conn) follows(ch string) int {
	for i, h := range cn.chans {
		if h.Value() == ch {
			return i
		}
	}
	return -1
}

// subscribe applies the ACL and the per-connection limits to the whole
// request before changing anything: a request is all or nothing.
func (s *Server) subscribe(cn *conn, cmd wsproto.Command, now time.Time) {
	var forbidden, add []string
	addPatterns := 0
	role := s.roles[cn.role]
	for _, ch := range cmd.Channels {
		if !s.acl.Allowed(role, ch) {
			forbidden = append(forbidden, ch)
			continue
		}
		if cn.follows(ch) < 0 && !slices.Contains(add, ch) {
			add = append(add, ch)
			if auth.IsPattern(ch) {
				addPatterns++
			}
		}
	}
	patterns := 0
	for _, h := range cn.chans {
		if auth.IsPattern(h.Value()) {
			patterns++
		}
	}
	switch {
	case forbidden != nil:
		s.ctr.command(cmd.Action, resultForbidden)
		cn.reply(wsproto.NewError(wsproto.CodeForbidden, "role "+strconv.Quote(role)+" may not subscribe to these channels", forbidden, cmd.RequestID, now))
		return
	case len(cn.chans)+len(add) > s.cfg.MaxChannels:
		s.ctr.command(cmd.Action, resultTooManyChannels)
		cn.reply(wsproto.NewError(wsproto.CodeTooManyChannels,
			"at most "+strconv.Itoa(s.cfg.MaxChannels)+" channels per connection", add, cmd.RequestID, now))
		return
	case patterns+addPatterns > s.cfg.MaxWildcards:
		s.ctr.command(cmd.Action, resultTooManyWildcards)
		cn.reply(wsproto.NewError(wsproto.CodeTooManyWildcards,
			"at most "+strconv.Itoa(s.cfg.MaxWildcards)+" pattern subscriptions per connection", add, cmd.RequestID, now))
		return
	}
	if len(add) > 0 {
		// Exactly the size needed: most sockets follow one or two
		// channels for their whole life.
		cn.chans = slices.Grow(cn.chans, len(add))
		for _, ch := range add {
			cn.chans = append(cn.chans, unique.Make(ch))
		}
	}
	s.ctr.command(cmd.Action, resultOK)
	s.hub.Subscribe(&cn.sub, add, cmd.Channels, cmd.RequestID)
}

// echo sends a message back as it came (conformance mode, issue 8).
func (s *Server) echo(cn *conn, ev wsproto.Event) {
	var hdr [ws.MaxHeaderSize]byte
	h := ws.Header{Fin: true, OpCode: ev.Op, Length: int64(len(ev.Payload))}
	w := bytes.NewBuffer(hdr[:0])
	_ = ws.WriteHeader(w, h)
	_, _ = cn.gc.Writev([][]byte{w.Bytes(), ev.Payload})
}

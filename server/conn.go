package server

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

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
// 1 KiB of gateway memory in total (issue 2), and most of that goes to
// gnet's own connection.
type conn struct {
	gc    gnet.Conn
	loop  *loopState
	sub   *fanout.Subscriber
	idx   int32 // position in loop.conns
	state uint8

	blocked bool // waiting in loop.blocked for its outbound buffer to drain
	echo    bool // /echo connection (conformance mode)
	// answered: a plain-HTTP response is still draining; the sweep
	// closes the connection once gnet has flushed it.
	answered bool

	since     int64 // accept time, unix nanos
	lastRead  int64 // last inbound frame
	lastPing  int64
	closeSent int64
	expires   int64 // token expiry, 0 = never

	reader wsproto.Reader
	// stage holds the inbound bytes of a large frame still arriving (see
	// stageAbove); nil otherwise.
	stage []byte

	// No address is kept: gnet's conn holds it, and per-IP counting
	// recomputes it, so an idle socket carries no extra strings.
	role string

	// Subscriptions as the client sees them; the hub holds the streams.
	chans    []string
	patterns int

	// Inbound rate limit: a token bucket refilled at
	// MaxMessagesPerSecond; strikes counts refusals since the bucket was
	// last full.
	tokens     float64
	lastRefill int64
	strikes    int

	sent        uint64
	dropsSeen   uint64 // sub.Dropped() at the last sweep
	fullSince   int64  // start of the current run of drops, 0 when none
	closeReason string
}

// handshake waits for a complete HTTP request head, then answers it: a
// WebSocket upgrade on /ws, or a plain HTTP response that closes the
// connection. Event-loop only.
func (s *Server) handshake(cn *conn) gnet.Action {
	c := cn.gc
	if cn.answered {
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
	req, err := http.ReadRequest(bufio.NewReaderSize(bytes.NewReader(head), headLen))
	if err != nil {
		return s.refuse(cn, refuseMalformed, http.StatusBadRequest, "malformed HTTP request")
	}
	path := req.URL.Path
	isWS := hasToken(req.Header.Get("Connection"), "upgrade") && strings.EqualFold(req.Header.Get("Upgrade"), "websocket")
	wsPath := path == "/ws" || (s.cfg.Echo && path == "/echo")
	if !isWS || !wsPath {
		_, _ = c.Write(s.plainHTTP(req.Method, path, isWS))
		cn.closeReason = "plain HTTP"
		if c.OutboundBuffered() > 0 {
			// Closing now would lose what the socket did not take:
			// gnet tries one more write and discards the rest (tens
			// of KiB of a demo asset on a real network, issue 7).
			// gnet flushes it as the peer reads; the sweep closes.
			cn.answered = true
			_, _ = c.Discard(-1)
			return gnet.None
		}
		return gnet.Close
	}
	if s.draining.Load() {
		return s.refuse(cn, refuseShuttingDown, http.StatusServiceUnavailable, "server is shutting down")
	}
	if origin := req.Header.Get("Origin"); origin != "" && len(s.cfg.AllowedOrigins) > 0 &&
		!slices.Contains(s.cfg.AllowedOrigins, origin) {
		return s.refuse(cn, refuseOrigin, http.StatusForbidden, "origin not allowed")
	}
	token, err := auth.TokenFromRequest(req.URL.RawQuery, req.Header.Get("Authorization"))
	var id auth.Identity
	if err == nil {
		id, err = s.authn.Authenticate(token, time.Now())
	}
	if err != nil {
		s.log.Info("upgrade refused", "remote", c.RemoteAddr().String(), "reason", err)
		return s.refuse(cn, refuseUnauthorized, http.StatusUnauthorized, "unauthorized")
	}
	if s.cfg.MaxConnections > 0 && s.conns.Load() >= int64(s.cfg.MaxConnections) {
		return s.refuse(cn, refuseMaxConnections, http.StatusServiceUnavailable, "too many connections")
	}
	if !s.acceptRate.allow(time.Now()) {
		_, _ = c.Write(appendHTTP(nil, http.StatusServiceUnavailable, "text/plain; charset=utf-8",
			"Retry-After: 1\r\n", []byte("too many new connections: retry shortly\n")))
		cn.closeReason = "connection rate limit"
		s.ctr.refuse(refuseRateLimited)
		return gnet.Close
	}
	if !s.acquireIP(c.RemoteAddr()) {
		return s.refuse(cn, refusePerIP, http.StatusServiceUnavailable, "too many connections from this address")
	}

	var out bytes.Buffer
	if _, err := s.upgrader.Upgrade(struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(head), &out}); err != nil {
		s.releaseIP(c.RemoteAddr())
		// gobwas/ws has already written the matching 4xx response.
		_, _ = c.Write(out.Bytes())
		cn.closeReason = "bad upgrade: " + err.Error()
		s.ctr.refuse(refuseBadUpgrade)
		return gnet.Close
	}
	// The MaxConnections check above is only the cheap early refusal:
	// every event loop upgrades at once, so the slot is claimed
	// atomically here, before the 101 goes out (issue 3).
	if n := s.conns.Add(1); s.cfg.MaxConnections > 0 && n > int64(s.cfg.MaxConnections) {
		s.conns.Add(-1)
		s.releaseIP(c.RemoteAddr())
		return s.refuse(cn, refuseMaxConnections, http.StatusServiceUnavailable, "too many connections")
	}
	_, _ = c.Write(out.Bytes())
	_, _ = c.Discard(headLen)

	now := time.Now().UnixNano()
	cn.state = stateOpen
	cn.echo = path == "/echo"
	cn.role = id.Role
	if !id.Expires.IsZero() {
		cn.expires = id.Expires.UnixNano()
	}
	cn.lastRead, cn.lastPing, cn.lastRefill = now, now, now
	cn.tokens = float64(s.cfg.MaxMessagesPerSecond)
	cn.reader.MaxMessage = s.cfg.MaxMessageBytes
	if cn.echo {
		cn.reader.MaxMessage = s.cfg.EchoMaxMessageBytes
	}
	cn.sub = s.hub.NewSubscriber(cn.loop.idx, cn)
	s.log.Info("connection opened", "remote", c.RemoteAddr().String(), "role", cn.role, "auth", id.Method)
	return gnet.None
}

// refuse answers the upgrade with an HTTP error and closes: a refused
// client never holds an accepted WebSocket (issue 3).
func (s *Server) refuse(cn *conn, why refuseReason, status int, msg string) gnet.Action {
	s.ctr.refuse(why)
	_, _ = cn.gc.Write(httpError(status, msg))
	cn.closeReason = msg
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
	staged := cn.stage != nil
	if staged {
		// gnet's buffer is kept empty while staging, so this Peek was a
		// view of the last read, copied once here.
		cn.stage = append(cn.stage, buf...)
		if len(buf) > 0 {
			_, _ = c.Discard(len(buf))
		}
		buf = cn.stage
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
		action = s.event(cn, ev)
	}
	// Every byte up to off belongs to frames handled above; their
	// payloads are not referenced past this point. Discard(0) would
	// discard everything in gnet, so a partial frame is left alone.
	switch {
	case staged:
		if off > 0 {
			cn.stage = cn.stage[:copy(cn.stage, cn.stage[off:])]
		}
		if len(cn.stage) == 0 {
			cn.stage = nil
		}
	case action == gnet.None && cn.state == stateOpen && len(buf)-off >= stageAbove:
		cn.stage = append(make([]byte, 0, 2*(len(buf)-off)), buf[off:]...)
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
		if cn.state == stateOpen && (cn.echo || cn.gc.OutboundBuffered() < s.cfg.MaxOutboundBytes) {
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
			cn.closeReason = "client closed with " + strconv.Itoa(int(code))
		} else if cn.closeReason == "" {
			cn.closeReason = "close handshake completed"
		}
		cn.state = stateClosing
		return gnet.Close
	case wsproto.KindMessage:
		if cn.state != stateOpen {
			return gnet.None // §5.5.1: after our close, data is ignored
		}
		if cn.echo {
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
	cn.closeSent = time.Now().UnixNano()
	cn.closeReason = r.Text
}

// fail sends a close frame for a protocol violation; the caller closes the
// TCP connection right away (RFC 6455 §7.1.7, "fail the connection").
func (cn *conn) fail(r wsproto.CloseReason) {
	if cn.state == stateOpen {
		_, _ = cn.gc.Write(wsproto.AppendClose(nil, r.Code, r.Text))
	}
	cn.state = stateClosing
	cn.closeReason = r.Text
}

// allow takes one token from the connection's bucket.
func (cn *conn) allow(rate int) bool {
	now := time.Now().UnixNano()
	burst := float64(rate)
	cn.tokens += float64(now-cn.lastRefill) / 1e9 * float64(rate)
	cn.lastRefill = now
	if cn.tokens >= burst {
		cn.tokens = burst
		cn.strikes = 0
	}
	if cn.tokens < 1 {
		cn.strikes++
		return false
	}
	cn.tokens--
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
	if cn.strikes > s.cfg.MaxMessagesPerSecond {
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
			if i := slices.Index(cn.chans, ch); i >= 0 {
				cn.chans = slices.Delete(cn.chans, i, i+1)
				if auth.IsPattern(ch) {
					cn.patterns--
				}
				del = append(del, ch)
			}
		}
		s.ctr.command(cmd.Action, resultOK)
		s.hub.Unsubscribe(cn.sub, del, cmd.Channels, cmd.RequestID)
	}
	return gnet.None
}

// subscribe applies the ACL and the per-connection limits to the whole
// request before changing anything: a request is all or nothing.
func (s *Server) subscribe(cn *conn, cmd wsproto.Command, now time.Time) {
	var forbidden, add []string
	addPatterns := 0
	for _, ch := range cmd.Channels {
		if !s.acl.Allowed(cn.role, ch) {
			forbidden = append(forbidden, ch)
			continue
		}
		if !slices.Contains(cn.chans, ch) {
			add = append(add, ch)
			if auth.IsPattern(ch) {
				addPatterns++
			}
		}
	}
	switch {
	case forbidden != nil:
		s.ctr.command(cmd.Action, resultForbidden)
		cn.reply(wsproto.NewError(wsproto.CodeForbidden, "role "+strconv.Quote(cn.role)+" may not subscribe to these channels", forbidden, cmd.RequestID, now))
		return
	case len(cn.chans)+len(add) > s.cfg.MaxChannels:
		s.ctr.command(cmd.Action, resultTooManyChannels)
		cn.reply(wsproto.NewError(wsproto.CodeTooManyChannels,
			"at most "+strconv.Itoa(s.cfg.MaxChannels)+" channels per connection", add, cmd.RequestID, now))
		return
	case cn.patterns+addPatterns > s.cfg.MaxWildcards:
		s.ctr.command(cmd.Action, resultTooManyWildcards)
		cn.reply(wsproto.NewError(wsproto.CodeTooManyWildcards,
			"at most "+strconv.Itoa(s.cfg.MaxWildcards)+" pattern subscriptions per connection", add, cmd.RequestID, now))
		return
	}
	cn.chans = append(cn.chans, add...)
	cn.patterns += addPatterns
	s.ctr.command(cmd.Action, resultOK)
	s.hub.Subscribe(cn.sub, add, cmd.Channels, cmd.RequestID)
}

// echo sends a message back as it came (conformance mode, issue 8).
func (s *Server) echo(cn *conn, ev wsproto.Event) {
	var hdr [ws.MaxHeaderSize]byte
	h := ws.Header{Fin: true, OpCode: ev.Op, Length: int64(len(ev.Payload))}
	w := bytes.NewBuffer(hdr[:0])
	_ = ws.WriteHeader(w, h)
	_, _ = cn.gc.Writev([][]byte{w.Bytes(), ev.Payload})
}

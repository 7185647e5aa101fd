package server

import (
	"bytes"
	"errors"
	"strconv"
	"time"
	"unique"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

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
// only on the loop that owns gc, except sub, whose queue is
// fed by the shard goroutine through its own atomics.
//
// It is kept small on purpose: an idle subscribed socket must cost under
// 1 KiB of gateway memory in total, gnet's own connection takes
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
	sent uint64 // messages written (not control frames), for the close log line

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
	// flagProxyChecked: the connection's first bytes were looked at for
	// a PROXY protocol header (proxy.go).
	flagProxyChecked
	// flagProxied: a trusted proxy gave the client's address, kept in
	// Server.peers (proxy.go).
	flagProxied
	// flagViaHub: a subscribe or unsubscribe of the connection went
	// through the hub's control goroutine, so it may still be on its
	// way: the connection's later subscribes go the same way, in order
	// (fanout.Hub.JoinNow).
	flagViaHub
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
	dropsSeen   uint64 // sub.Dropped() at the last sweep
	fullSince   int64  // start of the current run of drops, 0 when none

	// The lingering close (closing.go), from the moment the gateway
	// decided to close.
	lingerUntil int64  // close then, unless the client makes progress
	lingerEnd   int64  // close then, progress or not
	outLeft     int    // gnet's outbound bytes at the last look
	lingered    uint64 // inbound bytes read while closing
	shut        bool   // the write side is shut down (SHUT_WR)
	skip        bool   // inbound bytes are discarded unparsed
	peerClosed  bool   // the client's close frame has arrived
	removed     bool   // Hub.Remove was called

	// An unfinished inbound message (see trackPartial): the bytes it
	// holds, as counted in Server.partial, and when it started; 0 when
	// none.
	partialHeld  int64
	partialSince int64
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

// frames reads every complete frame in the inbound buffer. Event-loop only.
func (s *Server) frames(cn *conn) gnet.Action {
	c := cn.gc
	if cn.state == stateClosing && cn.cold.skip {
		return cn.discard()
	}
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
	completed := false
	for off < len(buf) && cn.state < stateClosed && action == gnet.None {
		ev, n, err := cn.reader.Next(buf[off:])
		if err != nil {
			var r wsproto.CloseReason
			if !errors.As(err, &r) {
				r = wsproto.CloseProtocol
			}
			// The rest of the stream is out of step: dropped
			// here, and discarded as it arrives.
			cn.fail(r)
			off = len(buf)
			break
		}
		if n == 0 {
			break
		}
		off += n
		cn.lastRead = time.Now().UnixNano()
		cn.flags &^= flagPinged
		completed = completed || ev.Kind == wsproto.KindMessage
		action = s.event(cn, ev)
	}
	if held := cn.reader.Partial() + len(buf) - off; held > 0 || (cn.cold != nil && cn.cold.partialHeld != 0) {
		if !s.trackPartial(cn, held, completed) && action == gnet.None {
			s.releasePartial(cn)
			cn.fail(wsproto.ClosePartialFull)
			return gnet.Close
		}
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
	case action == gnet.None && cn.state <= stateClosing && len(buf)-off >= stageAbove:
		cn.c().stage = append(make([]byte, 0, 2*(len(buf)-off)), buf[off:]...)
		_, _ = c.Discard(len(buf))
	case off > 0:
		_, _ = c.Discard(off)
	}
	if cn.state == stateClosing && action == gnet.None {
		return cn.lingerRead(off)
	}
	return action
}

// trackPartial records that cn holds held bytes of an unfinished message
// (its reassembled fragments plus the unread bytes of the frame in
// progress) and when that message started: when cn held nothing, or
// when a message completed during this read. It reports false when the
// bytes held across all connections have grown past MaxPartialBytes.
// Event-loop only.
func (s *Server) trackPartial(cn *conn, held int, completed bool) bool {
	c := cn.c()
	delta := int64(held) - c.partialHeld
	c.partialHeld = int64(held)
	total := s.partial.Add(delta)
	switch {
	case held == 0:
		c.partialSince = 0
	case c.partialSince == 0 || completed:
		c.partialSince = time.Now().UnixNano()
	}
	return delta <= 0 || s.cfg.MaxPartialBytes == 0 || total <= int64(s.cfg.MaxPartialBytes)
}

// releasePartial drops cn's unfinished message, its reassembly buffer
// and its share of the bytes held: on close, or when cn is closed for
// holding them. Event-loop only.
func (s *Server) releasePartial(cn *conn) {
	cn.reader.Reset()
	if cn.cold == nil {
		return
	}
	cn.cold.stage = nil
	if cn.cold.partialHeld != 0 {
		s.partial.Add(-cn.cold.partialHeld)
	}
	cn.cold.partialHeld, cn.cold.partialSince = 0, 0
}

// stageAbove: once this many bytes of one incomplete frame are buffered,
// frames moves them out of gnet's inbound buffer into conn.stage and
// keeps appending there until the stage is parsed empty. Peek copies all
// of gnet's buffered bytes into a fresh slice whenever they span more
// than one read, so re-peeking a frame of several MiB (the echo's limit) on every 64 KiB read would copy O(n²) bytes; staged, each
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
		// latest one).
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
			cn.closing("client closed with " + strconv.Itoa(int(code)))
			if code == ws.StatusNoStatusRcvd {
				_, _ = cn.gc.Write(wsproto.AppendControl(nil, ws.OpClose, nil))
			} else {
				_, _ = cn.gc.Write(wsproto.AppendClose(nil, code, ""))
			}
		}
		// Nothing may follow a close frame: whatever does is
		// discarded. TCP is closed as soon as gnet has sent what it
		// still holds for the client (at once, usually; else by the
		// tick, see closing.go).
		cn.cold.peerClosed = true
		cn.cold.skip = true
		if cn.gc.OutboundBuffered() == 0 {
			return gnet.Close
		}
		return gnet.None
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
			if s.rateLimited(cn, now, 1, 0, nil) {
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
// grow that buffer by every answer, as large as each request. It reports
// whether the frame was written.
func (cn *conn) reply(f *wsproto.Frame) bool {
	if cn.gc.OutboundBuffered() >= cn.loop.srv.cfg.MaxOutboundBytes {
		f.Release()
		cn.startClose(wsproto.CloseSlowConsumer)
		return false
	}
	_, _ = cn.gc.Write(f.Bytes())
	f.Release()
	cn.sent++
	return true
}

// startClose closes the connection with r: the close frame goes after
// what gnet already holds for the client, and the client's answer is
// awaited (closing.go).
func (cn *conn) startClose(r wsproto.CloseReason) { cn.beginClose(r, false) }

// fail closes the connection for a protocol violation (RFC 6455 §7.1.7,
// "fail the connection"): as startClose, but the inbound stream is out of
// step, so what the client still sends is discarded unparsed until it
// closes.
func (cn *conn) fail(r wsproto.CloseReason) { cn.beginClose(r, true) }

// echo sends a message back as it came (conformance mode).
func (s *Server) echo(cn *conn, ev wsproto.Event) {
	var hdr [ws.MaxHeaderSize]byte
	h := ws.Header{Fin: true, OpCode: ev.Op, Length: int64(len(ev.Payload))}
	w := bytes.NewBuffer(hdr[:0])
	_ = ws.WriteHeader(w, h)
	_, _ = cn.gc.Writev([][]byte{w.Bytes(), ev.Payload})
	cn.sent++
}

package server

// Closing a WebSocket connection (RFC 6455 §7) so that the client reads
// the close frame: a lingering close, like nginx's lingering_close.
// Everything here runs on the connection's event loop.
//
// Why. A socket closed while its receive buffer still holds unread bytes
// is reset (RST) by the kernel rather than closed with FIN, and whatever
// the kernel had not sent is thrown away. A client that is still sending
// when the gateway gives up (the rest of an oversized message, a burst
// past the rate limit) then gets a reset; browsers report that as 1006
// and never show the close code they may already have received. And a
// socket closed while gnet still buffers bytes for a client that is not
// reading loses those bytes and the close frame behind them (gnet makes
// one write attempt, then discards its outbound buffer).
//
// How:
//  1. beginClose queues the close frame after whatever gnet already
//     holds for the client and drops what is still queued in the
//     fanout (Hub.Remove: those frames were never handed to gnet and
//     never will be).
//  2. Once gnet's outbound buffer is empty, the write side is shut down
//     (shutdown(2), SHUT_WR): the client reads the close frame, then EOF.
//     Nothing is written to the connection after that.
//  3. What the client sends meanwhile is read and thrown away: parsed
//     only for its close frame while the stream is in step, discarded
//     unparsed after a protocol error or once its close frame arrived,
//     and at most lingerLimit bytes.
//  4. TCP is closed on the client's close frame once nothing is left to
//     send, on EOF (gnet closes it), past lingerLimit, or when the client
//     has made no progress for Config.CloseLinger: the deadline is
//     CloseLinger after the decision, after the half-close, after the
//     client last read some of what it was owed, or after it last sent
//     something, whichever is latest. A client that resumes reading
//     within CloseLinger therefore reads everything up to the close
//     frame, and one still sending over a slow link gets to its close
//     frame, within lingerLimit bytes. Progress or not, the connection
//     is closed lingerRounds times CloseLinger after the decision (like
//     nginx's lingering_time next to its lingering_timeout), so that a
//     client trickling pings or reading a byte at a time cannot keep a
//     socket the gateway has given up on.
//
// No timer or goroutine per connection: a closing connection is on its
// loop's closing list, which the tick walks every tickEvery; an idle or
// open connection costs nothing here.

import (
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsgw/gateway/wsproto"
)

// lingerMinBytes is the least a closing connection may send before the
// gateway stops reading it (lingerLimit): enough for the rest of a large
// message the client had started before it read the close frame.
const lingerMinBytes = 4 << 20

// lingerRounds bounds a lingering close as a whole: CloseLinger is how
// long the gateway waits for progress, lingerRounds*CloseLinger how long
// it waits at most.
const lingerRounds = 5

// beginClose starts closing an open connection with r (see above). skip
// says the inbound stream is out of step (a protocol error), so it is
// discarded unparsed; on a connection already closing only that is
// recorded.
func (cn *conn) beginClose(r wsproto.CloseReason, skip bool) {
	if cn.state == stateOpen {
		cn.closing(r.Text)
		_, _ = cn.gc.Write(wsproto.AppendClose(nil, r.Code, r.Text))
		if cn.state == stateClosing { // the write may have closed it
			cn.loop.settle(cn, time.Now().UnixNano())
		}
	}
	if skip && cn.cold != nil {
		cn.cold.skip = true
	}
}

// closing moves an open connection to stateClosing, before its close
// frame is written: it releases its queue and puts it on the loop's
// closing list.
func (cn *conn) closing(reason string) {
	c := cn.c()
	cn.state = stateClosing
	cn.setCloseReason(reason)
	now := time.Now().UnixNano()
	c.lingerUntil = now + int64(cn.loop.srv.cfg.CloseLinger)
	c.lingerEnd = now + lingerRounds*int64(cn.loop.srv.cfg.CloseLinger)
	c.outLeft = int(^uint(0) >> 1)
	// Frames still queued will not be sent: give them back now rather
	// than hold them while the connection lingers. OnClose does not
	// call Remove again.
	c.removed = true
	cn.loop.srv.removeSub(&cn.sub)
	cn.loop.closing = append(cn.loop.closing, cn)
	cn.loop.busy.Store(true)
}

// settle looks at a closing connection: once gnet has sent everything, it
// shuts the write side down; it moves the deadline while the client
// reads what it is owed. It reports whether the connection is done and
// must be closed now.
func (l *loopState) settle(cn *conn, now int64) (done bool) {
	c := cn.cold
	linger := int64(l.srv.cfg.CloseLinger)
	out := cn.gc.OutboundBuffered()
	if out < c.outLeft {
		c.lingerUntil = max(c.lingerUntil, now+linger)
	}
	c.outLeft = out
	switch {
	case out > 0:
	case c.peerClosed:
		return true // the close handshake is complete
	case !c.shut:
		// The close frame is in the kernel: FIN after it. An error
		// (the client is gone already) shows up as EOF or a failed
		// read, which closes the connection.
		c.shut = true
		_ = syscall.Shutdown(cn.gc.Fd(), syscall.SHUT_WR)
		c.lingerUntil = max(c.lingerUntil, now+linger)
	}
	return now >= min(c.lingerUntil, c.lingerEnd)
}

// lingerTick walks the loop's closing connections: shuts down the write
// side of those whose close frame is out, and closes those that are done
// or past their deadline. From tick, every tickEvery.
func (l *loopState) lingerTick(now int64) {
	if len(l.closing) == 0 {
		return
	}
	keep := l.closing[:0]
	var done []*conn
	for _, cn := range l.closing {
		switch {
		case cn.state != stateClosing: // closed meanwhile
		case l.settle(cn, now):
			done = append(done, cn)
		default:
			keep = append(keep, cn)
		}
	}
	clear(l.closing[len(keep):])
	l.closing = keep
	for _, cn := range done {
		_ = l.el.Close(cn.gc)
	}
}

// lingerRead counts n more inbound bytes read (and ignored) from a
// closing connection, which moves its deadline, and closes it past
// lingerLimit.
func (cn *conn) lingerRead(n int) gnet.Action {
	c := cn.cold
	c.lingered += uint64(n)
	if c.lingered > cn.lingerLimit() {
		return gnet.Close
	}
	if n > 0 {
		c.lingerUntil = max(c.lingerUntil, time.Now().UnixNano()+int64(cn.loop.srv.cfg.CloseLinger))
	}
	return gnet.None
}

// discard drops every inbound byte of a closing connection whose stream
// is no longer parsed.
func (cn *conn) discard() gnet.Action {
	c := cn.cold
	n, _ := cn.gc.Discard(-1)
	n += len(c.stage)
	c.stage = nil
	return cn.lingerRead(n)
}

// lingerLimit is how many bytes a closing connection may still send:
// lingerMinBytes, or two messages of the connection's limit if that is
// more (a client may be in the middle of one and have queued another).
func (cn *conn) lingerLimit() uint64 {
	return uint64(max(lingerMinBytes, 2*cn.reader.MaxMessage))
}

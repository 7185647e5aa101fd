package server

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/wsgw/gateway/fanout"
	"github.com/wsgw/gateway/wsproto"
)

// Bounds of one Writev: enough frames to amortise the syscall, few enough
// that one busy connection cannot hold its loop for long.
const (
	maxIov       = 64
	maxIovBytes  = 256 << 10
	maxDrainRuns = 16
)

// loopState is everything one event loop owns besides its connections'
// own state. Event-loop only, except the fields set by New and el (see
// bind).
type loopState struct {
	srv   *Server
	idx   int
	shard *fanout.Shard
	// el is the gnet loop, set once by bind, which then sets bound.
	el    gnet.EventLoop
	bound atomic.Bool

	up *upgradeState // the loop's WebSocket upgrader (upgrade.go)

	flushTask gnet.RunnableFunc
	tickTask  gnet.RunnableFunc

	conns   []*conn // every connection of the loop, for sweeps
	blocked []*conn // connections that stopped draining on a full outbound buffer
	closing []*conn // connections in stateClosing, each once (closing.go)
	// busy is set on the loop whenever blocked or closing gains an
	// entry, and left set by tick while either has one: OnTick (on the
	// ticker goroutine) wakes the loop between sweeps only then.
	busy atomic.Bool
	// sweepDue is set by OnTick on every ticksPerSweep-th tick and taken
	// by the tick it submits: the loop sweeps on that tick, however late
	// the task runs. A check of the time since the last sweep would not
	// do: after a sweep tick that ran late the next one comes less than
	// a sweep period later, and an idle loop, which gets no tick in
	// between, would wait another whole period.
	sweepDue atomic.Bool

	// recent holds the connections that subscribed lately (see
	// recentSubs, commands.go); nil when none.
	recent map[*conn]*recentSubs

	// Scratch for one Writev, reused across connections.
	iov    [][]byte
	frames []*wsproto.Frame
}

func newLoopState(s *Server, idx int) *loopState {
	l := &loopState{srv: s, idx: idx, up: newUpgradeState()}
	l.flushTask = gnet.RunnableFunc(l.flush)
	l.tickTask = gnet.RunnableFunc(l.tick)
	return l
}

// bind ties the state to gnet's loop el, on el, before its first
// connection is set up (loopFor).
func (l *loopState) bind(el gnet.EventLoop) {
	l.el = el
	l.bound.Store(true)
}

// Wake is the shard's fanout.Waker: it submits one flush task to the
// loop. The shard calls it for frames queued for this loop's connections,
// so the loop is bound by then: the connection's subscription reached the
// shard through the hub after bind. Any goroutine; never blocks (gnet's
// task queue is unbounded, and the shard asks for one flush at a time).
func (l *loopState) Wake() {
	if !l.bound.Load() {
		// No connection, so nothing to flush: let the next frame ask
		// again.
		l.shard.BeginFlush()
		return
	}
	if err := l.el.Execute(context.Background(), l.flushTask); err != nil {
		// Only during engine shutdown; the queues are released by
		// the hub then.
		l.shard.BeginFlush()
	}
}

func (l *loopState) add(cn *conn) {
	cn.sub.Tag = int32(len(l.conns))
	l.conns = append(l.conns, cn)
}

func (l *loopState) remove(cn *conn) {
	i := int(cn.sub.Tag)
	if i < 0 || i >= len(l.conns) || l.conns[i] != cn {
		return
	}
	last := len(l.conns) - 1
	l.conns[i] = l.conns[last]
	l.conns[i].sub.Tag = int32(i)
	l.conns[last] = nil
	l.conns = l.conns[:last]
	cn.sub.Tag = -1
}

// owner returns the connection whose Subscriber is sub, or nil once it
// has left the loop (a closed connection can still be in the ready
// queue).
func (l *loopState) owner(sub *fanout.Subscriber) *conn {
	i := int(sub.Tag)
	if i < 0 || i >= len(l.conns) || &l.conns[i].sub != sub {
		return nil
	}
	return l.conns[i]
}

// applyRefusals takes the subscriptions the hub refused or dropped (their
// error frames are queued) out of the loop's view of each connection.
// Called at each flush and before each command, so a client that has read
// the error never finds the channels still counted. Event-loop only.
func (l *loopState) applyRefusals() {
	for _, r := range l.shard.TakeRefusals() {
		if cn := l.owner(r.Sub); cn != nil && cn.state == stateOpen {
			cn.leave(l.recent[cn], r.Channels)
		}
	}
}

// flush drains the queues of every subscriber the shard marked ready.
// It runs as one task per burst, submitted by the shard's waker.
func (l *loopState) flush(context.Context) error {
	l.shard.BeginFlush()
	l.applyRefusals()
	for sub := l.shard.NextReady(); sub != nil; sub = l.shard.NextReady() {
		cn := l.owner(sub)
		if cn != nil && cn.state == stateOpen && !cn.is(flagBlocked) {
			l.drain(cn)
		}
	}
	return nil
}

// drain writes what cn's queue holds with one Writev per batch. gnet
// copies whatever the socket does not take into its outbound buffer, so
// every frame's reference is released right after the call.
func (l *loopState) drain(cn *conn) {
	for run := 0; run < maxDrainRuns; run++ {
		iov, frames, n := l.iov[:0], l.frames[:0], 0
		for len(iov) < maxIov && n < maxIovBytes {
			f := cn.sub.Pop()
			if f == nil {
				break
			}
			iov = append(iov, f.Bytes())
			frames = append(frames, f)
			n += f.Len()
		}
		if len(iov) == 0 {
			// Caught up: a connection that lost frames is told
			// which before anything else (fanout's loss notice;
			// one atomic load when there is none).
			if f := cn.sub.TakeLoss(); f != nil {
				_, _ = cn.gc.Write(f.Bytes())
				f.Release()
				cn.sent++
			}
			return
		}
		// Writev may close the connection (and run OnClose) on a
		// write error; nothing below touches the queue after that.
		_, _ = cn.gc.Writev(iov)
		// Latency is observed once per Writev batch, on its oldest data
		// frame (frames are in queue order; acks and notices carry no
		// receipt time), not once per frame: a time.Now and an Observe
		// per frame would cost the delivery path more than the write
		// itself for small frames, and the oldest frame is the one a
		// backlog shows up in.
		var oldest int64
		for i, f := range frames {
			if oldest == 0 {
				oldest = f.Received()
			}
			f.Release()
			frames[i] = nil
		}
		if oldest != 0 {
			l.srv.ctr.latency.Observe(float64(time.Now().UnixNano()-oldest) / 1e9)
		}
		for i := range iov {
			iov[i] = nil
		}
		l.iov, l.frames = iov[:0], frames[:0]
		cn.sent += uint64(len(iov))
		l.shard.AddDelivered(len(iov))
		if cn.state != stateOpen {
			return
		}
		if cn.gc.OutboundBuffered() >= l.srv.cfg.MaxOutboundBytes {
			// Stop feeding a socket that is not reading: its queue
			// fills and drops instead of gnet's buffer growing;
			// tick resumes it once the buffer drains. Listed once:
			// tick clears the flag of each entry it takes.
			if !cn.is(flagBlocked) {
				cn.set(flagBlocked, true)
				l.blocked = append(l.blocked, cn)
				l.busy.Store(true)
			}
			return
		}
	}
	// More is queued than one pass writes: go to the back of the ready
	// queue so one busy connection cannot starve the others, and let the
	// loop serve its sockets before the next flush.
	l.shard.Requeue(&cn.sub)
}

// tick resumes blocked connections whose outbound buffer has drained and,
// once a second, sweeps every connection for timeouts, pings and expired
// tokens.
func (l *loopState) tick(context.Context) error {
	if len(l.blocked) > 0 {
		blocked := l.blocked
		l.blocked = nil
		for _, cn := range blocked {
			cn.set(flagBlocked, false)
			if cn.state != stateOpen {
				continue
			}
			if cn.gc.OutboundBuffered() < l.srv.cfg.MaxOutboundBytes/2 {
				l.drain(cn)
			} else {
				cn.set(flagBlocked, true)
				l.blocked = append(l.blocked, cn)
			}
		}
	}
	now := time.Now()
	if by := l.srv.closeBy.Load(); by != 0 {
		l.paceClose(now, by)
	}
	l.lingerTick(now.UnixNano())
	if l.sweepDue.Swap(false) {
		l.sweep(now)
		l.settleRecent(now.UnixNano())
	}
	l.busy.Store(len(l.blocked) > 0 || len(l.closing) > 0)
	return nil
}

func (l *loopState) sweep(now time.Time) {
	cfg := &l.srv.cfg
	n := now.UnixNano()
	var closing []*conn
	// Backwards by index: a ping or close frame that fails to write
	// makes gnet close the connection at once, and OnClose swaps the
	// last entry into its slot and shortens l.conns. Going backwards,
	// the entry swapped in has already been visited; a range over the
	// slice taken before would reach the emptied last slot.
	for i := len(l.conns) - 1; i >= 0; i-- {
		if i >= len(l.conns) {
			continue
		}
		cn := l.conns[i]
		switch cn.state {
		case stateHandshake:
			if cn.is(flagAnswered) {
				// A plain-HTTP answer has drained, or its reader
				// has stalled for a whole handshake timeout.
				if cn.gc.OutboundBuffered() == 0 || n-cn.since > int64(cfg.HandshakeTimeout) {
					closing = append(closing, cn)
				}
				continue
			}
			if n-cn.since > int64(cfg.HandshakeTimeout) {
				cn.setCloseReason("handshake timeout")
				l.srv.ctr.refuse(refuseHandshakeTimeout)
				closing = append(closing, cn)
			}
		case stateOpen:
			l.checkSlow(cn, n)
			if cn.state == stateOpen && !cn.is(flagBlocked) {
				// Not once closing: the queue is the hub's then.
				cn.sub.ReleaseIdle()
			}
			switch {
			case cn.state != stateOpen:
			case cn.expires != 0 && n >= cn.expires:
				cn.startClose(wsproto.CloseTokenExpired)
			case cfg.PartialMessageTimeout > 0 && cn.cold != nil && cn.cold.partialSince != 0 &&
				n-cn.cold.partialSince > int64(cfg.PartialMessageTimeout):
				// Fragments or a trickled frame, however lively the
				// peer otherwise is (pings), hold memory: a message
				// has this long to complete.
				l.srv.releasePartial(cn)
				cn.startClose(wsproto.ClosePartialTimeout)
			case cn.is(flagPinged) && n-cn.lastRead > int64(cfg.PingTimeout):
				// Only once a ping has gone unanswered: with a
				// PingTimeout close to the sweep period, a peer
				// could otherwise be closed before it was ever
				// pinged, or for answering just before a sweep.
				cn.startClose(wsproto.CloseIdle)
			case !cn.is(flagPinged) && n-cn.lastRead >= int64(cfg.PingInterval):
				// Pinged when silent, not on a fixed period: a
				// peer that keeps talking is plainly alive, and
				// one word per socket is saved.
				cn.set(flagPinged, true)
				_, _ = cn.gc.Write(wsproto.AppendControl(nil, ws.OpPing, nil))
			}
		}
	}
	for _, cn := range closing {
		_ = l.el.Close(cn.gc)
	}
}

// checkSlow closes with 1013 a connection that has overflowed its queue
// for longer than SlowClientTimeout, or lost more than SlowClientMaxDrops
// frames. Called once a second by the sweep.
func (l *loopState) checkSlow(cn *conn, now int64) {
	cfg := &l.srv.cfg
	d := cn.sub.Dropped()
	if cn.cold == nil && d == 0 {
		return // the usual case: never dropped a frame, nothing kept
	}
	c := cn.c()
	switch {
	case d == c.dropsSeen:
		c.fullSince = 0
	case c.fullSince == 0:
		c.fullSince = now
	}
	c.dropsSeen = d
	if (cfg.SlowClientMaxDrops > 0 && d > cfg.SlowClientMaxDrops) ||
		(cfg.SlowClientTimeout > 0 && c.fullSince != 0 && now-c.fullSince >= int64(cfg.SlowClientTimeout)) {
		if cn.state == stateOpen {
			l.srv.ctr.slowDisconnect.Add(1)
		}
		cn.startClose(wsproto.CloseSlowConsumer)
	}
}

// paceClose closes this loop's share of the remaining connections during
// a shutdown: the open ones get what is queued for them and then a 1001
// close, spread evenly until closeBy. A connection parked on a full
// outbound buffer gets only the close, after what gnet already holds for
// it: draining its queue would grow that buffer past MaxOutboundBytes.
// Connections still in their handshake are left alone: their request is
// answered 503 when it completes (admit), or they are cut by the
// handshake timeout or the engine's stop.
func (l *loopState) paceClose(now time.Time, closeBy int64) {
	open := 0
	for _, cn := range l.conns {
		if cn.state == stateOpen {
			open++
		}
	}
	quota := open
	if left := closeBy - now.UnixNano(); left > int64(tickEvery) {
		ticks := left / int64(tickEvery)
		quota = int((int64(open) + ticks - 1) / ticks)
	}
	// Backwards by index, as in sweep: a failed write removes the
	// connection from l.conns at once.
	for i := len(l.conns) - 1; i >= 0 && quota > 0; i-- {
		if i >= len(l.conns) {
			continue
		}
		cn := l.conns[i]
		if cn.state == stateOpen {
			quota--
			// Send what is already queued first, then the close.
			if !cn.is(flagBlocked) {
				l.drain(cn)
			}
			cn.startClose(wsproto.CloseGoingAway)
		}
	}
}

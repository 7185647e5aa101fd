package fanout

// The adapter between the durable side (streams.go) and today's delivery
// path: the stream readers' frames reach the connections' queues through
// the shards, like pub/sub messages. A shard goroutine is the only
// producer of its connections' queues, so a reader never pushes into a
// queue itself: it hands each frame to the subscriber's shard as an
// operation on the shard's channel, which also orders it after the
// "subscribed" ack (the hub joins the durable side right after it sent
// the ack's operation, see request.then).
//
// Replay frames must never be dropped, but a reader cannot see a queue
// from its goroutine. So Push is optimistic: the shard queues the frame,
// or, when the queue is full, keeps it in the subscriber's backlog (shard
// goroutine only) and retries it until the connection has made room.
// While a subscriber has a backlog, Push refuses (the reader retries on a
// later turn) and the subscriber's live durable frames join the backlog,
// so nothing overtakes a replay; a backlog past the queue's size drops
// live frames, counted, like a full queue. The backlog holds at most what
// was in flight when it formed plus one queue of live frames.
//
// Everything here is about this seam only: the readers, their replay and
// their seam with live delivery do not depend on it.

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgw/gateway/wsproto"
)

// DurableHub is the hub with its durable side: the server's entry point
// for subscriptions that name durable channels. Safe for concurrent use;
// no method blocks.
type DurableHub struct {
	hub     *Hub
	streams *Streams
	// backlogged: per subscriber, the frames its shard holds back
	// (pushState); entries are made by Push, removed by the shard when
	// the connection is gone.
	states sync.Map // *Subscriber → *pushState
}

// pushState is what a reader sees of a subscriber's backlog.
type pushState struct {
	backlog atomic.Int32 // frames the shard holds back for the subscriber
}

// NewDurableHub builds the durable side of h for cfg, with the readers
// connecting to h's Redis. Nothing connects until the first durable
// subscription. Call it before any connection subscribes.
func NewDurableHub(h *Hub, cfg StreamConfig) (*DurableHub, error) {
	d := &DurableHub{hub: h}
	// The same Redis as the pub/sub links: REDIS_URL, TLS and Sentinel
	// included.
	opt := h.cfg.ClientOption()
	opt.ClientName = "ws-gateway-streams"
	st, err := NewStreams(cfg, opt, hubSink{d}, h.log)
	if err != nil {
		return nil, err
	}
	d.streams = st
	h.durable.Store(d)
	return d, nil
}

// Streams is the durable side itself (its stats, tests). Safe for
// concurrent use.
func (d *DurableHub) Streams() *Streams { return d.streams }

// Durable reports whether name is durable. Safe for concurrent use.
func (d *DurableHub) Durable(name string) bool { return d.streams.Durable(name) }

// SubscribeDurable is Hub.Subscribe for a request that also joins the
// durable names of durable, resuming each from its positions: the ack
// names all; the readers' frames follow it. Refused whole like
// Hub.Subscribe (then no durable name is joined). Safe for concurrent
// use; never blocks.
func (d *DurableHub) SubscribeDurable(s *Subscriber, add []string, durable []Resume, all []string, requestID []byte) error {
	return d.hub.enqueue(request{kind: reqSubscribe, sub: s, changed: add, all: all, reqID: requestID, then: func() {
		for _, r := range durable {
			d.streams.Join(s, r, requestID)
		}
	}}, true)
}

// UnsubscribeDurable is Hub.Unsubscribe for a request that also leaves
// the durable names in durable. A reader applies a leave at its next
// turn, so a frame of such a name may still follow the "unsubscribed"
// ack (docs/DURABILITY.md, Limits). Safe for concurrent use; never
// blocks.
func (d *DurableHub) UnsubscribeDurable(s *Subscriber, del, durable, all []string, requestID []byte) error {
	return d.hub.enqueue(request{kind: reqUnsubscribe, sub: s, changed: del, all: all, reqID: requestID, then: func() {
		for _, name := range durable {
			d.streams.Leave(s, name)
		}
	}}, true)
}

// Remove is Hub.Remove for a connection that may follow durable names: it
// leaves them too, after any join still queued for it. Safe for
// concurrent use; never blocks.
func (d *DurableHub) Remove(s *Subscriber) {
	_ = d.hub.enqueue(request{kind: reqRemove, sub: s, then: func() { d.streams.Remove(s) }}, false)
}

// Close stops the readers (the hub is closed by its owner).
func (d *DurableHub) Close(ctx context.Context) error { return d.streams.Close(ctx) }

// hubSink is the Sink of the durable side: frames go to the subscribers'
// shards. Reader goroutines.
type hubSink struct{ d *DurableHub }

// Deliver hands f to the shard of each of st's subscribers, one
// operation per shard with that shard's share of them (st.byShard: built
// when the subscribers change, never written after, so a shard may read
// it while the reader goes on; nothing is copied per frame). A shard
// whose channel is full loses f for its subscribers, counted
// (Stats.HandoffDropped); they see the gap in seq.
func (k hubSink) Deliver(st *DurableStream, _ []*Subscriber, f *wsproto.Frame) {
	h := k.d.hub
	if st.byShard == nil || st.byShardAt != st.subsChanged {
		st.byShard = make([][]*Subscriber, len(h.shards))
		for _, s := range st.subs {
			st.byShard[s.shard.idx] = append(st.byShard[s.shard.idx], s)
		}
		st.byShardAt = st.subsChanged
	}
	for i, ss := range st.byShard {
		if len(ss) > 0 {
			k.toShard(h.shards[i], ss, f)
		}
	}
	f.Release()
}

func (k hubSink) toShard(sh *Shard, subs []*Subscriber, f *wsproto.Frame) {
	f.Retain(1)
	select {
	case sh.in <- shardOp{kind: opDurable, frame: f, subs: subs}:
	default:
		f.Release()
		k.d.hub.handoff.Add(1)
	}
}

// Push queues f for s through its shard, or refuses while the shard holds
// a backlog for s or its channel is full (the reader retries; it keeps f).
func (k hubSink) Push(s *Subscriber, f *wsproto.Frame) bool {
	v, ok := k.d.states.Load(s)
	if !ok {
		v, _ = k.d.states.LoadOrStore(s, new(pushState))
	}
	ps := v.(*pushState)
	if ps.backlog.Load() > 0 {
		// Ask the shard to try the backlog again: the reader polls
		// here while it waits, so the backlog moves as the
		// connection drains.
		select {
		case s.shard.in <- shardOp{kind: opBacklog, sub: s, ps: ps}:
		default:
		}
		return false
	}
	select {
	case s.shard.in <- shardOp{kind: opPush, sub: s, frame: f, ps: ps}:
		return true
	default:
		return false
	}
}

// backlogOf is s's backlog, or nil: no map lookup while the shard holds
// none. Shard's mu held (Shard.mu).
func (sh *Shard) backlogOf(s *Subscriber) *backlog {
	if len(sh.backlogs) == 0 {
		return nil
	}
	return sh.backlogs[s]
}

// backlog is what a shard holds back for one subscriber, in order.
type backlog struct {
	ps     *pushState
	frames []*wsproto.Frame
}

// durable queues a live durable frame for subs: behind a backlog, if the
// subscriber has one. Shard goroutine.
func (sh *Shard) durable(subs []*Subscriber, f *wsproto.Frame) {
	for _, s := range subs {
		if s.q.removed {
			continue
		}
		// The map only when some subscriber here has a backlog.
		if b := sh.backlogOf(s); b != nil {
			if len(b.frames) < sh.hub.cfg.SendQueue {
				f.Retain(1)
				b.frames = append(b.frames, f)
				b.ps.backlog.Add(1)
			} else {
				s.drop(nil, f)
			}
			continue
		}
		f.Retain(1)
		if !s.enqueue(f, nil) {
			f.Release()
		}
	}
	f.Release()
}

// push queues a frame a reader pushed for s, or keeps it in s's backlog.
// Shard goroutine.
func (sh *Shard) push(s *Subscriber, f *wsproto.Frame, ps *pushState) {
	if s.q.removed {
		f.Release()
		sh.forget(s)
		return
	}
	if b := sh.backlogs[s]; b != nil {
		b.frames = append(b.frames, f)
		ps.backlog.Add(1)
		return
	}
	if s.offer(f) {
		return
	}
	if sh.backlogs == nil {
		sh.backlogs = make(map[*Subscriber]*backlog)
	}
	sh.backlogs[s] = &backlog{ps: ps, frames: []*wsproto.Frame{f}}
	ps.backlog.Add(1)
}

// retryBacklogs moves what it can of each backlog (of s alone, if not
// nil) into the queues. Shard goroutine.
func (sh *Shard) retryBacklogs(only *Subscriber) {
	for s, b := range sh.backlogs {
		if only != nil && s != only {
			continue
		}
		if s.q.removed {
			sh.forget(s)
			continue
		}
		n := 0
		for n < len(b.frames) && s.offer(b.frames[n]) {
			b.frames[n] = nil
			n++
		}
		b.frames = b.frames[n:]
		b.ps.backlog.Add(-int32(n))
		if len(b.frames) == 0 {
			delete(sh.backlogs, s)
		}
	}
}

// forget drops s's backlog and push state: its connection is gone. Shard
// goroutine.
func (sh *Shard) forget(s *Subscriber) {
	if b := sh.backlogs[s]; b != nil {
		for _, f := range b.frames {
			f.Release()
		}
		delete(sh.backlogs, s)
	}
	if d := sh.hub.durable.Load(); d != nil {
		d.states.Delete(s)
	}
}

// backlogRetry is how often a shard with backlogs retries them when no
// operation comes.
const backlogRetry = 5 * time.Millisecond

package fanout

import (
	"sync/atomic"

	"github.com/wsgw/gateway/wsproto"
)

// Subscriber is the fanout side of one client connection: the queue of
// frames owed to it and its stream memberships.
//
// It is meant to be embedded in the owner's connection state and prepared
// with Hub.Init, so a socket costs one allocation, not two (the budget is
// 1 KiB per idle subscribed socket).
//
// Threading: the queue's producer is the Subscriber's shard goroutine and
// its consumer is the connection's event loop (Pop). Once the server has
// called Hub.Remove, the event loop must not call Pop again; the shard
// then drains and releases whatever is left.
type Subscriber struct {
	shard     *Shard
	q         queue
	readyNext atomic.Pointer[Subscriber]
	// loss is nil until the first frame is dropped for this connection
	// (loss.go), so a subscriber that never drops pays one word.
	loss atomic.Pointer[lossState]

	// Shard goroutine only.
	members []membership

	pending atomic.Bool // in the shard's ready queue, or about to be

	// Tag belongs to the owner: the fanout never reads or writes it.
	// The server keeps the connection's index in its event loop here,
	// so a subscriber taken from the ready queue leads back to its
	// connection without a pointer or an interface per socket. Owner's
	// goroutine only.
	Tag int32
}

// membership records that the subscriber is at position idx of
// st.subs[shard], so leaving is O(1) plus a scan of its own memberships.
type membership struct {
	st  *stream
	idx int32
}

// Pop returns the next frame owed to this connection, or nil. The caller
// takes over the frame's reference and must Release it after writing it.
// Event-loop only (the loop that owns the connection).
func (s *Subscriber) Pop() *wsproto.Frame { return s.q.pop() }

// ReleaseIdle gives the queue's ring back when nothing is queued and
// nothing was popped during the previous releaseRounds calls, so a socket
// that receives nothing for a while holds no ring; the next
// frame brings a fresh one. The server calls it once per second per
// connection. Event-loop only (the consumer).
func (s *Subscriber) ReleaseIdle() bool {
	if !s.q.release(releaseRounds) {
		return false
	}
	s.shard.queues.Add(-1)
	return true
}

// releaseRounds: ReleaseIdle calls without a pop before the ring goes.
// At one call a second, a channel that ticks more often than every five
// seconds keeps its subscribers' rings, so a ring is not reallocated per
// message on a slow channel.
const releaseRounds = 5

// Dropped is the number of frames dropped for this connection because its
// queue was full. Safe for concurrent use.
func (s *Subscriber) Dropped() uint64 {
	if ls := s.loss.Load(); ls != nil {
		return ls.dropped.Load()
	}
	return 0
}

// offer is enqueue without the drop: false leaves f with the caller.
// Shard goroutine.
func (s *Subscriber) offer(f *wsproto.Frame) bool {
	if !s.q.push(f, s.shard.hub.cfg.SendQueue) {
		return false
	}
	if s.q.fresh {
		// A ring was allocated: a first frame, or one after a
		// release (each release is followed by one restart).
		s.q.fresh = false
		s.shard.queues.Add(1)
	}
	s.markReady()
	return true
}

// enqueue offers f, a data frame of stream st or (st nil) a reply or
// notice, to the subscriber's queue and marks it ready. It takes one
// reference of f on success; on failure the caller keeps it and the drop
// is noted for the client (loss.go). Shard goroutine only.
func (s *Subscriber) enqueue(f *wsproto.Frame, st *stream) bool {
	if !s.offer(f) {
		s.drop(st, f)
		return false
	}
	return true
}

// markReady puts the subscriber in its shard's ready queue unless it is
// there already, so the event loop drains it at the next flush. Shard
// goroutine only.
func (s *Subscriber) markReady() {
	if !s.pending.Load() && s.pending.CompareAndSwap(false, true) {
		s.shard.ready.push(s)
		s.shard.wakeNeeded = true
	}
}

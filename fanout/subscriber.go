package fanout

import (
	"sync/atomic"

	"github.com/wsgw/gateway/wsproto"
)

// Subscriber is the fanout side of one client connection: the queue of
// frames owed to it and its stream memberships.
//
// Threading: the queue's producer is the Subscriber's shard goroutine and
// its consumer is the connection's event loop (Pop). Once the server has
// called Hub.Remove, the event loop must not call Pop again; the shard
// then drains and releases whatever is left.
type Subscriber struct {
	// Owner is the server's connection state, set at creation and
	// read-only afterwards, so a flush can get from a popped Subscriber
	// back to its connection without a map lookup.
	Owner any

	shard     *Shard
	q         queue
	pending   atomic.Bool // in the shard's ready queue, or about to be
	readyNext atomic.Pointer[Subscriber]
	dropped   atomic.Uint64 // frames not queued because the queue was full

	// Shard goroutine only.
	members []membership
	removed bool
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

// Dropped is the number of frames dropped for this connection because its
// queue was full. Safe for concurrent use.
func (s *Subscriber) Dropped() uint64 { return s.dropped.Load() }

// Shard is the shard this subscriber belongs to. Safe for concurrent use.
func (s *Subscriber) Shard() *Shard { return s.shard }

// enqueue offers f to the subscriber's queue and marks it ready. It takes
// one reference of f on success; on failure the caller keeps it. Shard
// goroutine only.
func (s *Subscriber) enqueue(f *wsproto.Frame) bool {
	if !s.q.push(f, s.shard.hub.cfg.SendQueue) {
		s.dropped.Add(1)
		s.shard.dropped.Add(1)
		return false
	}
	if !s.pending.Load() && s.pending.CompareAndSwap(false, true) {
		s.shard.ready.push(s)
		s.shard.wakeNeeded = true
	}
	return true
}

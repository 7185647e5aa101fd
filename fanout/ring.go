package fanout

import (
	"sync/atomic"

	"github.com/wsgw/gateway/wsproto"
)

// initialRing is the capacity of a subscriber's first ring. It is
// allocated on the first delivery, never at connect time, so an idle
// socket costs no ring at all (issue 2: at most 1 KiB per idle socket).
const initialRing = 4

// calmPushes is how many consecutive pushes must find a grown ring empty
// (the consumer keeping up) before the producer goes back to a small
// ring. Bursty traffic keeps the ring it grew; a burst that is over gives
// its memory back.
const calmPushes = 256

// ring is one fixed-size circular array of frame slots. A nil slot is
// free; the producer fills slots in order and the consumer empties them in
// order, so the slot's own nil-ness is the full/empty test and no shared
// index is needed (Lamport's SPSC queue with the indices kept private).
type ring struct {
	// slots may have any length (SendQueue need not be a power of two),
	// so indices wrap by comparison, not by mask.
	slots []atomic.Pointer[wsproto.Frame]
	// next is set by the producer when it outgrew this ring. Everything
	// the producer wrote here happens-before next becomes visible.
	next atomic.Pointer[ring]
}

func newRing(n int) *ring {
	return &ring{slots: make([]atomic.Pointer[wsproto.Frame], n)}
}

// queue is a growable single-producer/single-consumer queue of frames,
// bounded by max slots in its newest ring. When the producer finds its
// ring full it links a ring twice the size and moves on; the consumer
// finishes the old ring first, so order is kept. Rings never shrink:
// A grown ring is swapped back for a small one once calmPushes pushes in
// a row found it empty, so a stall that is over gives its memory back.
//
// While a ring grows, the older rings' frames are still owed, so the
// number of queued frames stays below 2*max when max is a power of two
// (4+8+...+max) and below 3*max otherwise.
type queue struct {
	// producer side: the shard goroutine only.
	wring *ring
	w     int // next slot to fill in wring
	calm  int // consecutive pushes that found wring empty

	// first is published once by the producer; the consumer starts there.
	first atomic.Pointer[ring]

	// consumer side: the event loop only (or the shard after the
	// connection closed, see Subscriber).
	rring *ring
	r     int // next slot to empty in rring
}

// push appends f; false means the queue is at its bound and f was not
// taken (the caller keeps its reference). Producer only.
func (q *queue) push(f *wsproto.Frame, max int) bool {
	rg := q.wring
	if rg == nil {
		rg = newRing(min(initialRing, max))
		q.wring = rg
		q.first.Store(rg)
	}
	slot := &rg.slots[q.w]
	switch {
	case slot.Load() != nil:
		q.calm = 0
		if len(rg.slots) >= max {
			return false
		}
		rg = q.link(min(2*len(rg.slots), max))
		slot = &rg.slots[0]
	case len(rg.slots) > initialRing && q.empty(rg):
		// The consumer has taken everything written here: after
		// enough such pushes, shrink. Order is kept because the
		// consumer only moves to the new ring after this one.
		if q.calm++; q.calm >= calmPushes {
			q.calm = 0
			rg = q.link(initialRing)
			slot = &rg.slots[0]
		}
	default:
		q.calm = 0
	}
	slot.Store(f)
	if q.w++; q.w == len(rg.slots) {
		q.w = 0
	}
	return true
}

// link makes a ring of n slots the producer's current ring. Producer only.
func (q *queue) link(n int) *ring {
	nr := newRing(n)
	q.wring.next.Store(nr)
	q.wring, q.w = nr, 0
	return nr
}

// empty reports whether the consumer has taken the last frame written to
// rg: it empties slots in order, so that slot being free means every
// slot is. Producer only; rg must be the producer's ring with slot w
// free.
func (q *queue) empty(rg *ring) bool {
	prev := q.w - 1
	if prev < 0 {
		prev = len(rg.slots) - 1
	}
	return rg.slots[prev].Load() == nil
}

// pop removes the oldest frame, or returns nil when there is none now.
// Consumer only.
func (q *queue) pop() *wsproto.Frame {
	rg := q.rring
	if rg == nil {
		if rg = q.first.Load(); rg == nil {
			return nil
		}
		q.rring = rg
	}
	for {
		slot := &rg.slots[q.r]
		if f := slot.Load(); f != nil {
			slot.Store(nil)
			if q.r++; q.r == len(rg.slots) {
				q.r = 0
			}
			return f
		}
		nx := rg.next.Load()
		if nx == nil {
			return nil
		}
		// The producer has moved on, and all its writes to rg are
		// visible now: look once more before leaving rg for good.
		if f := slot.Load(); f != nil {
			slot.Store(nil)
			if q.r++; q.r == len(rg.slots) {
				q.r = 0
			}
			return f
		}
		rg, q.rring, q.r = nx, nx, 0
	}
}

// capacity is the size of the producer's current ring (0 before the first
// push). Producer only.
func (q *queue) capacity() int {
	if q.wring == nil {
		return 0
	}
	return len(q.wring.slots)
}

package fanout

import (
	"sync/atomic"

	"github.com/wsgw/gateway/wsproto"
)

// initialRing is the capacity of a subscriber's first ring. It is
// allocated on the first delivery, never at connect time, so an idle
// socket costs no ring at all (the budget is 1 KiB per idle socket).
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
// finishes the old ring first, so order is kept. A grown ring is swapped
// back for a small one once calmPushes pushes in a row found it empty, so
// a stall that is over gives its memory back; and the consumer gives the
// last ring back altogether when the queue has been idle (release), so an
// idle socket holds no ring.
//
// While a ring grows, the older rings' frames are still owed, so the
// number of queued frames stays below 2*max when max is a power of two
// (4+8+...+max) and below 3*max otherwise.
//
// Release protocol. The consumer gives its ring rg back in two
// compare-and-swaps, each against one the producer does:
//
//  1. slot r of rg from nil to released. The producer fills slots with
//     compare-and-swap from nil too, so a frame there makes the release
//     fail. When the queue is empty and rg is the producer's ring, r
//     equals w: a producer that then finds released in slot w (before or
//     instead of filling it) starts a fresh ring.
//  2. rg.next from nil to sealed. The producer links a new ring (to grow,
//     or to shrink) with compare-and-swap from nil as well, so a producer
//     that decided to leave rg on a load taken before the consumer
//     emptied or marked it either links first (the release fails;
//     released in slot r is then read as an empty slot) or finds rg
//     sealed and starts from its new ring as from a fresh one.
//
// A producer that starts afresh (restart) publishes the ring in first;
// the consumer, whose rring is nil after a release, takes it from there
// with a swap, so first never keeps a ring alive behind the consumer.
// TestQueueSPSC's releasing cases, TestQueueRelease and the review tests
// in ring_review_test.go (each race step by step, the shrink against a
// release, and the ring count) exercise this.
type queue struct {
	// producer side: the shard goroutine only.
	// wring is the producer's ring. Atomic only because a consumer
	// that releases the ring also clears it (compare-and-swap from the
	// ring it released), so that nothing keeps an idle queue's ring
	// alive; the producer then starts afresh as at its first push.
	wring atomic.Pointer[ring]
	w     int32 // next slot to fill in wring
	calm  int32 // consecutive pushes that found wring empty

	// first is the ring a consumer without one starts from: set by the
	// producer when it starts a queue's first ring or one after a
	// release; taken (swapped to nil) by the consumer.
	first atomic.Pointer[ring]

	// consumer side: the event loop only (or the shard after the
	// connection closed, see Subscriber).
	rring *ring
	r     int32 // next slot to empty in rring
	idle  uint8 // consumer only: release attempts since the last pop
	// fresh: restart allocated a ring since the owner last looked
	// (producer only; Subscriber counts queues holding a ring).
	fresh bool

	// removed: the subscriber left (Hub.Remove), so nothing is pushed
	// any more. Producer only. It belongs to Subscriber but lives here,
	// in the padding after r, where it costs no word per socket.
	removed bool
}

// released marks the empty slot of a ring the consumer gives back: never
// a real frame, never released.
var released = new(wsproto.Frame)

// sealed is the next of a ring the consumer released: the producer must
// not link behind it (see the release protocol).
var sealed = new(ring)

// push appends f; false means the queue is at its bound and f was not
// taken (the caller keeps its reference). Producer only.
func (q *queue) push(f *wsproto.Frame, max int) bool {
	rg := q.wring.Load()
	if rg == nil {
		q.restart(f, max)
		return true
	}
	slot := &rg.slots[q.w]
	switch cur := slot.Load(); {
	case cur == released:
		q.restart(f, max)
		return true
	case cur != nil:
		q.calm = 0
		if len(rg.slots) >= max {
			return false
		}
		q.link(rg, min(2*len(rg.slots), max), f)
		return true
	case len(rg.slots) > initialRing && q.empty(rg):
		// The consumer has taken everything written here: after
		// enough such pushes, shrink. Order is kept because the
		// consumer only moves to the new ring after this one.
		if q.calm++; q.calm < calmPushes {
			break
		}
		q.calm = 0
		q.link(rg, initialRing, f)
		return true
	default:
		q.calm = 0
	}
	if !slot.CompareAndSwap(nil, f) {
		// The consumer released this ring between the check above and
		// now (it had nothing to read).
		q.restart(f, max)
		return true
	}
	q.advance(rg)
	return true
}

// restart gives the producer a fresh initial ring holding f and publishes
// it as the consumer's starting point: at the first push, and after the
// consumer released the previous ring. f goes in before the ring is
// published, so the consumer can never release it empty under the
// producer. Producer only.
func (q *queue) restart(f *wsproto.Frame, max int) {
	rg := newRing(min(initialRing, max))
	rg.slots[0].Store(f)
	q.fresh = true
	q.wring.Store(rg)
	q.w, q.calm = 0, 0
	q.advance(rg)
	q.first.Store(rg)
}

// link makes a ring of n slots, holding f, the producer's current ring.
// As in restart, f is in before the consumer can see the ring. Producer
// only.
func (q *queue) link(old *ring, n int, f *wsproto.Frame) {
	nr := newRing(n)
	nr.slots[0].Store(f)
	q.wring.Store(nr)
	q.w = 0
	q.advance(nr)
	if !old.next.CompareAndSwap(nil, nr) {
		// The consumer emptied and released old after this push
		// found it full: start from nr as from a fresh ring.
		q.fresh = true
		q.first.Store(nr)
	}
}

// advance moves w past the slot just filled in rg, the producer's ring.
func (q *queue) advance(rg *ring) {
	if q.w++; int(q.w) == len(rg.slots) {
		q.w = 0
	}
}

// empty reports whether the consumer has taken the last frame written to
// rg: it empties slots in order, so that slot being free means every
// slot is. Producer only; rg must be the producer's ring with slot w
// free.
func (q *queue) empty(rg *ring) bool {
	prev := q.w - 1
	if prev < 0 {
		prev = int32(len(rg.slots) - 1)
	}
	return rg.slots[prev].Load() == nil
}

// pop removes the oldest frame, or returns nil when there is none now.
// Consumer only.
func (q *queue) pop() *wsproto.Frame {
	rg := q.rring
	if rg == nil {
		if rg = q.first.Swap(nil); rg == nil {
			return nil
		}
		q.rring, q.r = rg, 0
	}
	for {
		slot := &rg.slots[q.r]
		if f := slot.Load(); f != nil && f != released {
			return q.take(rg, slot, f)
		}
		nx := rg.next.Load()
		if nx == nil || nx == sealed {
			// Empty: a frame pushed later wakes the consumer.
			return nil
		}
		// The producer has moved on, and all its writes to rg are
		// visible now: look once more before leaving rg for good.
		if f := slot.Load(); f != nil && f != released {
			return q.take(rg, slot, f)
		}
		rg, q.rring, q.r = nx, nx, 0
	}
}

func (q *queue) take(rg *ring, slot *atomic.Pointer[wsproto.Frame], f *wsproto.Frame) *wsproto.Frame {
	slot.Store(nil)
	if q.r++; int(q.r) == len(rg.slots) {
		q.r = 0
	}
	q.idle = 0
	return f
}

// release gives the queue's ring back if nothing is queued and nothing
// was popped during the last idleRounds calls, so that an idle
// subscriber holds no ring; the producer allocates a fresh one with the
// next frame. It reports whether the ring was released. Consumer only:
// the server calls it from its once-a-second sweep.
func (q *queue) release(idleRounds uint8) bool {
	rg := q.rring
	if rg == nil {
		if rg = q.first.Swap(nil); rg == nil {
			return false // nothing to give back
		}
		q.rring, q.r = rg, 0
	}
	if q.idle < idleRounds {
		q.idle++
		return false
	}
	// Step 1: a frame, or the producer's mark, in slot r keeps the ring.
	if !rg.slots[q.r].CompareAndSwap(nil, released) {
		return false
	}
	// Step 2: a ring the producer has linked behind keeps it too; the
	// mark left in slot r reads as an empty slot, and pop moves on.
	if !rg.next.CompareAndSwap(nil, sealed) {
		return false
	}
	// Let the producer forget rg too, unless it has already started a
	// fresh ring: then nothing references rg and the GC takes it.
	q.wring.CompareAndSwap(rg, nil)
	q.rring, q.r, q.idle = nil, 0, 0
	return true
}

// capacity is the size of the producer's current ring (0 before the first
// push). Producer only.
func (q *queue) capacity() int {
	rg := q.wring.Load()
	if rg == nil {
		return 0
	}
	return len(rg.slots)
}

package fanout

import "sync/atomic"

// readyQueue is an intrusive multi-producer/single-consumer queue of
// subscribers that have frames waiting (Vyukov's MPSC node queue). Its
// links live in the Subscriber, so queueing allocates nothing. A
// subscriber is in the queue at most once at a time: its pending flag is
// set when it is pushed and cleared by the consumer when it is popped.
//
// Producers: the shard goroutine (a subscriber given a frame while not
// pending) and the event loop (Shard.Requeue; pop also re-inserts the
// stub). Consumer: the event loop.
type readyQueue struct {
	head atomic.Pointer[Subscriber] // last pushed; producers swap it
	tail *Subscriber                // consumer only
	stub Subscriber
}

func (q *readyQueue) init() {
	q.head.Store(&q.stub)
	q.tail = &q.stub
}

// push appends s. Safe for concurrent use by producers.
func (q *readyQueue) push(s *Subscriber) {
	s.readyNext.Store(nil)
	prev := q.head.Swap(s)
	prev.readyNext.Store(s)
}

// pop returns the next subscriber, or nil when the queue is empty or a
// producer is between its two stores. That producer can only be the shard
// goroutine (the loop's own pushes are complete when it pops), and after
// the push it asks for a flush at the end of its burst: it wakes the loop,
// or finds a flush scheduled that has not begun and so pops after the
// push. Nothing is stranded. Consumer only.
func (q *readyQueue) pop() *Subscriber {
	tail := q.tail
	next := tail.readyNext.Load()
	if tail == &q.stub {
		if next == nil {
			return nil
		}
		q.tail = next
		tail = next
		next = next.readyNext.Load()
	}
	if next != nil {
		q.tail = next
		return tail
	}
	if tail != q.head.Load() {
		return nil
	}
	q.push(&q.stub)
	if next = tail.readyNext.Load(); next != nil {
		q.tail = next
		return tail
	}
	return nil
}
